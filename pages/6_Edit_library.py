"""Edit library: the edits the lab published for this model, side by side, to re-apply into your own
draft, download, or (your own) withdraw. Your draft stays private until you press "Publish to the lab
library" on Edit & preview. The logic lives in workbench/edits/library.py; this page only shows it."""

from __future__ import annotations

import streamlit as st

from workbench.edits import library
from workbench.ui import draft as drafts
from workbench.ui import identity, panels, plots

st.set_page_config(page_title="Edit library · workbench", page_icon="📚", layout="wide")
st.title("Edit library")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
owner = identity.current_owner()
items = library.entries(store, bundle.model_id)
st.caption(f"Edits published by the people on this server for **{bundle.model_id}**. Your own draft is private "
           f"until you publish it; you publish as `{owner}` (the author id the CLI takes as `--owner`).")

if not items:
    st.info("The library has no edits for this model yet. To publish one: build an edit (**Erase a concept**, or "
            "the Feature browser, Concept vectors and Neurons pages), open **Edit & preview**, run its scorecard "
            "if you want its numbers shown here, and press **Publish to the lab library**. From a terminal: "
            "`python -m workbench library publish SPEC.json`.")
    st.stop()

by_label = {e.label: e for e in items}
st.dataframe(library.listing(items, owner), hide_index=True, width="stretch")

# ---------------------------------------------------------------- compare
st.subheader("Compare side by side")
picked = st.multiselect("Entries to compare", list(by_label), default=list(by_label)[:2] if len(items) > 1 else [],
                        key="lib_compare")
chosen = [by_label[label] for label in picked]
if len(chosen) >= 2:
    st.dataframe(library.compare(chosen), width="stretch",
                 column_config={"_index": st.column_config.Column(width="medium")})
    st.caption("Each metric: the edited model's value, its change from the base in brackets (scorecards of the same "
               "concept share their base).")
    bars = library.key_metrics(chosen)
    if len(bars):
        st.plotly_chart(plots.share_bars(bars, "Score and key metrics"), width="stretch", key="lib_chart")
else:
    st.caption("Pick two or more entries to see their scorecards side by side." if len(items) > 1 else
               "One entry so far: a comparison needs two.")

# ---------------------------------------------------------------- one entry
st.subheader("Use an entry")
label = st.selectbox("Entry", list(by_label), key="lib_entry")
item = by_label[label]
with st.container(border=True):
    st.markdown(f"**{item.name}** · by `{item.author}`" + (" (you)" if item.author == owner else "")
                + (f" · published {item.published_at:%Y-%m-%d %H:%M}" if item.published_at else "")
                + f" · id `{item.entry_id}`")
    if item.note:
        st.markdown(f"> {item.note}")
    for line in item.operations:
        st.caption("• " + line)
    if item.scorecard is not None:
        card = item.scorecard
        score = "—" if card.score is None else f"{card.score:.3f}"
        st.markdown(f"Scorecard on **{card.concept}**: tier **{card.tier}**, score {score}. {card.outcome}")
        with st.expander(f"Verdicts and metrics ({len(card.verdicts)} verdicts)"):
            for verdict in card.verdicts:
                st.markdown("• " + verdict)
            st.dataframe(card.rows, hide_index=True, width="stretch")
    else:
        st.caption("Published without a scorecard.")

    a1, a2, a3 = st.columns(3)
    if a1.button("Re-apply to my draft", key="lib_apply", type="primary",
                 help="Replaces the operations of your own draft with this edit's (nobody else's draft changes); "
                      "preview, score or export it on Edit & preview."):
        try:
            spec, payload = library.load(item)
            spec.validate_for(bundle, payload=payload or None)
        except ValueError as err:
            st.error(f"Not re-applied: {err}")
        else:
            drafts.load_into_draft(spec, payload)
            st.session_state.setdefault("_toasts", []).append(
                f"'{spec.name}' is now your draft ({len(spec.operations)} operation(s)): open Edit & preview.")
            st.rerun()
    try:
        files = library.download_files(item)
    except ValueError as err:
        st.error(str(err))
        files = []
    for i, (name, data) in enumerate(files):
        column = a2 if i == 0 else a3
        is_spec = name.endswith(".json")
        column.download_button("Download the spec (JSON)" if is_spec else "Download its payload (safetensors)", data,
                               file_name=name, mime="application/json" if is_spec else "application/octet-stream",
                               key=f"lib_download_{'spec' if is_spec else 'payload'}", on_click="ignore",
                               help=None if is_spec else "The spec names this file by SHA-256; keep the two together.")
    if item.author == owner:
        if st.button("Withdraw", key="lib_withdraw",
                     help="Take your entry out of the library: nobody can re-apply or download it any more "
                          "(drafts that already re-applied it keep their copy)."):
            try:
                library.withdraw(store, item.entry_id, owner)
            except (ValueError, PermissionError) as err:
                st.error(f"Not withdrawn: {err}")
            else:
                st.session_state.setdefault("_toasts", []).append(f"Withdrew '{item.name}' from the library.")
                st.rerun()
