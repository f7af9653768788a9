"""Write an export folder all at once: into a temporary sibling, then one rename.

A crash or Ctrl-C never leaves a half-written folder where a user (or vLLM) would load it,
and an existing folder is only replaced when the caller asks to overwrite it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.adapters import Adapter
from workbench.edits.spec import EditSpec


def check_exportable(adapter: Adapter, spec: EditSpec, into: str) -> None:
    """ValueError with a sentence when the adapter cannot be written as weights."""
    if adapter.has_runtime:
        raise ValueError(
            "This edit has run-time operations (neuron_adjust) that are hooks, not weights, so they "
            f"cannot be exported into {into}; remove them or export the spec instead."
        )
    if adapter.spec_sha256 is not None and adapter.spec_sha256 != spec.sha256():
        raise ValueError("The adapter was not compiled from this spec; compile the spec again before exporting.")


@contextmanager
def atomic_folder(out_dir: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes `out_dir` in one rename."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(trash)
            tmp.rename(out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
