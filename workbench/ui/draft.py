"""The edit a user is building: an ordered list of spec operations kept in their own session.

`EditDraft` is plain Python (testable without Streamlit); `draft()` fetches the one stored in
`st.session_state`, so two browser sessions never share a draft. Turning a draft into an
EditSpec, a compiled Overlay and back goes through workbench.edits only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.config import Limits

SESSION_KEY = "edit_draft"
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ / torch zip checkpoints


@dataclass
class EditDraft:
    name: str = "my-edit"
    notes: str = ""
    operations: list[Any] = field(default_factory=list)  # pydantic operation models, in order
    version: int = 0  # bumped on every change (compiled overlays are cached per version)

    def add(self, op: Any) -> None:
        self.operations.append(op)
        self.version += 1

    def remove(self, index: int) -> None:
        del self.operations[index]
        self.version += 1

    def move(self, index: int, delta: int) -> None:
        j = index + delta
        if 0 <= j < len(self.operations):
            ops = self.operations
            ops[index], ops[j] = ops[j], ops[index]
            self.version += 1

    def replace(self, index: int, op: Any) -> None:
        self.operations[index] = op
        self.version += 1

    def clear(self) -> None:
        self.operations.clear()
        self.version += 1

    def to_spec(self, bundle: Any) -> Any:
        from workbench.edits.spec import EditSpec, ModelRef

        return EditSpec(
            name=self.name.strip() or "my-edit", notes=self.notes,
            model=ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256),
            operations=[op.model_copy(deep=True) for op in self.operations],
        )

    def load_spec(self, spec: Any) -> None:
        self.name, self.notes = spec.name, spec.notes
        self.operations = [op.model_copy(deep=True) for op in spec.operations]
        self.version += 1


def describe(op: Any) -> str:
    """One line for the operation list."""
    kind = op.kind
    if kind == "ablate_value_vectors":
        return f"ablate ({op.mode}) layer {op.layer} neurons {_short(op.neurons)}"
    if kind == "prune_neurons":
        return f"prune layer {op.layer} neurons {_short(op.neurons)}"
    if kind == "project_out_direction":
        name = op.direction if isinstance(op.direction, str) else f"{len(op.direction)}-d direction"
        return f"project out {name} from layers {_short(op.layers)} (alpha {op.alpha:g})"
    if kind == "neuron_adjust":
        parts = [f"L{r.layer}:{_short(r.neurons)}" for r in op.runtime]
        return "neuron adjust (run-time) " + ", ".join(parts)
    if kind == "remove_sae_features":
        return f"remove SAE features {_short(op.features)} at layer {op.layer} (tau {op.tau:g}, mu {op.mu:g})"
    return kind


def _short(items: list[int], n: int = 8) -> str:
    head = ", ".join(str(i) for i in items[:n])
    return f"[{head}{', ...' if len(items) > n else ''}] ({len(items)})" if len(items) > n else f"[{head}]"


# --------------------------------------------------------------------- operation builders
def ablate(layer: int, neurons: list[int], mode: str = "zero") -> Any:
    from workbench.edits.spec import AblateValueVectors

    return AblateValueVectors(layer=layer, neurons=sorted(set(neurons)), mode=mode)  # type: ignore[arg-type]


def prune(layer: int, neurons: list[int]) -> Any:
    from workbench.edits.spec import PruneNeurons

    return PruneNeurons(layer=layer, neurons=sorted(set(neurons)))


def project_out(layers: list[int], direction: list[float], alpha: float = 1.0) -> Any:
    from workbench.edits.spec import ProjectOutDirection

    return ProjectOutDirection(layers=sorted(set(layers)), direction=[float(x) for x in direction], alpha=alpha)


def neuron_adjust(contrast: pd.DataFrame, min_std: float = 1e-4) -> Any:
    """A Neuron Adjust op from rows of Store.top_contrast_neurons (concept = forget, neutral =
    retain); rows grouped per layer."""
    from workbench.edits.spec import NeuronAdjust, NeuronAdjustLayer

    layers = []
    for layer, rows in contrast.groupby("layer"):
        layers.append(NeuronAdjustLayer(
            layer=int(layer), neurons=[int(n) for n in rows["neuron"]],
            forget_mean=[float(x) for x in rows["mean_pos"]],
            forget_std=[max(float(x), min_std) for x in rows["std_pos"]],
            retain_mean=[float(x) for x in rows["mean_neg"]],
            retain_std=[max(float(x), min_std) for x in rows["std_neg"]],
        ))
    return NeuronAdjust(runtime=layers)


def remove_features(layer: int, features: list[int], tau: float = 0.9, mu: float = 16.0) -> Any:
    from workbench.edits.spec import RemoveSaeFeatures

    return RemoveSaeFeatures(layer=layer, features=sorted(set(features)), tau=tau, mu=mu)


# --------------------------------------------------------------------- uploads
def read_uploaded_spec(data: bytes, bundle: Any, limits: Limits) -> Any:
    """Parse and check an uploaded spec file; raises SpecError with a sentence to act on."""
    from workbench.edits.spec import EditSpec, SpecError

    if len(data) > limits.max_upload_bytes:
        raise SpecError(
            f"The file has {len(data):,} bytes; the upload limit is {limits.max_upload_bytes:,} bytes. "
            "An edit spec is a small JSON file."
        )
    if data.startswith(PICKLE_MAGIC):
        raise SpecError("This looks like a pickle or torch checkpoint; the workbench never unpickles "
                        "uploads. Upload the edit spec JSON instead.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"The file is not UTF-8 text (byte {err.start}); upload the edit spec JSON.") from err
    spec = EditSpec.from_json(text)
    if spec.payload is not None or spec.payload_names():
        raise SpecError("This spec needs a safetensors payload file beside it; uploads of specs with "
                        "payloads are not supported in the app yet (use the CLI).")
    spec.validate_for(bundle)
    return spec


def draft() -> EditDraft:
    """This session's draft (created on first use)."""
    import streamlit as st

    if SESSION_KEY not in st.session_state:
        st.session_state[SESSION_KEY] = EditDraft()
    return st.session_state[SESSION_KEY]  # type: ignore[no-any-return]
