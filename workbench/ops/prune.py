"""Prune neurons (docs/methods/neurostrike.md): zero a neuron's value vector.

Zeroing row i of W_out makes the neuron's contribution to the output exactly zero, whatever its
activation h_i, so pruning is a row-sparse delta on W_out like ablation (delta = -v_i). The
gate and linear keys are left as they are: the neuron still shows an activation in
`mlp.hook_post`, but nothing it computes reaches the residual stream.
"""

from __future__ import annotations

import torch


def prune_value_vectors(w_out: torch.Tensor, neurons: list[int]) -> torch.Tensor:  # w_out [m, d] -> [m, d]
    """A copy of W_out with the rows of `neurons` zeroed."""
    out = w_out.detach().clone()
    if neurons:
        out[torch.tensor(neurons, dtype=torch.long)] = 0.0
    return out
