"""Tiers in every verdict: the rule on synthetic rows, a scorecard judged the same way as a dev
table row, and the ranking that puts tiers first."""

from __future__ import annotations

from typing import Any

import pytest

from workbench.benchmark.goals import TIER_BROKE, TIER_GOAL, TIER_HELD, TIER_PISCES, TIERS, tier
from workbench.benchmark.results import best_method, method_results, tier_table
from workbench.benchmark.scorecard import MetricRow, Scorecard

HELD = {"neighbours": 1.0, "general": 1.0, "others": 0.9, "others_base": 0.9, "ppl_change_pct": 0.5}


@pytest.mark.parametrize(("row", "expected"), [
    ({**HELD, "name_dep": 0.05}, TIER_GOAL),
    ({**HELD, "name_dep": 0.12, "neighbours": 0.7}, TIER_PISCES),  # concept gone by PISCES's bar, a neighbour broke
    ({**HELD, "name_dep": 0.12, "general": 0.80}, TIER_PISCES),  # general kept at >= 0.74 of base
    ({**HELD, "name_dep": 0.12, "general": 0.70}, TIER_BROKE),  # too much utility given away
    ({**HELD, "name_dep": 0.60}, TIER_HELD),  # does nothing, holds everything
    ({**HELD, "name_dep": 0.60, "ppl_change_pct": 3.0}, TIER_BROKE),
    ({**HELD, "name_dep": None}, TIER_HELD),  # no concept number: not erased
])
def test_tier_rule(row: dict[str, Any], expected: str) -> None:
    assert tier(row) == expected


def _card(name_dep: tuple[float, float], general: tuple[float, float], neighbours: tuple[float, float]) -> Scorecard:
    metrics = [MetricRow("efficacy", "concept answered (name-dependent)", *name_dep, 10, "low"),
               MetricRow("specificity", "neighbours answered", *neighbours, 8, "= base"),
               MetricRow("specificity", "general answered", *general, 40, "= base"),
               MetricRow("specificity", "other concepts first-token acc", 0.8, 0.8, 60, "= base"),
               MetricRow("fluency", "neutral perplexity", 20.0, 20.1, 900, "= base")]
    return Scorecard("X", "test", "sha", metrics, 0.0, {}, [], [])


def test_a_scorecard_is_judged_like_a_dev_table_row() -> None:
    gone = _card((0.8, 0.04), (0.9, 0.9), (0.5, 0.5))
    assert gone.goal_row()["name_dep"] == pytest.approx(0.05)  # a share of the base's answers
    assert gone.tier == TIER_GOAL and gone.headline.startswith(f"Tier: {TIER_GOAL}. ")
    assert _card((0.8, 0.08), (0.9, 0.9), (0.5, 0.2)).tier == TIER_PISCES  # neighbours dropped 0.30
    assert _card((0.8, 0.6), (0.9, 0.9), (0.5, 0.5)).tier == TIER_HELD
    assert _card((0.8, 0.6), (0.9, 0.7), (0.5, 0.5)).tier == TIER_BROKE
    assert _card((0.8, 0.6), (0.9, 0.9), (0.5, 0.5)).to_dict()["tier"] == TIER_HELD
    nothing = _card((0.0, 0.0), (0.9, 0.9), (0.5, 0.5))  # the base answers none: nothing was erased
    assert nothing.goal_row()["name_dep"] is None and nothing.tier == TIER_HELD


def _rows(method: str, tiers: list[str]) -> list[dict[str, Any]]:
    by_tier = {TIER_GOAL: {**HELD, "name_dep": 0.0}, TIER_PISCES: {**HELD, "name_dep": 0.1, "neighbours": 0.5},
               TIER_HELD: {**HELD, "name_dep": 0.9}, TIER_BROKE: {**HELD, "name_dep": 0.9, "general": 0.5}}
    return [{"concept": f"c{i}", "method": method, "devbench": "b1", **by_tier[t]} for i, t in enumerate(tiers)]


def test_methods_rank_by_tier_first_and_the_table_counts_them() -> None:
    # 'safe' holds every control on all four concepts but erases none; 'pisces-like' reaches PISCES's
    # acceptance on three: a ranking on 'controls held' alone picked the method that does nothing
    rows = [*_rows("safe", [TIER_HELD] * 4), *_rows("pisces-like", [TIER_PISCES] * 3 + [TIER_BROKE])]
    results = method_results(rows, build="b1")
    assert results["pisces-like"].tiers[TIER_PISCES] == 3 and results["safe"].tiers[TIER_HELD] == 4
    assert best_method(results) == "pisces-like"
    rows += _rows("goal", [TIER_GOAL] + [TIER_BROKE] * 3)
    assert best_method(method_results(rows, build="b1")) == "goal"
    table = tier_table(method_results(rows, build="b1"))
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == list(TIERS)
    assert "| 3/4 |" in table or " 3/4 " in table
