"""Edit & preview: your ordered list of operations, base vs edited generations streamed side by
side, the scorecard, import/export of the EditSpec JSON and export of the edited checkpoint or of a
PEFT LoRA adapter.

Your edit lives in this browser session only, as an adapter: the shared model's weights are
never written, and your edit is added only to your own rows of a batched forward pass (base and
edited decode as one batch, together with other users' previews), so nobody else sees it."""

from __future__ import annotations

from typing import Any

import streamlit as st

from workbench.edits.compile import compile_spec
from workbench.edits.spec import SpecError, pack_payload
from workbench.exports.archive import zip_folder
from workbench.jobs import safe_name
from workbench.models.chat import has_chat_template
from workbench.ui import draft as drafts
from workbench.ui import identity, panels, resources

st.set_page_config(page_title="Edit & preview · workbench", page_icon="✏️", layout="wide")
st.title("Edit & preview")
bundle, store = panels.need_bundle_and_store()
settings = resources.settings()
d = drafts.draft()

# ---------------------------------------------------------------- the operation list
n1, n2 = st.columns([1, 2])
d.name = n1.text_input("Edit name", value=d.name, key="ed_name", max_chars=200)
d.notes = n2.text_input("Notes", value=d.notes, key="ed_notes")
with st.container():  # one slot whatever the count: the sections below keep their place
    st.subheader(f"Operations ({len(d.operations)})")
    if not d.operations:
        st.info("Your edit is empty. Erase a concept on **Erase a concept**, add operations from the Feature "
                "browser, Concept vectors or Neurons pages, or import a spec below.")
    for i, op in enumerate(list(d.operations)):
        row = st.container(border=True)
        c0, c1, c2, c3 = row.columns([8, 1, 1, 1])
        c0.markdown(f"**{i + 1}.** {drafts.describe(op)}")
        if c1.button("↑", key=f"ed_up_{i}_{d.version}", disabled=i == 0, help="Move up"):
            d.move(i, -1)
            st.rerun()
        if c2.button("↓", key=f"ed_down_{i}_{d.version}", disabled=i == len(d.operations) - 1, help="Move down"):
            d.move(i, 1)
            st.rerun()
        if c3.button("✕", key=f"ed_rm_{i}_{d.version}", help="Remove"):
            d.remove(i)
            st.rerun()
        if op.kind == "project_out_direction":
            alpha = row.slider("alpha", 0.0, 1.0, float(op.alpha), 0.05, key=f"ed_alpha_{i}_{d.version}")
            if alpha != op.alpha:
                d.replace(i, op.model_copy(update={"alpha": alpha}))
                st.rerun()
        elif op.kind == "ablate_value_vectors":
            mode = row.radio("mode", ["zero", "scale", "noise"], index=["zero", "scale", "noise"].index(op.mode),
                             horizontal=True, key=f"ed_mode_{i}_{d.version}")
            if mode != op.mode:
                d.replace(i, op.model_copy(update={"mode": mode, "scale": 0.5 if mode == "scale" else op.scale}))
                st.rerun()
        elif op.kind == "remove_sae_features":
            t1, t2 = row.columns(2)
            tau = t1.slider("tau", 0.05, 1.0, float(op.tau), 0.05, key=f"ed_tau_{i}_{d.version}")
            mu = t2.number_input("mu", value=float(op.mu), key=f"ed_mu_{i}_{d.version}")
            if (tau, mu) != (op.tau, op.mu):
                d.replace(i, op.model_copy(update={"tau": tau, "mu": mu}))
                st.rerun()
    if d.operations and st.button("Clear all", key="ed_clear"):
        d.clear()
        st.rerun()


def compiled() -> tuple[object, object] | None:
    """(spec, adapter) of the current draft, compiled once per draft version."""
    if not d.operations:
        return None
    key = ("ed_compiled", d.version, d.name, d.notes)
    cache = st.session_state.get("ed_compiled")
    if cache and cache[0] == key:
        return cache[1], cache[2]
    spec = d.to_spec(bundle)
    with st.spinner("Compiling the edit ..."):
        adapter = compile_spec(spec, bundle, sae_loader=resources.sae_loader(), payload=d.payload or None)
    st.session_state["ed_compiled"] = (key, spec, adapter)
    return spec, adapter


with st.container():  # one slot: shown or not, the sections below keep their place
    try:
        ready = compiled()
    except (SpecError, ValueError, RuntimeError) as err:
        st.error(f"This edit cannot be compiled: {err}")
        ready = None
    if ready:
        spec, adapter = ready
        forms = ", ".join(f"layer {layer}: {form}" for layer, form in adapter.forms().items())
        st.caption(f"Compiled adapter: {len(adapter.rows)} row(s) changed ({forms or 'no weight delta'}), "
                   f"{len(adapter.hooks)} run-time hook(s) · spec sha256 `{spec.sha256()[:12]}…`")

# ---------------------------------------------------------------- preview
st.subheader("Preview: base vs edited")
limits = settings.limits
p1, p2 = st.columns([4, 1])
prompt = p1.text_area("Prompt", value=st.session_state.get("ed_prompt_default", "The capital of France is"),
                      max_chars=limits.max_prompt_chars, key="ed_prompt", height=80)
max_new = p2.slider("new tokens", 1, limits.max_new_tokens, min(24, limits.max_new_tokens), key="ed_max_new")
chat = has_chat_template(bundle.tokenizer) and p2.checkbox(
    "use the chat template", value=d.chat_template, key="ed_chat",
    help="For instruct models: the prompt goes in as one user turn of the model's chat template and both "
         "sides reply to it (on by default for an edit that was made through the template). Also used by "
         "the scorecard's generations below.")


def preview_columns(edited_label: str) -> tuple[Any, Any]:
    """Two empty slots under 'Base model' and the edited model's label."""
    left, right = st.columns(2)
    left.markdown("**Base model**")
    right.markdown(edited_label)
    return left.empty(), right.empty()


with st.container():  # the preview's slot
    if st.button("Generate", key="ed_generate", type="primary"):
        from workbench.generate import SamplingParams, stream_pair

        label = "**Edited model**" + ("" if ready else " (no operations: same as base)")
        shown = prompt + "\n\n" if chat else prompt  # a chat reply starts on its own line
        texts = ["", ""]
        slots = preview_columns(label)
        st.session_state.pop("ed_last_preview", None)
        try:
            stream = stream_pair(bundle, prompt, ready[1] if ready else None,  # type: ignore[arg-type]
                                 SamplingParams(max_new_tokens=int(max_new)), settings,
                                 batcher=resources.batcher(), chat_template=chat)
            for side, piece in stream:
                texts[side] += piece
                slots[side].markdown(drafts.continuation_markdown(shown, texts[side], cursor=True))
            for side, slot in enumerate(slots):
                slot.markdown(drafts.continuation_markdown(shown, texts[side]))
                st.session_state.setdefault("ed_history", []).append({"model": ("base", "edited")[side],
                                                                       "prompt": prompt, "output": texts[side]})
            # kept for the reruns that follow (any widget, a first-start step landing): the preview stays
            st.session_state["ed_last_preview"] = {
                "texts": texts, "shown": shown, "chat": chat, "label": label, "version": d.version,
                "number": st.session_state.get("ed_previews", 0) + 1}
            st.session_state["ed_previews"] = st.session_state["ed_last_preview"]["number"]
        except ValueError as err:
            st.error(str(err))
    elif last := st.session_state.get("ed_last_preview"):
        for side, slot in enumerate(preview_columns(last["label"])):
            slot.markdown(drafts.continuation_markdown(last["shown"], last["texts"][side]))
    if last := st.session_state.get("ed_last_preview"):
        # numbered: a greedy preview pressed again looks the same, the number says it is a new one
        st.caption(f"Preview {last['number']} · base and edited "
                   + ("replies to the prompt as a chat turn" if last["chat"] else "continuations")
                   + ", decoded side by side in one batch (greedy, same prompt)."
                   + ("" if last["version"] == d.version else
                      " The edit has changed since: press Generate to preview the current one."))

# ---------------------------------------------------------------- scorecard
st.subheader("Scorecard")
sets = store.concept_sets()
default_concept = d.concept  # the concept last erased into this edit on the Erase page
if not default_concept and st.session_state.get("concept_id") in set(sets["concept_id"]):
    default_concept = str(sets.set_index("concept_id").loc[st.session_state["concept_id"], "name"])
s1, s2 = st.columns([3, 1])
concept = s1.text_input("Concept to score (a corpus title)", value=default_concept, key="ed_sc_concept")
relearn = s1.checkbox("Relearning test (slow)", value=False, key="ed_sc_relearn",
                      help="Fine-tunes a copy of the edited model on sentences about the concept and asks the concept "
                           "prompts again: how much of the erased knowledge comes back (minutes on a CPU).")
if s2.button("Run scorecard", key="ed_sc_run", disabled=not (ready and concept.strip())):
    from workbench.benchmark.relearn import RelearnConfig
    from workbench.benchmark.scorecard import EvalOptions
    from workbench.jobs import scorecard_job

    st.session_state["ed_sc_job"] = panels.start_job(
        "scorecard", f"Scorecard '{concept.strip()}'",
        scorecard_job(bundle, concept.strip(), ready[1],  # type: ignore[index]
                      EvalOptions(chat_template=chat, relearn=RelearnConfig() if relearn else None)))
    st.session_state["ed_sc_version"] = d.version  # which draft it scores: Publish takes it only for this one


def scorecard_result() -> None:
    """The scorecard of this user's last scorecard job, once it ended (drawn in the job panel)."""
    card = panels.job_result(st.session_state.get("ed_sc_job"))
    if card is not None:
        panels.scorecard_view(card)


job_id = st.session_state.get("ed_sc_job")
with st.container():  # the scorecard's slot
    if job_id:
        panels.job_panel(kinds=("scorecard",), limit=1, then=scorecard_result)

# ---------------------------------------------------------------- import / export
def export_result() -> None:
    """Under the export job (drawn in its panel): the LoRA adapter's zip once written, and this
    user's exports on the server."""
    job, fmt = st.session_state.get("ed_export_job") or (None, None)
    written = panels.job_result(job)
    if fmt == "lora" and written is not None:
        zipped = st.session_state.get("ed_lora_zip")
        try:
            if zipped is None or zipped[0] != str(written):  # zipped once, not on every refresh
                zipped = st.session_state["ed_lora_zip"] = (str(written), zip_folder(written))
            st.download_button("Download the LoRA adapter (zip)", zipped[1], file_name=f"{written.name}.zip",
                               mime="application/zip", key="ed_download_lora", on_click="ignore")
        except (OSError, ValueError) as err:
            st.error(f"The adapter was written but can't be downloaded: {err}")
    panels.owner_exports_panel()


st.subheader("Import / export")
i1, i2 = st.columns(2)
with i1:
    st.markdown("**Export**")
    if ready:
        spec = ready[0]
        stem = safe_name(spec.name)
        payload_bytes, shared = None, spec
        if spec.payload_names():  # the downloaded spec names its payload file; the export uses the compiled spec
            shared, payload_bytes = pack_payload(spec, d.payload, f"{stem}.payload.safetensors")  # type: ignore[arg-type]
        st.download_button("Download edit spec (JSON)", shared.to_json(), file_name=f"{stem}.json",
                           mime="application/json", key="ed_download", on_click="ignore")
        if payload_bytes is not None:
            st.download_button("Download its payload (safetensors)", payload_bytes,
                               file_name=f"{stem}.payload.safetensors", mime="application/octet-stream",
                               key="ed_download_payload", on_click="ignore",
                               help="The spec names this file by SHA-256; keep the two files together.")
        if st.button("Publish to the lab library", key="ed_publish",
                     help="Share this edit on this server's Edit library page, with its scorecard if you ran one on "
                          "this version of the edit. Your draft itself stays private."):
            from workbench.edits import library

            card = panels.job_result(job_id) if st.session_state.get("ed_sc_version") == d.version else None
            try:
                entry = library.publish(store, settings, identity.current_owner(), spec, d.payload, card, bundle=bundle)
            except ValueError as err:
                st.error(f"Not published: {err}")
            else:
                st.success(f"Published '{entry.name}' to the lab library (id `{entry.entry_id}`), "
                           + (f"scorecard tier: {entry.tier}." if entry.scorecard else "without a scorecard."))
        b1, b2 = st.columns(2)
        fmt = None
        if b1.button("Export edited checkpoint (safetensors)", key="ed_export",
                     help="A full model folder for transformers' from_pretrained, written on the server."):
            fmt = "checkpoint"
        if b2.button("Export PEFT LoRA adapter", key="ed_export_lora",
                     help="A small adapter folder for peft.PeftModel.from_pretrained and vLLM multi-LoRA; "
                          "download it as a zip once written."):
            fmt = "lora"
        if fmt is not None:
            from workbench.jobs import EXPORT_FORMATS, export_dir, export_job

            owner = identity.current_owner()  # cache/exports/<owner>/<name>-<sha8>: never another user's folder
            out = export_dir(settings.exports_dir, owner, spec, fmt)
            job = panels.start_job("export", f"Export '{spec.name}' as {EXPORT_FORMATS[fmt]}",
                                   export_job(bundle, ready[1], spec, out, store, fmt=fmt, owner=owner,
                                              limits=settings.exports))
            st.session_state["ed_export_job"] = (job, fmt)
        panels.job_panel(kinds=("export",), limit=1, then=export_result)
    else:
        st.caption("Add operations to export them.")
with i2:
    st.markdown("**Import** (replaces your current operations)")
    uploads = st.file_uploader(
        "Edit spec JSON (and its .safetensors payload, if it has one)", key="ed_upload", accept_multiple_files=True,
        help=f"At most {limits.max_upload_bytes // 1024 // 1024} MB per file; checked against this model.")
    pasted = st.text_area("…or paste spec JSON", key="ed_paste", height=100)
    # Always enabled: a press carries every widget's current value, so a file whose own upload
    # run the server missed under load (8 users, bench/server_load.py) is imported by the press.
    if st.button("Import", key="ed_import"):
        if not uploads and not pasted.strip():
            st.warning("Nothing to import yet: choose a spec file above or paste its JSON, then press Import.")
        else:
            try:
                spec_bytes, payload_data = drafts.split_uploads([(f.name, f.getvalue()) for f in uploads or []])
                what = "uploaded spec file"
                if spec_bytes is None:
                    spec_bytes, what = pasted.encode("utf-8"), "pasted spec JSON"
                loaded, loaded_payload = drafts.read_uploaded_spec(spec_bytes, bundle, limits, payload_data, what)
            except SpecError as err:
                st.error(f"Not imported: {err}")
            else:
                drafts.load_into_draft(loaded, loaded_payload)
                st.success(f"Imported '{loaded.name}' with {len(loaded.operations)} operation(s).")
                st.rerun()
