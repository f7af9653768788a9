"""The erase pipeline on the tiny model: every method gives a spec that round-trips through
save_spec/load_spec, compiles to the same adapter, changes the model only inside `use` and never
writes the base, even while previews run next to an erase."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.corpus import load_wiki
from workbench.edits.compile import compile_spec
from workbench.edits.spec import EditSpec, load_spec, save_spec
from workbench.methods.erase import METHODS, AblateConfig, EraseOptions, RowCandidate, erase
from workbench.methods.optimise import OptimiseConfig
from workbench.methods.retain import RetainConfig
from workbench.models.hashing import model_weights_sha256

# min_target_prob 0: the random tiny model gives every token only a small probability
TINY_OPTIMISE = OptimiseConfig(layers=(0, 1, 2), n_rows=24, steps=3, min_target_prob=0.0, repr_layers=(2,),
                               retain=RetainConfig(n_neutral=8, n_neighbours=4), eval_every=100, lr_scale=0.5)
TINY = EraseOptions(optimise=TINY_OPTIMISE, ablate=AblateConfig(n_rows=24, runners_up=8), score=False)


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    return load_wiki("en")


@pytest.mark.parametrize("method", ["optimise", "ablate", "project"])
def test_spec_round_trips_applies_and_reverts(tiny_bundle, corpus, tmp_path: Path, method: str) -> None:  # type: ignore[no-untyped-def]
    result = erase(tiny_bundle, corpus, "Harry Potter", method, options=TINY)
    assert result.fact_set.concept == "Harry Potter" and result.fact_set.facts
    assert result.scorecard is None
    assert result.candidates and all(isinstance(c, RowCandidate) for c in result.candidates)
    assert any(c.selected for c in result.candidates)
    assert bool(result.payload) == (method == "optimise")

    path = tmp_path / "spec.json"
    save_spec(result.spec, path, payload=result.payload or None)
    spec, payload = load_spec(path)
    assert spec.operations == result.spec.operations
    adapter = compile_spec(spec, tiny_bundle, payload=payload or None)
    again = compile_spec(result.spec, tiny_bundle, payload=result.payload or None)
    assert adapter.content_sha256() == again.content_sha256()

    ids = tiny_bundle.tokenizer(["Harry Potter is a wizard"], return_tensors="pt").input_ids
    with torch.no_grad():
        before = tiny_bundle.hf_model(ids).logits
        with use(tiny_bundle, adapter):
            during = tiny_bundle.hf_model(ids).logits
        after = tiny_bundle.hf_model(ids).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert adapter.deltas and not adapter.hooks  # value vectors only: W_out deltas, no run-time hooks


def test_selected_rows_are_the_edited_rows(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    result = erase(tiny_bundle, corpus, "Paris", "ablate", options=TINY)
    selected = {(c.layer, c.neuron) for c in result.candidates if c.selected}
    edited = {(op.layer, n) for op in result.spec.operations for n in op.neurons}
    assert selected == edited and len(selected) == 24
    assert len(result.candidates) == 24 + 8  # runners-up listed, not edited
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)


def test_bad_method_and_concept_are_sentences(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="Unknown erasure method 'forget'") as err:
        erase(tiny_bundle, corpus, "Paris", "forget")
    assert all(name in str(err.value) for name in METHODS)  # the sentence lists every method
    with pytest.raises(ValueError, match="Did you mean"):
        erase(tiny_bundle, corpus, "Pariss", "ablate")


def test_base_stays_bit_identical_and_unseen_while_an_erase_trains(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    """Every operation compiled and applied, previews running concurrently with an optimise
    erase (which trains through its own thread-scoped hooks), and a scorecard: the base
    parameters hash the same afterwards, and every base preview saw the base model."""
    import threading

    from workbench.generate import SamplingParams, generate, generate_pair

    before = model_weights_sha256(tiny_bundle.hf_model)
    p = SamplingParams(max_new_tokens=6)
    reference = generate(tiny_bundle, "The history of", None, p).token_ids
    d_model = tiny_bundle.d_model
    ops = [
        {"kind": "ablate_value_vectors", "layer": 0, "neurons": [1, 2], "mode": "noise", "seed": 1},
        {"kind": "prune_neurons", "layer": 1, "neurons": [4, 8]},
        {"kind": "project_out_direction", "layers": [2, 3], "direction": [1.0] * d_model},
        {"kind": "optimise_value_vectors", "targets": [{"layer": 3, "rows": [5], "delta": "d"}]},
        {"kind": "neuron_adjust", "runtime": [{"layer": 2, "neurons": [0], "forget_mean": [0.0], "forget_std": [1.0],
                                               "retain_mean": [1.0], "retain_std": [1.0]}]},
    ]
    spec = EditSpec.from_dict({"name": "all", "model": {"id": "tiny", "weights_sha256": tiny_bundle.weights_sha256},
                               "operations": ops})
    everything = compile_spec(spec, tiny_bundle, payload={"d": torch.ones(1, d_model)})
    assert sorted(everything.deltas) == [0, 1, 2, 3] and everything.hooks

    seen: list[list[int]] = []
    stop = threading.Event()

    def previewer() -> None:
        while not stop.is_set():
            base, _ = generate_pair(tiny_bundle, "The history of", everything, p)
            seen.append(base.token_ids)

    threads = [threading.Thread(target=previewer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        result = erase(tiny_bundle, corpus, "Harry Potter", "optimise", options=replace(TINY, score=True))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert result.scorecard is not None
    assert len(seen) >= 2 and all(ids == reference for ids in seen)
    assert model_weights_sha256(tiny_bundle.hf_model) == before


def test_any_concept_name_suggests_close_titles_or_erases_the_name(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    from workbench.methods.erase import check_concept
    from workbench.methods.facts import build_fact_set

    assert check_concept(corpus, "Paris") == "article"
    with pytest.raises(ValueError, match=r"no article titled 'Zelda'\. Did you mean: The Legend of Zelda\?"):
        check_concept(corpus, "Zelda")
    assert check_concept(corpus, "Zelda", as_name=True) == "name"
    with pytest.raises(ValueError, match="Did you mean: Paris"):  # a misspelt title is still caught
        check_concept(corpus, "Pariss")
    assert check_concept(corpus, "Hogwarts") == "name"  # mentioned, no article, no close title

    facts = build_fact_set(tiny_bundle, corpus, "Zelda", about="action-adventure game series", samples_per_prompt=1,
                           max_new_tokens=8)
    assert facts.concept == "Zelda" and facts.kind == "work"  # 'series' in the description
    sources = {f.source.split(":")[0] for f in facts.facts}
    assert "mention" in sources and "article" not in sources
    assert all("Zelda" in f.text for f in facts.facts if f.source.startswith("mention"))

    result = erase(tiny_bundle, corpus, "Zelda", "ablate", as_name=True, fact_set=None,
                   options=replace(TINY, score=False))
    assert "Zelda" in result.spec.name and result.spec.operations
    with pytest.raises(ValueError, match="No article of the corpus mentions 'Pikachu'"):
        erase(tiny_bundle, corpus, "Pikachu", "ablate", options=replace(TINY, score=True))


def test_a_probe_for_a_name_comes_from_the_sentences_that_mention_it(corpus) -> None:  # type: ignore[no-untyped-def]
    doc = corpus.mention_document("Zelda", about="game series")
    assert doc is not None and doc.title == "Zelda" and doc.description == "game series"
    assert "Zelda" in doc.text and doc.topic
    assert corpus.mention_document("Pikachu") is None
    assert corpus.titles_naming("Disney")[:2] == ["Walt Disney", "The Walt Disney Company"]


def _card(verdicts: list[str]):  # type: ignore[no-untyped-def]
    from workbench.benchmark.scorecard import Scorecard

    return Scorecard("X", "probe", "sha", [], 0.0, {}, verdicts, [])


def test_scorecard_outcome_calls_a_broken_control_a_failure() -> None:
    gone_but_broken = _card(["PASS: concept answered 0.10 <= 0.25 x base 0.90",
                             "FAIL: neighbours answered dropped 0.30 > 0.10", "PASS: perplexity ratio 1.010 <= 1.05"])
    assert gone_but_broken.concept_gone and not gone_but_broken.passed
    assert gone_but_broken.outcome.startswith("FAILED: the concept is erased, and controls broke")
    assert "neighbours answered dropped 0.30" in gone_but_broken.outcome
    kept = _card(["FAIL: concept still answered 0.80 > 0.25 x base 0.90", "PASS: general answered dropped 0.00 <= 0.05"])
    assert not kept.broken_controls and kept.outcome == "FAILED: the concept is not erased (every control held)."
    ok = _card(["PASS: concept answered 0.00 <= 0.25 x base 0.90", "PASS: general answered dropped 0.00 <= 0.05"])
    assert ok.passed and ok.outcome.startswith("PASSED") and '"outcome"' in ok.to_json()


GONE = ["PASS: concept answered 0.10 <= 0.25 x base 0.90", "PASS: general answered dropped 0.00 <= 0.05"]
KEPT = ["FAIL: concept still answered 0.80 > 0.25 x base 0.90", "PASS: general answered dropped 0.00 <= 0.05"]
BROKE = ["FAIL: concept still answered 0.80 > 0.25 x base 0.90", "FAIL: neighbours answered dropped 0.30 > 0.10"]


@pytest.mark.parametrize(("verdicts", "stopped_by", "chosen", "tried"), [
    ([KEPT, GONE, KEPT], "concept gone", 1.0, 2),
    ([KEPT, BROKE, GONE], "control broke", 0.5, 2),  # the strongest level whose controls held
    ([BROKE, GONE, GONE], "control broke", 0.5, 1),  # nothing weaker held: the weakest, as it is
    ([KEPT, KEPT, KEPT], "strongest level reached", 2.0, 3),
], ids=["gone", "broke", "broke-at-once", "strongest"])
def test_strength_search_stops_at_the_first_level_that_decides(  # type: ignore[no-untyped-def]
    monkeypatch, verdicts: list[list[str]], stopped_by: str, chosen: float, tried: int,
) -> None:
    """The search's rule on scripted scorecards (each level's erase returns the next card): it
    stops at the first level where the concept is gone or a control broke, and keeps the level
    the rule names."""
    from types import SimpleNamespace

    import workbench.methods.strength as strength

    seen: list[EraseOptions] = []

    def scripted_erase(*_args, options: EraseOptions, fact_set=None, **_kw):  # type: ignore[no-untyped-def]
        seen.append(options)
        return SimpleNamespace(scorecard=_card(verdicts[len(seen) - 1]), fact_set="facts", seconds=0.0, n=len(seen))

    monkeypatch.setattr(strength, "erase", scripted_erase)
    opts = EraseOptions(ablate=AblateConfig(n_rows=8), score=False)
    res = strength.search_strength(None, None, "X", "ablate", options=opts, levels=(0.5, 1.0, 2.0))  # type: ignore[arg-type]
    assert (res.stopped_by, res.chosen_level, len(res.levels)) == (stopped_by, chosen, tried)
    assert res.chosen.n == [0.5, 1.0, 2.0].index(chosen) + 1  # the erase result of that level
    assert [o.ablate.n_rows for o in seen] == [4, 8, 16][:tried] and all(o.score for o in seen)


def test_every_strength_knob_changes_its_methods_config() -> None:
    """Each knob, applied at level 2, gives a config that differs from level 1 in the stronger
    direction (more steps or rows, a smaller lam or remaining distance)."""
    from workbench.methods.erase import REWRITE_CF

    base = EraseOptions()
    knobs = {name: m.strength for name, m in METHODS.items() if m.strength is not None}
    assert {"optimise", "rewrite", "rewrite-cf", "ablate"} <= set(knobs)
    for method, knob in knobs.items():
        one, two = knob.scale(base, 1.0), knob.scale(base, 2.0)
        assert one != two, method
    cf = knobs["rewrite-cf"].scale(base, 2.0).rewrite
    assert cf is not None and cf.target == "counterfactual" and cf.lams == tuple(x / 2 for x in REWRITE_CF.lams)
