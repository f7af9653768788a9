"""A faster CPU path for the unembedding of a few rows at a time.

Decoding a batch of b rows multiplies h: [b, d_model] by the 262k-token unembedding
W_U: [vocab, d_model]. On CPU, `F.linear(h, W_U)` picks a slow kernel for small b > 1: on
this machine b = 2 took about twice as long as b = 1 (45 -> 97 ms), so batching the base and
edited rows of a preview bought nothing. `W_U @ h.T` reads W_U once for all b rows and stays
near the b = 1 time up to b of about 16 (bench/preview_bench.py measures both). Which kernel
wins depends on the CPU and its BLAS: on another machine of the same kind, F.linear at b = 2 was
the faster one (a preview pair at 15.7 vs 10.1 tok/s). So the choice is measured, not assumed:
`install_skinny_unembedding` times both kernels at 2-16 rows on the model's own unembedding
when a load asks for it (`tune_process=True`, as the app and the CLI do: models/process.py;
1-2 s), also allowing a batch to be padded to a row count that runs faster, and
installs the plan only where it beats plain F.linear somewhere. In bf16 the plain kernel is the
faster one, so only fp32 on CPU is considered. The result is the same product (float
summation order aside), so this is a speed choice, not a change of the model: it never touches
the weights. It does replace the head module's `forward` in place, which is why a library load
leaves it off unless asked.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SKINNY_MAX_ROWS = 16  # the batcher decodes at most 16 rows; beyond, F.linear as it is
BLOCK_ROWS = 32_768  # output features per block of the transposed product (2 MB at 16 rows)
BUCKETS = (2, 4, 8, 16)  # row counts the plan is measured at (larger ones left extra heap behind)
_ATTR = "_workbench_skinny"  # on the head: the installed plan (absent when not installed)

Plan = dict[int, tuple[str, int]]  # bucket -> (kernel 'linear' | 'skinny', rows computed: the bucket or a larger one)
ALWAYS_SKINNY: Plan = {b: ("skinny", b) for b in BUCKETS}


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  plan: Plan | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x with few rows on CPU, computed the way `plan` measured
    fastest for that many rows: F.linear or weight @ x.T, on the rows as they are or padded
    with zero rows to a larger count (fp32 F.linear took 95 ms for 8 rows but 53 ms for 16
    here, so 8 rows run as 16). Rows are independent, so padding changes no result.

    x: [..., d_in], weight: [d_out, d_in] -> [..., d_out]. `plan=None`: weight @ x.T always."""
    rows = x.numel() // max(1, x.shape[-1])
    if x.device.type != "cpu" or weight.dtype != torch.float32 or not 1 < rows <= SKINNY_MAX_ROWS:
        return F.linear(x, weight, bias)
    bucket = next(b for b in BUCKETS if b >= rows)
    kernel, computed = (plan or ALWAYS_SKINNY)[bucket]
    flat = x.reshape(rows, x.shape[-1])
    if computed > rows:
        flat = torch.cat([flat, flat.new_zeros(computed - rows, flat.shape[1])])
    if kernel == "linear":
        out = F.linear(flat, weight)[:rows].contiguous()  # [rows, d_out]
    else:
        out = _transposed_product(weight, flat, rows)
    if bias is not None:  # in place on the fresh output: `out + bias` held a second [rows, d_out]
        out = out.add_(bias) if not torch.is_grad_enabled() else out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _transposed_product(weight: torch.Tensor, flat: torch.Tensor, rows: int) -> torch.Tensor:
    """(weight @ flat.T).T[:rows] as a contiguous [rows, d_out], computed in blocks of weight's
    rows and copied into the output block by block: the whole [d_out, rows] product beside its
    contiguous copy held 2 x 16.8 MB at once for 16 rows of the 262k-token unembedding."""
    d_out = weight.shape[0]
    if torch.is_grad_enabled() and (weight.requires_grad or flat.requires_grad):
        return (weight @ flat.T).T[:rows].contiguous()  # autograd: one product, as before
    out = flat.new_empty(rows, d_out)
    for start in range(0, d_out, BLOCK_ROWS):
        part = weight[start:start + BLOCK_ROWS] @ flat.T  # [block, computed]
        out[:, start:start + BLOCK_ROWS] = part.T[:rows]
    return out


def measure_plan(weight: torch.Tensor, reps: int = 2) -> Plan:
    """Time both kernels at every bucket's row count (best of `reps`) and give each bucket the
    fastest (kernel, row count >= bucket). About 1-2 s for the 262k-token unembedding."""
    x = torch.randn(max(BUCKETS), weight.shape[1], dtype=weight.dtype)
    kernels = {"linear": lambda m: F.linear(x[:m], weight), "skinny": lambda m: _transposed_product(weight, x[:m], m)}
    times: dict[tuple[str, int], float] = {}
    with torch.no_grad():
        for name, fn in kernels.items():
            for m in BUCKETS:
                best = float("inf")
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn(m)
                    best = min(best, time.perf_counter() - t0)
                times[(name, m)] = best
    plan: Plan = {}
    for b in BUCKETS:
        plain = times[("linear", b)]
        choice = min((kr for kr in times if kr[1] >= b), key=lambda kr: times[kr])
        plan[b] = choice if times[choice] < 0.9 * plain else ("linear", b)  # win by 10% or stay plain
    return plan


def install_skinny_unembedding(hf_model: Any, *, calibrate: bool = True) -> bool:
    """Route the output embedding's forward through `skinny_linear` with the plan measured on
    this machine (`calibrate=False`: weight @ x.T always). Not installed where F.linear is the
    fastest at every row count, or off fp32 CPU. Idempotent; returns whether it is installed."""
    head = hf_model.get_output_embeddings()
    head = getattr(head, "_original_component", head)  # the bridge may wrap it
    if not isinstance(head, nn.Linear):
        return False
    if getattr(head, _ATTR, False):
        return True
    weight = head.weight.detach()
    if calibrate and (weight.device.type != "cpu" or weight.dtype != torch.float32):
        return False
    plan = measure_plan(weight) if calibrate else ALWAYS_SKINNY
    if all(plan[b] == ("linear", b) for b in BUCKETS):
        return False

    def forward(x: torch.Tensor, head: nn.Linear = head, plan: Plan = plan) -> torch.Tensor:
        return skinny_linear(x, head.weight, head.bias, plan)

    head.forward = forward  # type: ignore[method-assign,assignment]
    setattr(head, _ATTR, plan)  # what the load measured (the preview bench prints it)
    return True
