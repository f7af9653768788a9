"""The edit a user is building: an ordered list of spec operations kept in their own session.

`EditDraft` is plain Python (testable without Streamlit); `draft()` fetches the one stored in
`st.session_state`, so two browser sessions never share a draft. Turning a draft into an
EditSpec, a compiled Adapter and back goes through workbench.edits only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from workbench.config import Limits

SESSION_KEY = "edit_draft"


@dataclass
class EditDraft:
    name: str = "my-edit"
    notes: str = ""
    operations: list[Any] = field(default_factory=list)  # pydantic operation models, in order
    sae: Any = None  # SaeRef of the remove_sae_features operations (one SAE per edit)
    payload: dict[str, torch.Tensor] = field(default_factory=dict)  # tensors the operations name
    version: int = 0  # bumped on every change (compiled adapters are cached per version)
    chat_template: bool = False  # EditSpec.chat_template of the spec loaded (made through the chat template)
    concept: str = ""  # the concept the last erase put in this draft: the Edit page scores it by default

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
        self.payload.clear()
        self.sae = None
        self.chat_template = False
        self.version += 1

    @property
    def uses_sae(self) -> bool:
        return any(op.kind == "remove_sae_features" for op in self.operations)

    def use_sae(self, ref: Any) -> None:
        """Bind the edit to one SAE (id + sha256). Refused when its SAE operations use another."""
        if self.sae is not None and ref != self.sae and self.uses_sae:
            raise ValueError(f"This edit already removes features of SAE {self.sae.id!r}; one edit uses one "
                             "SAE. Remove those operations first, or start a new edit.")
        self.sae = ref

    def add_with_payload(self, ops: list[Any], payload: dict[str, torch.Tensor]) -> None:
        """Append operations that name payload tensors (e.g. an erase result), renaming tensors
        whose names the edit already uses so two erasures can be combined."""
        from workbench.edits.spec import OptimiseValueVectors, ProjectOutDirection

        taken = set(self.payload)
        prefix = "" if not taken & set(payload) else f"e{self.version}."
        renamed: list[Any] = []
        for op in ops:
            op = op.model_copy(deep=True)
            if prefix and isinstance(op, OptimiseValueVectors):
                for t in op.targets:
                    t.delta = prefix + t.delta
            if prefix and isinstance(op, ProjectOutDirection) and isinstance(op.direction, str):
                op.direction = prefix + op.direction
            renamed.append(op)
        self.payload.update({prefix + k: v for k, v in payload.items()})
        self.operations.extend(renamed)
        self.version += 1

    def to_spec(self, bundle: Any) -> Any:
        from workbench.edits.spec import EditSpec, ModelRef

        return EditSpec(
            name=self.name.strip() or "my-edit", notes=self.notes,
            model=ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256),
            sae=self.sae if self.uses_sae else None,
            operations=[op.model_copy(deep=True) for op in self.operations],
            chat_template=self.chat_template,
        )

    def load_spec(self, spec: Any, payload: dict[str, torch.Tensor] | None = None) -> None:
        self.name, self.notes = spec.name, spec.notes
        self.operations = [op.model_copy(deep=True) for op in spec.operations]
        self.sae = spec.sae
        self.payload = dict(payload or {})
        self.chat_template = bool(spec.chat_template)
        self.version += 1


def describe(op: Any) -> str:
    """One line for the operation list: the operation describes itself (edits/spec.py)."""
    return str(op.describe())


def continuation_markdown(prompt: str, text: str, cursor: bool = False) -> str:
    """Prompt, then the generated text in bold, as Markdown: markup characters escaped, and each
    line's outer spaces kept outside the bold (`** Paris **` would not render bold). Bold is
    opened and closed on every line, since Markdown ends emphasis at a paragraph break: one
    pair around text with a blank line in it shows its `**` literally."""
    def esc(t: str) -> str:
        return "".join("\\" + c if c in "\\`*_{}[]<>()#+-.!|~" else c for c in t)

    def bold(line: str) -> str:
        body = line.strip()
        if not body:
            return esc(line)
        start = line.find(body)
        return esc(line[:start]) + f"**{esc(body)}**" + esc(line[start + len(body):])

    shown = "\n".join(bold(line) for line in text.split("\n"))
    return (esc(prompt) + shown).replace("\n", "  \n") + ("▌" if cursor else "")


# --------------------------------------------------------------------- operation builders
def ablate(layer: int, neurons: list[int], mode: str = "zero") -> Any:
    from workbench.edits.spec import AblateValueVectors

    return AblateValueVectors(layer=layer, neurons=sorted(set(neurons)), mode=mode)


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
    """PISCES removal of hand-picked features. Unsigned (eta = +1): the neuron sign rule needs
    activations on the concept's text, which only the Erase page's 'pisces' method measures."""
    from workbench.edits.spec import RemoveSaeFeatures

    return RemoveSaeFeatures(layer=layer, features=sorted(set(features)), tau=tau, mu=mu, signed=False)


# --------------------------------------------------------------------- uploads
def _check_upload_bytes(data: bytes, limits: Limits, what: str) -> None:
    from workbench.edits.spec import SpecError

    if len(data) > limits.max_upload_bytes:
        raise SpecError(
            f"The {what} has {len(data):,} bytes; the upload limit is {limits.max_upload_bytes:,} bytes."
        )


def read_uploaded_spec(data: bytes, bundle: Any, limits: Limits, payload_data: bytes | None = None,
                       what: str = "uploaded spec file") -> tuple[Any, dict[str, torch.Tensor]]:
    """Parse and check an uploaded spec (and its payload file's bytes when it names one);
    returns (spec, payload). Raises SpecError with a sentence to act on, naming the spec as
    `what` ("uploaded spec file", or "pasted spec JSON" for the text box)."""
    from workbench.edits.spec import EditSpec, SpecError, unpack_payload

    _check_upload_bytes(data, limits, what)
    spec = EditSpec.from_json(data, what=f"The {what}")
    payload: dict[str, torch.Tensor] = {}
    if spec.payload is not None or spec.payload_names():
        if spec.payload is None:
            raise SpecError("The spec's operations reference payload tensors but the spec names no payload file.")
        if payload_data is None:
            raise SpecError(f"This spec needs its payload file {spec.payload.file!r} (safetensors): upload it "
                            "together with the JSON.")
        _check_upload_bytes(payload_data, limits, "payload file")
        payload = unpack_payload(spec, payload_data)
    spec.validate_for(bundle, payload=payload or None)
    return spec, payload


def split_uploads(files: list[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None]:
    """(spec bytes, payload bytes) from uploaded (name, bytes) pairs, told apart by extension."""
    from workbench.edits.spec import SpecError

    specs = [d for n, d in files if not n.lower().endswith(".safetensors")]
    payloads = [d for n, d in files if n.lower().endswith(".safetensors")]
    if len(specs) > 1 or len(payloads) > 1:
        raise SpecError("Upload one spec JSON and at most one .safetensors payload.")
    return (specs[0] if specs else None), (payloads[0] if payloads else None)


def draft() -> EditDraft:
    """This session's draft (created on first use)."""
    import streamlit as st

    if SESSION_KEY not in st.session_state:
        st.session_state[SESSION_KEY] = EditDraft()
    d: EditDraft = st.session_state[SESSION_KEY]
    return d


# the Edit page's widgets that show the draft's own fields; a loaded spec must show afresh in them
FORM_KEYS = ("ed_name", "ed_notes", "ed_chat")


def load_into_draft(spec: Any, payload: dict[str, torch.Tensor] | None = None) -> EditDraft:
    """Replace this session's draft with `spec` and drop the Edit page's form state, so its name,
    notes and chat box show the loaded spec's (a kept widget value would write the old name back)."""
    import streamlit as st

    d = draft()
    d.load_spec(spec, payload)
    for key in FORM_KEYS:
        st.session_state.pop(key, None)
    return d


def take_erase_result(result: Any, how: str = "replace") -> EditDraft:
    """Put an erase result (spec + payload) into this session's edit: `how="replace"` loads it as
    the whole edit (`load_into_draft`), `"add"` appends its operations (payload tensors renamed
    where the edit already uses their names). The draft remembers the erased concept, so the Edit
    page scores it by default. Raises ValueError, with the draft unchanged, when the result's SAE
    differs from the one the edit's SAE operations use. The Erase page's 'Replace my edit with
    this', 'Add to my edit' and 'Compare methods' → 'Use this edit' all come here."""
    if how not in ("replace", "add"):
        raise ValueError(f"Unknown way to take an edit {how!r}; 'replace' or 'add'.")
    spec = result.spec
    d = draft()
    if spec.sae is not None:
        d.use_sae(spec.sae)
    if how == "replace":
        d = load_into_draft(spec, result.payload)
    else:
        d.add_with_payload(list(spec.operations), result.payload)
        d.chat_template = d.chat_template or spec.chat_template
    d.concept = result.fact_set.concept
    return d
