"""Adapter: what a compiled edit is. Per-layer factored deltas on the MLP output projection,
plus activation hooks for operations that are not weight deltas (Neuron Adjust).

An Adapter never writes the base weights. It is bound to the base weights hash and to the spec
it was compiled from; generation, the scorecard and the three exports (merged checkpoint, PEFT
LoRA folder, nnsight intervention) all consume it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.adapters.deltas import LayerDelta


class AdapterError(RuntimeError):
    """An adapter does not fit the model or batch it is used with."""


@dataclass(frozen=True)
class RowChange:
    """One edited neuron row (W_out row), hashed before and after the edit."""

    param: str
    layer: int
    neuron: int
    before_sha256: str
    after_sha256: str


@dataclass
class ActivationHook:
    """A run-time change of one MLP's gate pre-activations (not expressible as a weight delta).

    `make()` returns a fresh fn(module, inputs, output) -> output for each forward call that
    uses it, so seeded stochastic hooks replay identically per generation."""

    layer: int
    make: Callable[[], Callable[..., Any]]
    description: str = ""


@dataclass
class Adapter:
    """A compiled edit: {layer: LayerDelta} on W_out [d_mlp, d_model], plus activation hooks."""

    deltas: dict[int, LayerDelta] = field(default_factory=dict)
    hooks: list[ActivationHook] = field(default_factory=list)
    rows: list[RowChange] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)  # per-operation report
    spec_sha256: str | None = None
    model_sha256: str | None = None
    name: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.deltas and not self.hooks

    @property
    def has_runtime(self) -> bool:
        return bool(self.hooks)

    @property
    def layers(self) -> list[int]:
        return sorted(set(self.deltas) | {h.layer for h in self.hooks})

    def numel(self) -> int:
        return sum(d.numel() for d in self.deltas.values())

    def nbytes(self) -> int:
        """Bytes the deltas hold, in their own dtypes (row indices included)."""
        return sum(d.nbytes() for d in self.deltas.values())

    def forms(self) -> dict[int, str]:
        """{layer: 'RowDelta r=..' ...}: which factored form each layer's delta took."""
        return {layer: f"{type(d).__name__} rank {d.rank}" for layer, d in sorted(self.deltas.items())}

    def check_model(self, weights_sha256: str) -> None:
        if self.model_sha256 is not None and self.model_sha256 != weights_sha256:
            raise AdapterError("This adapter was compiled for a different model; compile the spec again.")

    def content_sha256(self) -> str:
        """Hash of the delta tensors (what the adapter adds), for tests and exports."""
        h = hashlib.sha256()
        for layer, d in sorted(self.deltas.items()):
            h.update(f"{layer}:{type(d).__name__}".encode())
            for t in vars(d).values():
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def merged_w_out(base_w_out: torch.Tensor, delta: LayerDelta) -> torch.Tensor:
    """W_out + Delta as a new tensor [d_mlp, d_model]; the base is not written."""
    return base_w_out + delta.dense(base_w_out.shape[0]).to(base_w_out.device, base_w_out.dtype)
