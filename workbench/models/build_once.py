"""Build a checkpoint folder once, safely across processes: a file lock plus an atomic rename.

Two processes that start on an empty cache at the same moment (the app and `prepare`, two
test runs) must both end up with the same complete folder. The first takes the lock and
builds into a private temporary sibling, then renames it into place in one step
(`workbench.atomic.atomic_folder`); the second waits on the lock, says so, and finds the folder
complete when it gets the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from workbench.atomic import atomic_folder, recover

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
REQUIRED_FILES = ("model.safetensors", "tokenizer.json")


def is_complete(folder: Path) -> bool:
    """A checkpoint folder is complete when its weights and tokenizer exist (the rename that
    puts it in place is the last step of a build)."""
    return all((folder / name).exists() for name in REQUIRED_FILES)


def lock_for(target: Path) -> FileLock:
    """The inter-process lock that guards building `target` (a sibling `.NAME.lock` file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.parent / f".{target.name}.lock"))


def build_once(target: Path, build: Callable[[Path], None], say: Progress | None = None) -> Path:
    """Return `target`, building it with `build(tmp_folder)` if no process has yet.

    `build` fills an empty temporary folder; it becomes `target` by one rename, so a reader
    never sees a half-written checkpoint, and an interrupted build leaves only a temporary
    folder that the next build removes."""
    say = say or log.info
    if is_complete(target):
        return target
    lock = lock_for(target)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"Another process is building {target.name}; waiting for it to finish ...")
        lock.acquire()
    try:
        recover(target)  # a killed build's leftovers (workbench/atomic.py)
        if is_complete(target):
            return target
        # an incomplete folder (from an older workbench) is replaced, never deleted first
        with atomic_folder(target, overwrite=True) as tmp:
            build(tmp)
            if not is_complete(tmp):
                raise RuntimeError(f"Building {target.name} did not write {', '.join(REQUIRED_FILES)}.")
        return target
    finally:
        lock.release()

