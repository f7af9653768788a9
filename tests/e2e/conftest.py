"""The Streamlit server on the tiny model (prepared cache) and headless Chromium for e2e tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"


def _ui_conftest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ui_conftest", REPO_ROOT / "tests" / "ui" / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("e2e-cache")
    _ui_conftest().prepare_tiny_cache(cache)
    return cache


@pytest.fixture(scope="session")
def search_token(e2e_cache: Path) -> str:
    from workbench.store import Store

    store = Store(e2e_cache / "workbench.duckdb", read_only=True)
    try:
        return str(store.df("SELECT token FROM value_vector_tokens WHERE side = 'top' AND rank = 0 "
                            "AND length(trim(token)) >= 3 LIMIT 1").iloc[0, 0]).strip()
    finally:
        store.close()


@pytest.fixture(scope="session")
def server_log(e2e_cache: Path) -> Path:
    """The e2e server's combined stdout and stderr."""
    return e2e_cache / "server.log"


@pytest.fixture(scope="session")
def server(e2e_cache: Path, search_token: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "WORKBENCH_MODEL": "tiny", "WORKBENCH_CACHE": str(e2e_cache),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(e2e_cache / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"streamlit did not start: {(e2e_cache / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install -y chromium); skipping e2e tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
