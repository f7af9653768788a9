"""Lenses checked against brute force: vocab projection, histograms, quantiles, effect size,
concept vectors."""

from __future__ import annotations

import torch

from workbench.corpus import load_wiki
from workbench.lenses import vocab
from workbench.lenses.activations import (
    CollectConfig,
    RunningStats,
    collect_stats,
    effect_size,
    histogram_counts,
)
from workbench.lenses.concept_vectors import auroc, concept_vectors
from workbench.lenses.tokens import clean_token_mask
from workbench.models import layout


def test_project_topk_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 16, generator=g)
    unembed = torch.randn(16, 1000, generator=g)
    mask = torch.rand(1000, generator=g) > 0.3
    proj = vocab.project_topk(rows, unembed, k=5, mask=mask, chunk=128)
    full = rows @ unembed
    full_masked = full.masked_fill(~mask, float("-inf"))
    top_v, top_i = full_masked.topk(5, dim=1)
    assert torch.equal(proj.top_ids, top_i)
    assert torch.allclose(proj.top_logits, top_v, atol=1e-5)
    bot_v, bot_i = full.masked_fill(~mask, float("inf")).topk(5, dim=1, largest=False)
    assert torch.equal(proj.bottom_ids, bot_i)
    assert torch.allclose(proj.mean, full[:, mask].mean(1), atol=1e-4)
    assert torch.allclose(proj.std, full[:, mask].std(1, unbiased=False), atol=1e-4)


def test_value_vector_projection_matches_full_logits(tiny_bundle):
    """Gain-aware lens = the logits of gamma_f * gamma_post * v_i, as computed by hand."""
    model = tiny_bundle.hf_model
    layer = 2
    mask = clean_token_mask(tiny_bundle.tokenizer, tiny_bundle.vocab_size)
    rows = vocab.value_vector_directions(model, layer, "gain_aware")
    proj = vocab.project_topk(rows, layout.unembed(model), k=4, mask=mask, chunk=300)
    v = model.model.layers[layer].mlp.down_proj.weight.detach().T  # [d_mlp, d_model]
    gamma_post = 1 + model.model.layers[layer].post_feedforward_layernorm.weight.detach()
    gamma_f = 1 + model.model.norm.weight.detach()
    logits = (v * gamma_post * gamma_f) @ model.lm_head.weight.detach().T
    expected = logits.masked_fill(~mask, float("-inf")).topk(4, dim=1).indices
    assert torch.equal(proj.top_ids, expected)


def test_clean_mask_drops_special_tokens(tiny_bundle):
    mask = clean_token_mask(tiny_bundle.tokenizer, tiny_bundle.vocab_size)
    for tid in tiny_bundle.tokenizer.all_special_ids:
        assert not mask[tid]
    assert mask.sum() > 0.5 * len(mask)


def test_histogram_counts_sum_to_tokens_and_match_numpy():
    values = torch.randn(500, 6, dtype=torch.float64) * 2
    edges = torch.linspace(-3, 3, 13, dtype=torch.float64)
    counts = histogram_counts(values, edges)
    assert counts.sum(1).tolist() == [500] * 6
    inside = values.clamp(-3 + 1e-9, 3 - 1e-9)  # out-of-range values land in the edge bins
    for j in range(6):
        expected = torch.histc(inside[:, j], bins=12, min=-3, max=3)
        assert counts[j].tolist() == expected.long().tolist()


def test_running_stats_match_batch_statistics():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(1000, 4, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 4]) + 5
    st = RunningStats(width=4, bins=200)
    for chunk in data.split(137):
        st.update(chunk)
    assert st.n == 1000
    assert torch.allclose(st.mean, data.mean(0))
    assert torch.allclose(st.std, data.std(0, unbiased=False))
    q = st.quantiles((0.5,))[:, 0]
    assert ((q - data.median(0).values).abs() < 0.15 * torch.tensor([1, 2, 3, 4.0]).double()).all()


def test_collected_histograms_count_every_real_token(tiny_bundle):
    texts = [d.text for d in load_wiki("en").sample(12, seed=3)]
    stats = collect_stats(tiny_bundle.bridge, tiny_bundle.tokenizer, texts, [0, 2],
                          CollectConfig(max_tokens=10**6, max_len=32, batch_size=4))
    enc = tiny_bundle.tokenizer(texts, truncation=True, max_length=32)
    real = sum(len(ids) - 1 for ids in enc["input_ids"])  # BOS excluded
    for layer in (0, 2):
        assert stats[layer].n == real
        assert (stats[layer].counts.sum(1) == real).all()


def test_stop_at_layer_gives_same_activations_as_full_run(tiny_bundle):
    ids = tiny_bundle.tokenizer(["A short text about chess"], return_tensors="pt").input_ids
    _, full = tiny_bundle.bridge.run_with_cache(ids, names_filter=lambda n: n == "blocks.1.mlp.hook_pre")
    _, part = tiny_bundle.bridge.run_with_cache(ids, stop_at_layer=2, names_filter=lambda n: n == "blocks.1.mlp.hook_pre")
    assert torch.allclose(full["blocks.1.mlp.hook_pre"], part["blocks.1.mlp.hook_pre"])
    # The gate pre-activation is x . a_i with x the pre-FFN-normed residual.
    _, c = tiny_bundle.bridge.run_with_cache(ids, stop_at_layer=2)
    x = c["blocks.1.ln2.hook_out"]
    g = x @ layout.w_pre(tiny_bundle.hf_model, 1)
    assert torch.allclose(g, c["blocks.1.mlp.hook_pre"], atol=1e-5)


def test_effect_size_is_cohens_d():
    pos, neg = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    d = effect_size(pos.mean(0), pos.std(0), 3, neg.mean(0), neg.std(0), 4)
    pooled = ((2 * pos.var(0) + 3 * neg.var(0)) / 5).sqrt()
    assert torch.allclose(d, (pos.mean(0) - neg.mean(0)) / pooled)


def test_auroc_and_concept_vector_separation():
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    g = torch.Generator().manual_seed(0)
    direction = torch.zeros(8)
    direction[3] = 1.0
    neg = torch.randn(40, 2, 8, generator=g)
    pos = torch.randn(40, 2, 8, generator=g) + 3 * direction
    cv = concept_vectors(pos, neg, [0, 1], "resid")
    assert cv.vectors.shape == (2, 8)
    assert int(cv.vectors[0].abs().argmax()) == 3
    assert (cv.auroc > 0.95).all()


def test_nearest_by_cosine_finds_aligned_and_anti_aligned_rows(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    from workbench.lenses.concept_vectors import (
        nearest_by_cosine,
        nearest_sae_features,
        nearest_value_vectors,
    )
    from workbench.models import layout

    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.1], [0.5, 0.5]])
    idx, cos = nearest_by_cosine(rows, torch.tensor([1.0, 0.0]), k=2)
    assert idx.tolist() == [0, 2] and cos[0] == 1.0 and cos[1] < -0.99
    assert nearest_sae_features(rows, torch.tensor([0.0, 1.0]), k=1)["feature"].tolist() == [1]

    hf = tiny_bundle.hf_model
    target = layout.w_out(hf, 1).detach()[7] * layout.post_ffn_gain(hf, 1)  # a planted direction
    near = nearest_value_vectors(hf, target, layers=[0, 1], k=5)
    assert (near.loc[0, "layer"], near.loc[0, "neuron"]) == (1, 7)
    assert abs(near.loc[0, "cosine"] - 1.0) < 1e-5 and len(near) == 5
    assert near["cosine"].abs().is_monotonic_decreasing
