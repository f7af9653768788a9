"""What the users' exports hold on the server's disk: a per-owner quota and an expiry.

Exports live at `<exports_dir>/<owner>/<folder>` (jobs.export_dir). A checkpoint export is a
whole model (about 1 GB for Gemma 3 270M in float32), so on a server shared for days they would
fill the disk. Two bounds, both in `ExportLimits` (config.py):

- a quota per owner: an export that would take an owner past it is refused before anything is
  written, with a sentence that says how much is used and what to do;
- an expiry: export folders older than `ttl_s` (by their modification time, set when the export
  was published) are deleted by the job manager's periodic sweep and before each export.

Folders that `workbench.atomic` is still writing (`.NAME.tmp-*`) or setting aside are not
exports yet and are left to it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.config import ExportLimits

if TYPE_CHECKING:
    from workbench.adapters import Adapter
    from workbench.models import ModelBundle

MB = 1024 * 1024


class QuotaExceeded(ValueError):
    """An export would take its owner past `ExportLimits.quota_bytes`."""


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a file: its size; missing: 0). Links are not followed."""
    path = Path(path)
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for child in path.rglob("*"):
        try:
            if child.is_file() and not child.is_symlink():
                total += child.stat().st_size
        except FileNotFoundError:  # removed while walking (an expiry or a publish beside us)
            continue
    return total


def _exports(owner_dir: Path) -> Iterator[Path]:
    """The published export folders of one owner (not atomic.py's temporary siblings)."""
    if not owner_dir.is_dir():
        return
    for child in sorted(owner_dir.iterdir()):
        if not child.name.startswith("."):
            yield child


def owner_usage(exports_dir: Path, owner: str) -> int:
    """Bytes `owner`'s exports hold."""
    return sum(folder_bytes(p) for p in _exports(Path(exports_dir) / owner))


def owner_exports(exports_dir: Path, owner: str) -> list[tuple[Path, int, float]]:
    """`owner`'s export folders, newest first: (path, bytes, modified time)."""
    rows = [(p, folder_bytes(p), p.stat().st_mtime) for p in _exports(Path(exports_dir) / owner)]
    return sorted(rows, key=lambda r: -r[2])


def export_bytes(bundle: ModelBundle, adapter: Adapter, fmt: str) -> int:
    """About how many bytes an export writes: a checkpoint is every distinct weight tensor of the
    model (tied ones once) in its dtype, plus the tokenizer and config files of the checkpoint it
    was loaded from; a LoRA adapter at most a full-rank pair of float32 factors per changed layer
    (lora_A [r, d_mlp], lora_B [d_model, r])."""
    if fmt == "lora":
        d_mlp, d_model = bundle.d_mlp, bundle.d_model
        return len(adapter.deltas) * min(d_mlp, d_model) * (d_mlp + d_model) * 4
    seen: dict[int, int] = {}
    for tensor in [*bundle.hf_model.parameters(), *bundle.hf_model.buffers()]:
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    source = Path(bundle.path)
    files = [f for f in source.iterdir() if f.is_file() and f.suffix != ".safetensors"] if source.is_dir() else []
    return sum(seen.values()) + sum(f.stat().st_size for f in files)


def check_quota(exports_dir: Path, owner: str, need_bytes: int, limits: ExportLimits) -> None:
    """Raise QuotaExceeded when `owner`'s exports plus `need_bytes` would pass the quota. An
    export that replaces a folder of the same name counts its old size as freed."""
    used = owner_usage(exports_dir, owner)
    if used + need_bytes > limits.quota_bytes:
        raise QuotaExceeded(
            f"This export needs about {need_bytes / MB:,.0f} MB and your exports already use "
            f"{used / MB:,.0f} MB of your {limits.quota_bytes / MB:,.0f} MB quota on this server. Delete an "
            f"export you have downloaded (Edit & preview → Your exports), or wait: exports are deleted "
            f"{limits.ttl_s / 86400:g} days after they were written.")


def expire_exports(exports_dir: Path, limits: ExportLimits, now: float | None = None) -> list[Path]:
    """Delete every owner's export folders older than `limits.ttl_s`; returns what was deleted.
    Empty owner folders go too."""
    now = time.time() if now is None else now
    root = Path(exports_dir)
    gone: list[Path] = []
    if not root.is_dir():
        return gone
    for owner_dir in root.iterdir():
        if not owner_dir.is_dir() or owner_dir.name.startswith("."):
            continue
        for export in _exports(owner_dir):
            try:
                old = now - export.stat().st_mtime >= limits.ttl_s
            except FileNotFoundError:
                continue
            if old:
                remove_export(export)
                gone.append(export)
        try:
            owner_dir.rmdir()  # only when empty
        except OSError:
            pass
    return gone


def remove_export(path: Path) -> None:
    """Delete one export folder (or file)."""
    if Path(path).is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)


def delete_owner_export(exports_dir: Path, owner: str, name: str) -> None:
    """Delete `owner`'s export folder `name` (a bare folder name from `owner_exports`): a name
    that is not one of theirs is refused, so nobody deletes another user's export."""
    names = {p.name: p for p in _exports(Path(exports_dir) / owner)}
    if name not in names:
        raise ValueError(f"You have no export named {name!r} on this server.")
    remove_export(names[name])
