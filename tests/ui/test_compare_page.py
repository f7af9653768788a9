"""'Compare methods' on the Erase page, on the tiny model: two methods queued as the user's own
jobs on one fact set, run one after the other, scored; the side-by-side table shows a tiered row
per method, and 'Use this edit' on the second row makes that method's edit the user's draft."""

from __future__ import annotations

from pathlib import Path

from apptest_helpers import app, job_ids, ok

from workbench.benchmark.goals import TIERS
from workbench.ui.draft import EditDraft
from workbench.ui.erase import method_label

METHODS = ["ablate", "project"]  # the two fastest on the tiny model (seconds each, before the scorecard)


def test_compare_two_methods_and_use_the_second(ui_env: Path) -> None:
    from workbench.ui import resources

    manager = resources.jobs()
    at = ok(app("pages/5_Erase_a_concept.py", EditDraft()))
    at.text_input(key="er_query").input("Paris").run()
    assert at.button(key="er_cmp_run").disabled  # no fact set yet
    offered = at.multiselect(key="er_cmp_methods").options  # the labels
    assert method_label("ablate") in offered and method_label("pisces") not in offered  # no SAE on this cache
    assert any(c.value.startswith("Not offered here: pisces") and "sae train" in c.value for c in at.caption)
    at.button(key="er_build_facts").click().run()
    built = manager.wait(at.session_state["er_facts_job"], timeout_s=600)
    assert built is not None and built.state == "done", built
    ok(at.run())

    at.multiselect(key="er_cmp_methods").set_value(METHODS).run()
    before = job_ids()
    ok(at.button(key="er_cmp_run").click().run())
    cmp = at.session_state["er_cmp"]
    assert [m for m, _ in cmp["jobs"]] == METHODS and cmp["concept"] == "Paris"
    started = {j.job_id: j for j in manager.jobs(limit=100_000) if j.job_id not in before}
    assert set(started) == {job_id for _, job_id in cmp["jobs"]}  # one job per method, nothing else
    owner = at.session_state["_workbench_owner"]
    assert {j.owner for j in started.values()} == {owner} and {j.kind for j in started.values()} == {"compare"}
    # one queue on a CPU: the second waits behind the first, and the panel says so
    assert any("Waiting in the queue" in c.value for c in at.caption), [c.value for c in at.caption]

    finals = [manager.wait(job_id, timeout_s=900) for _, job_id in cmp["jobs"]]
    assert all(f is not None and f.state == "done" for f in finals), finals
    assert finals[1].started >= finals[0].updated  # one after the other, never at once
    ok(at.run())

    results = [at.session_state["er_cmp_results"][job_id] for _, job_id in cmp["jobs"]]
    assert results[0].fact_set is results[1].fact_set  # the same fact set object: comparable edits
    assert all(r.scorecard is not None for r in results)
    table = next(d.value for d in at.dataframe if {"method", "tier", "broke"} <= set(d.value.columns))
    # one row per method, in the order picked
    assert list(table["method"]) == METHODS
    assert all(any(cell.endswith(t) for t in TIERS) for cell in table["tier"]), list(table["tier"])
    controls = {"neighbours", "general", "others", "perplexity", "fluency"}
    assert all(cell == "none" or set(cell.split(", ")) <= controls for cell in table["broke"]), list(table["broke"])
    assert [b.label for b in at.button if b.key and b.key.startswith("er_cmp_use_")] == [f"Use the {m} edit" for m in METHODS]
    assert len(at.get("plotly_chart")) == 1  # the grouped bars

    at.button(key="er_cmp_use_1").click().run()
    d = ok(at).session_state["edit_draft"]
    expected = results[1].spec.operations
    assert [op.kind for op in d.operations] == ["project_out_direction"]
    assert [op.model_dump() for op in d.operations] == [op.model_dump() for op in expected]
    assert d.concept == "Paris" and d.name == results[1].spec.name
