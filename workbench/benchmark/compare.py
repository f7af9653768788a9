"""Several erasure methods side by side on one fact set: one row per method with its tier and
the dev table's numbers (benchmark/goals.py), the relearning test when it ran, and how long the
edit and its scorecard took. The Erase page's "Compare methods" table and `python -m workbench
compare` print the same frame from the same function.

    frame = compare_frame([("ablate", result_a), ("rmu", result_r)])   # EraseResults of one fact set
    print(compare_text(frame))

Plain Python: the numbers come from each result's Scorecard (`goal_row`, `tier`), nothing here
runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.benchmark.goals import CONTROL_CHECKS, FLUENCY_CHECK, goal_checks

if TYPE_CHECKING:
    from workbench.methods.erase import EraseResult

NOT_SCORED = "not scored"  # the tier cell of a run without a scorecard

# column -> what it holds (the page's column help and the CLI's legend say the same)
COLUMNS: dict[str, str] = {
    "method": "the erasure method (workbench/methods/registry.py)",
    "tier": "the best tier the edit reaches (benchmark/goals.py): our goal, PISCES acceptance, controls held "
            "(concept not erased), controls broke",
    "name-dep": "concept prompts that need the name, answered, as a share of the base model's (low is good; "
                "empty where the concept's probe does not split its prompts by name)",
    "concept": "all concept prompts answered, as a share of the base model's (low is good)",
    "neighbours": "neighbour prompts: 1 - their drop (1.00 = held)",
    "general": "general-knowledge prompts: 1 - their drop (1.00 = held)",
    "others": "the other dev concepts' prompts (first token): 1 - their drop (1.00 = held)",
    "ppl %": "change of the neutral text's perplexity, in percent (0 = held)",
    "broke": "the controls that broke (benchmark/goals.py: neighbours, general, others, perplexity, fluency of the "
             "free generations); empty when every control held",
    "relearned": "concept prompts answered after the relearning test fine-tuned the edited model (when it ran)",
    "edit s": "seconds the method took to make the edit",
    "score s": "seconds the scorecard (and the relearning test) took",
}
# the metrics compared at a glance (shares of base or 1 - drop, all on one 0-1 scale)
CHART_METRICS = ("name-dep", "concept", "neighbours", "general", "others", "relearned")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and not math.isnan(float(value)) else None


def compare_row(method: str, result: EraseResult) -> dict[str, Any]:
    """One method's row: its tier and numbers from the result's scorecard (None where it has
    none), the relearned share when the relearning test ran, and the edit and scoring times."""
    card = result.scorecard
    row: dict[str, Any] = {"method": method, "tier": NOT_SCORED, "name-dep": None, "concept": None,
                           "neighbours": None, "general": None, "others": None, "ppl %": None, "broke": None,
                           "relearned": None,
                           "edit s": _num(result.edit_seconds), "score s": _num(result.score_seconds) if card else None}
    if card is None:
        return row
    goal = card.goal_row()
    concept = next((m for m in card.metrics if m.metric == "concept answered"), None)
    others, others_base = _num(goal["others"]), _num(goal["others_base"])
    checks = goal_checks(goal)
    row.update({"tier": card.tier, "name-dep": _num(goal["name_dep"]),
                "concept": None if concept is None or concept.before <= 0 else concept.after / concept.before,
                "neighbours": _num(goal["neighbours"]), "general": _num(goal["general"]),
                "others": None if others is None or others_base is None else 1.0 - (others_base - others),
                "ppl %": _num(goal["ppl_change_pct"]),
                "broke": ", ".join(k for k in (*CONTROL_CHECKS, FLUENCY_CHECK) if checks.get(k) is False) or "none",
                "relearned": None if card.relearn is None else _num(card.relearn.relearned)})
    return row


def compare_frame(runs: Sequence[tuple[str, EraseResult]]) -> pd.DataFrame:
    """The comparison table, one row per (method, EraseResult) in the order given. The
    'relearned' column is there only when the relearning test ran for at least one method."""
    frame = pd.DataFrame([compare_row(method, result) for method, result in runs], columns=list(COLUMNS))
    if frame["relearned"].isna().all():
        frame = frame.drop(columns="relearned")
    return frame


def base_sentence(runs: Sequence[tuple[str, EraseResult]]) -> str:
    """What the base model does on the prompts every row is a share of (from the first scored
    run; every run of one comparison scores the same concept on the same prompts)."""
    card = next((r.scorecard for _, r in runs if r.scorecard is not None), None)
    if card is None:
        return "No method was scored."
    by = {m.metric: m for m in card.metrics}
    answered = ", ".join(f"{label} {by[name].before:.2f}" for name, label in (
        ("concept answered", "concept"), ("concept answered (name-dependent)", "name-dependent"),
        ("neighbours answered", "neighbours"), ("general answered", "general")) if name in by)
    ppl = f"; neutral perplexity {by['neutral perplexity'].before:.3g}" if "neutral perplexity" in by else ""
    note = (" It answers none of the concept prompts, so there is nothing to erase: the concept columns say "
            "nothing." if "concept answered" in by and by["concept answered"].before <= 0 else "")
    return f"The base model on '{card.concept}', prompts answered: {answered}{ppl}.{note}"


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as display strings: shares with two decimals, the perplexity change signed in
    percent, seconds whole, '–' for a missing number."""
    def fmt(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return str(value)
        if column == "ppl %":
            return f"{value:+.1f}%"
        if column.endswith(" s"):
            return f"{value:.0f}"
        return f"{value:.2f}"

    return pd.DataFrame({c: [fmt(c, v) for v in frame[c]] for c in frame.columns}, columns=frame.columns)


def compare_text(frame: pd.DataFrame) -> str:
    """The table as fixed-width text (the CLI)."""
    return str(formatted(frame).to_string(index=False))


def chart_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Long form of the compared metrics (CHART_METRICS present in `frame`) for a grouped bar
    chart: method, metric, value; missing numbers left out."""
    metrics = [m for m in CHART_METRICS if m in frame.columns]
    long = frame.melt(id_vars="method", value_vars=metrics, var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)
