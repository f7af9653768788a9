"""The erasure goal of the dev benchmark as numbers, and which of its parts a bench row meets.

A bench row (bench/erasure.py, one concept x method, or the mean of several) is a mapping with
keys name_dep, concept_first, concept_cont, neighbours, general, others, others_base and
ppl_change_pct, and `fluent` (bool) where the scorecard measured its free generations
(benchmark/fluency.py). Every prompt of the dev benchmark is one the base model answers, so the base of
neighbours and general is 1.00; other concepts are scored by first-token accuracy, whose base
(others_base) is below 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.benchmark.scorecard import EvalOptions

_SCORECARD = EvalOptions()  # the per-edit verdict thresholds; the goal's control drops are the same numbers
CONTROL_CHECKS = ("neighbours", "general", "others", "perplexity")
# Fluency of the free generations is a control too, but rows measured before it existed have no
# `fluent`: a missing value is not held against them, a False always is.
FLUENCY_CHECK = "fluency"


@dataclass(frozen=True)
class ErasureGoal:
    """Thresholds of issue 8's goal (means over the dev concepts). The drops are the scorecard's
    verdict thresholds (EvalOptions); the concept and perplexity bars are the goal's own, stricter
    than the scorecard's (forget ratio 0.25, perplexity ratio 1.05)."""

    name_dep_max: float = 0.10  # answered fraction of prompts that need the concept's name
    neighbour_drop_max: float = _SCORECARD.neighbour_max_drop
    general_drop_max: float = _SCORECARD.general_max_drop
    others_drop_max: float = _SCORECARD.others_max_drop  # first-token accuracy on the other concepts' prompts
    ppl_change_max_pct: float = 2.0


def goal_checks(row: Mapping[str, Any], goal: ErasureGoal = ErasureGoal()) -> dict[str, bool | None]:
    """{check: met?} for the concept goal and each control; None when the row lacks the number.
    `fluency` is there only when the row measured it (`fluent`)."""

    def val(key: str) -> float | None:
        v = row.get(key)
        return float(v) if isinstance(v, int | float) else None

    name_dep, nb, gen, oth, ob, ppl = (val(k) for k in
                                       ("name_dep", "neighbours", "general", "others", "others_base", "ppl_change_pct"))
    checks = {
        "concept": None if name_dep is None else name_dep <= goal.name_dep_max,
        "neighbours": None if nb is None else 1.0 - nb <= goal.neighbour_drop_max + 1e-9,
        "general": None if gen is None else 1.0 - gen <= goal.general_drop_max + 1e-9,
        "others": None if oth is None or ob is None else ob - oth <= goal.others_drop_max + 1e-9,
        "perplexity": None if ppl is None else ppl <= goal.ppl_change_max_pct,
    }
    if _fluent(row) is not None:
        checks[FLUENCY_CHECK] = _fluent(row)
    return checks


def _fluent(row: Mapping[str, Any]) -> bool | None:
    v = row.get("fluent")
    return v if isinstance(v, bool) else None


def controls_held(row: Mapping[str, Any], goal: ErasureGoal = ErasureGoal()) -> bool:
    """True when no control failed (neighbours, general, other concepts, perplexity, and the
    fluency of the free generations where measured): the edit removed at most the concept. A
    missing number does not count as held (a row that did not measure fluency aside)."""
    checks = goal_checks(row, goal)
    return all(checks[k] is True for k in CONTROL_CHECKS) and checks.get(FLUENCY_CHECK) is not False


def goal_met(row: Mapping[str, Any], goal: ErasureGoal = ErasureGoal()) -> bool:
    """True when the row meets every part of the goal: the concept is gone (name-dep) and every
    control held (the fluency of the free generations too, where the row measured it). A missing
    number does not count as met."""
    return all(v is True for v in goal_checks(row, goal).values())


# Tiers an edit can reach, best first: progress shows before the whole goal is met, and an edit
# that does nothing can no longer look good by holding its controls.
TIER_GOAL = "our goal"
TIER_PISCES = "PISCES acceptance"
TIER_HELD = "controls held, concept not erased"
TIER_BROKE = "controls broke"
TIERS = (TIER_GOAL, TIER_PISCES, TIER_HELD, TIER_BROKE)


@dataclass(frozen=True)
class PiscesAcceptance:
    """PISCES's grid search accepts a setting at concept accuracy <= 0.13 while MMLU stays >= 0.45
    from a base of 0.61 (>= 0.74 of base): the concept's name-dependent prompts answered at most
    `name_dep_max`, general prompts at least `general_min_of_base` of the base."""

    name_dep_max: float = 0.13
    general_min_of_base: float = 0.74


def tier(row: Mapping[str, Any], goal: ErasureGoal = ErasureGoal(),
         pisces: PiscesAcceptance = PiscesAcceptance()) -> str:
    """The best tier the row reaches (TIERS): the whole goal; else PISCES's acceptance (concept
    gone by its looser bar, general utility kept by its looser bar, other controls allowed to
    move); else every control held though the concept stays; else a control broke. The row's
    general is relative to a base of 1.00 (every dev-benchmark prompt is one the base answers).
    An edit whose free generations degenerate (`fluent` False) reaches neither of the first two:
    an unreadable model has not kept its general utility, whatever its first tokens say."""
    if goal_met(row, goal):
        return TIER_GOAL
    name_dep, general = row.get("name_dep"), row.get("general")
    if (_fluent(row) is not False and isinstance(name_dep, int | float) and isinstance(general, int | float)
            and name_dep <= pisces.name_dep_max and general >= pisces.general_min_of_base):
        return TIER_PISCES
    return TIER_HELD if controls_held(row, goal) else TIER_BROKE


def mean_row(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Column means over rows (numbers only; None where no row has the column)."""
    keys = {k for r in rows for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out: dict[str, float | None] = {}
    for k in sorted(keys):
        vals = [float(r[k]) for r in rows if isinstance(r.get(k), int | float)]
        out[k] = sum(vals) / len(vals) if vals else None
    return out


def latest_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last row of each (concept, method), in the order they were last run: a re-run
    replaces the row it repeats."""
    last: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in rows:
        last.pop((r["concept"], r["method"]), None)
        last[(r["concept"], r["method"])] = r
    return list(last.values())


def goal_summary(checks: Mapping[str, bool | None]) -> str:
    """'concept FAIL · neighbours ok · ...' for a table line."""
    return " · ".join(f"{k} {'-' if v is None else 'ok' if v else 'FAIL'}" for k, v in checks.items())
