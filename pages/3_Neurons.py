"""Neurons: which MLP neurons fire differently on a concept than on neutral text (effect size),
their activation histograms overlaid, what their value vectors write, and edits on them."""

from __future__ import annotations

import streamlit as st

from workbench.ui import draft as drafts
from workbench.ui import panels, plots

st.set_page_config(page_title="Neurons · workbench", page_icon="🧠", layout="wide")
st.title("Neurons")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
model_id = bundle.model_id
n_layers = int(bundle.n_layers)

names = store.built_concepts(model_id)  # concept_id -> name
built = list(names)
if not built:
    st.info("No concept is built for this model yet: build one on the Concept vectors page.")
    st.stop()
default = st.session_state.get("concept_id")
c1, c2, c3 = st.columns([2, 1, 1])
cid = c1.selectbox("Concept", built, index=built.index(default) if default in built else 0,
                   format_func=lambda c: f"{names.get(c, c)} ({c})", key="nr_concept")
layer_choice = c2.selectbox("Layer", ["all", *range(n_layers)], key="nr_layer")
limit = c3.number_input("Show top", 5, 500, 30, step=5, key="nr_limit")
layer = None if layer_choice == "all" else int(layer_choice)

ranked = store.top_contrast_neurons(model_id, cid, layer=layer, limit=int(limit))
st.plotly_chart(plots.effect_bars(ranked, f"Neurons ranked by |effect size|, '{names.get(cid, cid)}' vs neutral"),
                width="stretch", key="nr_effect")
st.caption("Effect size: (mean on concept tokens − mean on neutral tokens) / pooled std of the gate pre-activation.")
view = ranked.assign(label=[f"L{int(r.layer)}/{int(r.neuron)}" for r in ranked.itertuples()])
st.dataframe(view[["label", "effect_size", "mean_pos", "mean_neg", "std_pos", "std_neg"]].round(3),
             hide_index=True, width="stretch", height=240)

st.subheader("Add to edit")
picked = st.multiselect("Neurons", list(view["label"]), default=list(view["label"][:5]), key="nr_pick")
chosen = view[view["label"].isin(picked)]
e1, e2, e3 = st.columns(3)
if e1.button("Ablate (zero W_out rows)", key="nr_add_ablate", disabled=chosen.empty):
    for lay, rows in chosen.groupby("layer"):
        panels.add_to_edit(drafts.ablate(int(lay), [int(n) for n in rows["neuron"]]), rerun=False)
    st.rerun()
if e2.button("Prune (rows and keys)", key="nr_add_prune", disabled=chosen.empty):
    for lay, rows in chosen.groupby("layer"):
        panels.add_to_edit(drafts.prune(int(lay), [int(n) for n in rows["neuron"]]), rerun=False)
    st.rerun()
if e3.button("Neuron adjust (run-time remap)", key="nr_add_adjust", disabled=chosen.empty,
             help="Maps each neuron's concept-time activation distribution onto its neutral one (a hook, not a weight edit)."):
    panels.add_to_edit(drafts.neuron_adjust(chosen))

st.subheader("One neuron")
options = list(view["label"])
sel = st.session_state.get("neuron_selected")
sel_label = f"L{sel[0]}/{sel[1]}" if sel else None
if sel_label and sel_label not in options:
    options.insert(0, sel_label)
if not options:
    st.stop()
label = st.selectbox("Inspect", options, index=options.index(sel_label) if sel_label in options else 0, key="nr_one")
lay, neu = (int(x) for x in label[1:].split("/"))
left, right = st.columns(2)
hists = {}
for tag, corpus in (("concept", f"concept:{cid}:pos"), ("neutral", f"concept:{cid}:neg")):
    try:
        hists[tag] = store.neuron_histogram(model_id, lay, neu, corpus_id=corpus)
    except KeyError:
        pass
with left:
    if hists:
        st.plotly_chart(plots.overlaid_histograms(hists, f"Layer {lay} neuron {neu}: gate pre-activation"),
                        width="stretch", key="nr_hist")
    else:
        st.info("No histograms for this neuron (rebuild the concept).")
with right:
    tokens = store.value_vector_tokens(model_id, lay, neu)
    if tokens.empty:
        st.info("Vocab projection not built for this layer (Home → Build vocab projections).")
    else:
        st.plotly_chart(plots.token_bars(tokens, f"Value vector W_out[{neu}] of layer {lay}", n=10),
                        width="stretch", key="nr_tokens")
