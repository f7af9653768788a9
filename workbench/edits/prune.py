"""Prune neurons (METHODS.md 2(f), NeuroStrike): zero a neuron's value vector and its keys.

Zeroing row i of W_out already makes the neuron's contribution zero; zeroing the matching gate
and linear keys as well makes h_i = GELU(0) * 0 = 0, so the neuron is dead in every hook too.
HF layout: gate_proj.weight and up_proj.weight are [d_mlp, d_model] (row i = key of neuron i).
"""

from __future__ import annotations

import torch


def prune_neurons(
    w_out: torch.Tensor,  # [m, d]
    gate_weight: torch.Tensor,  # [m, d] HF gate_proj.weight
    up_weight: torch.Tensor,  # [m, d] HF up_proj.weight
    neurons: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # edited copies, same shapes
    """Zero W_out rows and the matching gate/up rows of `neurons`."""
    idx = torch.tensor(neurons, dtype=torch.long)
    outs = []
    for t in (w_out, gate_weight, up_weight):
        c = t.detach().clone()
        if neurons:
            c[idx] = 0.0
        outs.append(c)
    return outs[0], outs[1], outs[2]
