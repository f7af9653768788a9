"""The erase pipeline on the tiny model: every method gives a spec that round-trips through
save_spec/load_spec, compiles to the same overlay, changes the model while applied and reverts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workbench.corpus import load_wiki
from workbench.edits.erase import METHODS, EraseOptions, RowCandidate, erase
from workbench.edits.optimise import OptimiseConfig
from workbench.adapters import use
from workbench.edits.compile import compile_spec
from workbench.edits.spec import load_spec, save_spec
from workbench.models.hashing import tensor_sha256

# min_target_prob 0: the random tiny model gives every token only a small probability
TINY_OPTIMISE = OptimiseConfig(layers=(0, 1, 2), n_rows=24, steps=3, min_target_prob=0.0, repr_layers=(2,),
                               n_retain_neutral=8, n_retain_neighbours=4, eval_every=100, lr_scale=0.5)
TINY = EraseOptions(optimise=TINY_OPTIMISE, n_rows=24, runners_up=8, score=False)


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
    overlay = compile_spec(spec, tiny_bundle, payload=payload or None)
    again = compile_spec(result.spec, tiny_bundle, payload=result.payload or None)
    assert overlay.content_sha256() == again.content_sha256()

    ids = tiny_bundle.tokenizer(["Harry Potter is a wizard"], return_tensors="pt").input_ids
    with torch.no_grad():
        before = tiny_bundle.hf_model(ids).logits
        with use(tiny_bundle, overlay):
            during = tiny_bundle.hf_model(ids).logits
        after = tiny_bundle.hf_model(ids).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert overlay.deltas and not overlay.hooks  # value vectors only: W_out deltas, no run-time hooks


def test_selected_rows_are_the_edited_rows(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    result = erase(tiny_bundle, corpus, "Paris", "ablate", options=TINY)
    selected = {(c.layer, c.neuron) for c in result.candidates if c.selected}
    edited = {(op.layer, n) for op in result.spec.operations for n in op.neurons}
    assert selected == edited and len(selected) == 24
    assert len(result.candidates) == 24 + 8  # runners-up listed, not edited
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)


def test_given_fact_set_is_used_and_scorecard_runs(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    first = erase(tiny_bundle, corpus, "Paris", "project", options=TINY)
    facts = replace(first.fact_set, facts=first.fact_set.facts[:3])
    result = erase(tiny_bundle, corpus, "Paris", "project", fact_set=facts, options=replace(TINY, score=True))
    assert result.fact_set is facts
    assert result.scorecard is not None and result.scorecard.metrics
    assert result.candidate_rows()[0].keys() >= {"layer", "neuron", "score", "evidence", "selected"}


def test_bad_method_and_concept_are_sentences(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="Unknown erasure method"):
        erase(tiny_bundle, corpus, "Paris", "forget")
    with pytest.raises(ValueError, match="Did you mean"):
        erase(tiny_bundle, corpus, "Pariss", "ablate")
    assert list(METHODS)[:4] == ["optimise", "pisces", "ablate", "project"]
