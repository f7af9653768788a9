"""A faster CPU path for the unembedding of a few rows at a time.

Decoding a batch of b rows multiplies h: [b, d_model] by the 262k-token unembedding
W_U: [vocab, d_model]. On CPU, `F.linear(h, W_U)` picks a slow kernel for small b > 1: on
this machine b = 2 took about twice as long as b = 1 (45 -> 97 ms), so batching the base and
edited rows of a preview bought nothing. `W_U @ h.T` reads W_U once for all b rows and stays
near the b = 1 time up to b of about 16 (bench/preview_bench.py measures both). Which kernel
wins depends on the CPU and its BLAS: on another machine of the same kind, F.linear at b = 2 was
the faster one (a preview pair at 15.7 vs 10.1 tok/s). So the choice is measured, not assumed:
`install_skinny_unembedding` times both on the model's own unembedding when it loads (about a
second) and installs the skinny path only where it is faster. In bf16 the plain kernel is the
faster one, so only fp32 on CPU is considered. The result is the same product (float
summation order aside), so this is a speed choice, not a change of the model: it never touches
the weights.
"""

from __future__ import annotations

import time
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


def skinny_is_faster(weight: torch.Tensor, rows: tuple[int, ...] = (2, 16), reps: int = 3) -> bool:
    """Whether `weight @ x.T` beats F.linear here for batches of `rows` rows (best of `reps`
    each, summed; skinny must win by 10% so noise does not flip the choice)."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    x = torch.randn(max(rows), weight.shape[1], dtype=weight.dtype)

    def best(fn: Any) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.no_grad():
        plain = sum(best(lambda m=m: F.linear(x[:m], weight)) for m in rows)
        skinny = sum(best(lambda m=m: (weight @ x[:m].T).T.contiguous()) for m in rows)
    return skinny < 0.9 * plain


def install_skinny_unembedding(hf_model: Any, *, calibrate: bool = True) -> bool:
    """Route the output embedding's forward through `skinny_linear` where it is measured to be
    faster on this machine (`calibrate=False`: always). Idempotent; returns whether it is installed."""
    head = hf_model.get_output_embeddings()
    head = getattr(head, "_original_component", head)  # the bridge may wrap it
    if not isinstance(head, nn.Linear):
        return False
    if getattr(head, _ATTR, False):
        return True
    if calibrate and not skinny_is_faster(head.weight.detach()):
        return False

    def forward(x: torch.Tensor, head: nn.Linear = head) -> torch.Tensor:
        return skinny_linear(x, head.weight, head.bias)

    head.forward = forward  # type: ignore[method-assign]
    setattr(head, _ATTR, True)
    return True
