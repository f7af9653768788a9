"""Compile an EditSpec into an Overlay and apply it to a shared model, always reverting.

An Overlay holds replacement tensors for only the HF parameters an edit touches (e.g. three
`down_proj.weight`s), the SHA-256 of the base tensors they replace, and run-time hooks. Applying
swaps `param.data` in and back, O(touched params): no copy of the model. The base hashes are
checked before the swap (so an overlay is never applied on top of other edits) and after the
revert (proof that the base is bit-identical again). All of it happens under `bundle.lock`.

Operations compose in order: a second operation on the same layer edits the first one's result.
The registry `OP_COMPILERS` maps each spec `kind` to its compiler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from workbench.edits import ablate, pisces, project, prune, runtime
from workbench.edits.spec import (
    AblateValueVectors,
    EditSpec,
    NeuronAdjust,
    OptimiseValueVectors,
    ProjectOutDirection,
    PruneNeurons,
    RemoveSaeFeatures,
    SaeRef,
    SpecError,
    check_sae,
)
from workbench.models import layout
from workbench.models.hashing import tensor_sha256
from workbench.sae.catalogue import SAESite

log = logging.getLogger(__name__)

SaeLoader = Callable[[SaeRef, int], Any]  # (sae ref, layer) -> SAELens-like SAE


class OverlayError(RuntimeError):
    """The model's weights are not the ones an overlay was compiled for, or a revert failed."""


@dataclass(frozen=True)
class RowChange:
    """One edited neuron row (W_out row / gate or up key), hashed before and after."""

    param: str
    layer: int
    neuron: int
    before_sha256: str
    after_sha256: str


@dataclass
class RuntimeHook:
    """A forward hook to register on an HF module while the overlay is applied.

    `make` builds a fresh hook function per application, so seeded hooks replay identically.
    """

    module: str  # attribute path from the HF model, e.g. 'model.layers.3.mlp.gate_proj'
    make: Callable[[], Callable[..., Any]]
    description: str = ""


@dataclass
class Overlay:
    """Replacement tensors (HF parameter name -> tensor) plus hooks, bound to base hashes."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    base_sha256: dict[str, str] = field(default_factory=dict)
    hooks: list[RuntimeHook] = field(default_factory=list)
    rows: list[RowChange] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)  # per-operation report
    spec_sha256: str | None = None
    model_sha256: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.tensors and not self.hooks

    @property
    def has_runtime(self) -> bool:
        return bool(self.hooks)

    def touched_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


# ------------------------------------------------------------------ attribute paths
def resolve_attr(root: Any, path: str) -> Any:
    """Follow a dotted attribute path ('model.layers.3.mlp.down_proj.weight') from a module.

    Works through the TransformerLens bridge's wrappers, which delegate attribute access."""
    obj = root
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise OverlayError(f"The model has no {path!r} (failed at {part!r}).") from err
    return obj


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


# ------------------------------------------------------------------ compilation
@dataclass
class _Ctx:
    bundle: Any
    sae_loader: SaeLoader | None
    payload: dict[str, torch.Tensor]
    work: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> current tensor (float32)
    hooks: list[RuntimeHook] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)

    def current(self, name: str) -> torch.Tensor:
        if name in self.work:
            return self.work[name]
        return resolve_attr(self.bundle.hf_model, name).detach().float()

    def set(self, name: str, value: torch.Tensor) -> None:
        self.work[name] = value.float().contiguous()

    def w_out(self, layer: int) -> torch.Tensor:  # [m, d]
        return self.current(layout.down_proj_name(layer)).T

    def set_w_out(self, layer: int, value: torch.Tensor) -> None:  # value [m, d]
        self.set(layout.down_proj_name(layer), value.T)


def _compile_pisces(op: RemoveSaeFeatures, ctx: _Ctx, spec: EditSpec) -> None:
    ref = spec.sae_for(op)
    if ctx.sae_loader is None:
        raise SpecError(f"remove_sae_features on layer {op.layer} needs an SAE; pass sae_loader.")
    sae = ctx.sae_loader(ref, op.layer)
    check_sae(ref, sae, f"remove_sae_features on layer {op.layer}")
    d_sae = int(sae.W_enc.shape[1])
    bad = [f for f in op.features if f >= d_sae]
    if bad:
        raise SpecError(f"remove_sae_features on layer {op.layer}: features {bad[:5]} out of range (d_sae {d_sae}).")
    if op.signed and op.neuron_signs is None:
        raise SpecError(
            f"remove_sae_features on layer {op.layer} is signed but has no neuron_signs; measure "
            "the signs on the concept corpus first, or set signed=false."
        )
    bundle = ctx.bundle
    site = SAESite.of_sae(sae)
    if site.site == "mlp.hook_post" or site.layer != op.layer:
        raise SpecError(f"remove_sae_features on layer {op.layer} needs an SAE on that layer's MLP output "
                        f"(hook_mlp_out or mlp.hook_out); this SAE reads {site.hook_name}.")
    gamma = layout.post_ffn_gain(bundle.hf_model, op.layer)
    if site.site == "mlp.hook_out":  # pre-norm SAE: value vectors already live in its space
        gamma = torch.ones_like(gamma)
    mu_l = pisces.mu_for_layer(op.mu, op.layer, bundle.n_layers, op.schedule)
    res = pisces.pisces_rewrite(
        ctx.w_out(op.layer),
        sae,
        list(op.features),
        tau=op.tau,
        mu_layer=mu_l,
        gamma_post=gamma,
        mode=op.mode,
        feature_signs=list(op.feature_signs) if op.feature_signs else None,
        neuron_signs=dict(op.neuron_signs) if op.signed and op.neuron_signs is not None else None,
    )
    ctx.set_w_out(op.layer, res.w_out)
    ctx.info.append(
        {
            "kind": op.kind,
            "layer": op.layer,
            "rows": res.rows,
            "rows_per_feature": res.rows_per_feature,
            "M_l": res.scale,
            "mu_l": res.mu_layer,
        }
    )


def _compile_ablate(op: AblateValueVectors, ctx: _Ctx, spec: EditSpec) -> None:
    w = ablate.ablate_rows(
        ctx.w_out(op.layer),
        list(op.neurons),
        op.mode,
        scale=op.scale,
        noise_norm_ratio=op.noise_norm_ratio,
        seed=op.seed,
    )
    ctx.set_w_out(op.layer, w)
    ctx.info.append({"kind": op.kind, "layer": op.layer, "rows": sorted(set(op.neurons))})


def _compile_project(op: ProjectOutDirection, ctx: _Ctx, spec: EditSpec) -> None:
    if isinstance(op.direction, str):
        u = ctx.payload[op.direction].float()
    else:
        u = torch.tensor(op.direction, dtype=torch.float32)
    for layer in op.layers:
        gamma = layout.post_ffn_gain(ctx.bundle.hf_model, layer) if op.gain_aware else None
        w, rows = project.project_out(ctx.w_out(layer), u, alpha=op.alpha, gamma_post=gamma, tau=op.tau)
        ctx.set_w_out(layer, w)
        ctx.info.append({"kind": op.kind, "layer": layer, "rows": rows})


def _compile_prune(op: PruneNeurons, ctx: _Ctx, spec: EditSpec) -> None:
    gate_n, up_n = layout.gate_proj_name(op.layer), layout.up_proj_name(op.layer)
    w, g, u = prune.prune_neurons(ctx.w_out(op.layer), ctx.current(gate_n), ctx.current(up_n), list(op.neurons))
    ctx.set_w_out(op.layer, w)
    ctx.set(gate_n, g)
    ctx.set(up_n, u)
    ctx.info.append({"kind": op.kind, "layer": op.layer, "rows": sorted(set(op.neurons))})


def _compile_neuron_adjust(op: NeuronAdjust, ctx: _Ctx, spec: EditSpec) -> None:
    for i, lay in enumerate(op.runtime):
        def make(lay: Any = lay, i: int = i) -> Callable[..., Any]:
            return runtime.make_gate_hook(
                list(lay.neurons),
                list(lay.forget_mean),
                list(lay.forget_std),
                list(lay.retain_mean),
                list(lay.retain_std),
                deterministic=op.deterministic,
                seed=op.seed + i,
            )

        ctx.hooks.append(
            RuntimeHook(
                module=_module_of(layout.gate_proj_name(lay.layer)),
                make=make,
                description=f"neuron_adjust layer {lay.layer}: {len(lay.neurons)} neurons",
            )
        )
        ctx.info.append({"kind": op.kind, "layer": lay.layer, "neurons": list(lay.neurons)})


def _compile_optimised(op: OptimiseValueVectors, ctx: _Ctx, spec: EditSpec) -> None:
    for t in op.targets:
        w = ctx.w_out(t.layer).clone()
        idx = torch.tensor(t.rows, dtype=torch.long)
        w[idx] = w[idx] + ctx.payload[t.delta].float().to(w.device)  # [r, d]
        ctx.set_w_out(t.layer, w)
        ctx.info.append({"kind": op.kind, "layer": t.layer, "rows": sorted(set(t.rows))})


OP_COMPILERS: dict[str, Callable[[Any, _Ctx, EditSpec], None]] = {
    "remove_sae_features": _compile_pisces,
    "ablate_value_vectors": _compile_ablate,
    "project_out_direction": _compile_project,
    "prune_neurons": _compile_prune,
    "neuron_adjust": _compile_neuron_adjust,
    "optimise_value_vectors": _compile_optimised,
}


def _neuron_rows(name: str, t: torch.Tensor) -> torch.Tensor:
    """View a touched tensor with one row per neuron: down_proj [d, m] -> [m, d]; gate/up as is."""
    return t.T if name.endswith("down_proj.weight") else t


def _layer_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else -1


def compile_spec(
    spec: EditSpec,
    bundle: Any,
    sae_loader: SaeLoader | None = None,
    payload: dict[str, torch.Tensor] | None = None,
    *,
    check: bool = True,
) -> Overlay:
    """Compile a spec for this bundle into an Overlay (the base weights are not modified).

    Holds the model lock while reading base weights, so no other overlay is applied meanwhile.
    Raises SpecError for a spec that does not fit the model, SAE or payload.
    """
    payload = payload or {}
    if check:
        spec.validate_for(bundle, payload=payload)
    with bundle.lock:
        ctx = _Ctx(bundle=bundle, sae_loader=sae_loader, payload=payload)
        for op in spec.operations:
            OP_COMPILERS[op.kind](op, ctx, spec)
        overlay = Overlay(hooks=ctx.hooks, info=ctx.info, spec_sha256=spec.sha256(), model_sha256=bundle.weights_sha256)
        for name, new in ctx.work.items():
            param = resolve_attr(bundle.hf_model, name)
            base = param.detach()
            new = new.to(dtype=base.dtype, device=base.device).contiguous()
            if torch.equal(new, base):
                continue
            overlay.tensors[name] = new
            overlay.base_sha256[name] = tensor_sha256(base)
            b_rows, n_rows = _neuron_rows(name, base), _neuron_rows(name, new)
            changed = torch.nonzero((b_rows != n_rows).any(dim=1)).flatten().tolist()
            layer = _layer_of(name)
            overlay.rows.extend(
                RowChange(name, layer, i, tensor_sha256(b_rows[i]), tensor_sha256(n_rows[i])) for i in changed
            )
    return overlay


# ------------------------------------------------------------------ application
Verify = Literal["restore", "full", "none"]

@contextmanager
def apply_overlay(bundle: Any, overlay: Overlay, *, verify: Verify = "restore") -> Iterator[Overlay]:
    """Swap the overlay's tensors into the model (and register its hooks) for the `with` body.

    Holds `bundle.lock` throughout. Refuses to apply when a touched parameter is not the base it
    was compiled against (SHA-256 of each touched tensor, unless verify="none"). Always reverts
    (exceptions, KeyboardInterrupt). After the revert:
      "restore" (default)  checks that each parameter holds the very storage that was verified
                           before; while swapped out nothing in the model references it, so it is
                           still bit-identical to the base. Half the hashing of "full".
      "full"               hashes every reverted tensor again (tests, paranoid callers).
      "none"               no check before or after (benchmarks of the bare swap).
    """
    with bundle.lock:
        if overlay.model_sha256 is not None and overlay.model_sha256 != bundle.weights_sha256:
            raise OverlayError("This overlay was compiled for a different model; compile the spec again.")
        params = {name: resolve_attr(bundle.hf_model, name) for name in overlay.tensors}
        for name, p in params.items():
            if verify != "none" and tensor_sha256(p.data) != overlay.base_sha256[name]:
                raise OverlayError(
                    f"{name} is not the base tensor this overlay was compiled against (another edit "
                    "is applied, or the weights changed); nothing was applied."
                )
            new = overlay.tensors[name]
            if new.shape != p.data.shape or new.dtype != p.data.dtype or new.device != p.data.device:
                raise OverlayError(f"{name}: overlay tensor {tuple(new.shape)} does not match {tuple(p.shape)}.")
        originals: dict[str, torch.Tensor] = {}
        handles: list[Any] = []
        try:
            for name, p in params.items():
                originals[name] = p.data
                p.data = overlay.tensors[name]
            for h in overlay.hooks:
                module = resolve_attr(bundle.hf_model, h.module)
                handles.append(module.register_forward_hook(h.make()))
            yield overlay
        finally:
            for handle in handles:
                handle.remove()
            for name, t in originals.items():
                params[name].data = t
            if verify == "full":
                bad = [n for n in originals if tensor_sha256(params[n].data) != overlay.base_sha256[n]]
            elif verify == "restore":
                bad = [n for n, t in originals.items() if params[n].data.data_ptr() != t.data_ptr()]
            else:
                bad = []
            if bad:
                raise OverlayError(f"Revert failed: {bad} differ from the base weights.")


@contextmanager
def maybe_overlay(bundle: Any, overlay: Overlay | None) -> Iterator[Overlay | None]:
    """apply_overlay when an overlay is given, else just hold the lock (base model)."""
    if overlay is None:
        with bundle.lock:
            yield None
    else:
        with apply_overlay(bundle, overlay) as ov:
            yield ov
