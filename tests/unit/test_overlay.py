"""Overlays on the tiny model: only touched params, composition, bit-exact revert, hooks, lock,
and causal checks (the edit has the effect its formula claims)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from workbench.edits import EditSpec, OverlayError, SpecError, apply_overlay, compile_spec, sae_sha256
from workbench.edits.overlay import resolve_attr
from workbench.edits.pisces import mu_for_layer, pisces_rewrite
from workbench.models import ModelBundle, layout
from workbench.models.hashing import tensor_sha256


class FakeSae:
    def __init__(self, d_in: int, d_sae: int, seed: int = 0, hook: str = "blocks.2.hook_mlp_out") -> None:
        g = torch.Generator().manual_seed(seed)
        self.cfg = SimpleNamespace(d_sae=d_sae, metadata=SimpleNamespace(hook_name=hook))
        self.W_enc = torch.randn(d_in, d_sae, generator=g)  # [d, F]
        self.W_dec = torch.randn(d_sae, d_in, generator=g) / d_in**0.5  # [F, d]
        self.b_enc = torch.zeros(d_sae)
        self.b_dec = torch.zeros(d_in)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.W_dec + self.b_dec


def spec_for(bundle: ModelBundle, ops: list[dict[str, Any]], **over: Any) -> EditSpec:
    raw = {"name": "t", "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256}, "operations": ops}
    raw.update(over)
    return EditSpec.from_dict(raw)


def logits(bundle: ModelBundle, text: str = "The cat sat on the mat and") -> torch.Tensor:
    ids = bundle.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return bundle.hf_model(ids).logits[0]  # [pos, vocab]


def all_hashes(bundle: ModelBundle) -> dict[str, str]:
    return {
        n: tensor_sha256(resolve_attr(bundle.hf_model, n))
        for layer in range(bundle.n_layers)
        for n in (layout.down_proj_name(layer), layout.gate_proj_name(layer), layout.up_proj_name(layer))
    }


def test_ablate_overlay_touches_one_param_and_reverts_bit_exactly(tiny_bundle: ModelBundle) -> None:
    before = all_hashes(tiny_bundle)
    base_logits = logits(tiny_bundle)
    spec = spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5]}])
    ov = compile_spec(spec, tiny_bundle)
    assert list(ov.tensors) == [layout.down_proj_name(1)]
    assert all_hashes(tiny_bundle) == before  # compiling does not touch the model
    assert sorted(r.neuron for r in ov.rows) == [3, 5]
    assert all(r.after_sha256 == tensor_sha256(torch.zeros(tiny_bundle.d_model)) for r in ov.rows)
    assert all(r.before_sha256 != r.after_sha256 for r in ov.rows)
    with apply_overlay(tiny_bundle, ov):
        w = layout.w_out(tiny_bundle.hf_model, 1)
        assert torch.equal(w[[3, 5]], torch.zeros(2, tiny_bundle.d_model))
        # the TransformerLens view sees the same edited weights
        assert torch.equal(tiny_bundle.bridge.blocks[1].mlp.W_out[[3, 5]], torch.zeros(2, tiny_bundle.d_model))
        edited_logits = logits(tiny_bundle)
    assert not torch.equal(edited_logits, base_logits)
    assert all_hashes(tiny_bundle) == before
    assert torch.equal(logits(tiny_bundle), base_logits)


def test_ops_on_the_same_layer_compose_in_order(tiny_bundle: ModelBundle) -> None:
    spec = spec_for(
        tiny_bundle,
        [
            {"kind": "ablate_value_vectors", "layer": 2, "neurons": [4], "mode": "scale", "scale": 2.0},
            {"kind": "ablate_value_vectors", "layer": 2, "neurons": [4, 6], "mode": "scale", "scale": 3.0},
        ],
    )
    base = layout.w_out(tiny_bundle.hf_model, 2).clone()
    ov = compile_spec(spec, tiny_bundle)
    new = ov.tensors[layout.down_proj_name(2)].T
    assert torch.allclose(new[4], base[4] * 6.0)
    assert torch.allclose(new[6], base[6] * 3.0)
    assert torch.equal(new[5], base[5])


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_revert_on_exceptions(tiny_bundle: ModelBundle, exc: BaseException) -> None:
    before = all_hashes(tiny_bundle)
    ov = compile_spec(spec_for(tiny_bundle, [{"kind": "prune_neurons", "layer": 0, "neurons": [1, 2]}]), tiny_bundle)
    with pytest.raises(type(exc)), apply_overlay(tiny_bundle, ov):
        assert all_hashes(tiny_bundle) != before
        raise exc
    assert all_hashes(tiny_bundle) == before


@pytest.mark.parametrize("verify", ["restore", "full", "none"])
def test_every_verify_mode_reverts_bit_exactly(tiny_bundle: ModelBundle, verify: str) -> None:
    before = all_hashes(tiny_bundle)
    ov = compile_spec(spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [0, 5]}]), tiny_bundle)
    with apply_overlay(tiny_bundle, ov, verify=verify):  # type: ignore[arg-type]
        assert all_hashes(tiny_bundle) != before
    assert all_hashes(tiny_bundle) == before


def test_prune_equals_zeroing_the_coefficient(tiny_bundle: ModelBundle) -> None:
    """Causal: pruning neuron i must equal forcing h_i = 0 (the input of down_proj) in the base."""
    layer, neurons = 2, [10, 20, 30]
    ov = compile_spec(spec_for(tiny_bundle, [{"kind": "prune_neurons", "layer": layer, "neurons": neurons}]), tiny_bundle)
    assert set(ov.tensors) == {layout.down_proj_name(layer), layout.gate_proj_name(layer), layout.up_proj_name(layer)}
    with apply_overlay(tiny_bundle, ov):
        pruned = logits(tiny_bundle)

    def zero_h(module: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        h = args[0].clone()
        h[..., neurons] = 0.0
        return (h,)

    down = layout.mlp_module(tiny_bundle.hf_model, layer).down_proj
    handle = down.register_forward_pre_hook(zero_h)
    try:
        zeroed = logits(tiny_bundle)
    finally:
        handle.remove()
    assert torch.allclose(pruned, zeroed, atol=1e-5)
    assert not torch.allclose(pruned, logits(tiny_bundle), atol=1e-4)


def test_project_out_removes_the_direction_after_the_post_norm(tiny_bundle: ModelBundle) -> None:
    """Causal: with w = gamma_post * u projected out of W_out, the MLP output that reaches the residual
    stream (after post_feedforward_layernorm) has no component along u."""
    layer = 1
    u = torch.randn(tiny_bundle.d_model, generator=torch.Generator().manual_seed(3))
    spec = spec_for(tiny_bundle, [{"kind": "project_out_direction", "layers": [layer], "direction": u.tolist()}])
    ov = compile_spec(spec, tiny_bundle)
    seen: list[torch.Tensor] = []
    norm = tiny_bundle.hf_model.model.layers[layer].post_feedforward_layernorm
    handle = norm.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        logits(tiny_bundle)
        with apply_overlay(tiny_bundle, ov):
            logits(tiny_bundle)
    finally:
        handle.remove()
    base_proj, edited_proj = (s[0] @ u for s in seen)  # [pos]
    assert base_proj.abs().max() > 1e-2
    assert edited_proj.abs().max() < 1e-4 * base_proj.abs().max() + 1e-5


def test_pisces_via_spec_matches_the_pure_function_and_checks_the_sae(tiny_bundle: ModelBundle) -> None:
    sae = FakeSae(tiny_bundle.d_model, 48)
    ref = {"id": "fake", "sha256": sae_sha256(sae)}
    op = {"kind": "remove_sae_features", "layer": 2, "features": [5, 9], "tau": 0.5, "mu": 8.0, "signed": False}
    spec = spec_for(tiny_bundle, [op], sae=ref)
    ov = compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: sae)
    expected = pisces_rewrite(
        layout.w_out(tiny_bundle.hf_model, 2),
        sae,
        [5, 9],
        tau=0.5,
        mu_layer=mu_for_layer(8.0, 2, tiny_bundle.n_layers, "relative"),
        gamma_post=layout.post_ffn_gain(tiny_bundle.hf_model, 2),
    )
    assert expected.rows
    assert torch.equal(ov.tensors[layout.down_proj_name(2)].T, expected.w_out)
    assert sorted({r.neuron for r in ov.rows}) == expected.rows
    assert ov.info[0]["rows"] == expected.rows

    with pytest.raises(SpecError, match="has hash"):
        compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: FakeSae(tiny_bundle.d_model, 48, seed=1))
    with pytest.raises(SpecError, match="needs an SAE"):
        compile_spec(spec, tiny_bundle)
    signed = spec_for(tiny_bundle, [{**op, "signed": True}], sae=ref)
    with pytest.raises(SpecError, match="no neuron_signs"):
        compile_spec(signed, tiny_bundle, sae_loader=lambda r, layer: sae)


def test_pisces_with_a_pre_norm_sae_edits_the_raw_rows(tiny_bundle: ModelBundle) -> None:
    """An SAE on mlp.hook_out reads h @ W_out itself, so PISCES works on the raw value vectors:
    the same as the pure function with a unit gain, and not the gain-aware rewrite."""
    sae = FakeSae(tiny_bundle.d_model, 48, hook="blocks.2.mlp.hook_out")
    op = {"kind": "remove_sae_features", "layer": 2, "features": [5, 9], "tau": 0.5, "mu": 8.0, "signed": False}
    spec = spec_for(tiny_bundle, [op], sae={"id": "fake", "sha256": sae_sha256(sae)})
    ov = compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: sae)
    w_out = layout.w_out(tiny_bundle.hf_model, 2)
    mu_l = mu_for_layer(8.0, 2, tiny_bundle.n_layers, "relative")
    raw = pisces_rewrite(w_out, sae, [5, 9], tau=0.5, mu_layer=mu_l, mode="reference")
    gained = pisces_rewrite(w_out, sae, [5, 9], tau=0.5, mu_layer=mu_l,
                            gamma_post=layout.post_ffn_gain(tiny_bundle.hf_model, 2))
    edited = ov.tensors[layout.down_proj_name(2)].T
    assert raw.rows and torch.allclose(edited, raw.w_out, atol=1e-6)
    assert not torch.allclose(edited, gained.w_out, atol=1e-4)
    for hook, why in [("blocks.2.mlp.hook_post", "MLP output"), ("blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out")]:
        other = FakeSae(tiny_bundle.d_model, 48, hook=hook)
        other_spec = spec_for(tiny_bundle, [op], sae={"id": "fake", "sha256": sae_sha256(other)})
        with pytest.raises(SpecError, match=why):
            compile_spec(other_spec, tiny_bundle, sae_loader=lambda r, layer, other=other: other)


def test_optimised_delta_payload(tiny_bundle: ModelBundle) -> None:
    delta = torch.randn(2, tiny_bundle.d_model)
    op = {"kind": "optimise_value_vectors", "targets": [{"layer": 3, "rows": [0, 9], "delta": "d3"}]}
    ov = compile_spec(spec_for(tiny_bundle, [op]), tiny_bundle, payload={"d3": delta})
    base = layout.w_out(tiny_bundle.hf_model, 3)
    new = ov.tensors[layout.down_proj_name(3)].T
    assert torch.allclose(new[[0, 9]], base[[0, 9]] + delta)
    with pytest.raises(SpecError, match=r"lacks tensors \['d3'\]"):
        compile_spec(spec_for(tiny_bundle, [op]), tiny_bundle)


def test_neuron_adjust_hook_lives_only_inside_the_context(tiny_bundle: ModelBundle) -> None:
    layer = 1
    gate = layout.mlp_module(tiny_bundle.hf_model, layer).gate_proj
    n_hooks = len(gate._forward_hooks)
    # forget distribution centred on everything: every gate value is remapped to mu_r - (x - mu_f)
    op = {
        "kind": "neuron_adjust",
        "runtime": [
            {
                "layer": layer,
                "neurons": [0, 1, 2],
                "forget_mean": [0.0] * 3,
                "forget_std": [100.0] * 3,
                "retain_mean": [50.0] * 3,
                "retain_std": [100.0] * 3,
            }
        ],
    }
    ov = compile_spec(spec_for(tiny_bundle, [op]), tiny_bundle)
    assert ov.has_runtime and not ov.tensors
    seen: list[torch.Tensor] = []
    base = logits(tiny_bundle)
    with apply_overlay(tiny_bundle, ov):
        assert len(gate._forward_hooks) == n_hooks + 1
        probe = gate.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
        try:
            edited = logits(tiny_bundle)
        finally:
            probe.remove()
    assert len(gate._forward_hooks) == n_hooks
    assert not torch.allclose(edited, base)
    assert torch.equal(logits(tiny_bundle), base)
    # x near 0 is forget-like (N(0,100) vs N(50,100)): x' = 50 - x
    x_base: list[torch.Tensor] = []
    probe = gate.register_forward_hook(lambda m, i, o: x_base.append(o.detach().clone()))
    try:
        logits(tiny_bundle)
    finally:
        probe.remove()
    assert torch.allclose(seen[0][..., :3], 50.0 - x_base[0][..., :3], atol=1e-5)
    assert torch.equal(seen[0][..., 3:], x_base[0][..., 3:])


def test_refuses_to_stack_on_other_edits_and_holds_the_lock(tiny_bundle: ModelBundle) -> None:
    before = all_hashes(tiny_bundle)
    a = compile_spec(spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [3]}]), tiny_bundle)
    b = compile_spec(spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [4]}]), tiny_bundle)
    other_thread_got_lock: list[bool] = []
    row4 = layout.w_out(tiny_bundle.hf_model, 1)[4].clone()
    with apply_overlay(tiny_bundle, a):
        t = threading.Thread(target=lambda: other_thread_got_lock.append(tiny_bundle.lock.acquire(blocking=False)))
        t.start()
        t.join()
        with pytest.raises(OverlayError, match="not the base tensor"), apply_overlay(tiny_bundle, b):
            pass
        assert torch.equal(layout.w_out(tiny_bundle.hf_model, 1)[4], row4)  # b was not applied
        assert layout.w_out(tiny_bundle.hf_model, 1)[3].abs().sum() == 0
    assert other_thread_got_lock == [False]
    assert all_hashes(tiny_bundle) == before


def test_revert_detects_tampering(tiny_bundle: ModelBundle) -> None:
    ov = compile_spec(spec_for(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 0, "neurons": [1]}]), tiny_bundle)
    name = layout.down_proj_name(0)
    param = resolve_attr(tiny_bundle.hf_model, name)
    original = param.data
    saved = original.clone()
    try:
        with pytest.raises(OverlayError, match="Revert failed"), apply_overlay(tiny_bundle, ov, verify="full"):
            # simulate a buggy caller that writes into the (swapped-out) base storage; only the
            # "full" check re-hashes after the revert (the default checks the storage came back)
            original[0, 0] += 1.0
    finally:
        original.copy_(saved)
    assert tensor_sha256(param) == ov.base_sha256[name]
