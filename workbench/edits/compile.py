"""Compile an EditSpec into an Adapter: per-layer factored deltas on the MLP output projection.

Each operation's compiler computes the edited value vectors W_out: [d_mlp, d_model] of the
layers it touches from the current state (so operations compose in order: a second operation
on a layer edits the first one's result); at the end each layer's difference to the base is
stored in its smallest exact factored form (workbench.adapters.deltas: row-sparse for ablate,
prune, PISCES and optimise; rank 1 for project-out; rank <= keys for a key rewrite). Neuron
Adjust compiles to activation hooks. The base weights are only read, never written, so no lock
is needed. The registry `OP_COMPILERS` maps each spec `kind` to its compiler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.adapters import Adapter, RowChange, factor_delta
from workbench.adapters.adapter import ActivationHook, merged_w_out
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
from workbench.models.sites import SAESite
from workbench.ops import ablate, neuron_adjust, pisces, project, prune

log = logging.getLogger(__name__)

SaeLoader = Callable[[SaeRef, int], Any]  # (sae ref, layer) -> SAELens-like SAE


# ------------------------------------------------------------------ compilation
@dataclass
class _Ctx:
    bundle: Any
    sae_loader: SaeLoader | None
    payload: dict[str, torch.Tensor]
    work: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> edited W_out [m, d] (float32)
    # layer -> a delta [m, d] (float32) that only adds to W_out (payload deltas), kept apart from W
    # until another operation needs the edited weights: W + delta - W in float32 rounds, and
    # the rounding turns a rank-32 delta into a full-rank one when the delta is small against W
    added: dict[int, torch.Tensor] = field(default_factory=dict)
    hooks: list[ActivationHook] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)

    def w_out(self, layer: int) -> torch.Tensor:  # [m, d]
        if layer in self.work:
            return self.work[layer]
        w = layout.w_out(self.bundle.hf_model, layer).detach().float()
        if layer in self.added:  # an operation that rewrites W: the added delta joins the weights now
            self.work[layer] = w = w + self.added.pop(layer)
        return w

    def add_w_out(self, layer: int, rows: torch.Tensor, delta: torch.Tensor) -> None:  # rows [r], delta [r, d]
        """Add `delta` to W_out[rows] of `layer`."""
        if layer in self.work:
            w = self.work[layer].clone()
            w[rows] = w[rows] + delta.to(w.device)
            self.work[layer] = w
            return
        acc = self.added.get(layer)
        if acc is None:
            base = layout.w_out(self.bundle.hf_model, layer)
            acc = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
        acc[rows] = acc[rows] + delta.to(acc.device)
        self.added[layer] = acc

    def set_w_out(self, layer: int, value: torch.Tensor) -> None:  # value [m, d]
        self.work[layer] = value.float().contiguous()


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
    if site.decoder_site == "mlp.hook_post" or site.layer != op.layer:
        raise SpecError(f"remove_sae_features on layer {op.layer} needs an SAE or transcoder writing that layer's "
                        f"MLP output (hook_mlp_out or mlp.hook_out); this one reads {site.hook_name}.")
    gamma = layout.post_ffn_gain(bundle.hf_model, op.layer)
    if site.decoder_site == "mlp.hook_out":  # pre-norm: value vectors already live in its space
        gamma = torch.ones_like(gamma)
    mu_l = pisces.mu_for_layer(op.mu, op.layer, bundle.n_layers, op.schedule)
    if site.is_transcoder:  # decoder directions, not re-encoding (ops/pisces.transcoder_rewrite)
        dirs = pisces.unit_rows(sae.W_dec.detach()[list(op.features)])  # [n_f, d]
        res = pisces.transcoder_rewrite(
            ctx.w_out(op.layer), dirs, list(op.features), tau=op.tau, mu_layer=mu_l, gamma_post=gamma,
            feature_signs=list(op.feature_signs) if op.feature_signs else None,
            neuron_signs=dict(op.neuron_signs) if op.signed and op.neuron_signs is not None else None)
    else:
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
    # A pruned neuron's value vector is zero, so its gate and up keys no longer reach the
    # output: the adapter carries the W_out rows only (same function, one module per layer).
    ctx.set_w_out(op.layer, prune.prune_value_vectors(ctx.w_out(op.layer), list(op.neurons)))
    ctx.info.append({"kind": op.kind, "layer": op.layer, "rows": sorted(set(op.neurons))})


def _compile_neuron_adjust(op: NeuronAdjust, ctx: _Ctx, spec: EditSpec) -> None:
    for i, lay in enumerate(op.runtime):
        def make(lay: Any = lay, i: int = i) -> Callable[..., Any]:
            return neuron_adjust.make_gate_hook(
                list(lay.neurons),
                list(lay.forget_mean),
                list(lay.forget_std),
                list(lay.retain_mean),
                list(lay.retain_std),
                deterministic=op.deterministic,
                seed=op.seed + i,
            )

        ctx.hooks.append(
            ActivationHook(
                layer=lay.layer,
                make=make,
                description=f"neuron_adjust layer {lay.layer}: {len(lay.neurons)} neurons",
            )
        )
        ctx.info.append({"kind": op.kind, "layer": lay.layer, "neurons": list(lay.neurons)})


def _compile_optimised(op: OptimiseValueVectors, ctx: _Ctx, spec: EditSpec) -> None:
    for t in op.targets:
        idx = torch.tensor(t.rows, dtype=torch.long)
        ctx.add_w_out(t.layer, idx, ctx.payload[t.delta].float())  # [r, d]
        ctx.info.append({"kind": op.kind, "layer": t.layer, "rows": sorted(set(t.rows))})


OP_COMPILERS: dict[str, Callable[[Any, _Ctx, EditSpec], None]] = {
    "remove_sae_features": _compile_pisces,
    "ablate_value_vectors": _compile_ablate,
    "project_out_direction": _compile_project,
    "prune_neurons": _compile_prune,
    "neuron_adjust": _compile_neuron_adjust,
    "optimise_value_vectors": _compile_optimised,
}


def compile_spec(
    spec: EditSpec,
    bundle: Any,
    sae_loader: SaeLoader | None = None,
    payload: dict[str, torch.Tensor] | None = None,
    *,
    check: bool = True,
) -> Adapter:
    """Compile a spec for this bundle into an Adapter (the base weights are only read).

    Raises SpecError for a spec that does not fit the model, SAE or payload."""
    payload = payload or {}
    if check:
        spec.validate_for(bundle, payload=payload)
    ctx = _Ctx(bundle=bundle, sae_loader=sae_loader, payload=payload)
    for op in spec.operations:
        OP_COMPILERS[op.kind](op, ctx, spec)
    adapter = Adapter(hooks=ctx.hooks, info=ctx.info, spec_sha256=spec.sha256(),
                      model_sha256=bundle.weights_sha256, name=spec.name)
    for layer in sorted(ctx.work.keys() | ctx.added.keys()):  # a layer is in one of the two
        base = layout.w_out(bundle.hf_model, layer).detach()  # [m, d]
        diff = ctx.added[layer].to(base.dtype) if layer in ctx.added else ctx.work[layer].to(base.dtype) - base
        delta = factor_delta(diff)  # [m, d]
        if delta is None:
            continue
        adapter.deltas[layer] = delta
        after = merged_w_out(base, delta)
        name = layout.out_proj_name(bundle.hf_model, layer)
        changed = torch.nonzero((after != base).any(dim=1)).flatten().tolist()
        adapter.rows.extend(
            RowChange(name, layer, i, tensor_sha256(base[i]), tensor_sha256(after[i])) for i in changed
        )
    return adapter
