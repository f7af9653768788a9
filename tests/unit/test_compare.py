"""The 'Compare methods' table (benchmark/compare.py) on hand-made erase results: one row per
method in the order given, tiers and numbers as the scorecard judges them, the relearned column
only when the test ran, times split into edit and scoring; and the page's option helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from workbench.benchmark.compare import NOT_SCORED, chart_frame, compare_frame, compare_text, formatted
from workbench.benchmark.goals import TIER_BROKE, TIER_GOAL, TIER_HELD
from workbench.benchmark.relearn import RelearnReport
from workbench.benchmark.scorecard import MetricRow, Scorecard
from workbench.edits.spec import EditSpec, ModelRef
from workbench.methods.erase import EraseResult
from workbench.methods.facts import Fact, FactSet

FACTS = FactSet("Paris", "Paris", "place", [Fact("Paris is in France.", "article")])


def _card(name_dep: float, concept: float, neighbours: float, general: float, ppl: float,
          relearned: float | None = None) -> Scorecard:
    """A scorecard whose base answers 0.8 of the concept prompts, neighbours 0.5, general 0.9,
    others 0.8 (held), perplexity 20."""
    metrics = [MetricRow("efficacy", "concept answered", 0.8, concept, 12, "low"),
               MetricRow("efficacy", "concept answered (name-dependent)", 0.8, name_dep, 10, "low"),
               MetricRow("specificity", "neighbours answered", 0.5, neighbours, 8, "= base"),
               MetricRow("specificity", "general answered", 0.9, general, 40, "= base"),
               MetricRow("specificity", "other concepts first-token acc", 0.8, 0.8, 60, "= base"),
               MetricRow("fluency", "neutral perplexity", 20.0, ppl, 900, "= base")]
    relearn = None if relearned is None else RelearnReport(
        paragraphs=70, excluded=3, epochs=2, steps=18, lr=1e-5, weights="mlp", prompts="name-dependent",
        n_prompts=10, base=0.8, edited=name_dep, relearned=relearned, recovered=None, loss_first=3.0,
        loss_last=2.0, seconds=5.0)
    return Scorecard("Paris", "test", "sha", metrics, 0.5, {}, [], [], relearn=relearn)


def _result(method: str, card: Scorecard | None, edit_s: float, score_s: float) -> EraseResult:
    spec = EditSpec(name=f"erase Paris ({method})", model=ModelRef(id="m", weights_sha256="0" * 64), operations=[])
    return EraseResult(spec, {}, FACTS, [], card, seconds=edit_s + score_s, edit_seconds=edit_s,
                       score_seconds=score_s if card is not None else 0.0)


def test_one_row_per_method_with_its_tier_and_the_dev_table_numbers() -> None:
    runs = [("rmu", _result("rmu", _card(0.04, 0.2, 0.5, 0.9, 20.2), 40.0, 12.0)),  # gone, held
            ("ablate", _result("ablate", _card(0.6, 0.7, 0.5, 0.9, 20.1), 2.0, 30.0)),  # held, not erased
            ("project", _result("project", _card(0.6, 0.7, 0.2, 0.6, 26.0), 3.0, 11.0))]  # broke
    frame = compare_frame(runs)
    assert list(frame["method"]) == ["rmu", "ablate", "project"]  # the order given
    assert list(frame["tier"]) == [TIER_GOAL, TIER_HELD, TIER_BROKE]
    assert "relearned" not in frame.columns  # no method ran the relearning test
    rmu = frame.iloc[0]
    assert rmu["name-dep"] == pytest.approx(0.05)  # a share of the base's 0.8
    assert rmu["concept"] == pytest.approx(0.25)
    assert rmu["neighbours"] == pytest.approx(1.0) and rmu["general"] == pytest.approx(1.0)
    assert rmu["ppl %"] == pytest.approx(1.0)
    assert (rmu["edit s"], rmu["score s"]) == (40.0, 12.0)
    broke = frame.iloc[2]
    assert broke["neighbours"] == pytest.approx(0.7) and broke["general"] == pytest.approx(0.7)  # 1 - drop
    assert broke["ppl %"] == pytest.approx(30.0)
    assert broke["broke"] == "neighbours, general, perplexity"  # which controls, by name
    assert list(frame["broke"])[:2] == ["none", "none"] and rmu["others"] == pytest.approx(1.0)


def test_relearned_column_and_an_unscored_run() -> None:
    frame = compare_frame([("optimise", _result("optimise", _card(0.0, 0.1, 0.5, 0.9, 20.0, relearned=0.3), 200, 90)),
                           ("ablate", _result("ablate", None, 2.0, 0.0))])
    assert frame["relearned"].iloc[0] == pytest.approx(0.3)
    unscored = frame.iloc[1]
    assert unscored["tier"] == NOT_SCORED and unscored["edit s"] == 2.0
    assert all(unscored[c] is None or math.isnan(unscored[c]) for c in ("name-dep", "neighbours", "relearned", "score s"))
    shown = formatted(frame)
    assert list(shown.iloc[0]) == ["optimise", TIER_GOAL, "0.00", "0.12", "1.00", "1.00", "1.00", "+0.0%", "none",
                                   "0.30", "200", "90"]
    assert list(shown.iloc[1])[2:10] == ["–"] * 8
    text = compare_text(frame)
    assert text.splitlines()[0].split()[:2] == ["method", "tier"] and "optimise" in text and "ablate" in text


def test_chart_frame_is_the_compared_metrics_in_long_form() -> None:
    frame = compare_frame([("rmu", _result("rmu", _card(0.04, 0.2, 0.5, 0.9, 20.2), 1, 1)),
                           ("ablate", _result("ablate", None, 1, 0))])
    long = chart_frame(frame)
    assert list(long.columns) == ["method", "metric", "value"]
    assert set(long["method"]) == {"rmu"}  # the unscored run has no numbers to draw
    assert list(long["metric"]) == ["name-dep", "concept", "neighbours", "general", "others"]


def test_options_for_a_method() -> None:
    from workbench.methods.erase import erase_options
    from workbench.ui.erase import compare_defaults

    opt = erase_options("optimise", steps=15, score=True, relearn=True, chat_template=False, saes_dir=None)
    assert opt.optimise is not None and opt.optimise.steps == 15 and opt.eval_options.relearn is not None
    ablate = erase_options("ablate", steps=15, score=False, relearn=False, chat_template=True, saes_dir=None)
    assert ablate.optimise is None and ablate.eval_options.relearn is None and not ablate.score
    assert ablate.chat_template
    assert erase_options("rmu", steps=15).optimise is None  # RMU keeps its own config
    assert erase_options("optimise").optimise is None  # no steps picked: the method's defaults
    assert compare_defaults(["optimise", "pisces", "ablate", "rmu", "elm"]) == ["optimise", "rmu", "elm"]
    assert compare_defaults(["ablate", "elm"]) == ["elm"]


def test_methods_that_need_an_sae_are_named_with_the_reason(tmp_path: Path) -> None:
    from workbench.methods.erase import METHODS
    from workbench.ui.erase import unavailable_methods

    blocked = unavailable_methods(tmp_path, "tiny-model", 4)  # no SAE in an empty folder
    assert set(blocked) == {name for name, m in METHODS.items() if m.needs_sae} and "pisces" in blocked
    assert all(reason and reason == blocked["pisces"] for reason in blocked.values())


def test_base_sentence_names_what_every_share_is_of() -> None:
    from workbench.benchmark.compare import base_sentence

    runs = [("ablate", _result("ablate", None, 1, 0)), ("rmu", _result("rmu", _card(0.04, 0.2, 0.5, 0.9, 20.2), 1, 1))]
    sentence = base_sentence(runs)
    assert sentence.startswith("The base model on 'Paris', prompts answered: concept 0.80, name-dependent 0.80, "
                               "neighbours 0.50, general 0.90; neutral perplexity 20."), sentence
    assert "nothing to erase" not in sentence
    assert base_sentence(runs[:1]) == "No method was scored."
