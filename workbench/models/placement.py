"""Where the weights live and in which dtype: `--device cpu|cuda|auto`, `--dtype float32|bfloat16`.

bf16 halves the bytes every forward pass streams; on this CPU (avx512_bf16) the 262k-token
unembedding runs ~4x faster in bf16 than fp32, and a GPU runs bf16 natively. Edits compile in
the weights' dtype (edits/compile.py) and the weights hash is defined on the stored bytes, so
a bf16 load is a different model to a spec than the fp32 one.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is refused."""
    name = name.strip().lower()
    if name not in DEVICES:
        raise ValueError(f"Unknown device {name!r}: choose one of {', '.join(DEVICES)}.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("The CUDA device was asked for (--device cuda), but torch sees no GPU on this "
                           f"machine (torch {torch.__version__}). Use --device cpu or auto.")
    return name


def resolve_dtype(name: str) -> torch.dtype:
    """'float32' | 'bfloat16' (also 'fp32', 'bf16') -> the torch dtype."""
    key = {"fp32": "float32", "bf16": "bfloat16"}.get(name.strip().lower(), name.strip().lower())
    if key not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}: choose float32 or bfloat16.")
    return DTYPES[key]
