"""The closed-form key rewrite (edits/key_rewrite.py): the solve on tiny tensors, and the whole
method on the tiny model (the name's residual moves towards made-up names, only one W_out changes,
the spec + payload re-apply bit-exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.corpus import load_wiki
from workbench.edits.compile import compile_spec
from workbench.edits.spec import load_spec, save_spec
from workbench.methods.erase import EraseOptions, erase
from workbench.methods.frames import FramesConfig, build_frames
from workbench.methods.key_rewrite import RewriteConfig, repr_distance, rewrite_name_key, solve_delta
from workbench.methods.retain import RetainConfig

TINY = RewriteConfig(layers=(0, 1), repr_layers=(2,), steps=60, cov_tokens=1500,
                     retain=RetainConfig(n_neutral=8, n_neighbours=4), max_remaining=0.5, frame_batch=16,
                     max_neutral_change=1.0)


def test_solve_maps_each_key_to_its_output_and_spares_other_directions() -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(4, 32, generator=g)  # [n, d_mlp]
    desired = torch.randn(4, 8, generator=g)  # [n, d_model]
    cov = torch.eye(32)
    exact = solve_delta(keys, desired, cov, lam=1e-6)  # [d_mlp, d_model]
    assert torch.allclose(keys @ exact, desired, atol=1e-3)
    # a key orthogonal to all edited keys is not moved (minimum-norm solution under C = I)
    q, _ = torch.linalg.qr(torch.cat([keys.T, torch.randn(32, 1, generator=g)], dim=1))
    other = q[:, -1]  # [d_mlp], orthogonal to every key
    assert (other @ exact).norm() < 1e-3 * exact.norm()
    # a larger lam is a smaller, less exact change
    soft = solve_delta(keys, desired, cov, lam=1.0)
    assert soft.norm() < exact.norm()
    assert (keys @ soft - desired).norm() > (keys @ exact - desired).norm()


def test_choose_lam_prefers_the_most_conservative_edit_that_erases() -> None:
    from workbench.methods.key_rewrite import choose_lam

    c = [(300.0, {}, 0.6, 0.01), (30.0, {}, 0.1, 0.04), (3.0, {}, 0.05, 0.2)]  # lam, deltas, remaining, change
    assert choose_lam(c, max_remaining=0.15, max_change=0.05)[0] == 30.0
    assert choose_lam(c, max_remaining=0.01, max_change=0.05)[0] == 30.0  # none erases: best within budget
    assert choose_lam(c, max_remaining=0.15, max_change=0.001)[0] == 300.0  # none within budget: smallest change


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    return load_wiki("en")


def test_rewrite_moves_the_name_towards_made_up_names(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    from workbench.methods.facts import build_fact_set

    facts = build_fact_set(tiny_bundle, corpus, "Harry Potter", samples_per_prompt=0)
    result, solves = rewrite_name_key(tiny_bundle, facts, corpus, TINY)
    assert [s.layer for s in solves] == [0, 1] and len({s.lam for s in solves}) == 1
    assert list(result.rows) == [0, 1] and result.rows[1] == list(range(tiny_bundle.d_mlp))
    solve = solves[0]
    assert solve.remaining_desired < 0.5 < solve.remaining_before
    # the solved weights reproduce what the hook did, measured again from scratch
    frames = build_frames(tiny_bundle, facts, (2,), TINY.retain.max_len)
    from workbench.methods.key_rewrite import full_layer_deltas

    with torch.no_grad():
        base = repr_distance(tiny_bundle, frames)
        with full_layer_deltas(tiny_bundle, result.deltas):
            edited = repr_distance(tiny_bundle, frames)
    assert float((edited.mean() / base.mean()).sqrt()) == pytest.approx(solve.remaining_after, rel=1e-3)
    assert solve.remaining_after < 0.9 and solve.tried[0]["lam"] == TINY.lams[0]


def test_rewrite_method_spec_round_trip(tiny_bundle, corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = erase(tiny_bundle, corpus, "Harry Potter", "rewrite",
                   options=EraseOptions(rewrite=TINY, score=False))
    from workbench.methods.erase import LISTED_ROWS

    scores = [c.score for c in result.candidates]
    assert result.spec.operations[0].kind == "optimise_value_vectors" and 0 < len(scores) <= LISTED_ROWS
    assert scores == sorted(scores, reverse=True)  # the most changed rows first
    save_spec(result.spec, tmp_path / "rw.json", payload=result.payload)
    spec, payload = load_spec(tmp_path / "rw.json")
    overlay = compile_spec(spec, tiny_bundle, payload=payload)
    assert sorted(overlay.deltas) == [0, 1]
    again = compile_spec(result.spec, tiny_bundle, payload=result.payload)
    assert overlay.content_sha256() == again.content_sha256()
    ids = tiny_bundle.tokenizer(["Harry Potter is a wizard"], return_tensors="pt").input_ids
    with torch.no_grad():
        before = tiny_bundle.hf_model(ids).logits
        with use(tiny_bundle, overlay):
            during = tiny_bundle.hf_model(ids).logits
    assert not torch.equal(before, during)


def test_key_covariance_is_the_mean_outer_product(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    from workbench.methods.key_rewrite import key_covariances
    from workbench.models import layout

    texts = ["The cat sat on the mat.", "A river flows to the sea and beyond."]
    covs = key_covariances(tiny_bundle, texts, [0, 2], max_tokens=10_000, max_len=32)
    enc = tiny_bundle.tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    keep = enc["attention_mask"].bool().clone()
    keep[:, 0] = False
    got = {}  # an independent path: a plain forward hook on the HF down_proj
    handle = layout.out_proj(tiny_bundle.hf_model, 2).register_forward_hook(
        lambda _m, inp, _o: got.__setitem__("h", inp[0].detach()))
    try:
        with torch.no_grad():
            tiny_bundle.hf_model(input_ids=enc["input_ids"])
    finally:
        handle.remove()
    h = got["h"][keep]  # [n_tok, d_mlp]
    assert torch.allclose(covs[2], h.T @ h / h.shape[0], atol=1e-5)


def test_rewrite_then_optimise_is_two_composed_operations(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    from workbench.adapters import merged_w_out
    from workbench.methods.optimise import OptimiseConfig
    from workbench.models import layout

    opt = OptimiseConfig(layers=(1, 2), n_rows=12, steps=2, min_target_prob=0.0, repr_layers=(2,),
                         retain=RetainConfig(n_neutral=6, n_neighbours=2, n_collisions=2), eval_every=100, lr_scale=0.5)
    result = erase(tiny_bundle, corpus, "Harry Potter", "rewrite-optimise",
                   options=EraseOptions(rewrite=TINY, optimise=opt, score=False))
    first, second = result.spec.operations
    assert {t.delta for t in first.targets} == {"rewrite.l0.delta", "rewrite.l1.delta"}
    assert {t.delta for t in second.targets} <= {"optimise.l1.delta", "optimise.l2.delta"}
    overlay = compile_spec(result.spec, tiny_bundle, payload=result.payload)
    w1 = layout.w_out(tiny_bundle.hf_model, 1).detach().float() + result.payload["rewrite.l1.delta"]
    for t in second.targets:
        if t.layer == 1:
            w1[t.rows] += result.payload[t.delta]
    base1 = layout.w_out(tiny_bundle.hf_model, 1).detach()
    assert torch.allclose(merged_w_out(base1, overlay.deltas[1]), w1, atol=1e-5)


def test_solve_holds_kept_keys_where_they_are() -> None:
    """Kept keys (neighbour names) join K with a desired change of 0: with a weight they move far
    less than without, while the concept's keys still reach their outputs."""
    from workbench.methods.key_rewrite import _solve_kept

    g = torch.Generator().manual_seed(1)
    keys = torch.randn(4, 32, generator=g)
    kept = keys + 0.3 * torch.randn(4, 32, generator=g)  # neighbour names sit near the concept's
    desired = torch.randn(4, 8, generator=g)
    cov = torch.eye(32)
    free = solve_delta(keys, desired, cov, lam=1e-3)
    held = _solve_kept(keys, desired, kept, cov, lam=1e-3, weight=4.0)
    assert (kept @ held).norm() < 0.5 * (kept @ free).norm()
    assert (keys @ held - desired).norm() < 0.6 * desired.norm()


def test_counterfactual_rewrite_moves_the_next_token_distributions_to_made_up_names(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from workbench.methods.counterfactual import build_counterfactual
    from workbench.methods.facts import build_fact_set
    from workbench.methods.key_rewrite import _CounterfactualObjective, full_layer_deltas

    facts = build_fact_set(tiny_bundle, corpus, "Harry Potter", samples_per_prompt=0)
    # the whole 2k vocabulary as the target: the random model's flat distributions are no top-k
    cfg = replace(TINY, target="counterfactual", neighbour_key_weight=1.0,
                  frames=FramesConfig(cf_topk=2048, cf_batch=8, n_neighbour_names=2))
    result, solves = rewrite_name_key(tiny_bundle, facts, corpus, cfg)
    cf = build_counterfactual(tiny_bundle, facts, cfg.frames, cfg.retain.max_len)
    assert cf is not None
    objective = _CounterfactualObjective(tiny_bundle, cf, cfg.frames.cf_batch)
    with torch.no_grad():
        assert objective.remaining(None) == pytest.approx(1.0, abs=1e-4)  # nothing edited: all of the KL left
        with full_layer_deltas(tiny_bundle, result.deltas):
            after = objective.remaining(None)
    assert after == pytest.approx(solves[0].remaining_after, rel=1e-3)
    assert solves[0].remaining_desired < 0.9 and after < 0.95


def test_held_names_are_same_topic_neighbours_then_other_topics(corpus) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from workbench.corpus.nonce import guess_kind
    from workbench.methods.facts import FactSet
    from workbench.methods.key_rewrite import held_names
    from workbench.methods.retain import retain_documents, retain_split

    facts = FactSet(concept="Harry Potter", name="Harry Potter", kind=guess_kind(corpus.document_for("Harry Potter")))
    cfg = replace(TINY, frames=FramesConfig(n_neighbour_names=2), n_other_names=3)
    docs = retain_documents(corpus, facts, cfg.retain)
    split = retain_split(corpus, facts, cfg.retain)
    names = held_names(*split, cfg)
    topic = corpus.document_for("Harry Potter").topic
    by_title = {d.title: d for d in docs}
    assert len(names) == 5 and len(set(names)) == 5 and "Harry Potter" not in names
    assert [by_title[n].topic == topic for n in names[:2]] == [True, True]
    assert names[:2] == [d.title for d in docs[:2]]
    assert all(by_title[n] in docs[cfg.retain.n_neighbours:] for n in names[2:])
    assert held_names(*split, replace(cfg, n_other_names=0)) == names[:2]
    # a topic with fewer articles than retain.n_neighbours: neutral articles are never named as neighbours
    few = replace(cfg.retain, n_neighbours=10_000)
    neighbours, neutral = retain_split(corpus, facts, few)
    assert all(d.topic == topic for d in neighbours) and len(neighbours) < 10_000
    assert held_names(neighbours, neutral, replace(cfg, frames=FramesConfig(n_neighbour_names=10_000), n_other_names=0)) \
        == [d.title for d in neighbours]
    assert not {d.doc_id for d in neighbours} & {d.doc_id for d in neutral}
