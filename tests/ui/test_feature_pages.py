"""SAE feature pages on the tiny model: an SAE trained and catalogued by the app's own job,
search, the feature page (charts, escaped snippets, tau rows), label editing, 'remove it' into
the edit (which then compiles on Edit & preview), concept-set contrast as a job, and the Home
page's SAE table and training job."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest_helpers import app, ok, wait_for_job

from workbench.sae.train import SAETrainConfig
from workbench.server_paths import SAE_REFUSAL
from workbench.ui.draft import EditDraft
from workbench.ui.features import compact, density_text, example_html, sae_label, snippet_html, table_height

TINY_SAE = SAETrainConfig(layer=1, site="hook_mlp_out", width=128, k=6, tokens=12_288, context_size=32, train_batch_tokens=512,
                          store_batch_prompts=8, norm_batches=2, holdout_docs=40, eval_tokens=1500, lr=2e-3,
                          dead_feature_window=8)




@pytest.fixture(scope="module")
def catalogued(ui_env: Path) -> dict:
    """The tiny SAE trained and catalogued through the app's job (as the Home button does)."""
    ok(app("app.py"))
    from workbench.jobs import sae_job
    from workbench.ui import resources

    store, bundle, manager = resources.store(), resources.bundle("tiny"), resources.jobs()
    job = manager.start("sae", "tiny SAE", sae_job(store, bundle, resources.settings(), TINY_SAE,
                                                      catalogue_tokens=3000))
    final = manager.wait(job, timeout_s=600)
    assert final is not None and final.state == "done", final
    row = store.list_saes(bundle.model_id).iloc[-1].to_dict()
    token = store.df("SELECT token_norm FROM feature_tokens WHERE sae_id = ? AND side = 'top' AND rank = 0 "
                     "AND length(token_norm) >= 3 LIMIT 1", [row["sae_id"]]).iloc[0, 0]
    return {"store": store, "row": row, "token": str(token)}


def test_snippets_are_escaped_and_highlighted() -> None:
    out = snippet_html("<script>alert(1)</script> the [[river]] <b>x</b>", 3.0, 6.0)
    assert "<script>" not in out and "&lt;script&gt;" in out and "&lt;b&gt;x&lt;/b&gt;" in out
    assert "<mark" in out and ">river</mark>" in out and "rgba(214, 39, 40, 0.28)" in out
    assert snippet_html("no marker <i>") == "no marker &lt;i&gt;"
    assert "&lt;T&gt;" in example_html("[[a]]", 1.0, "<T>")
    assert table_height(1) == 75 and table_height(0) == 75 and table_height(500) == 260
    assert [compact(n) for n in (12, 184_320, 2_211_000, 3_000_000_000)] == ["12", "184k", "2.2M", "3.0B"]
    assert density_text(0.0).startswith("never fired") and "1 in 100 tokens" in density_text(0.01)
    assert sae_label({"layer": 6, "hook": "blocks.6.hook_mlp_out", "d_sae": 4096,
                      "metrics_json": '{"l0": 31.2, "explained_variance": 0.925, "dead_fraction": 0.86}'}) == \
        "L6 hook_mlp_out · 4,096 features · L0 31 · EV 0.93 · dead 86%"


def test_search_open_label_and_remove_a_feature(catalogued: dict) -> None:
    at = ok(app("pages/1_Feature_browser.py", EditDraft()))
    at.text_input(key="fb_query").input(catalogued["token"]).run()
    ok(at)
    assert not at.warning or "dead" in at.warning[0].value
    feature = at.session_state["fb_feature"]
    assert any(m.value.startswith(f"### Feature {feature}") for m in at.markdown)
    assert len(at.get("plotly_chart")) >= 2  # decoder tokens, density (+ activations if it fired)
    sae_id = catalogued["row"]["sae_id"]
    label_key = f"fb_label_{sae_id}_{feature}"
    at.text_input(key=label_key).input("my river feature").run()
    at.button(key="fb_label_save").click().run()
    ok(at)
    assert catalogued["store"].feature_detail(sae_id, feature)["label"] == "my river feature"
    at.slider(key="fb_tau").set_value(0.5).run()
    at.button(key="fb_add").click().run()
    d = ok(at).session_state["edit_draft"]
    (op,) = d.operations
    assert op.kind == "remove_sae_features" and op.features == [feature] and op.tau == 0.5
    assert d.sae is not None and d.sae.id == sae_id

    edit = ok(app("pages/4_Edit_and_preview.py", d))  # the SAE op compiles with the local SAE
    assert any("Compiled adapter:" in c.value for c in edit.caption), [e.value for e in edit.error]


def test_unknown_feature_and_empty_results_are_messages(catalogued: dict) -> None:
    at = ok(app("pages/1_Feature_browser.py"))
    at.text_input(key="fb_query").input("zzqqxxnotatoken").run()
    assert any("No feature" in w.value for w in ok(at).warning)
    at.session_state["fb_feature"] = 10**6
    at.run()
    assert any("no catalogued feature" in e.value for e in ok(at).error)


def test_concept_set_contrast_builds_as_a_job(catalogued: dict) -> None:
    from workbench.ui import resources

    at = ok(app("pages/1_Feature_browser.py"))
    at.radio(key="fb_how").set_value("concept set").run()
    ok(at)
    if at.button(key="fb_contrast") is not None and any("not built" in i.value for i in at.info):
        at.button(key="fb_contrast").click().run()
        job = resources.jobs().running("sae-contrast") or resources.jobs().jobs()[0].job_id
        assert resources.jobs().wait(job, timeout_s=300).state == "done"
        at.run()
    ok(at)
    assert at.session_state["fb_feature"] is not None
    assert any("feature(s), best evidence first" in c.value for c in at.caption)


def test_home_lists_the_sae_as_catalogued(catalogued: dict) -> None:
    at = ok(app("app.py"))
    table = next(df.value for df in at.dataframe if "catalogued" in df.value.columns)
    row = table[table["sae_id"] == catalogued["row"]["sae_id"]].iloc[0]
    assert bool(row["catalogued"]) and row["error"] == ""


def test_home_refuses_a_missing_folder_and_an_offline_release_with_sentences(catalogued: dict, tmp_path: Path) -> None:
    from workbench.ui import resources

    at = ok(app("app.py"))
    at.text_input(key="sae_folder").input(str(tmp_path / "no-such-sae")).run()
    at.button(key="sae_folder_go").click().run()  # outside the server's SAE folders: refused, no job
    assert [e.value for e in at.error] == [SAE_REFUSAL]
    assert not any("no-such-sae" in j.title for j in resources.jobs().jobs())
    at = ok(app("app.py"))
    at.text_input(key="sae_release").input("no-such-release").run()
    at.text_input(key="sae_release_id").input("x").run()
    at.button(key="sae_release_go").click().run()
    final = wait_for_job(lambda j: j.title.startswith("Pretrained no-such-release"), 120)
    assert final.state == "failed" and "no release" in final.error, final
    ok(app("app.py"))  # the app keeps running and shows the failures


def test_concept_page_lists_nearest_sae_features_with_labels(catalogued: dict) -> None:
    at = ok(app("pages/2_Concept_vectors.py"))
    assert "Nearest SAE features" in [s.value for s in at.subheader]
    near = next(df.value for df in at.dataframe if list(df.value.columns) == ["feature", "cosine", "label"])
    assert len(near) == 20
    assert near["cosine"].abs().is_monotonic_decreasing and near["label"].str.len().gt(0).all()


def test_home_train_button_trains_catalogues_and_lists_an_sae(catalogued: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'Train an SAE' form on Home starts the real train + catalogue job; afterwards the new
    SAE is listed as catalogued. The form sets layer/site/width/k/tokens; the slow evaluation
    defaults (sized for the embedded model) are shrunk so this stays a few seconds on tiny."""
    from functools import partial

    import workbench.jobs as jobs_module
    import workbench.sae.train as train

    small_eval = partial(train.SAETrainConfig, context_size=32, train_batch_tokens=1024, store_batch_prompts=8,
                         norm_batches=2, holdout_docs=40, eval_tokens=1500, dead_feature_window=8)
    real_job = jobs_module.sae_job
    monkeypatch.setattr(train, "SAETrainConfig", small_eval)
    monkeypatch.setattr(jobs_module, "sae_job", lambda store, bundle, settings, cfg: real_job(
        store, bundle, settings, cfg, catalogue_tokens=3000))

    at = ok(app("app.py"))
    at.number_input(key="sae_layer").set_value(0)
    at.select_slider(key="sae_width").set_value(512)
    at.number_input(key="sae_k").set_value(8)
    at.select_slider(key="sae_tokens").set_value(50_000)
    at.button(key="build_sae").click().run()
    ok(at)
    final = wait_for_job(lambda j: j.title.startswith("Train + catalogue SAE L0"))
    assert final.state == "done", final
    assert "features catalogued" in final.summary

    at = ok(app("app.py"))
    table = next(df.value for df in at.dataframe if "catalogued" in df.value.columns)
    new = table[table["sae_id"].str.contains(r"\.l0\.") & table["catalogued"]]
    assert len(new) == 1 and new.iloc[0]["width"] == 512, table
    browser = ok(app("pages/1_Feature_browser.py"))
    assert any("L0 " in o and "512 features" in o for o in browser.selectbox(key="fb_sae").options)


def test_home_catalogues_a_local_sae_that_is_not_catalogued_yet(catalogued: dict) -> None:
    """An SAE trained outside the app (CLI `sae train --no-catalogue`, a copied folder) shows as
    not catalogued on Home; its 'Catalogue it' button runs the catalogue job."""
    from dataclasses import replace

    from workbench.sae.train import train_sae
    from workbench.ui import resources

    bundle, settings = resources.bundle("tiny"), resources.settings()
    trained = train_sae(bundle, replace(TINY_SAE, layer=0, k=4), settings)
    at = ok(app("app.py"))
    table = next(df.value for df in at.dataframe if "catalogued" in df.value.columns)
    assert not table.set_index("sae_id").loc[trained.sae_id, "catalogued"]
    at.selectbox(key="sae_catalogue_pick").set_value(trained.sae_id).run()
    at.button(key="sae_catalogue").click().run()
    ok(at)
    final = wait_for_job(lambda j: j.title == f"Catalogue {trained.sae_id}")
    assert final.state == "done", final
    table = next(df.value for df in ok(app("app.py")).dataframe if "catalogued" in df.value.columns)
    assert table.set_index("sae_id").loc[trained.sae_id, "catalogued"]


def test_density_histogram_marks_the_feature_or_says_it_is_dead() -> None:
    from workbench.ui.plots import density_histogram

    live = density_histogram([0.0, 0.001, 0.01, 0.1], 0.01, "fire")
    assert live.layout.title.text == "fire · 3 live, 1 dead" and len(live.layout.shapes) == 1
    assert [a.text for a in live.layout.annotations] == ["this feature"]
    dead = density_histogram([0.0, 0.001, 0.01, 0.1], 0.0, "fire")
    assert dead.layout.title.text == "fire · 3 live, 1 dead" and not dead.layout.shapes
    assert "this feature is dead" in dead.layout.annotations[0].text
