"""What may be written as weights: the check both weight exports (checkpoint, LoRA) run first."""

from __future__ import annotations

from workbench.adapters import Adapter
from workbench.edits.spec import EditSpec


def check_exportable(adapter: Adapter, spec: EditSpec, into: str) -> None:
    """ValueError with a sentence when the adapter cannot be written as weights."""
    if adapter.has_runtime:
        raise ValueError(
            "This edit has run-time operations (neuron_adjust) that are hooks, not weights, so they "
            f"cannot be exported into {into}; remove them or export the spec instead."
        )
    if adapter.spec_sha256 is not None and adapter.spec_sha256 != spec.sha256():
        raise ValueError("The adapter was not compiled from this spec; compile the spec again before exporting.")
