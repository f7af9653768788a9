"""A pretrained transcoder, in Gemma Scope 2's exact HF cache layout (offline), added through the
Home page's "Add an SAE" panel: the Feature browser shows its tau rows, says how transcoder
removal differs, and its remove button puts an operation into the edit that compiles on Edit &
preview. Runs on its own prepared cache, so the other pages' tests keep their SAE as the latest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apptest_helpers import app, ok, wait_for_job
from conftest import environ, prepare_tiny_cache

from workbench.sae.tiny import write_gemma_scope_2
from workbench.ui.draft import EditDraft

RELEASE, SAE_ID = "gemma-scope-2-270m-pt-transcoders-all", "layer_2_width_16k_l0_small"


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("ui-pretrained")
    prepare_tiny_cache(cache)
    hub = tmp_path_factory.mktemp("hf-hub")
    write_gemma_scope_2(hub, f"transcoder_all/{SAE_ID}", 64, 96, seed=2)
    with environ(WORKBENCH_MODEL="tiny", WORKBENCH_CACHE=str(cache), HF_HUB_CACHE=str(hub)):
        yield cache


def test_pretrained_transcoder_from_the_home_panel_to_the_edit(own_cache: Path) -> None:
    home = ok(app("pages/0_Home.py"))
    home.text_input(key="sae_release").input(RELEASE).run()
    home.text_input(key="sae_release_id").input(SAE_ID).run()
    home.button(key="sae_release_go").click().run()
    final = wait_for_job(lambda j: j.title.startswith("Pretrained"))
    assert final.state == "done", final

    at = ok(app("pages/1_Feature_browser.py", EditDraft()))
    at.number_input(key="fb_go_number").set_value(3).run()
    at.button(key="fb_go").click().run()
    ok(at)
    assert any(m.value.startswith("### Feature 3") for m in at.markdown)
    captions = " ".join(c.value for c in at.caption)
    assert "A transcoder reads the MLP's input" in captions
    assert "row(s) selected at tau" in captions
    at.slider(key="fb_tau").set_value(0.5).run()
    assert "PISCES on its decoder direction" in at.button(key="fb_add").label
    at.button(key="fb_add").click().run()
    d = ok(at).session_state["edit_draft"]
    (op,) = d.operations
    assert op.kind == "remove_sae_features" and op.features == [3]
    assert d.sae is not None and d.sae.id == f"{RELEASE}/{SAE_ID}"
    edit = ok(app("pages/4_Edit_and_preview.py", d))  # compiles with the pretrained transcoder
    assert any("Compiled adapter:" in c.value for c in edit.caption), [e.value for e in edit.error]
