"""Content hashes of weights: float32 little-endian bytes, so a hash means the same numbers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's values as contiguous float32 little-endian bytes."""
    data = t.detach().to(torch.float32).contiguous().cpu().numpy()
    return hashlib.sha256(data.astype("<f4", copy=False).tobytes()).hexdigest()


def named_tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """One hash over (name, values) pairs in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode())
        data = t.detach().to(torch.float32).contiguous().cpu().numpy()
        h.update(data.astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def model_weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every parameter (tied weights once) by canonical HF name, independent of the file
    format and of whether the TransformerLens bridge has wrapped the modules."""
    from workbench.models.layout import canonical_name

    return named_tensors_sha256((canonical_name(n), p) for n, p in model.named_parameters())


def cached_folder_hash(folder: Path, model: torch.nn.Module) -> str:
    """The weights hash of a checkpoint folder, cached beside it keyed by file size and mtime."""
    files = sorted(folder.glob("*.safetensors"))
    key = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    sidecar = folder / "workbench-weights-sha256.v2.json"
    if sidecar.exists():
        try:
            cached = json.loads(sidecar.read_text())
            if cached.get("key") == key:
                return str(cached["sha256"])
        except (json.JSONDecodeError, KeyError):
            pass
    digest = model_weights_sha256(model)
    try:
        sidecar.write_text(json.dumps({"key": key, "sha256": digest}))
    except OSError:
        pass  # read-only model folder: recompute next time
    return digest
