"""Ablate value vectors (docs/methods/ablate_and_project.md): zero a W_out row, scale it, or add seeded noise.

Pure functions on a W_out matrix [d_mlp, d_model]; they return an edited copy.
"""

from __future__ import annotations

from typing import Literal

import torch

AblateMode = Literal["zero", "scale", "noise"]


def ablate_rows(
    w_out: torch.Tensor,  # [m, d]
    neurons: list[int],
    mode: AblateMode = "zero",
    *,
    scale: float = 0.0,
    noise_norm_ratio: float = 3.0,
    seed: int = 0,
) -> torch.Tensor:  # [m, d] edited copy
    """Edit rows `neurons` of W_out.

    'zero'  : v' = 0.
    'scale' : v' = scale * v.
    'noise' : v' = v + n, n ~ N(0, I) rescaled so ||n|| = noise_norm_ratio * ||v|| (ConceptVectors'
              causal check, with the noise size stated relative to the row, ours). Seeded: the
              noise of row i is drawn in the order of `neurons` from one torch.Generator(seed).
    """
    out = w_out.detach().clone()
    if not neurons:
        return out
    idx = torch.tensor(neurons, dtype=torch.long)
    if mode == "zero":
        out[idx] = 0.0
    elif mode == "scale":
        out[idx] = out[idx] * scale
    elif mode == "noise":
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(len(neurons), out.shape[1], generator=gen, dtype=torch.float32)  # [r, d]
        rows = out[idx].float()  # [r, d]
        target = noise_norm_ratio * rows.norm(dim=1, keepdim=True)  # [r, 1]
        noise = noise / noise.norm(dim=1, keepdim=True) * target
        out[idx] = (rows + noise).to(out.dtype)
    else:
        raise ValueError(f"Unknown ablation mode {mode!r}; use 'zero', 'scale' or 'noise'.")
    return out
