"""A faster CPU path for the unembedding of a few rows at a time.

Decoding a batch of b rows multiplies h: [b, d_model] by the 262k-token unembedding
W_U: [vocab, d_model]. On CPU, `F.linear(h, W_U)` picks a slow kernel for small b > 1: on
this machine b = 2 took about twice as long as b = 1 (45 -> 97 ms), so batching the base and
edited rows of a preview bought nothing. `W_U @ h.T` reads W_U once for all b rows and stays
near the b = 1 time up to b of about 16 (bench/preview_bench.py measures both). In bf16 the
plain kernel is the faster one (13.8 vs 11.6 tok/s for a preview pair), so only fp32 on CPU
takes this path. The result is
the same product (float summation order aside), so this is a speed choice, not a change of the
model: it never touches the weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SKINNY_MAX_ROWS = 64  # measured faster than F.linear for every m in 2..64 (bench/preview_bench.py)
_ATTR = "_workbench_skinny"


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) computed as weight @ x.T when x has few rows on CPU.

    x: [..., d_in], weight: [d_out, d_in] -> [..., d_out]."""
    rows = x.numel() // max(1, x.shape[-1])
    if x.device.type != "cpu" or weight.dtype != torch.float32 or not 1 < rows <= SKINNY_MAX_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    out = (weight @ flat.T).T.contiguous()  # [rows, d_out]
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def install_skinny_unembedding(hf_model: Any) -> None:
    """Route the output embedding's forward through `skinny_linear` (idempotent)."""
    head = hf_model.get_output_embeddings()
    head = getattr(head, "_original_component", head)  # the bridge may wrap it
    if not isinstance(head, nn.Linear) or getattr(head, _ATTR, False):
        return

    def forward(x: torch.Tensor, head: nn.Linear = head) -> torch.Tensor:
        return skinny_linear(x, head.weight, head.bias)

    head.forward = forward  # type: ignore[method-assign]
    setattr(head, _ATTR, True)
