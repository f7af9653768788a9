"""`python -m workbench compare` on the tiny model: two methods on one fact set, scored, printed
as the Erase page's table (benchmark/compare.py), each method's spec, scorecard and the table
written; a method that cannot run here is refused before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from workbench.benchmark.goals import TIERS
from workbench.cli import main
from workbench.config import Settings
from workbench.edits.spec import load_spec
from workbench.methods.facts import Fact, FactSet


@pytest.fixture
def cli_cache(settings: Settings) -> str:
    return str(settings.cache_dir)


def run(cache: str, *args: str) -> int:
    return main(["--model", "tiny", "--cache", cache, *args])


def test_compare_refuses_what_cannot_run_before_any_work(cli_cache: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(cli_cache, "compare", "--concept", "Paris", "--methods", "ablate,nope") == 2
    assert "Unknown erasure method(s) nope" in capsys.readouterr().err
    assert run(cli_cache, "compare", "--concept", "Paris", "--methods", "ablate,pisces") == 2
    assert "pisces: No local SAE" in capsys.readouterr().err


def test_compare_two_methods_on_one_fact_set(cli_cache: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    facts = FactSet("Paris", "Paris", "place", [Fact("Paris is the capital of France.", "user"),
                                                Fact("The Eiffel Tower stands in Paris.", "user"),
                                                Fact("Paris lies on the Seine.", "user")])
    (tmp_path / "paris.facts.json").write_text(facts.to_json())
    out = tmp_path / "cmp"
    assert run(cli_cache, "compare", "--concept", "Paris", "--methods", "ablate,project",
               "--facts", str(tmp_path / "paris.facts.json"), "--out-dir", str(out)) == 0
    printed = capsys.readouterr().out
    table = printed.split("2 methods on the same 3 facts of 'Paris':\n", 1)[1].splitlines()
    assert table[0].split()[:2] == ["method", "tier"]
    assert [line.split()[0] for line in table[1:3]] == ["ablate", "project"]
    assert all(any(t in line for t in TIERS) for line in table[1:3]), table
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["method"] for r in rows] == ["ablate", "project"] and all(r["tier"] in TIERS for r in rows)
    assert all(float(r["edit s"]) > 0 and float(r["score s"]) > 0 for r in rows)
    assert [op.kind for op in load_spec(out / "project.json")[0].operations] == ["project_out_direction"]
    assert {op.kind for op in load_spec(out / "ablate.json")[0].operations} == {"ablate_value_vectors"}
    assert json.loads((out / "ablate.scorecard.json").read_text())["tier"] == rows[0]["tier"]
    assert FactSet.from_json((out / "facts.json").read_text()).texts() == facts.texts()
