"""Two processes building one checkpoint into an empty cache both succeed with identical files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT
from workbench.models.build_once import build_once, is_complete

BUILD = """
import sys
from pathlib import Path
from workbench.models.{module} import {function}
print({function}(Path(sys.argv[1])))
"""


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def build_in_two_processes(models_dir: Path, module: str, function: str) -> list[subprocess.CompletedProcess]:
    """Start two builds at the same moment and wait for both."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    code = BUILD.format(module=module, function=function)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(models_dir)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def test_two_processes_building_the_tiny_model_at_once_both_succeed(tmp_path: Path) -> None:
    results = build_in_two_processes(tmp_path, "tiny", "build_tiny_checkpoint")
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    folders = {r.stdout.strip().splitlines()[-1] for r in results}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert is_complete(folder)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []  # no temporary folder is left


def test_an_interrupted_build_leaves_no_folder_and_the_next_build_completes(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(target, crash)
    assert not target.exists() and list(tmp_path.glob(".model.tmp-*")) == []

    def ok(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "tokenizer.json").write_text("{}")

    assert build_once(target, ok) == target and digests(target)["model.safetensors"] == hashlib.sha256(b"weights").hexdigest()
    calls = []
    build_once(target, lambda tmp: calls.append(tmp))
    assert calls == []  # complete: not built again


def test_a_build_that_writes_no_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not write model.safetensors"):
        build_once(tmp_path / "model", lambda tmp: None)
    assert not (tmp_path / "model").exists()


def test_a_second_builder_says_it_waits_for_the_first(tmp_path: Path) -> None:
    import threading

    from workbench.models.build_once import lock_for

    target = tmp_path / "model"
    messages: list[str] = []

    def ok(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"w")
        (tmp / "tokenizer.json").write_text("{}")

    said = threading.Event()

    def say(text: str) -> None:
        messages.append(text)
        said.set()

    lock = lock_for(target)
    with lock:  # another process holds the build lock
        waiter = threading.Thread(target=build_once, args=(target, ok, say))
        waiter.start()
        assert said.wait(timeout=30), "the second builder said nothing while it waited"
        assert "Another process is building model; waiting" in messages[0]
        assert not target.exists()
    waiter.join(timeout=30)
    assert is_complete(target)
