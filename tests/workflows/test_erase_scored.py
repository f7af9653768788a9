"""Erasures with their scorecard on the tiny model: a given fact set is used as it is and scored,
and the strength search runs a method at three strengths, scoring each. Every scorecard costs
tens of seconds on 2 cores, so these are in the full suite; the search's stopping rule itself is
checked on scripted scorecards in tests/unit/test_erase.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_erase import TINY
from workbench.corpus import load_wiki
from workbench.methods.erase import AblateConfig, EraseOptions, erase


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    return load_wiki("en")


def test_given_fact_set_is_used_and_scorecard_runs(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    first = erase(tiny_bundle, corpus, "Paris", "project", options=TINY)
    facts = replace(first.fact_set, facts=first.fact_set.facts[:3])
    result = erase(tiny_bundle, corpus, "Paris", "project", fact_set=facts, options=replace(TINY, score=True))
    assert result.fact_set is facts
    assert result.scorecard is not None and result.scorecard.metrics
    assert result.candidate_rows()[0].keys() >= {"layer", "neuron", "score", "evidence", "selected"}


def test_strength_search_raises_the_knob_and_says_what_stopped_it(tiny_bundle, corpus) -> None:  # type: ignore[no-untyped-def]
    from workbench.benchmark.scorecard import EvalOptions
    from workbench.methods.strength import search_strength

    quick = EvalOptions(continuation_sets=(), max_new_tokens=2, generation_tokens=2, neutral_max_tokens=32)
    opts = EraseOptions(ablate=AblateConfig(n_rows=8), eval_options=quick)
    res = search_strength(tiny_bundle, corpus, "Harry Potter", "ablate", options=opts, levels=(0.5, 1.0, 2.0))
    # the random tiny model knows nothing about the concept, and zeroing at most 16 of its 512 rows
    # moves neither its chance answers nor a control: every level is tried and the strongest kept
    assert res.stopped_by == "strongest level reached"
    assert [lev.level for lev in res.levels] == [0.5, 1.0, 2.0] and res.chosen_level == 2.0
    assert all(not lev.concept_gone and not lev.broken_controls for lev in res.levels)
    n_rows = sum(len(op.neurons) for op in res.chosen.spec.operations)
    assert n_rows == 16  # the knob: 8 rows x 2
    assert "strength search of ablate (rows zeroed)" in res.summary()
    with pytest.raises(ValueError, match="no strength to search"):
        search_strength(tiny_bundle, corpus, "Harry Potter", "project")
