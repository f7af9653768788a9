"""One source for measured numbers: docs/results.md's tables and the Erase page's method texts are what
bench/results/erasure-embedded.jsonl gives, so they cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

from workbench.benchmark.results import (
    BLOCK_END,
    BLOCK_START,
    RESULTS_DOC,
    RESULTS_FILE,
    load_rows,
    measured_sentence,
    method_results,
    replace_results_block,
    results_block,
)
from workbench.config import REPO_ROOT
from workbench.methods.erase import METHODS, AblateConfig
from workbench.methods.registry import Method, register, unregister
from workbench.ui.erase import method_help


def test_results_doc_tables_are_generated_from_the_results_file() -> None:
    assert RESULTS_DOC == REPO_ROOT / "docs" / "results.md"
    doc = RESULTS_DOC.read_text()
    assert doc.count(BLOCK_START) == 1 and doc.count(BLOCK_END) == 1
    block = doc.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0].strip()
    assert block == results_block(load_rows()), "docs/results.md drifted: run `python bench/erasure.py --docs`"
    assert BLOCK_START not in (REPO_ROOT / "README.md").read_text(), "the generated tables live in docs/results.md"


def test_erase_page_quotes_the_results_file_and_types_no_numbers_of_its_own() -> None:
    """Each method's page text ends with what the results file says of it (measured or not); its
    own description types no results."""
    results = method_results(load_rows())
    for method, registered in METHODS.items():
        assert method_help(method).endswith(measured_sentence(results.get(method)))
        assert not re.search(r"\d\.\d\d|\+\d+(\.\d)?%", registered.what), (method, registered.what)


def test_a_method_without_rows_says_it_has_not_been_measured() -> None:
    """A new method merges before any benchmark run: its page text says so, in a sentence
    without numbers, instead of a test demanding rows for it."""
    name = "toy-unmeasured-method"
    assert name not in method_results(load_rows())
    register(Method(name, METHODS["ablate"].run, "Toy", "Zeroes {ablate_rows} rows."))  # no run needed
    try:
        text = method_help(name)
    finally:
        unregister(name)
    unmeasured = measured_sentence(None)
    assert unmeasured.endswith(".") and "not measured" in unmeasured.lower()
    assert not re.search(r"\d", unmeasured)
    assert text.endswith(unmeasured) and text.startswith(f"Zeroes {AblateConfig().n_rows} rows.")


def test_a_new_row_changes_what_docs_and_page_would_say(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in RESULTS_FILE.read_text().splitlines() if line.strip()]
    extra = {**next(r for r in rows if r["method"] == "ablate"), "concept": "Made-up concept", "name_dep": 0.0}
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, extra]))
    before, after = method_results(load_rows()), method_results(load_rows(path))
    assert after["ablate"].n == before["ablate"].n + 1
    assert measured_sentence(after["ablate"]) != measured_sentence(before["ablate"])
    text = f"intro\n{BLOCK_START}\nold\n{BLOCK_END}\noutro"
    new = replace_results_block(text, results_block(load_rows(path)))
    assert "Made-up concept" in new and new.startswith("intro\n") and new.endswith("\noutro") and "old" not in new


def test_rows_of_two_benchmark_builds_are_not_averaged_together() -> None:
    from workbench.benchmark.results import HELD_OUT, held_out_table

    def row(concept: str, method: str, build: str, name_dep: float) -> dict[str, object]:
        return {"concept": concept, "method": method, "devbench": build, "name_dep": name_dep, "verdicts": []}

    rows = [row("A", "optimise", "2026-01-01", 0.9), row("B", "optimise", "2026-01-01", 0.7),
            row("A", "optimise", "2026-02-01", 0.1), row("A", "ablate", "2026-01-01", 0.5),
            row("Italy", "optimise", HELD_OUT, 0.0)]
    got = method_results(rows, build="2026-02-01")
    assert got["optimise"].n == 1 and got["optimise"].get("name_dep") == 0.1  # the current build only
    assert got["ablate"].build == "2026-01-01" and got["ablate"].n == 1  # not rerun: its newest build, labelled
    assert "benchmark build of 2026-01-01" in measured_sentence(got["ablate"])
    assert "Italy" in held_out_table(rows) and "| A |" not in held_out_table(rows)


def test_the_default_method_is_the_best_measured_one() -> None:
    from workbench.benchmark.results import best_method
    from workbench.methods.erase import DEFAULT_METHOD

    assert best_method(method_results(load_rows())) == DEFAULT_METHOD


def test_best_method_ranks_whole_goal_then_controls_then_name_dep() -> None:
    from workbench.benchmark.results import best_method

    def row(concept: str, method: str, name_dep: float, general: float) -> dict[str, object]:
        return {"concept": concept, "method": method, "devbench": "b", "name_dep": name_dep, "neighbours": 1.0,
                "general": general, "others": 0.9, "others_base": 0.9, "ppl_change_pct": 0.0, "verdicts": []}

    rows = [row("A", "optimise", 0.5, 1.0), row("B", "optimise", 0.5, 1.0),  # controls held twice, no pass
            row("A", "rewrite-cf", 0.0, 1.0), row("B", "rewrite-cf", 0.0, 0.5),  # one pass, one broken control
            row("A", "ablate", 0.0, 1.0)]  # passes, but on fewer concepts than the others faced
    got = method_results(rows, build="b")
    assert (got["rewrite-cf"].passed, got["rewrite-cf"].held, got["optimise"].passed) == (1, 1, 0)
    assert best_method(got) == "rewrite-cf"
    rows[2] = row("A", "rewrite-cf", 0.3, 1.0)  # now only ablate passes, on fewer concepts: held decides
    assert best_method(method_results(rows, build="b")) == "optimise"
    assert best_method(method_results(rows[:1], build="other")) is None  # nothing on the current build
