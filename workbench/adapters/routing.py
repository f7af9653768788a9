"""Apply adapters inside a forward pass, per batch row, the way multi-LoRA servers batch.

    with route(bundle, [None, adapter]):        # row 0 = base, row 1 = edited
        logits = bundle.hf_model(input_ids=ids.repeat(2, 1)).logits

Each touched MLP output projection gets a thread-scoped tap (workbench.models.hooks) that adds
the delta of the adapter a row carries to that row's output: out[i] += h[i] @ Delta. Rows with
None see the base model. Nothing is written to the weights and nothing is visible to other
threads, so many requests (and an erase job's optimisation) share one model without a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from workbench.adapters.adapter import Adapter, AdapterError
from workbench.models import hooks, layout

DownProjEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h [.., d_mlp], out [.., d_model]) -> out


def _groups(row_adapters: Sequence[Adapter | None]) -> list[tuple[Adapter, torch.Tensor | None]]:
    """(adapter, row index or None for 'every row') for each distinct adapter in the batch."""
    order: dict[int, tuple[Adapter, list[int]]] = {}
    for i, ad in enumerate(row_adapters):
        if ad is not None and not ad.is_empty:
            order.setdefault(id(ad), (ad, []))[1].append(i)
    n = len(row_adapters)
    return [(ad, None if len(rows) == n else torch.tensor(rows, dtype=torch.long)) for ad, rows in order.values()]


@contextmanager
def route(bundle: Any, row_adapters: Sequence[Adapter | None]) -> Iterator[None]:
    """Within the block, this thread's forward passes apply row_adapters[i] to batch row i."""
    with _routed(bundle, _groups(row_adapters), len(row_adapters)):
        yield


@contextmanager
def use(bundle: Any, adapter: Adapter | None) -> Iterator[None]:
    """Every row of this thread's forward passes in the block uses `adapter` (None: the base)."""
    groups: list[tuple[Adapter, torch.Tensor | None]] = [] if adapter is None or adapter.is_empty else [(adapter, None)]
    with _routed(bundle, groups, None):
        yield


def _check_batch(out: torch.Tensor, n: int | None) -> None:
    if n is not None and out.shape[0] != n:
        raise AdapterError(f"The batch has {out.shape[0]} rows but {n} row adapters were routed.")


@contextmanager
def _routed(bundle: Any, groups: list[tuple[Adapter, torch.Tensor | None]], n: int | None) -> Iterator[None]:
    for ad, _ in groups:
        ad.check_model(bundle.weights_sha256)
    fns: dict[nn.Module, list[hooks.TapFn]] = {}
    layers = sorted({layer for ad, _ in groups for layer in ad.deltas})
    for layer in layers:
        members = [(ad.deltas[layer], idx) for ad, idx in groups if layer in ad.deltas]

        def add(_m: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor, members: Any = members) -> torch.Tensor:
            _check_batch(out, n)
            h = inputs[0]
            for delta, idx in members:
                if idx is None:
                    out = delta.add_to(h, out)
                else:
                    idx = idx.to(out.device)
                    out = out.index_copy(0, idx, delta.add_to(h.index_select(0, idx), out.index_select(0, idx)))
            return out

        fns.setdefault(layout.out_proj(bundle.hf_model, layer), []).append(add)
    for ad, idx in groups:
        for hk in ad.hooks:
            fn = hk.make()  # fresh per call: seeded hooks replay

            def adjust(m: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor, fn: Any = fn,
                       idx: torch.Tensor | None = idx) -> torch.Tensor:
                _check_batch(out, n)
                if idx is None:
                    return fn(m, inputs, out)
                idx = idx.to(out.device)
                sub = fn(m, (inputs[0].index_select(0, idx),), out.index_select(0, idx))
                return out.index_copy(0, idx, sub)

            fns.setdefault(layout.pre_activation_proj(bundle.hf_model, hk.layer), []).append(adjust)
    with hooks.taps(fns):
        yield


def _in_float32(edit: DownProjEdit) -> hooks.TapFn:
    def tap(_m: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if out.dtype == torch.float32:
            return edit(inputs[0], out)
        return edit(inputs[0].float(), out.float()).to(out.dtype)
    return tap


@contextmanager
def down_proj_edits(bundle: Any, edits: dict[int, DownProjEdit]) -> Iterator[None]:
    """Replace each layer's output-projection output by edit(h, out) in this thread's forward
    passes (h is the projection's input). Differentiable: the erase methods train through it.
    The edit computes in float32 whatever the weights' dtype (a bf16 model trains fp32 deltas)."""
    fns = {layout.out_proj(bundle.hf_model, layer): _in_float32(edit) for layer, edit in edits.items()}
    with hooks.taps(fns):
        yield
