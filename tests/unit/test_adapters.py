"""Adapters on the tiny model: each operation compiles to the factored form it claims, the base
weights are never written, an adapter in a forward pass equals the merged checkpoint, and it
reaches only the batch rows and the thread that carry it. Causal checks: the edit has the
effect its formula claims."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.adapters import AdapterError, LowRankDelta, RowDelta, factor_delta, merged_w_out, route, use
from workbench.edits import Adapter, EditSpec, SpecError, compile_spec, sae_sha256
from workbench.exports import edited_state
from workbench.models import ModelBundle, hooks, layout
from workbench.models.hashing import model_weights_sha256, tensor_sha256
from workbench.ops.pisces import mu_for_layer, pisces_rewrite

TEXT = "The cat sat on the mat and"


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


def compiled(bundle: ModelBundle, ops: list[dict[str, Any]], **kw: Any) -> Adapter:
    return compile_spec(spec_for(bundle, ops), bundle, **kw)


def ids_for(bundle: ModelBundle, text: str = TEXT) -> torch.Tensor:
    return bundle.tokenizer(text, return_tensors="pt").input_ids  # [1, pos]


def logits(bundle: ModelBundle, ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return bundle.hf_model(ids if ids is not None else ids_for(bundle)).logits  # [b, pos, vocab]


@pytest.fixture(scope="module")
def merged(tiny_bundle: ModelBundle) -> Iterator[Any]:
    """fn(adapter, ids) -> logits of a separate plain-transformers copy with the adapter merged."""
    copy = AutoModelForCausalLM.from_pretrained(tiny_bundle.path).eval()
    base_state = {k: v.clone() for k, v in copy.state_dict().items()}

    def run(adapter: Adapter, ids: torch.Tensor) -> torch.Tensor:
        tensors, _ = edited_state(tiny_bundle, adapter)
        copy.load_state_dict(base_state)
        copy.load_state_dict(tensors, strict=False)
        with torch.no_grad():
            return copy(ids).logits

    yield run


def test_ablate_is_a_row_delta_and_never_writes_the_base(tiny_bundle: ModelBundle, merged: Any) -> None:
    before = model_weights_sha256(tiny_bundle.hf_model)
    base_logits = logits(tiny_bundle)
    ad = compiled(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5]}])
    assert set(ad.deltas) == {1} and isinstance(ad.deltas[1], RowDelta)
    assert ad.deltas[1].rows.tolist() == [3, 5]
    assert ad.forms() == {1: "RowDelta rank 2"}
    assert sorted(r.neuron for r in ad.rows) == [3, 5]
    assert all(r.after_sha256 == tensor_sha256(torch.zeros(tiny_bundle.d_model)) for r in ad.rows)
    with use(tiny_bundle, ad):
        edited = logits(tiny_bundle)
    assert not torch.allclose(edited, base_logits, atol=1e-4)
    assert torch.allclose(edited, merged(ad, ids_for(tiny_bundle)), atol=1e-4)
    assert torch.equal(logits(tiny_bundle), base_logits)
    assert model_weights_sha256(tiny_bundle.hf_model) == before


def test_ops_on_the_same_layer_compose_in_order(tiny_bundle: ModelBundle) -> None:
    ad = compiled(
        tiny_bundle,
        [
            {"kind": "ablate_value_vectors", "layer": 2, "neurons": [4], "mode": "scale", "scale": 2.0},
            {"kind": "ablate_value_vectors", "layer": 2, "neurons": [4, 6], "mode": "scale", "scale": 3.0},
        ],
    )
    base = layout.w_out(tiny_bundle.hf_model, 2)
    new = merged_w_out(base, ad.deltas[2])
    assert torch.allclose(new[4], base[4] * 6.0)
    assert torch.allclose(new[6], base[6] * 3.0)
    assert torch.equal(new[5], base[5])


def test_factor_delta_picks_the_smallest_exact_form() -> None:
    g = torch.Generator().manual_seed(0)
    m, d = 128, 64
    assert factor_delta(torch.zeros(m, d)) is None
    rows = torch.zeros(m, d)
    rows[[2, 7]] = torch.randn(2, d, generator=g)
    assert isinstance(factor_delta(rows), RowDelta)
    rank2 = torch.randn(m, 2, generator=g) @ torch.randn(2, d, generator=g)
    lr = factor_delta(rank2)
    assert isinstance(lr, LowRankDelta) and lr.rank == 2
    assert torch.allclose(lr.dense(m), rank2, atol=1e-5)
    full = torch.randn(m, d, generator=g)
    dense = factor_delta(full)
    assert type(dense).__name__ == "DenseDelta" and torch.equal(dense.dense(m), full)
    for delta in (factor_delta(rows), lr, dense):
        a, b = delta.lora(m)  # lora_b @ lora_a is the nn.Linear weight's delta, Delta^T
        assert torch.allclose(b @ a, delta.dense(m).T, atol=1e-5)
        h = torch.randn(3, m, generator=g)
        assert torch.allclose(delta.add_to(h, torch.zeros(3, d)), h @ delta.dense(m), atol=1e-4)


def test_adapter_nbytes_counts_each_tensor_in_its_own_dtype() -> None:
    """A bf16 delta holds 2 bytes a number and row indices 8 (int64): nbytes is not numel * 4."""
    rows = torch.tensor([1, 5])
    row = RowDelta(rows=rows, delta=torch.ones(2, 16, dtype=torch.bfloat16))
    low = LowRankDelta(a=torch.ones(32, 3), b=torch.ones(3, 16))
    adapter = Adapter(deltas={0: row, 1: low})
    assert row.nbytes() == 2 * 16 * 2 + 2 * 8
    assert low.nbytes() == (32 * 3 + 3 * 16) * 4
    assert adapter.nbytes() == row.nbytes() + low.nbytes()


def test_prune_equals_zeroing_the_coefficient(tiny_bundle: ModelBundle) -> None:
    """Causal: pruning neuron i must equal forcing h_i = 0 (the input of down_proj) in the base."""
    layer, neurons = 2, [10, 20, 30]
    ad = compiled(tiny_bundle, [{"kind": "prune_neurons", "layer": layer, "neurons": neurons}])
    assert set(ad.deltas) == {layer}  # W_out rows only: gate and up cannot reach the output any more
    with use(tiny_bundle, ad):
        pruned = logits(tiny_bundle)

    def zero_h(module: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        h = args[0].clone()
        h[..., neurons] = 0.0
        return (h,)

    down = layout.out_proj(tiny_bundle.hf_model, layer)
    handle = down.register_forward_pre_hook(zero_h)
    try:
        zeroed = logits(tiny_bundle)
    finally:
        handle.remove()
    assert torch.allclose(pruned, zeroed, atol=1e-5)
    assert not torch.allclose(pruned, logits(tiny_bundle), atol=1e-4)


def test_project_out_is_rank_one_and_removes_the_direction_after_the_post_norm(tiny_bundle: ModelBundle) -> None:
    """Causal: with w = gamma_post * u projected out of W_out, the MLP output that reaches the
    residual stream (after post_feedforward_layernorm) has no component along u."""
    layer = 1
    u = torch.randn(tiny_bundle.d_model, generator=torch.Generator().manual_seed(3))
    ad = compiled(tiny_bundle, [{"kind": "project_out_direction", "layers": [layer], "direction": u.tolist()}])
    assert isinstance(ad.deltas[layer], LowRankDelta) and ad.deltas[layer].rank == 1
    seen: list[torch.Tensor] = []
    norm = tiny_bundle.hf_model.model.layers[layer].post_feedforward_layernorm
    handle = norm.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        logits(tiny_bundle)
        with use(tiny_bundle, ad):
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
    ad = compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: sae)
    w_out = layout.w_out(tiny_bundle.hf_model, 2)
    expected = pisces_rewrite(
        w_out, sae, [5, 9], tau=0.5, mu_layer=mu_for_layer(8.0, 2, tiny_bundle.n_layers, "relative"),
        gamma_post=layout.post_ffn_gain(tiny_bundle.hf_model, 2),
    )
    assert expected.rows
    # the rows move along the removed features' decoder directions: rank <= 2 beats the rows
    assert isinstance(ad.deltas[2], LowRankDelta) and ad.deltas[2].rank <= 2
    assert torch.allclose(merged_w_out(w_out, ad.deltas[2]), expected.w_out, atol=1e-5)
    assert sorted({r.neuron for r in ad.rows}) == expected.rows
    assert ad.info[0]["rows"] == expected.rows

    with pytest.raises(SpecError, match="has hash"):
        compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: FakeSae(tiny_bundle.d_model, 48, seed=1))
    with pytest.raises(SpecError, match="needs an SAE"):
        compile_spec(spec, tiny_bundle)
    signed = spec_for(tiny_bundle, [{**op, "signed": True}], sae=ref)
    with pytest.raises(SpecError, match="no neuron_signs"):
        compile_spec(signed, tiny_bundle, sae_loader=lambda r, layer: sae)


def test_pisces_with_a_pre_norm_sae_edits_the_raw_rows(tiny_bundle: ModelBundle) -> None:
    """An SAE on mlp.hook_out reads h @ W_out itself, so PISCES works on the raw value vectors."""
    sae = FakeSae(tiny_bundle.d_model, 48, hook="blocks.2.mlp.hook_out")
    op = {"kind": "remove_sae_features", "layer": 2, "features": [5, 9], "tau": 0.5, "mu": 8.0, "signed": False}
    spec = spec_for(tiny_bundle, [op], sae={"id": "fake", "sha256": sae_sha256(sae)})
    ad = compile_spec(spec, tiny_bundle, sae_loader=lambda r, layer: sae)
    w_out = layout.w_out(tiny_bundle.hf_model, 2)
    mu_l = mu_for_layer(8.0, 2, tiny_bundle.n_layers, "relative")
    raw = pisces_rewrite(w_out, sae, [5, 9], tau=0.5, mu_layer=mu_l, mode="reference")
    gained = pisces_rewrite(w_out, sae, [5, 9], tau=0.5, mu_layer=mu_l,
                            gamma_post=layout.post_ffn_gain(tiny_bundle.hf_model, 2))
    edited = merged_w_out(w_out, ad.deltas[2])
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
    ad = compiled(tiny_bundle, [op], payload={"d3": delta})
    assert isinstance(ad.deltas[3], RowDelta) and ad.deltas[3].rows.tolist() == [0, 9]
    base = layout.w_out(tiny_bundle.hf_model, 3)
    assert torch.allclose(merged_w_out(base, ad.deltas[3])[[0, 9]], base[[0, 9]] + delta)
    with pytest.raises(SpecError, match=r"lacks tensors \['d3'\]"):
        compiled(tiny_bundle, [op])


def test_a_small_low_rank_payload_delta_compiles_to_its_own_rank(tiny_bundle: ModelBundle) -> None:
    """A rank-2 delta on every row, 1e-4 of W's size (what ELM trains on a real model): the
    adapter holds it at rank 2. Compiled as (W + delta) - W, float32 rounding made it full rank."""
    g = torch.Generator().manual_seed(0)
    base = layout.w_out(tiny_bundle.hf_model, 3)  # [m, d]
    m = base.shape[0]
    delta = torch.randn(m, 2, generator=g) @ torch.randn(2, tiny_bundle.d_model, generator=g)  # [m, d], rank 2
    delta *= 1e-4 * float(base.abs().mean()) / float(delta.abs().mean())
    assert torch.linalg.matrix_rank(((base.float() + delta) - base.float()).double()) > 2  # the rounding
    op = {"kind": "optimise_value_vectors", "targets": [{"layer": 3, "rows": list(range(m)), "delta": "d3"}]}
    ad = compiled(tiny_bundle, [op], payload={"d3": delta})
    assert isinstance(ad.deltas[3], LowRankDelta) and ad.deltas[3].rank == 2
    low = ad.deltas[3]
    assert torch.allclose(low.a @ low.b, delta, rtol=1e-4, atol=1e-6 * float(delta.abs().max()))
    # an operation after it on the same layer sees the edited weights (the delta joins W first)
    ablated = compiled(tiny_bundle, [op, {"kind": "ablate_value_vectors", "layer": 3, "neurons": [5]}],
                       payload={"d3": delta})
    after = merged_w_out(base, ablated.deltas[3])
    tol = 1e-5 * float(base.abs().max())  # the layer's diff is low rank again (rank 3), exact to LOW_RANK_RTOL
    assert float(after[5].abs().max()) < tol and torch.allclose(after[6], base[6] + delta[6], atol=tol)


NEURON_ADJUST = {
    "kind": "neuron_adjust",
    "runtime": [
        {
            "layer": 1,
            "neurons": [0, 1, 2],
            "forget_mean": [0.0] * 3,
            "forget_std": [100.0] * 3,
            "retain_mean": [50.0] * 3,
            "retain_std": [100.0] * 3,
        }
    ],
}


def test_neuron_adjust_runs_only_inside_the_block_and_only_on_its_rows(tiny_bundle: ModelBundle) -> None:
    gate = layout.pre_activation_proj(tiny_bundle.hf_model, 1)
    ad = compiled(tiny_bundle, [NEURON_ADJUST])
    assert ad.has_runtime and not ad.deltas
    hooks.install(gate)  # the permanent dispatcher first, so the probe below sees its output
    n_hooks = len(gate._forward_hooks)
    seen: list[torch.Tensor] = []
    probe = gate.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    ids = ids_for(tiny_bundle).repeat(2, 1)  # [2, pos]
    try:
        base = logits(tiny_bundle, ids)
        with route(tiny_bundle, [None, ad]):
            both = logits(tiny_bundle, ids)
    finally:
        probe.remove()
    assert len(gate._forward_hooks) == n_hooks  # no hook registered per request
    assert torch.equal(both[0], base[0])  # the base row is untouched
    assert not torch.allclose(both[1], base[1], atol=1e-4)
    assert torch.equal(logits(tiny_bundle, ids), base)
    x_base, x_edit = seen[0][1], seen[1][1]  # gate output of row 1: [pos, d_mlp]
    # x near 0 is forget-like (N(0,100) vs N(50,100)): x' = 50 - x
    assert torch.allclose(x_edit[..., :3], 50.0 - x_base[..., :3], atol=1e-5)
    assert torch.equal(x_edit[..., 3:], x_base[..., 3:])


def test_adapter_for_another_model_and_wrong_batch_are_refused(tiny_bundle: ModelBundle) -> None:
    ad = compiled(tiny_bundle, [{"kind": "ablate_value_vectors", "layer": 0, "neurons": [1]}])
    ad.model_sha256 = "0" * 64
    with pytest.raises(AdapterError, match="different model"), use(tiny_bundle, ad):
        pass
    ad.model_sha256 = tiny_bundle.weights_sha256
    with pytest.raises(AdapterError, match="3 row adapters"), route(tiny_bundle, [None, ad, None]):
        logits(tiny_bundle, ids_for(tiny_bundle).repeat(2, 1))


def random_adapter(bundle: ModelBundle, seed: int) -> Adapter:
    """A random mix of row-delta and rank-1 operations on random layers."""
    rng = random.Random(seed)
    ops: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        layer = rng.randrange(bundle.n_layers)
        if rng.random() < 0.5:
            ops.append({"kind": "ablate_value_vectors", "layer": layer, "mode": "scale", "scale": rng.uniform(-8, 8),
                        "neurons": rng.sample(range(bundle.d_mlp), 16)})
        else:
            u = torch.randn(bundle.d_model, generator=torch.Generator().manual_seed(seed))
            ops.append({"kind": "project_out_direction", "layers": [layer], "direction": u.tolist()})
    return compiled(bundle, ops)


def test_many_threads_each_see_only_their_own_edit(tiny_bundle: ModelBundle, merged: Any) -> None:
    """8 threads forward at once, each under its own adapter (or none); every result equals the
    merged checkpoint of that thread's adapter, and base threads see the base."""
    before = model_weights_sha256(tiny_bundle.hf_model)
    ids = ids_for(tiny_bundle, "Once upon a time in a land far away, the")
    adapters: list[Adapter | None] = [random_adapter(tiny_bundle, s) if s % 3 else None for s in range(8)]
    base = logits(tiny_bundle, ids)
    expected = [base if ad is None else merged(ad, ids) for ad in adapters]
    assert all(not torch.allclose(e, base, atol=1e-3) for e, ad in zip(expected, adapters, strict=True) if ad)
    barrier = threading.Barrier(len(adapters))
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(adapters))}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with use(tiny_bundle, adapters[i]):
                    got[i].append(logits(tiny_bundle, ids))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(adapters))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, outs in got.items():
        assert len(outs) == 5
        for out in outs:
            assert torch.allclose(out, expected[i], atol=1e-4), f"thread {i} saw another edit"
    assert model_weights_sha256(tiny_bundle.hf_model) == before


def test_per_row_routing_equals_each_adapter_alone(tiny_bundle: ModelBundle, merged: Any) -> None:
    ids = ids_for(tiny_bundle)
    a, b = random_adapter(tiny_bundle, 1), random_adapter(tiny_bundle, 2)
    rows: list[Adapter | None] = [a, None, b, a]
    with route(tiny_bundle, rows):
        out = logits(tiny_bundle, ids.repeat(4, 1))
    for i, ad in enumerate(rows):
        want = logits(tiny_bundle, ids)[0] if ad is None else merged(ad, ids)[0]
        assert torch.allclose(out[i], want, atol=1e-4), i
