"""Content hashes of weights and SAEs, defined on the tensors' stored bytes.

One definition for the model (`model_weights_sha256`), an SAE (`sae_sha256`) and a row
(`tensor_sha256`): tensors in name order, each as its little-endian bytes in the dtype it is
held in. float32 tensors hash their raw bytes alone (the hashes of every fp32 checkpoint and
spec written before dtypes existed stay valid); other dtypes prefix the dtype's name, so a
bf16 load of a checkpoint has its own hash and a spec bound to it says which weights it means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from workbench import atomic


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stored_bytes(t: torch.Tensor) -> bytes:
    """A tensor's values as held (little-endian, contiguous); non-fp32 dtypes carry their name."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.float32:
        return t.numpy().astype("<f4", copy=False).tobytes()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # bf16 has no numpy dtype
    return str(t.dtype).encode() + raw


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of one tensor's stored bytes."""
    return hashlib.sha256(stored_bytes(t)).hexdigest()


def named_tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """One hash over (name, stored bytes) pairs in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(stored_bytes(t))
    return h.hexdigest()


def sae_sha256(sae: Any) -> str:
    """The one content hash of an SAE or transcoder, local or pretrained: its state_dict.

    Objects without a state_dict (test doubles) hash W_enc, W_dec and any b_enc/b_dec/threshold."""
    if hasattr(sae, "state_dict"):
        return named_tensors_sha256(sae.state_dict().items())
    named = [(n, getattr(sae, n)) for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if hasattr(sae, n)]
    return named_tensors_sha256(named)


def model_weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every parameter (tied weights once) by canonical HF name, independent of the file
    format and of whether the TransformerLens bridge has wrapped the modules."""
    from workbench.models.layout import canonical_name

    return named_tensors_sha256((canonical_name(n), p) for n, p in model.named_parameters())


def cached_folder_hash(folder: Path, model: torch.nn.Module) -> str:
    """The weights hash of a checkpoint folder as loaded, cached beside it keyed by file size
    and mtime, one sidecar per dtype (the hash is on the stored bytes: a bf16 load has its own)."""
    files = sorted(folder.glob("*.safetensors"))
    key = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    sidecar = folder / ("workbench-weights-sha256.v2.json" if dtype == "float32"
                        else f"workbench-weights-sha256.v2.{dtype}.json")
    if sidecar.exists():
        try:
            cached = json.loads(sidecar.read_text())
            if cached.get("key") == key:
                return str(cached["sha256"])
        except (json.JSONDecodeError, KeyError):
            pass
    digest = model_weights_sha256(model)
    try:
        atomic.write_text(sidecar, json.dumps({"key": key, "sha256": digest}), durable=False)
    except OSError:
        pass  # read-only model folder: recompute next time
    return digest
