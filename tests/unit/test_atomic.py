"""The one atomic-write helper (workbench/atomic.py): a folder appears whole or not at all, an
existing one is set aside before the new one moves in and is never deleted first, and what a
killed process leaves is recovered by the next publish, by build_once and by the SAE readers.
The kills themselves, in real subprocesses, are in tests/crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workbench.atomic import (
    atomic_folder,
    is_leftover,
    leftovers,
    publish,
    recover,
    recover_children,
    write_text,
)
from workbench.models.build_once import build_once
from workbench.sae.sources import list_local_saes


def dead_pid() -> int:
    """The pid of a process that has exited (what a SIGKILLed build leaves in its leftovers' names)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def folder_with(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(text)
    return path


def test_a_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as tmp:
        (tmp / "data.txt").write_text("half")
        raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "data.txt").write_text("new")
        assert not target.exists() and is_leftover(tmp)
    assert (target / "data.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(FileExistsError, match="already exists"), atomic_folder(target):
        pass


def test_replacing_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path: Path) -> None:
    target = folder_with(tmp_path / "out", "old")
    with pytest.raises(RuntimeError), atomic_folder(target, overwrite=True) as tmp:
        (tmp / "data.txt").write_text("half")
        raise RuntimeError("the build failed")
    assert (target / "data.txt").read_text() == "old"
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "data.txt").write_text("new")
    assert (target / "data.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_killed_between_set_aside_and_move_in_the_old_folder_comes_back(tmp_path: Path) -> None:
    pid = dead_pid()
    target = tmp_path / "out"
    folder_with(tmp_path / f".out.old-{pid}-aaaa", "old")  # step 1 done, step 2 not: no `out`
    folder_with(tmp_path / f".out.tmp-{pid}-bbbb", "new, maybe half")
    recover(target)
    assert (target / "data.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_killed_after_the_move_in_the_stale_old_folder_goes(tmp_path: Path) -> None:
    pid = dead_pid()
    target = folder_with(tmp_path / "out", "new")
    folder_with(tmp_path / f".out.old-{pid}-aaaa", "old")
    recover(target)
    assert (target / "data.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_running_process_leftovers_are_left_alone(tmp_path: Path) -> None:
    import os

    mine = folder_with(tmp_path / f".out.tmp-{os.getpid()}-cccc", "being written")  # another thread's build
    assert leftovers(tmp_path / "out") == []
    recover(tmp_path / "out")
    assert mine.exists()


def test_publish_replaces_a_file_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["job.json"]
    other = tmp_path / "other.json"
    other.write_text("three")
    publish(other, path)
    assert path.read_text() == "three" and not other.exists()


def test_build_once_recovers_a_killed_replacement(tmp_path: Path) -> None:
    pid = dead_pid()
    target = tmp_path / "model"
    old = tmp_path / f".model.old-{pid}-dddd"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"w")
    (old / "tokenizer.json").write_text("{}")
    folder_with(tmp_path / f".model.tmp-{pid}-eeee", "half")
    built: list[Path] = []
    assert build_once(target, built.append) == target
    assert built == [] and (target / "model.safetensors").read_bytes() == b"w"  # recovered, not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]


def test_the_sae_list_recovers_and_hides_leftovers(tmp_path: Path) -> None:
    pid = dead_pid()
    folder_with(tmp_path / f".sae-a.old-{pid}-ffff", "old")
    folder_with(tmp_path / f".sae-b.tmp-{pid}-0000", "half")
    assert [e["sae_id"] for e in list_local_saes(tmp_path)] == ["sae-a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae-a"]
    recover_children(tmp_path / "missing")  # nothing to do, no error
