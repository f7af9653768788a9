"""The lab's edit library in two browser sessions (AppTest, tiny model): user A publishes the draft
on Edit & preview (with the scorecard A ran on that draft), user B sees it on the Edit library page,
compares it with B's own entry, re-applies it into B's own draft, cannot withdraw it; A withdraws
it and it is gone for B. A changed draft is published without the old draft's scorecard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from apptest_helpers import app, ok
from streamlit.testing.v1 import AppTest

from workbench.benchmark.scorecard import MetricRow, Scorecard
from workbench.edits import library
from workbench.edits.spec import AblateValueVectors, OptimiseValueVectors, ValueVectorDelta
from workbench.ui.draft import EditDraft
from workbench.ui.identity import SESSION_KEY

LIBRARY = "pages/6_Edit_library.py"


@pytest.fixture(scope="module")
def shared(ui_env: Path) -> dict:
    ok(app("app.py"))
    from workbench.ui import resources

    return {"store": resources.store(), "bundle": resources.bundle("tiny"), "settings": resources.settings()}


def card(bundle: object, after: float) -> Scorecard:
    metrics = [MetricRow("efficacy", "concept answered", 0.8, after, 10, "low"),
               MetricRow("specificity", "general answered", 0.9, 0.9, 40, "= base"),
               MetricRow("fluency", "neutral perplexity", 20.0, 20.1, 900, "= base")]
    return Scorecard("Paris", "test", bundle.weights_sha256, metrics, 0.8, {}, ["PASS: concept answered"], [])  # type: ignore[attr-defined]


def payload_draft(bundle: object) -> EditDraft:
    d = EditDraft(name="a-paris")
    delta = torch.randn(2, bundle.d_model, generator=torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    d.add_with_payload([OptimiseValueVectors(targets=[ValueVectorDelta(layer=1, rows=[3, 4], delta="opt.l1")])],
                       {"opt.l1": delta})
    return d


def texts(at: AppTest) -> str:
    return "\n".join([e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info]
                     + [e.value for e in at.success] + [e.value for e in at.error])


def test_a_publishes_b_reapplies_and_only_a_withdraws(shared: dict) -> None:
    store, bundle, settings = shared["store"], shared["bundle"], shared["settings"]
    assert library.entries(store, bundle.model_id) == []
    empty = ok(app(LIBRARY))
    assert any("The library has no edits for this model yet" in i.value for i in empty.info)
    assert "Publish to the lab library" in texts(empty)  # says how to publish

    # A publishes the draft on Edit & preview, with the scorecard A ran on this version of it
    draft_a = payload_draft(bundle)
    card_a = card(bundle, 0.1)
    state = {"ed_sc_job": "job-a", "_job_results": {"scorecard": ("job-a", card_a)}, "ed_sc_version": draft_a.version}
    a = ok(app("pages/4_Edit_and_preview.py", draft_a, state))
    owner_a = a.session_state[SESSION_KEY]
    a.button(key="ed_publish").click().run()
    assert any("Published 'a-paris' to the lab library" in s.value for s in ok(a).success), texts(a)
    (published,) = library.entries(store, bundle.model_id)
    assert published.author == owner_a and published.scorecard is not None
    assert published.scorecard.rows == card_a.rows() and published.tier == card_a.tier

    # B (another browser) has an entry of their own and sees A's beside it
    b = ok(app(LIBRARY, EditDraft(name="b-draft")))
    owner_b = b.session_state[SESSION_KEY]
    assert owner_b != owner_a
    own = EditDraft(name="b-ablate")
    own.add(AblateValueVectors(layer=0, neurons=[5]))
    mine = library.publish(store, settings, owner_b, own.to_spec(bundle), None, card(bundle, 0.6), bundle=bundle)
    b.run()
    listing = ok(b).dataframe[0].value
    assert set(listing["name"]) == {"a-paris", "b-ablate"}
    assert f"{owner_b} (you)" in set(listing["author"]) and owner_a in set(listing["author"])
    assert b.multiselect(key="lib_compare").options == [mine.label, published.label]  # newest first
    b.multiselect(key="lib_compare").set_value([mine.label, published.label]).run()
    side_by_side = ok(b).dataframe[1].value
    assert list(side_by_side.columns) == [mine.label, published.label]
    assert side_by_side.loc["concept answered", published.label] == "0.100 (-0.700)"
    assert len(b.get("plotly_chart")) == 1

    # B's own entry offers Withdraw; A's does not
    b.selectbox(key="lib_entry").set_value(mine.label).run()
    assert ok(b).button(key="lib_withdraw")
    b.selectbox(key="lib_entry").set_value(published.label).run()
    keys = {btn.key for btn in ok(b).button}
    assert "lib_withdraw" not in keys and "lib_apply" in keys
    downloads = [d.proto.label for d in b.get("download_button")]
    assert downloads == ["Download the spec (JSON)", "Download its payload (safetensors)"]
    with pytest.raises(PermissionError, match="Only its author can withdraw"):
        library.withdraw(store, published.entry_id, owner_b)

    # B re-applies A's entry into B's own draft; A's draft is untouched
    b.button(key="lib_apply").click().run()
    draft_b = ok(b).session_state["edit_draft"]
    assert draft_b.name == "a-paris" and [op.kind for op in draft_b.operations] == ["optimise_value_vectors"]
    assert torch.equal(draft_b.payload["opt.l1"], draft_a.payload["opt.l1"])
    assert draft_b is not a.session_state["edit_draft"]
    assert a.session_state["edit_draft"].name == "a-paris" and len(a.session_state["edit_draft"].operations) == 1

    # A (same browser: same owner id) withdraws it on the library page; B no longer sees it
    a_lib = ok(app(LIBRARY, state={SESSION_KEY: owner_a}))
    a_lib.selectbox(key="lib_entry").set_value(published.label).run()
    ok(a_lib).button(key="lib_withdraw").click().run()
    ok(a_lib)
    assert library.entry(store, published.entry_id) is None
    assert published.payload_path is not None and not published.payload_path.exists()
    b.run()
    labels = ok(b).selectbox(key="lib_entry").options
    assert labels == [mine.label]
    assert set(b.dataframe[0].value["name"]) == {"b-ablate"}

    # a scorecard of an earlier version of A's draft is not published with the changed edit
    a.session_state["edit_draft"].add(AblateValueVectors(layer=2, neurons=[7]))
    a.run()
    ok(a).button(key="ed_publish").click().run()
    assert any("without a scorecard" in s.value for s in ok(a).success), texts(a)
    (changed,) = [e for e in library.entries(store, bundle.model_id) if e.author == owner_a]
    assert changed.entry_id != published.entry_id and changed.scorecard is None and len(changed.operations) == 2
    library.withdraw(store, changed.entry_id, owner_a)
    library.withdraw(store, mine.entry_id, owner_b)  # leave the shared cache's library empty
    assert any("The library has no edits" in i.value for i in ok(b.run()).info)
