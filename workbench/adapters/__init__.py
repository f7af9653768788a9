"""Adapters: edits as factored deltas added in the forward pass of an immutable base model.

Below both generation and the edit methods: `workbench.edits` compiles a spec *down* to an
Adapter; generation, the scorecard and the exports consume it through `route`/`use`.
"""

from workbench.adapters.adapter import ActivationHook, Adapter, AdapterError, RowChange, merged_w_out
from workbench.adapters.deltas import DenseDelta, LayerDelta, LowRankDelta, RowDelta, factor_delta
from workbench.adapters.routing import down_proj_edits, route, use

__all__ = [
    "ActivationHook",
    "Adapter",
    "AdapterError",
    "DenseDelta",
    "LayerDelta",
    "LowRankDelta",
    "RowChange",
    "RowDelta",
    "down_proj_edits",
    "factor_delta",
    "merged_w_out",
    "route",
    "use",
]
