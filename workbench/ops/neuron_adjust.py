"""Neuron Adjust (docs/methods/neuron_adjust.md): a run-time remap of gate pre-activations, not a weight edit.

For a selected neuron with gate value x = g_i and Gaussian fits of g_i on the forget set
(mu_f, sigma_f) and the retain set (mu_r, sigma_r): if N_f(x) >= N_r(x), replace x by its mirror
in the retain distribution x' = mu_r - (x - mu_f) * sigma_r / sigma_f, with probability
N_f / (N_r + N_f) (stochastic, seeded) or always when N_f > N_r (deterministic, ours, for
reproducible previews). Applied as a forward hook on the gate_proj output [batch, pos, d_mlp].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def normal_pdf(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Density of N(mean, std^2) at x (elementwise, broadcast)."""
    z = (x - mean) / std
    return torch.exp(-0.5 * z * z) / (std * math.sqrt(2.0 * math.pi))


def neuron_adjust_remap(
    g: torch.Tensor,  # [..., n] gate pre-activations of the selected neurons
    forget_mean: torch.Tensor,  # [n]
    forget_std: torch.Tensor,  # [n]
    retain_mean: torch.Tensor,  # [n]
    retain_std: torch.Tensor,  # [n]
    *,
    deterministic: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # [..., n]
    """Remap values that look like the forget distribution into the retain distribution."""
    x = g.float()
    n_f = normal_pdf(x, forget_mean, forget_std)
    n_r = normal_pdf(x, retain_mean, retain_std)
    mirror = retain_mean - (x - forget_mean) * retain_std / forget_std
    if deterministic:
        take = n_f > n_r
    else:
        p = n_f / (n_f + n_r).clamp_min(torch.finfo(torch.float32).tiny)
        draw = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        take = (n_f >= n_r) & (draw < p)
    return torch.where(take, mirror, x).to(g.dtype)


def make_gate_hook(
    neurons: list[int],
    forget_mean: list[float],
    forget_std: list[float],
    retain_mean: list[float],
    retain_std: list[float],
    *,
    deterministic: bool = True,
    seed: int = 0,
) -> Callable[[Any, Any, torch.Tensor], torch.Tensor]:
    """A forward hook for gate_proj: returns its output [batch, pos, d_mlp] with the selected
    neurons' columns remapped. The stochastic variant draws from its own seeded generator, so a
    preview with the same seed and input is reproducible."""
    idx = torch.tensor(neurons, dtype=torch.long)
    stats = [torch.tensor(s, dtype=torch.float32) for s in (forget_mean, forget_std, retain_mean, retain_std)]
    gen = torch.Generator().manual_seed(int(seed))

    def hook(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        out = output.clone()
        dev = out.device
        sel = out[..., idx.to(dev)]  # [..., n]
        fm, fs, rm, rs = (s.to(dev) for s in stats)
        out[..., idx.to(dev)] = neuron_adjust_remap(
            sel, fm, fs, rm, rs, deterministic=deterministic, generator=gen
        )
        return out

    return hook
