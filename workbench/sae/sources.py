"""Where SAEs come from: a local folder in SAELens format, or a pretrained SAELens release
(when the hub is reachable or the files are already in the local HF cache).

Every loader returns (SAE, sae_id, `sae_sha256`: the one SAE hash, on its tensors) so an EditSpec can bind an SAE
by content. Weights are read from safetensors only; a folder holding pickles is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workbench.models.hashing import sae_sha256

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


class SAELoadError(RuntimeError):
    """An SAE could not be loaded; the message says what to do."""


def check_sae_folder(path: Path) -> None:
    """Raise SAELoadError unless `path` is an SAELens folder with safetensors weights and a
    readable cfg.json."""
    path = Path(path)
    if not path.is_dir():
        raise SAELoadError(f"SAE folder {path} does not exist. Train one with "
                           "`python -m workbench sae train --layer 6` or give an SAELens folder.")
    weights = path / WEIGHTS_FILE
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if not weights.exists():
        if pickles:
            raise SAELoadError(f"SAE folder {path} holds pickled weights ({', '.join(pickles)}), "
                               "which the workbench never loads; convert them to "
                               f"{WEIGHTS_FILE} (safetensors).")
        raise SAELoadError(f"SAE folder {path} has no {WEIGHTS_FILE}: it is not an SAELens SAE folder.")
    cfg = path / CONFIG_FILE
    if not cfg.exists():
        raise SAELoadError(f"SAE folder {path} has no {CONFIG_FILE}.")
    try:
        data = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SAELoadError(f"{cfg} is not valid JSON ({err}); the SAE folder is corrupt.") from err
    for key in ("d_in", "d_sae", "architecture"):
        if key not in data:
            raise SAELoadError(f"{cfg} lacks {key!r}; the SAE folder is corrupt or not SAELens format.")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            keys = set(f.keys())
    except Exception as err:  # safetensors raises several types on a damaged header
        raise SAELoadError(f"{weights} is not a readable safetensors file ({err}); "
                           "the SAE folder is corrupt: delete it and train again.") from err
    missing = {"W_enc", "W_dec", "b_dec"} - keys
    if missing:
        raise SAELoadError(f"{weights} lacks tensors {sorted(missing)}; the SAE folder is corrupt.")


def load_local_sae(path: Path, device: str = "cpu") -> tuple[Any, str, str]:
    """Load an SAELens folder -> (SAE, sae_id = folder name, sae_sha256)."""
    from sae_lens import SAE

    path = Path(path)
    check_sae_folder(path)
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except Exception as err:  # shape mismatches, unknown architectures ...
        raise SAELoadError(f"SAELens could not load {path}: {err}") from err
    sae.eval()
    return sae, path.name, sae_sha256(sae)


def list_local_saes(saes_dir: Path) -> list[dict[str, Any]]:
    """Trained/imported SAE folders under `saes_dir` with their training config and metrics."""
    out: list[dict[str, Any]] = []
    if not Path(saes_dir).is_dir():
        return out
    for folder in sorted(Path(saes_dir).iterdir()):
        if not folder.is_dir() or folder.name.endswith(".partial"):
            continue
        entry: dict[str, Any] = {"sae_id": folder.name, "path": str(folder)}
        for name in ("workbench_train_config.json", "workbench_metrics.json", CONFIG_FILE):
            f = folder / name
            if f.exists():
                try:
                    entry[name.removesuffix(".json")] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    entry["error"] = f"{name} is not valid JSON"
        if not (folder / WEIGHTS_FILE).exists():
            entry["error"] = f"no {WEIGHTS_FILE}"
        out.append(entry)
    return out


def load_pretrained_sae(release: str, sae_id: str, device: str = "cpu") -> tuple[Any, str, str]:
    """A release from SAELens's registry (e.g. Gemma Scope 2). Works when the hub is reachable
    or the files are already in the local HF cache; otherwise raises SAELoadError saying so."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = [r for r in directory if release.lower() in r.lower()][:8]
        hint = f" Releases like it: {', '.join(close)}." if close else ""
        raise SAELoadError(f"SAELens has no release {release!r}.{hint}")
    known = directory[release].saes_map
    if sae_id not in known:
        raise SAELoadError(f"Release {release!r} has no SAE {sae_id!r}; it has e.g. {list(known)[:5]}.")
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as err:  # offline hub, missing cache, HTTP errors ...
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is switched off (HF_HUB_OFFLINE=1) and the files are not in the local HF cache" \
            if offline else "the hub is unreachable and the files are not in the local HF cache"
        raise SAELoadError(f"Cannot load {release}/{sae_id}: {why} ({type(err).__name__}: {err}). "
                           "Train a local SAE instead (`python -m workbench sae train`).") from err
    sae.eval()
    return sae, f"{release}/{sae_id}", sae_sha256(sae)
