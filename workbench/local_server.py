"""This app's Streamlit server in a child process, on a prepared cache: what the end-to-end tests
(tests/e2e/conftest.py) and the load bench (bench/server_load.py) start, one way for both.

    cache = Path(tempfile.mkdtemp())
    prepare_cache(cache, "tiny")                 # vocab, statistics on 3000 tokens, the 'Paris' concept
    with serve(cache, "tiny") as server:         # `streamlit run app.py`, headless, on a free port
        ...  # server.url, server.pid (for /proc/<pid>/status), server.log_path

The cache's `models/` is a link to the shared checkpoint folder (`MODELS_CACHE`: the repo's
cache/models unless WORKBENCH_TEST_MODELS names another), so no model is built twice. Nothing is
downloaded: the child runs with the hub offline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workbench.config import REPO_ROOT

MODELS_CACHE = Path(os.environ.get("WORKBENCH_TEST_MODELS", REPO_ROOT / "cache" / "models"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str | None:
    """The Chromium binary the browser tests drive (WORKBENCH_CHROMIUM, else /usr/bin/chromium,
    else `chromium` on the PATH), or None when there is none."""
    path = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
    return path if Path(path).exists() else shutil.which("chromium")


def link_models(cache: Path) -> None:
    """`cache/models` as a link to the shared checkpoints (MODELS_CACHE), unless it exists."""
    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    link = cache / "models"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(MODELS_CACHE.resolve(), target_is_directory=True)


def prepare_cache(cache: Path, model: str = "tiny", *, tokens: int = 3000,
                  concepts: Sequence[str] = ("Paris",), timeout_s: float = 600) -> None:
    """`python -m workbench prepare` into `cache` (vocab projections, neuron statistics on
    `tokens` corpus tokens, the `concepts`' analyses): what the pages need beside SAEs. Resumes
    where an earlier prepare of the same cache stopped."""
    cache.mkdir(parents=True, exist_ok=True)
    link_models(cache)
    args = [sys.executable, "-m", "workbench", "--model", model, "--cache", str(cache), "prepare",
            "--tokens", str(tokens)]
    for concept in concepts:
        args += ["--concept", concept]
    subprocess.run(args, cwd=REPO_ROOT, env={**os.environ, **OFFLINE}, check=True, capture_output=True,
                   timeout=timeout_s)


def copy_cache(source: Path, cache: Path) -> None:
    """A working copy of a prepared cache: its store (and write-ahead log) and SAE folders,
    with the shared checkpoints linked, so a server on the copy writes nothing into `source`
    (a prepared cache may be in use by another server: DuckDB lets one process write)."""
    cache.mkdir(parents=True, exist_ok=True)
    link_models(cache)
    for name in ("workbench.duckdb", "workbench.duckdb.wal"):
        if (source / name).exists():
            shutil.copy2(source / name, cache / name)
    if (source / "saes").is_dir():
        shutil.copytree(source / "saes", cache / "saes", symlinks=True, dirs_exist_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running `streamlit run app.py`: its address, process and combined stdout/stderr file."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def serve(cache: Path, model: str = "tiny", *, env: Mapping[str, str] | None = None, log_path: Path | None = None,
          start_timeout_s: float = 90) -> Iterator[Server]:
    """`streamlit run app.py` (headless, a free port, usage stats off) on `cache` serving `model`,
    until the block ends; yields once its health endpoint answers. `env` adds to this process's
    environment (e.g. WORKBENCH_AUTOPREPARE=0); the log goes to `log_path` (cache/server.log)."""
    port = free_port()
    log_path = log_path or cache / "server.log"
    full_env = {**os.environ, "WORKBENCH_MODEL": model, "WORKBENCH_CACHE": str(cache), **OFFLINE, **(env or {})}
    log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed when the block ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _healthy(server.url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {server.log()[-2000:]}")
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        log.close()
