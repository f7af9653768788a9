"""Publish folders and files whole: every folder and file the workbench publishes (exports, SAE
folders, converted checkpoints, job files, specs) goes through here.

A folder is filled under a private temporary sibling, `.NAME.tmp-<pid>-<hex>`, and renamed into
place in one step, so a reader never sees a half-written folder at its name. Replacing an
existing folder never deletes the old one before the new one is in place:

    1. NAME        -> .NAME.old-<pid>-<hex>   (the old folder, complete, set aside)
    2. .NAME.tmp-* -> NAME                    (the new folder, complete, in place)
    3. .NAME.old-* deleted

A process killed between 1 and 2 leaves NAME missing and its complete old copy under
`.NAME.old-*`; one killed between 2 and 3 leaves the new NAME plus a stale old copy. `recover`
(run by the next publish of NAME, by `build_once`, and by the readers of the SAE folder) puts
the old copy back in the first case, deletes it in the second, and deletes half-written
`.NAME.tmp-*` folders. It only touches leftovers of processes that are no longer running (the
pid in the name), so it never races a build in progress on the same machine.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.pause import pause_point

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


def _sibling(target: Path, mark: str) -> Path:
    return target.parent / f".{target.name}{mark}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_of(leftover: Path, mark: str) -> int | None:
    tail = leftover.name.rpartition(mark)[2]
    pid = tail.partition("-")[0]
    return int(pid) if pid.isdigit() else None


def _running(pid: int | None) -> bool:
    """Whether a process with this pid runs on this machine (this process counts: another of its
    threads may be publishing the same name right now)."""
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def leftovers(target: Path) -> list[Path]:
    """The temporary and set-aside siblings of `target` that dead processes left behind."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    out = []
    for mark in (TMP_MARK, OLD_MARK):
        for path in target.parent.glob(f".{target.name}{mark}*"):
            if not _running(_pid_of(path, mark)):
                out.append(path)
    return sorted(out)


def recover(target: Path) -> None:
    """Finish what a killed publish of `target` left: the newest complete old copy back in place
    when `target` is missing, then every dead process's temporary and old siblings deleted."""
    target = Path(target)
    stale = leftovers(target)
    olds = sorted((p for p in stale if OLD_MARK in p.name), key=lambda p: p.stat().st_mtime, reverse=True)
    if olds and not target.exists():
        olds[0].rename(target)  # killed between steps 1 and 2: the old folder is the complete one
        stale.remove(olds[0])
    for path in stale:
        _remove(path)


def recover_children(parent: Path) -> None:
    """`recover` for every name in `parent` that has leftovers (a reader's view of a folder of
    published folders, e.g. the SAE folder)."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    names = set()
    for path in parent.iterdir():
        for mark in (TMP_MARK, OLD_MARK):
            if path.name.startswith(".") and mark in path.name:
                names.add(path.name[1:].rpartition(mark)[0])
    for name in sorted(names):
        recover(parent / name)


def is_leftover(path: Path) -> bool:
    """Whether `path` is a temporary or set-aside sibling (readers list published names only)."""
    name = Path(path).name
    return name.startswith(".") and (TMP_MARK in name or OLD_MARK in name)


def publish(tmp: Path, target: Path) -> None:
    """Put the complete folder (or file) `tmp` at `target`, replacing what is there without ever
    deleting it first (the steps in the module docstring)."""
    tmp, target = Path(tmp), Path(target)
    if not target.exists():
        os.replace(tmp, target)
        return
    if target.is_file() and tmp.is_file():
        os.replace(tmp, target)  # one atomic step for files
        return
    old = _sibling(target, OLD_MARK)
    os.replace(target, old)
    pause_point(f"swap:{target.name}")
    os.replace(tmp, target)
    _remove(old)


@contextmanager
def atomic_folder(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; when the block ends without an exception it
    becomes `target` (replacing an existing one only with `overwrite=True`); on an exception it
    is deleted and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another folder or pass overwrite=True.")
    tmp = _sibling(target, TMP_MARK)
    tmp.mkdir()
    try:
        yield tmp
        pause_point(f"publish:{target.name}")
        publish(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file whole: to a temporary sibling, then one rename over `path`. `durable` also
    flushes it to the disk first (survives a power cut, not only a killed process); job progress
    files, rewritten every few seconds, skip that."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_MARK)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, durable: bool = True) -> None:
    """`write_bytes` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"), durable)
