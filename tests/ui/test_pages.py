"""Every page renders on the tiny model, searches return results, 'add to edit' updates the
session's edit, previews generate, and bad spec uploads are refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from workbench.config import REPO_ROOT
from workbench.ui.draft import EditDraft, ablate, prune

TIMEOUT = 180
PICKLED_INT = b"\x80\x04K\x01."  # the bytes of pickle.dumps(1): a pickle upload


def app(page: str, draft: EditDraft | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=TIMEOUT)
    if draft is not None:
        at.session_state["edit_draft"] = draft
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def draft_ops(at: AppTest) -> list:
    return at.session_state["edit_draft"].operations


@pytest.fixture(scope="module")
def shared(ui_env: Path) -> dict:
    """The app's own shared resources (bundle, store) after a first Home run."""
    ok(app("app.py"))
    from workbench.ui import resources

    store = resources.store()
    bundle = resources.bundle("tiny")
    token = store.df("SELECT token FROM value_vector_tokens WHERE side = 'top' AND rank = 0 "
                     "AND length(trim(token)) >= 3 LIMIT 1").iloc[0, 0]
    return {"store": store, "bundle": bundle, "token": str(token)}


def test_home_renders_status_and_runs_a_build_job(shared: dict) -> None:
    at = ok(app("app.py"))
    assert at.title[0].value.endswith("Concept-erasure workbench")
    assert at.selectbox(key="model_source_select").value == "tiny"
    labels = {m.label: m.value for m in at.metric}
    assert int(labels["value-vector tokens"].replace(",", "")) > 0
    at.button(key="build_vocab").click().run()
    ok(at)
    from workbench.ui import resources

    manager = resources.jobs()
    job = manager.jobs()[0]
    final = manager.wait(job.job_id, timeout_s=120)
    assert final is not None and final.state == "done", final
    assert "already up to date" in final.summary


def test_feature_browser_search_and_add_to_edit(shared: dict) -> None:
    at = ok(app("pages/1_Feature_browser.py"))
    at.text_input(key="vv_query").input(shared["token"].strip()).run()
    ok(at)
    assert at.dataframe, "a search for a known token returns value vectors"
    assert at.selectbox(key="vv_pick").options
    assert len(at.get("plotly_chart")) == 1
    at.button(key="vv_add_ablate").click().run()
    ok(at)
    ops = draft_ops(at)
    assert len(ops) == 1 and ops[0].kind == "ablate_value_vectors"
    at.button(key="vv_add_prune").click().run()
    assert [op.kind for op in draft_ops(ok(at))] == ["ablate_value_vectors", "prune_neurons"]


def test_feature_browser_no_match_warns(shared: dict) -> None:
    at = ok(app("pages/1_Feature_browser.py"))
    at.text_input(key="vv_query").input("zzqqxxnotatoken").run()
    assert any("No value vector" in w.value for w in ok(at).warning)


def test_concept_page_shows_auroc_and_adds_projection(shared: dict) -> None:
    at = ok(app("pages/2_Concept_vectors.py"))
    assert at.selectbox(key="cv_concept").value == "paris"
    assert len(at.get("plotly_chart")) == 1
    assert at.dataframe
    at.button(key="cv_add").click().run()
    ops = draft_ops(ok(at))
    assert len(ops) == 1 and ops[0].kind == "project_out_direction"
    assert len(ops[0].direction) == shared["bundle"].d_model


def test_concept_page_builds_a_concept_as_a_job(shared: dict) -> None:
    at = ok(app("pages/2_Concept_vectors.py"))
    at.text_input(key="cv_name").input("Chess").run()
    at.slider(key="cv_docs").set_value(8).run()
    at.button(key="cv_build").click().run()
    ok(at)
    from workbench.ui import resources

    manager = resources.jobs()
    job = next(j for j in manager.jobs() if j.kind == "concept")
    final = manager.wait(job.job_id, timeout_s=300)
    assert final is not None and final.state == "done", final
    at = ok(app("pages/2_Concept_vectors.py"))
    assert "Chess (chess)" in at.selectbox(key="cv_concept").options


def test_neurons_page_ranks_and_adds_edits(shared: dict) -> None:
    at = ok(app("pages/3_Neurons.py"))
    assert at.selectbox(key="nr_concept").value in ("paris", "chess")
    assert len(at.get("plotly_chart")) == 3  # effect sizes, histograms, value-vector tokens
    at.button(key="nr_add_ablate").click().run()
    at.button(key="nr_add_adjust").click().run()
    kinds = [op.kind for op in draft_ops(ok(at))]
    assert "ablate_value_vectors" in kinds and kinds[-1] == "neuron_adjust"


def test_edit_page_lists_reorders_and_previews(shared: dict) -> None:
    draft = EditDraft(name="ui-test")
    draft.add(ablate(0, [1, 2]))
    draft.add(prune(1, [3]))
    at = ok(app("pages/4_Edit_and_preview.py", draft))
    assert "Operations (2)" in [s.value for s in at.subheader]
    assert any("Compiled:" in c.value for c in at.caption)
    at.button(key=f"ed_down_0_{draft.version}").click().run()
    assert [op.kind for op in draft_ops(ok(at))] == ["prune_neurons", "ablate_value_vectors"]
    at.text_area(key="ed_prompt").input("Paris is").run()
    at.slider(key="ed_max_new").set_value(4).run()
    at.button(key="ed_generate").click().run()
    ok(at)
    history = at.session_state["ed_history"]
    assert [h["model"] for h in history[-2:]] == ["base", "edited"]
    assert len(at.get("download_button")) == 1


def _spec_json(shared: dict, **changes: object) -> str:
    d = EditDraft(name="imported")
    d.add(ablate(0, [5]))
    raw = json.loads(d.to_spec(shared["bundle"]).to_json())
    raw.update(changes)
    return json.dumps(raw)


def test_edit_page_imports_a_valid_spec(shared: dict) -> None:
    at = ok(app("pages/4_Edit_and_preview.py", EditDraft()))
    at.text_area(key="ed_paste").input(_spec_json(shared)).run()
    at.button(key="ed_import").click().run()
    ok(at)
    assert not at.error
    assert [op.kind for op in draft_ops(at)] == ["ablate_value_vectors"]
    assert at.session_state["edit_draft"].name == "imported"


@pytest.mark.parametrize("payload, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("OTHER_MODEL", "load the same checkpoint"),
    ('{"schema": "workbench.edit/1", "name": "x", "model": {"id": "m", "weights_sha256": "0"}, '
     '"operations": [{"kind": "explode"}]}', "unknown kind"),
], ids=["corrupt", "not-object", "other-model", "unknown-op"])
def test_edit_page_rejects_bad_specs(shared: dict, payload: str, message: str) -> None:
    if payload == "OTHER_MODEL":
        payload = _spec_json(shared, model={"id": "gemma-3-270m", "weights_sha256": "ab" * 32})
    at = ok(app("pages/4_Edit_and_preview.py", EditDraft()))
    at.text_area(key="ed_paste").input(payload).run()
    at.button(key="ed_import").click().run()
    errors = [e.value for e in ok(at).error]
    assert errors and message in errors[0], errors
    assert draft_ops(at) == []


def test_upload_checks_refuse_pickle_huge_and_binary(shared: dict) -> None:
    from workbench.config import Limits
    from workbench.edits.spec import SpecError
    from workbench.ui.draft import read_uploaded_spec

    limits = Limits(max_upload_bytes=1000)
    with pytest.raises(SpecError, match="never unpickles"):
        read_uploaded_spec(PICKLED_INT, shared["bundle"], limits)
    with pytest.raises(SpecError, match="upload limit"):
        read_uploaded_spec(b" " * 1001, shared["bundle"], limits)
    with pytest.raises(SpecError, match="not UTF-8"):
        read_uploaded_spec(b"\xff\xfe\x00", shared["bundle"], limits)
    spec = read_uploaded_spec(_spec_json(shared).encode(), shared["bundle"], Limits())
    assert spec.name == "imported"


def test_sessions_do_not_share_edits(shared: dict) -> None:
    a = ok(app("pages/1_Feature_browser.py"))
    a.text_input(key="vv_query").input(shared["token"].strip()).run()
    a.button(key="vv_add_ablate").click().run()
    b = ok(app("pages/4_Edit_and_preview.py"))
    assert len(draft_ops(a)) == 1
    assert draft_ops(b) == []
