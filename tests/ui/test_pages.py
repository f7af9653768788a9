"""Every page renders on the tiny model, searches return results, 'add to edit' updates the
session's edit, previews generate, and bad spec uploads are refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apptest_helpers import app, job_ids, ok, wait_for_job
from conftest import environ
from streamlit.testing.v1 import AppTest

from workbench.ui.draft import EditDraft, ablate, prune
from workbench.ui.features import compact

PICKLED_INT = b"\x80\x04K\x01."  # the bytes of pickle.dumps(1): a pickle upload




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


def test_home_offers_other_models_and_placements_only_when_the_admin_allows_it(shared: dict) -> None:
    at = ok(app("app.py", state={"dtype": "bfloat16"}))  # a session's stale choice is not honoured with it off
    assert any("float32 on cpu" in c.value for c in at.caption)
    with environ(WORKBENCH_USER_MODELS="1"):
        at = ok(app("app.py"))
        assert at.selectbox(key="model_source_select").value == "tiny"
        assert at.selectbox(key="dtype_select").value == "float32"


def test_home_renders_status_and_runs_a_build_job(shared: dict) -> None:
    at = ok(app("app.py"))
    assert at.title[0].value.endswith("Concept-erasure workbench")
    assert not [s for s in at.selectbox if s.key in ("model_source_select", "dtype_select")]  # the admin's to set
    assert any("WORKBENCH_USER_MODELS=1 lets each user choose" in c.value for c in at.caption)
    labels = {m.label: m.value for m in at.metric}
    expected = shared["store"].table_counts()["value_vector_tokens"]
    assert expected > 0 and labels["value-vector tokens"] == compact(expected)
    before = job_ids()
    at.button(key="build_vocab").click().run()
    ok(at)
    final = wait_for_job(lambda j: j.kind == "vocab", 120, since=before)  # the job the button started
    assert final.state == "done", final
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
    at.number_input(key="cv_near_k").set_value(6).run()
    near = next(df.value for df in ok(at).dataframe if set(df.value.columns) == {"layer", "neuron", "cosine"})
    assert len(near) == 6
    at.button(key="cv_near_ablate").click().run()
    ablated = [op for op in draft_ops(ok(at)) if op.kind == "ablate_value_vectors"]
    assert sum(len(op.neurons) for op in ablated) == 6


def build_concept_on_page(name: str, pasted: str = "") -> AppTest:
    """Build a concept set from the Concept vectors page (8 docs), wait for its job, reload."""

    at = ok(app("pages/2_Concept_vectors.py"))
    at.text_input(key="cv_name").input(name).run()
    if pasted:
        at.text_area(key="cv_pasted").input(pasted).run()
    at.slider(key="cv_docs").set_value(8).run()
    at.button(key="cv_build").click().run()
    ok(at)
    final = wait_for_job(lambda j: j.title == f"Concept '{name}'", 300)
    assert final.state == "done", final
    return ok(app("pages/2_Concept_vectors.py"))


def test_concept_page_builds_a_concept_as_a_job(shared: dict) -> None:
    at = build_concept_on_page("Chess")
    assert "Chess (chess)" in at.selectbox(key="cv_concept").options


def test_concept_page_builds_from_a_topic_and_pasted_text(shared: dict) -> None:
    at = build_concept_on_page("Pasted rivers", pasted="The Zambezi is a river.\n\nThe Danube flows east.")
    assert "Pasted rivers (pasted-rivers)" in at.selectbox(key="cv_concept").options
    topic = next(t for t in at.selectbox(key="cv_topic").options if t != "(none)")
    at.selectbox(key="cv_topic").set_value(topic).run()
    assert len(ok(at).multiselect(key=f"cv_titles_{topic}").value) >= 1


def test_neurons_page_ranks_and_adds_edits(shared: dict) -> None:
    model_id = shared["bundle"].model_id
    if len(shared["store"].built_concepts(model_id)) < 2:  # run alone or on its own worker: only 'paris'
        build_concept_on_page("Chess")
    built = list(shared["store"].built_concepts(model_id))  # oldest first: the page's default is built[0]
    chosen = built[-1]
    at = ok(app("pages/3_Neurons.py", state={"concept_id": chosen}))  # the concept this session picked elsewhere
    assert at.selectbox(key="nr_concept").value == chosen != built[0]
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
    assert any("Compiled adapter:" in c.value for c in at.caption)
    at.button(key=f"ed_down_0_{draft.version}").click().run()
    assert [op.kind for op in draft_ops(ok(at))] == ["prune_neurons", "ablate_value_vectors"]
    at.text_area(key="ed_prompt").input("Paris is").run()
    at.slider(key="ed_max_new").set_value(4).run()
    at.button(key="ed_generate").click().run()
    ok(at)
    history = at.session_state["ed_history"]
    assert [h["model"] for h in history[-2:]] == ["base", "edited"]
    assert all(h["prompt"] == "Paris is" and len(h["output"]) > 0 for h in history[-2:])  # text was generated
    shown = "\n".join(m.value for m in at.markdown)
    assert all(h["output"].strip()[:10] in shown for h in history[-2:])  # and shown on the page
    assert len(at.get("download_button")) == 1
    assert any(c.value.startswith("Preview 1 · ") for c in at.caption)

    at.run()  # a rerun without the press (a job that ended reruns the page): the preview stays
    ok(at)
    shown = "\n".join(m.value for m in at.markdown)
    assert all(h["output"].strip()[:10] in shown for h in history[-2:])
    assert any(c.value.startswith("Preview 1 · ") and "changed since" not in c.value for c in at.caption)
    at.button(key="ed_generate").click().run()
    assert any(c.value.startswith("Preview 2 · ") for c in ok(at).caption)


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


def test_edit_page_import_without_a_spec_says_so(shared: dict) -> None:
    """Import is always pressable (a press carries the uploader's file even when the server missed
    the upload's own run); with nothing chosen it says what to do and leaves the draft alone."""
    at = ok(app("pages/4_Edit_and_preview.py", EditDraft()))
    assert not at.button(key="ed_import").disabled
    at.button(key="ed_import").click().run()
    assert [w.value for w in ok(at).warning if "Nothing to import yet" in w.value]
    assert not at.error and draft_ops(at) == []


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
    with pytest.raises(SpecError, match="^The uploaded spec file is not valid JSON"):
        read_uploaded_spec(b"{not json", shared["bundle"], limits)
    with pytest.raises(SpecError, match="^The pasted spec JSON is not valid JSON"):
        read_uploaded_spec(b"{not json", shared["bundle"], limits, what="pasted spec JSON")
    spec, payload = read_uploaded_spec(_spec_json(shared).encode(), shared["bundle"], Limits())
    assert spec.name == "imported" and payload == {}


def _payload_spec(shared: dict) -> tuple[str, bytes, dict]:
    """An optimise_value_vectors spec packed with its payload, as the Edit page exports it."""
    import torch

    from workbench.edits.spec import OptimiseValueVectors, ValueVectorDelta, pack_payload

    bundle = shared["bundle"]
    tensors = {"optimise.l1.delta": torch.randn(2, bundle.d_model, generator=torch.Generator().manual_seed(0))}
    d = EditDraft(name="with-payload")
    d.add_with_payload([OptimiseValueVectors(targets=[ValueVectorDelta(layer=1, rows=[3, 4], delta="optimise.l1.delta")])],
                       tensors)
    spec, data = pack_payload(d.to_spec(bundle), d.payload, "with-payload.payload.safetensors")
    return spec.to_json(), data, tensors


def test_uploads_with_a_payload_round_trip_and_tampering_is_refused(shared: dict) -> None:
    import torch

    from workbench.config import Limits
    from workbench.edits.spec import SpecError
    from workbench.ui.draft import read_uploaded_spec, split_uploads

    text, data, tensors = _payload_spec(shared)
    spec_bytes, payload_bytes = split_uploads([("e.json", text.encode()), ("e.payload.safetensors", data)])
    assert spec_bytes == text.encode() and payload_bytes == data
    spec, payload = read_uploaded_spec(spec_bytes, shared["bundle"], Limits(), payload_bytes)
    assert torch.equal(payload["optimise.l1.delta"], tensors["optimise.l1.delta"])
    with pytest.raises(SpecError, match="needs its payload file"):
        read_uploaded_spec(spec_bytes, shared["bundle"], Limits())
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(SpecError, match="changed or belongs to another spec"):
        read_uploaded_spec(spec_bytes, shared["bundle"], Limits(), bytes(tampered))
    with pytest.raises(SpecError, match="never unpickles"):
        read_uploaded_spec(spec_bytes, shared["bundle"], Limits(), PICKLED_INT)
    with pytest.raises(SpecError, match="one spec JSON"):
        split_uploads([("a.json", b"{}"), ("b.json", b"{}")])


def test_draft_merges_payloads_and_binds_one_sae() -> None:
    import torch

    from workbench.edits.spec import OptimiseValueVectors, SaeRef, ValueVectorDelta

    op = OptimiseValueVectors(targets=[ValueVectorDelta(layer=1, rows=[0], delta="optimise.l1.delta")])
    d = EditDraft()
    d.add_with_payload([op], {"optimise.l1.delta": torch.zeros(1, 4)})
    d.add_with_payload([op], {"optimise.l1.delta": torch.ones(1, 4)})  # a second erasure, same names
    names = [t.delta for o in d.operations for t in o.targets]
    assert len(set(names)) == 2 and set(names) == set(d.payload)
    assert sorted(float(d.payload[n].sum()) for n in names) == [0.0, 4.0]
    d.use_sae(SaeRef(id="a", sha256="0"))
    d.add(drafts_remove_features())
    with pytest.raises(ValueError, match="one edit uses one SAE"):
        d.use_sae(SaeRef(id="b", sha256="1"))
    d.clear()
    assert d.payload == {} and d.sae is None


def drafts_remove_features():  # type: ignore[no-untyped-def]
    from workbench.ui.draft import remove_features

    return remove_features(6, [1, 2])


def test_edit_page_offers_the_payload_download(shared: dict) -> None:
    from workbench.edits.spec import EditSpec
    from workbench.ui.draft import read_uploaded_spec

    text, data, _ = _payload_spec(shared)
    from workbench.config import Limits

    spec, payload = read_uploaded_spec(text.encode(), shared["bundle"], Limits(), data)
    d = EditDraft()
    d.load_spec(spec, payload)
    at = ok(app("pages/4_Edit_and_preview.py", d))
    assert any("Compiled adapter: 2 row(s) changed" in c.value for c in at.caption), [c.value for c in at.caption]
    assert len(at.get("download_button")) == 2
    assert EditSpec.from_json(text).payload is not None


def test_edit_page_exports_a_payload_edit_as_checkpoint_and_lora(shared: dict) -> None:
    """Both export buttons on an edit with a payload (every optimise/rewrite erase has one): the
    page exports the spec its adapter was compiled from, so both jobs finish, and the LoRA folder
    is offered as a zip download."""
    import io
    import zipfile

    from workbench.config import Limits
    from workbench.exports import read_export_metadata
    from workbench.ui.draft import read_uploaded_spec

    text, data, _ = _payload_spec(shared)
    spec, payload = read_uploaded_spec(text.encode(), shared["bundle"], Limits(), data)
    d = EditDraft()
    d.load_spec(spec, payload)
    at = ok(app("pages/4_Edit_and_preview.py", d))
    ok(at.button(key="ed_export").click().run())
    job = wait_for_job(lambda j: j.kind == "export" and "checkpoint" in j.title)
    assert job.state == "done", job.error
    meta = read_export_metadata(Path(job.summary.removeprefix("exported to ")))
    assert meta["workbench.spec_name"] == "with-payload"

    ok(at.button(key="ed_export_lora").click().run())
    job = wait_for_job(lambda j: j.kind == "export" and "LoRA" in j.title)
    assert job.state == "done", job.error
    assert "peft.PeftModel.from_pretrained" in job.summary
    ok(at.run())
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download the LoRA adapter (zip)" in labels, labels
    from workbench.exports.archive import zip_folder
    from workbench.ui import resources

    folder = resources.jobs().result(job.job_id, job.owner)
    names = zipfile.ZipFile(io.BytesIO(zip_folder(folder))).namelist()
    assert any(n.endswith("adapter_config.json") for n in names)
    assert any(n.endswith("adapter_model.safetensors") for n in names)
    # both exports are listed as this user's, with a Delete button that removes the folder
    mine = [e for e in at.expander if e.label.startswith("Your exports: 2,")]
    assert mine, [e.label for e in at.expander]
    delete = [b for b in at.button if b.key == f"del_export_{folder.name}"]
    assert delete
    ok(delete[0].click().run())
    assert not folder.exists()
    assert any(e.label.startswith("Your exports: 1,") for e in at.expander)


def test_erase_page_builds_facts_erases_and_fills_the_edit(shared: dict) -> None:
    from workbench.ui import resources

    manager = resources.jobs()
    at = ok(app("pages/5_Erase_a_concept.py", EditDraft()))
    at.text_input(key="er_query").input("Paris").run()
    assert at.selectbox(key="er_concept").value == "Paris"
    assert at.button(key="er_run").disabled  # no fact set yet
    at.button(key="er_build_facts").click().run()
    job = at.session_state["er_facts_job"]
    assert manager.wait(job, timeout_s=300).state == "done"
    at.run()
    facts = at.session_state["er_facts"]
    assert facts.concept == "Paris" and len(facts.facts) >= 3
    # the browser flow (tests/e2e/test_erase_flow.py) runs optimise-repr with its payload; here the
    # weight-free 'ablate' path, whose spec needs no payload
    at.selectbox(key="er_method").set_value("ablate").run()
    at.checkbox(key="er_score").uncheck().run()
    at.button(key="er_run").click().run()
    job = at.session_state["er_job"]
    final = manager.wait(job, timeout_s=600)
    assert final is not None and final.state == "done", final
    at.run()
    ok(at)
    assert "4 · Result" in [s.value for s in at.subheader]
    at.button(key="er_replace").click().run()
    d = at.session_state["edit_draft"]
    assert d.operations and {op.kind for op in d.operations} == {"ablate_value_vectors"}  # one op per layer
    assert d.payload == {} and all(len(op.neurons) > 0 for op in d.operations)


def test_sessions_do_not_share_edits(shared: dict) -> None:
    """What the users of one server share is the process's model (resources.bundle), its preview
    batcher (resources.batcher) and the thread-scoped adapter routing. Two sessions' edits, built
    on the pages and compiled by the Edit page, run at once on those shared objects: each session
    sees only its own edit, the base sees none, and the model's weights stay bit for bit the same."""
    import threading

    import torch

    from workbench.adapters import use
    from workbench.edits.spec import AblateValueVectors
    from workbench.generate import SamplingParams, generate_pair, stream_pair
    from workbench.models.hashing import model_weights_sha256
    from workbench.ui import resources

    bundle = resources.bundle()
    assert bundle is shared["bundle"]  # the one model every session's page got
    weights = model_weights_sha256(bundle.hf_model)
    # session A ablates a value vector on the Feature browser; session B brings a strong edit of its own
    a = ok(app("pages/1_Feature_browser.py"))
    a.text_input(key="vv_query").input(shared["token"].strip()).run()
    a.button(key="vv_add_ablate").click().run()
    strong = EditDraft(name="session-b")
    for layer in range(bundle.n_layers):
        strong.add(AblateValueVectors(layer=layer, neurons=list(range(64)), mode="scale", scale=-20.0))
    b = ok(app("pages/4_Edit_and_preview.py", strong))
    assert [op.kind for op in draft_ops(a)] == ["ablate_value_vectors"]
    assert all(op.mode == "scale" for op in draft_ops(b))  # nothing of A's in B's edit
    a = ok(app("pages/4_Edit_and_preview.py", a.session_state["edit_draft"]))
    adapters = {"a": a.session_state["ed_compiled"][2], "b": b.session_state["ed_compiled"][2], "base": None}

    ids = bundle.tokenizer("The river flows past the old mill and", return_tensors="pt").input_ids

    def forward(adapter: object) -> torch.Tensor:
        with torch.no_grad(), use(bundle, adapter):  # type: ignore[arg-type]
            return bundle.hf_model(ids).logits[0]  # [pos, vocab]

    alone = {name: forward(ad) for name, ad in adapters.items()}
    assert not torch.allclose(alone["a"], alone["base"], atol=1e-6)
    assert not torch.allclose(alone["b"], alone["base"], atol=1e-3)
    assert not torch.allclose(alone["a"], alone["b"], atol=1e-3)

    # each session's forward passes, in threads at once on the one model
    barrier = threading.Barrier(len(adapters))
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in adapters}
    errors: list[BaseException] = []

    def session(name: str) -> None:
        try:
            barrier.wait(timeout=60)
            for _ in range(6):
                seen[name].append(forward(adapters[name]))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=session, args=(name,)) for name in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for name, outs in seen.items():
        assert len(outs) == 6 and all(torch.allclose(o, alone[name], atol=1e-5) for o in outs), f"{name} saw another edit"

    # both sessions' previews through the server's one batcher, queued together so they share a batch
    params = SamplingParams(max_new_tokens=8)
    settings = resources.settings()
    batcher = resources.batcher()
    before, window = batcher.n_batches, batcher.window_s
    batcher.window_s = 1.0  # the batch that takes A's rows waits for B's (queued right after): one shared batch
    try:
        streams = {name: stream_pair(bundle, "The capital of France is", adapters[name], params, settings,
                                     batcher=batcher) for name in ("a", "b")}
    finally:
        batcher.window_s = window
    got = {name: {0: "", 1: ""} for name in streams}
    for name, stream in streams.items():
        for side, piece in stream:
            got[name][side] += piece
    assert batcher.n_batches == before + 1 and batcher.batches[-1] == 4  # A's base and edited rows and B's, decoded as one batch
    for name in streams:
        base, edited = generate_pair(bundle, "The capital of France is", adapters[name], params, settings)
        assert got[name] == {0: base.text, 1: edited.text}, name
    assert got["b"][1] != got["b"][0]  # B's edit shows in its own preview (and so would in A's, had it leaked)
    assert model_weights_sha256(bundle.hf_model) == weights
    assert torch.equal(forward(None), alone["base"])


def test_fact_table_round_trip_and_key_names() -> None:
    from workbench.methods.facts import Fact, FactSet
    from workbench.ui.erase import facts_frame, facts_from_frame, parse_names

    facts = FactSet("Paris", "Paris", "place", [Fact("Paris is in France.", "article"), Fact("It has a tower.", "sample")])
    frame = facts_frame(facts)
    frame.loc[1, "keep"] = False
    frame.loc[2] = [True, "Paris hosts the Louvre.", None]  # a row the user added
    frame.loc[3] = [True, "   ", None]  # a blank row
    out = facts_from_frame(facts, frame)
    assert [(f.text, f.source) for f in out.facts] == [("Paris is in France.", "article"), ("Paris hosts the Louvre.", "user")]
    assert len(facts.facts) == 2  # the built set is not changed
    frame["keep"] = False
    with pytest.raises(ValueError, match="fact set is empty"):
        facts_from_frame(facts, frame)
    assert parse_names(" Louvre, Seine,,Louvre ") == ["Louvre", "Seine"]


def test_continuation_markdown_bolds_the_generated_part_only() -> None:
    from workbench.ui.draft import continuation_markdown

    assert continuation_markdown("The city of", " Paris, France. ") == "The city of **Paris, France\\.** "
    assert continuation_markdown("a*b", "", cursor=True) == "a\\*b▌"
    assert continuation_markdown("x", " <script>") == "x **\\<script\\>**"
    # a blank line ends Markdown emphasis: each line is bolded on its own, so no '**' shows
    two = continuation_markdown("Q:", " Paris.\n\nIt is big")
    assert two == "Q: **Paris\\.**  \n  \n**It is big**", two


def test_every_erase_method_is_described_on_the_page() -> None:
    """A method the CLI offers must not appear on the Erase page as a bare key without its
    measured trade-off, and the default must be labelled as such."""
    from workbench.methods.erase import DEFAULT_METHOD, METHODS
    from workbench.ui.erase import method_choices, method_help, method_label

    assert method_choices() == list(METHODS)
    for name in method_choices():
        assert method_label(name) != name and METHODS[name].what.strip(), name  # a label and a description
        assert "{" not in method_help(name), name  # every placeholder filled from the configs
    assert "default" in method_label(DEFAULT_METHOD)
    assert sum("default" in method_label(name) for name in METHODS) == 1


def test_erase_page_takes_a_name_that_is_not_a_title(shared: dict) -> None:
    from workbench.ui import resources
    from workbench.ui.erase import AS_NAME

    at = ok(app("pages/5_Erase_a_concept.py", EditDraft()))
    at.text_input(key="er_query").input("Zelda").run()
    picker = at.selectbox(key="er_concept")
    assert "The Legend of Zelda" in picker.options and "Zelda" + AS_NAME in picker.options
    picker.set_value("Zelda" + AS_NAME).run()
    assert any("Not a corpus title" in c.value and "The Legend of Zelda" in c.value for c in ok(at).caption)
    at.text_input(key="er_about").input("action-adventure game series").run()
    at.button(key="er_build_facts").click().run()
    final = resources.jobs().wait(at.session_state["er_facts_job"], timeout_s=300)
    assert final is not None and final.state == "done", final
    at.run()
    facts = ok(at).session_state["er_facts"]
    assert facts.concept == "Zelda" and facts.kind == "work"
    assert any(f.source.startswith("mention:") for f in facts.facts)
