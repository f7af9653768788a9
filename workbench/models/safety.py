"""Refuse checkpoints that would unpickle: weights load from safetensors only."""

from __future__ import annotations

from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy")


class UnsafeCheckpointError(ValueError):
    """A checkpoint would need unpickling (arbitrary code execution) to load."""


def check_safetensors_folder(folder: Path) -> list[Path]:
    """Return the folder's safetensors files, or raise a clear error if it only has pickles."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder {folder} does not exist.")
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not safetensors:
        if pickles:
            names = ", ".join(p.name for p in pickles[:5])
            raise UnsafeCheckpointError(
                f"{folder} holds only pickle-based weights ({names}). Loading them could run "
                "arbitrary code, so the workbench refuses. Convert the checkpoint to "
                "safetensors in a trusted environment (save_pretrained(..., "
                "safe_serialization=True)) and point the workbench at that folder."
            )
        raise FileNotFoundError(f"{folder} has no *.safetensors weight files.")
    return safetensors


def refuse_pickle_file(path: Path) -> None:
    """Raise if a single user-supplied file is a pickle-based format."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeCheckpointError(
            f"{path.name} is a pickle-based file ({path.suffix}); the workbench only loads "
            "weights from .safetensors files."
        )
