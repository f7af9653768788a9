"""EditSpec: the JSON unit users share (docs/architecture.md, "EditSpec and compile").

A spec names the base model (and SAE) by content hash and lists operations in order. Numbers
go in the JSON; tensors that numbers cannot describe well (a baked delta, a long direction) go
in a safetensors payload beside it, referenced by tensor name and bound by the payload file's
SHA-256, so a tampered payload is refused. Every model forbids unknown keys: a typo is an error.

Export the JSON Schema with
    python -c "from workbench.edits.spec import write_schema; write_schema()"
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from workbench import __version__, atomic
from workbench.config import REPO_ROOT
from workbench.models.hashing import sae_sha256

if TYPE_CHECKING:
    from workbench.models import ModelBundle

SCHEMA_ID: Literal["workbench.edit/1"] = "workbench.edit/1"
SCHEMA_PATH = REPO_ROOT / "schemas" / "edit-spec.schema.json"


class SpecError(ValueError):
    """A spec that cannot be read or does not fit the model/SAE; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelRef(_Strict):
    id: str = Field(description="Model id, e.g. 'gemma-3-270m'.")
    weights_sha256: str = Field(description="ModelBundle.weights_sha256 of the base weights.")


class SaeRef(_Strict):
    id: str = Field(description="SAE id in the workbench store, e.g. 'local/l6-mlp_out-bt4096'.")
    sha256: str = Field(description="Content hash of the SAE tensors (sae_sha256).")


class PayloadRef(_Strict):
    file: str = Field(description="safetensors file name, relative to the spec's folder.")
    sha256: str = Field(description="SHA-256 of the payload file's bytes.")
    tensors: list[str] = Field(default_factory=list, description="Tensor names it holds.")


NonNegInt = Annotated[int, Field(ge=0)]


def _short(items: list[int], n: int = 8) -> str:
    """'[1, 2, 3]', or the first `n` items and the count for a longer list."""
    head = ", ".join(str(i) for i in items[:n])
    return f"[{head}{', ...' if len(items) > n else ''}] ({len(items)})" if len(items) > n else f"[{head}]"


class _Operation(_Strict):
    """What every operation says about itself, so code that handles operations of any kind
    (validate_for, payload binding, the Edit page's list) asks the operation instead of
    switching on its class. A new kind answers these and joins the `Operation` union.
    Methods only: the JSON (and schema) of an operation is its fields."""

    def touched_layers(self) -> list[int]:
        """The layers it edits (or hooks), for range checks against the model."""
        raise NotImplementedError

    def touched_neurons(self) -> list[list[int]]:
        """The MLP neuron (W_out row) indices it names, one list per layer it names them on."""
        return []

    def payload_names(self) -> set[str]:
        """Names of the payload tensors it references."""
        return set()

    def describe(self) -> str:
        """One line for the Edit page's operation list."""
        raise NotImplementedError


class RemoveSaeFeatures(_Operation):
    """PISCES (docs/methods/pisces.md): rewrite the W_out rows that carry these SAE features."""

    kind: Literal["remove_sae_features"] = "remove_sae_features"
    layer: NonNegInt
    features: list[NonNegInt] = Field(min_length=1)
    tau: float = Field(0.9, gt=0.0, le=1.0, description="Row-selection threshold.")
    mu: float = Field(16.0, description="Edit magnitude before the layer schedule.")
    schedule: Literal["gemma26", "relative", "none"] = "relative"
    signed: bool = Field(True, description="Use neuron signs eta (needs neuron_signs).")
    mode: Literal["gain_aware", "reference"] = Field(
        "gain_aware", description="For an SAE on the post-norm hook_mlp_out: edit gamma_post * v_i "
        "('gain_aware') or the raw v_i ('reference', the PISCES code). For a pre-norm (mlp.hook_out) SAE the "
        "rows already live in the SAE's space and both modes are the same.")
    feature_signs: list[Literal[-1, 1]] | None = Field(
        None, description="s_f per feature (-1: feature promotes the concept). Default all -1."
    )
    neuron_signs: dict[int, Literal[-1, 0, 1]] | None = Field(
        None, description="eta per W_out row (majority sign of h_i on concept tokens); 0/missing -> +1."
    )
    sae: SaeRef | None = Field(None, description="SAE of this layer; default: the spec's sae.")

    @model_validator(mode="after")
    def _check(self) -> RemoveSaeFeatures:
        if self.feature_signs is not None and len(self.feature_signs) != len(self.features):
            raise ValueError(
                f"feature_signs has {len(self.feature_signs)} entries but features has {len(self.features)}."
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError("features lists a feature twice.")
        return self

    def touched_layers(self) -> list[int]:
        return [self.layer]

    def touched_neurons(self) -> list[list[int]]:
        return [list(self.neuron_signs)] if self.neuron_signs else []

    def describe(self) -> str:
        return f"remove SAE features {_short(self.features)} at layer {self.layer} (tau {self.tau:g}, mu {self.mu:g})"


class AblateValueVectors(_Operation):
    """Zero, scale or add seeded noise to W_out rows (docs/methods/ablate_and_project.md)."""

    kind: Literal["ablate_value_vectors"] = "ablate_value_vectors"
    layer: NonNegInt
    neurons: list[NonNegInt] = Field(min_length=1)
    mode: Literal["zero", "scale", "noise"] = "zero"
    scale: float = 0.0
    noise_norm_ratio: float = Field(3.0, ge=0.0)
    seed: int = 0

    def touched_layers(self) -> list[int]:
        return [self.layer]

    def touched_neurons(self) -> list[list[int]]:
        return [self.neurons]

    def describe(self) -> str:
        return f"ablate ({self.mode}) layer {self.layer} neurons {_short(self.neurons)}"


class ProjectOutDirection(_Operation):
    """W' = W - alpha (W w) w^T/||w||^2, w = gamma_post * u, on each listed layer (docs/methods/ablate_and_project.md)."""

    kind: Literal["project_out_direction"] = "project_out_direction"
    layers: list[NonNegInt] = Field(min_length=1)
    direction: list[float] | str = Field(
        description="u in residual coordinates [d_model], inline or a payload tensor name."
    )
    alpha: float = 1.0
    tau: float | None = Field(None, gt=0.0, le=1.0, description="Edit only rows aligned with u.")
    gain_aware: bool = Field(True, description="Project w = gamma_post * u (False: u itself).")

    def touched_layers(self) -> list[int]:
        return list(self.layers)

    def payload_names(self) -> set[str]:
        return {self.direction} if isinstance(self.direction, str) else set()

    def describe(self) -> str:
        name = self.direction if isinstance(self.direction, str) else f"{len(self.direction)}-d direction"
        return f"project out {name} from layers {_short(self.layers)} (alpha {self.alpha:g})"


class PruneNeurons(_Operation):
    """Zero the W_out rows (value vectors) of these neurons (NeuroStrike, docs/methods/neurostrike.md)."""

    kind: Literal["prune_neurons"] = "prune_neurons"
    layer: NonNegInt
    neurons: list[NonNegInt] = Field(min_length=1)

    def touched_layers(self) -> list[int]:
        return [self.layer]

    def touched_neurons(self) -> list[list[int]]:
        return [self.neurons]

    def describe(self) -> str:
        return f"prune layer {self.layer} neurons {_short(self.neurons)}"


class NeuronAdjustLayer(_Strict):
    layer: NonNegInt
    neurons: list[NonNegInt] = Field(min_length=1)
    forget_mean: list[float]
    forget_std: list[Annotated[float, Field(gt=0.0)]]
    retain_mean: list[float]
    retain_std: list[Annotated[float, Field(gt=0.0)]]

    @model_validator(mode="after")
    def _check(self) -> NeuronAdjustLayer:
        n = len(self.neurons)
        for name in ("forget_mean", "forget_std", "retain_mean", "retain_std"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Layer {self.layer}: {name} has {len(getattr(self, name))} values for {n} neurons.")
        return self


class NeuronAdjust(_Operation):
    """Run-time remap of gate pre-activations (docs/methods/neuron_adjust.md); a hook, not a weight edit."""

    kind: Literal["neuron_adjust"] = "neuron_adjust"
    runtime: list[NeuronAdjustLayer] = Field(min_length=1)
    deterministic: bool = True
    seed: int = 0

    def touched_layers(self) -> list[int]:
        return [r.layer for r in self.runtime]

    def touched_neurons(self) -> list[list[int]]:
        return [r.neurons for r in self.runtime]

    def describe(self) -> str:
        return "neuron adjust (run-time) " + ", ".join(f"L{r.layer}:{_short(r.neurons)}" for r in self.runtime)


class ValueVectorDelta(_Strict):
    layer: NonNegInt
    rows: list[NonNegInt] = Field(min_length=1)
    delta: str = Field(description="Payload tensor [len(rows), d_model] added to these W_out rows.")


class OptimiseValueVectors(_Operation):
    """Baked result of an optimisation of W_out rows: apply the stored deltas."""

    kind: Literal["optimise_value_vectors"] = "optimise_value_vectors"
    targets: list[ValueVectorDelta] = Field(min_length=1)
    params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Settings of the optimisation that produced the deltas."
    )

    def touched_layers(self) -> list[int]:
        return [t.layer for t in self.targets]

    def touched_neurons(self) -> list[list[int]]:
        return [t.rows for t in self.targets]

    def payload_names(self) -> set[str]:
        return {t.delta for t in self.targets}

    def describe(self) -> str:
        rows = sum(len(t.rows) for t in self.targets)
        target = self.params.get("target", "")
        return (f"optimised deltas on {rows} value vectors in layers {_short(self.touched_layers())}"
                + (f" ({target} target)" if target else ""))


Operation = Annotated[
    RemoveSaeFeatures
    | AblateValueVectors
    | ProjectOutDirection
    | PruneNeurons
    | NeuronAdjust
    | OptimiseValueVectors,
    Field(discriminator="kind"),
]
# The operation classes and their `kind`s, read from the union above (a new kind is added there only).
OPERATION_CLASSES: tuple[type[_Operation], ...] = get_args(get_args(Operation)[0])
OPERATION_KINDS: list[str] = [cls.model_fields["kind"].default for cls in OPERATION_CLASSES]


class EditSpec(_Strict):
    """An ordered list of edits of one base model, bound to it (and its SAE) by hash."""

    schema_: Literal["workbench.edit/1"] = Field(SCHEMA_ID, alias="schema")
    name: str = Field(min_length=1, max_length=200)
    model: ModelRef
    sae: SaeRef | None = None
    operations: list[Operation] = Field(default_factory=list)
    payload: PayloadRef | None = None
    created_by: str = Field(default_factory=lambda: f"workbench {__version__}")
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: str = ""
    chat_template: bool = Field(
        False, description="The edit was made with prompts sent through the tokenizer's chat template (the "
        "model's own fact samples and the scorecard's generations), as for an instruct model; preview it the "
        "same way. Provenance: the operations do not depend on it. Absent in older specs (= false).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # ---------------------------------------------------------------- JSON
    def to_json(self, indent: int = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "The edit spec") -> EditSpec:
        """Parse a spec; errors name what was given, the offending field path and what is expected."""
        if isinstance(text, bytes):
            text = spec_text(text, what)
        if not text.strip():
            raise SpecError(f"{what} is empty; expected a JSON object with schema, name, model and operations.")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{what} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.") from err
        return cls.from_dict(raw, what)

    @classmethod
    def from_dict(cls, raw: Any, what: str = "The edit spec") -> EditSpec:
        if not isinstance(raw, dict):
            given = {list: "a JSON list", str: "a JSON string", int: "a JSON number", float: "a JSON number",
                     bool: "a JSON boolean", type(None): "JSON null"}.get(type(raw), type(raw).__name__)
            hint = " (one spec per file; a spec holds a list of operations)" if isinstance(raw, list) else ""
            raise SpecError(f"{what} is {given}{hint}; expected a JSON object with schema, name, model "
                            "and operations.")
        if raw.get("schema") not in (None, SCHEMA_ID):
            raise SpecError(f"Unsupported spec schema {raw.get('schema')!r}; this workbench reads {SCHEMA_ID!r}.")
        for i, op in enumerate(raw.get("operations") or []):
            kind = op.get("kind") if isinstance(op, dict) else None
            if kind not in OPERATION_KINDS:
                raise SpecError(
                    f"operations[{i}] has unknown kind {kind!r}; known kinds: {', '.join(OPERATION_KINDS)}."
                )
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise SpecError(_explain(err)) from err

    def to_adapter(self, bundle: Any, payload: dict[str, torch.Tensor] | None = None,
                   saes_dir: Path | None = None) -> Any:
        """This spec compiled for `bundle` (`edits.compile.compile_spec`), with its payload
        tensors and SAEs from `saes_dir`: what `model.edited(spec)` applies."""
        from workbench.edits.compile import compile_spec
        from workbench.sae.sources import spec_sae_loader

        loader = spec_sae_loader(saes_dir) if saes_dir is not None else None
        return compile_spec(self, bundle, payload=payload or None, sae_loader=loader)

    def sha256(self) -> str:
        """Hash of what the spec does (name, provenance and notes excluded), for export metadata.
        `chat_template` is provenance too, so a spec hashes as it did before the field existed."""
        data = self.model_dump(mode="json", by_alias=True,
                               exclude={"created_by", "created_at", "notes", "name", "chat_template"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    # ---------------------------------------------------------------- checks
    def payload_names(self) -> set[str]:
        """Names of the payload tensors the operations reference."""
        names: set[str] = set()
        return names.union(*(op.payload_names() for op in self.operations))

    def sae_for(self, op: RemoveSaeFeatures) -> SaeRef:
        ref = op.sae or self.sae
        if ref is None:
            raise SpecError(f"remove_sae_features on layer {op.layer} names no SAE (set spec.sae or op.sae).")
        return ref

    def validate_for(
        self,
        bundle: ModelBundle,
        sae: Any | dict[int, Any] | None = None,
        payload: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Check the spec fits this model (hash, layers, neurons), the SAE(s) (hash, feature
        ids) and the payload (every referenced tensor present, right shape).

        `sae` is one SAE object (used for every layer) or {layer: SAE}. Raises SpecError.
        """
        if self.model.weights_sha256 != bundle.weights_sha256:
            raise SpecError(
                f"This edit was made for model {self.model.id!r} with weights "
                f"{self.model.weights_sha256[:12]}..., but the loaded model {bundle.model_id!r} has "
                f"{bundle.weights_sha256[:12]}...; load the same checkpoint, in the same --dtype, to apply it."
            )
        d_model = bundle.d_model
        for i, op in enumerate(self.operations):
            where = f"operations[{i}] ({op.kind})"
            try:
                for layer in op.touched_layers():
                    bundle.check_layer(layer)
                for neurons in op.touched_neurons():
                    bundle.check_neurons(neurons)
            except ValueError as err:
                raise SpecError(f"{where}: {err}") from err
            if isinstance(op, ProjectOutDirection) and isinstance(op.direction, list) and len(op.direction) != d_model:
                raise SpecError(f"{where}: direction has {len(op.direction)} values; d_model is {d_model}.")
            if isinstance(op, RemoveSaeFeatures) and sae is not None:
                ref = self.sae_for(op)
                obj = sae.get(op.layer) if isinstance(sae, dict) else sae
                if obj is None:
                    raise SpecError(f"{where}: no SAE given for layer {op.layer}.")
                check_sae(ref, obj, where)
                d_sae = int(obj.W_enc.shape[1])
                bad = [f for f in op.features if f >= d_sae]
                if bad:
                    raise SpecError(f"{where}: features {bad[:5]} are out of range: the SAE has {d_sae} features.")
                if int(obj.W_enc.shape[0]) != d_model:
                    raise SpecError(f"{where}: the SAE reads d_in={obj.W_enc.shape[0]}, the model has d_model={d_model}.")
        needed = self.payload_names()
        if needed:
            if payload is None:
                raise SpecError(f"The spec references payload tensors {sorted(needed)} but no payload was given.")
            missing = sorted(needed - set(payload))
            if missing:
                raise SpecError(f"The payload lacks tensors {missing}.")
        for op in self.operations:
            if isinstance(op, ProjectOutDirection) and isinstance(op.direction, str) and payload is not None:
                shape = tuple(payload[op.direction].shape)
                if shape != (d_model,):
                    raise SpecError(f"Payload direction {op.direction!r} has shape {shape}; expected ({d_model},).")
            if isinstance(op, OptimiseValueVectors) and payload is not None:
                for t in op.targets:
                    shape = tuple(payload[t.delta].shape)
                    if shape != (len(t.rows), d_model):
                        raise SpecError(
                            f"Payload delta {t.delta!r} has shape {shape}; expected ({len(t.rows)}, {d_model})."
                        )


# What a non-JSON file usually is, told by its first bytes.
_BINARY_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (a torch.save checkpoint is one)"),
    (b"GGUF", "a GGUF model file"),
    (b"\x89HDF", "an HDF5 file"),
)
UNPICKLING_KINDS = ("a zip archive (a torch.save checkpoint is one)", "a Python pickle")


def _is_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header."""
    return len(data) > 8 and data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data)


def binary_kind(data: bytes) -> str | None:
    """'a Python pickle', 'a safetensors file', ... for bytes that are not text; None otherwise.
    Safetensors is checked first: its header length can start with the pickle opcode 0x80."""
    if _is_safetensors(data):
        return "a safetensors file"
    if len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a Python pickle"
    return next((kind for magic, kind in _BINARY_KINDS if data.startswith(magic)), None)


def spec_text(data: bytes, what: str = "The edit spec") -> str:
    """The UTF-8 text of a spec file, or SpecError saying what the bytes are instead.

    Pickles and torch checkpoints are named and never unpickled; a safetensors file (the
    payload) is told apart from the JSON spec that should come with it."""
    expected = "expected the edit spec JSON (a text file with schema, name, model and operations)"
    if not data.strip():
        raise SpecError(f"{what} is empty; {expected}.")
    kind = binary_kind(data)
    if kind == "a safetensors file":
        raise SpecError(f"{what} is a safetensors file (an edit's payload), not JSON; {expected}, and "
                        "give the payload beside it.")
    if kind is not None:
        extra = " The workbench never unpickles files." if kind in UNPICKLING_KINDS else ""
        raise SpecError(f"{what} is {kind}, not JSON; {expected}.{extra}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{what} is binary, not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); "
                        f"{expected}.") from err
    if "\x00" in text:
        raise SpecError(f"{what} is binary (it holds NUL bytes), not JSON; {expected}.")
    return text.removeprefix("\ufeff")


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors()[:8]:
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in OPERATION_KINDS))
        lines.append(f"{loc or 'spec'}: {e['msg']}")
    more = "" if err.error_count() <= 8 else f" (and {err.error_count() - 8} more)"
    return "The edit spec is invalid: " + "; ".join(lines) + more + "."


def check_sae(ref: SaeRef, sae: Any, where: str = "spec") -> None:
    got = sae_sha256(sae)
    if got != ref.sha256:
        raise SpecError(
            f"{where}: SAE {ref.id!r} has hash {got[:12]}... but the spec was made with "
            f"{ref.sha256[:12]}...; load the SAE the edit was made with."
        )


# -------------------------------------------------------------------- files
def pack_payload(spec: EditSpec, payload: dict[str, torch.Tensor], file_name: str) -> tuple[EditSpec, bytes]:
    """The payload as safetensors bytes and a copy of `spec` bound to them (file name, sha256,
    tensor names). Only the tensors the operations reference are kept."""
    from safetensors.torch import save

    needed = spec.payload_names()
    missing = sorted(needed - set(payload))
    if missing:
        raise SpecError(f"The payload lacks tensors {missing} that the operations reference.")
    if Path(file_name).name != file_name:
        raise SpecError(f"Payload file {file_name!r} must be a plain file name.")
    data = save({k: payload[k].detach().float().contiguous().cpu() for k in sorted(needed)})
    spec = spec.model_copy(deep=True)
    spec.payload = PayloadRef(file=file_name, sha256=hashlib.sha256(data).hexdigest(), tensors=sorted(needed))
    return spec, data


def unpack_payload(spec: EditSpec, data: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a payload file's bytes, refused unless they are the bytes the spec names."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if spec.payload is None:
        raise SpecError("This spec names no payload file; it needs none.")
    kind = binary_kind(data)
    if kind in UNPICKLING_KINDS:  # a torch.save zip or a pickle given as the payload
        raise SpecError(f"The payload {spec.payload.file} is {kind}; the workbench never unpickles files. "
                        "Give the .safetensors payload that was exported with the spec.")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.payload.sha256:
        raise SpecError(
            f"The payload {spec.payload.file} has hash {digest[:12]}... but the spec expects "
            f"{spec.payload.sha256[:12]}...: it was changed or belongs to another spec."
        )
    try:
        payload = load(data)
    except SafetensorError as err:
        raise SpecError(f"The payload {spec.payload.file} is not a valid safetensors file: {err}.") from err
    missing = sorted(spec.payload_names() - set(payload))
    if missing:
        raise SpecError(f"The payload lacks tensors {missing} that the operations reference.")
    return payload


def save_spec(spec: EditSpec, path: Path, payload: dict[str, torch.Tensor] | None = None) -> EditSpec:
    """Write spec JSON (and its payload as `<stem>.payload.safetensors` beside it); returns the
    spec with the payload reference (name, sha256) filled in. Files are written via a temp name
    then renamed (workbench/atomic.py), so a crash leaves no half file."""
    path = Path(path)
    spec = spec.model_copy(deep=True)
    if spec.payload_names():
        if not payload:
            raise SpecError(f"The operations reference payload tensors {sorted(spec.payload_names())}; pass payload=.")
        pfile = path.with_name(path.stem + ".payload.safetensors")
        spec, data = pack_payload(spec, payload, pfile.name)
        atomic.write_bytes(pfile, data)
    else:
        spec.payload = None
    atomic.write_text(path, spec.to_json())
    return spec


def load_spec(path: Path) -> tuple[EditSpec, dict[str, torch.Tensor]]:
    """Read a spec and its payload; refuse a payload whose bytes do not match the spec's hash."""

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"Cannot read the edit spec {path}: {err.strerror}.") from err
    spec = EditSpec.from_json(data, what=f"The edit spec {path.name}")
    payload: dict[str, torch.Tensor] = {}
    if spec.payload is not None:
        pfile = path.parent / spec.payload.file
        if Path(spec.payload.file).name != spec.payload.file:
            raise SpecError(f"Payload file {spec.payload.file!r} must be a plain file name beside the spec.")
        if not pfile.exists():
            raise SpecError(f"The spec's payload {pfile} is missing; keep it beside the JSON file.")
        payload = unpack_payload(spec, pfile.read_bytes())
    missing = sorted(spec.payload_names() - set(payload))
    if missing:
        raise SpecError(f"The payload lacks tensors {missing} that the operations reference.")
    return spec, payload


# -------------------------------------------------------------------- schema
def json_schema() -> dict[str, Any]:
    """JSON Schema of EditSpec (as the JSON files look: 'schema' key, by alias)."""
    schema = TypeAdapter(EditSpec).json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return Path(path)
