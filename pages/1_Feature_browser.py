"""Feature browser: SAE features when an SAE exists; until then the value-vector browser
(W_out rows searched by the tokens they promote or suppress)."""

from __future__ import annotations

import streamlit as st

from workbench.ui import draft as drafts
from workbench.ui import panels, plots

st.set_page_config(page_title="Feature browser · workbench", page_icon="🔎", layout="wide")
st.title("Feature browser")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
model_id = bundle.model_id  # type: ignore[attr-defined]
n_layers = int(bundle.n_layers)  # type: ignore[attr-defined]

try:
    from workbench.sae import catalogue as sae_catalogue  # noqa: F401
except ImportError:
    st.info("SAE features aren't built into the workbench yet. Below: the **value-vector browser** — "
            "each MLP neuron's output row of W_out projected onto the vocabulary.")

st.subheader("Value vectors")
st.caption("Gain-aware lens: a row's direction in the residual stream is W_out[i] × (1 + post-FFN norm weight), "
           "then the final norm and unembedding (see README, 'Gain-aware vs reference lens').")

c1, c2, c3 = st.columns([3, 1, 1])
query = c1.text_input("Search tokens", placeholder="e.g. Paris, wizard, chess", key="vv_query")
layer_choice = c2.selectbox("Layer", ["all", *range(n_layers)], key="vv_layer")
how = c3.radio("Match", ["contains", "exact token"], key="vv_how", horizontal=False)
layer = None if layer_choice == "all" else int(layer_choice)

if query.strip():
    if how == "exact token":
        hits = store.neurons_with_token(model_id, query if query.startswith(" ") else " " + query.strip(),  # type: ignore[attr-defined]
                                        layer=layer)
        hits = hits.assign(side="top", hits=1, matched=[[query]] * len(hits))
    else:
        hits = store.neurons_matching(model_id, query, layer=layer)  # type: ignore[attr-defined]
    if hits.empty:
        st.warning(f"No value vector has {query!r} among its top/bottom tokens"
                   + ("" if store.builds(model_id).shape[0] else " — nothing is built yet: use 'Build vocab projections' on Home") + ".")  # type: ignore[attr-defined]
    else:
        st.caption(f"{len(hits)} value vector(s) match.")
        show = hits.copy()
        show["matched"] = [", ".join(repr(t) for t in m[:6]) for m in show["matched"]]
        st.dataframe(show[["layer", "neuron", "side", "hits", "matched"]], hide_index=True, height=220,
                     width="stretch")
        options = [f"L{int(r.layer)}/{int(r.neuron)}" for r in hits.itertuples()]
        pick = st.selectbox("Inspect", options, key="vv_pick")
        lay, neu = pick[1:].split("/")
        st.session_state["vv_selected"] = (int(lay), int(neu))

with st.expander("Go to a neuron by number"):
    g1, g2, g3 = st.columns([1, 1, 1])
    gl = g1.number_input("layer", 0, n_layers - 1, 0, key="vv_go_layer")
    gn = g2.number_input("neuron", 0, int(bundle.d_mlp) - 1, 0, key="vv_go_neuron")  # type: ignore[attr-defined]
    if g3.button("Show", key="vv_go"):
        st.session_state["vv_selected"] = (int(gl), int(gn))

selected = st.session_state.get("vv_selected")
if selected:
    lay, neu = selected
    tokens = store.value_vector_tokens(model_id, lay, neu)  # type: ignore[attr-defined]
    st.markdown(f"### Layer {lay}, neuron {neu}")
    if tokens.empty:
        st.warning("This layer's vocab projection is not built yet (Home → Build vocab projections).")
    else:
        st.plotly_chart(plots.token_bars(tokens, f"What W_out[{neu}] of layer {lay} promotes / suppresses"),
                        width="stretch", key="vv_chart")
    a1, a2, a3 = st.columns(3)
    if a1.button("Add to edit: ablate (zero)", key="vv_add_ablate"):
        panels.add_to_edit(drafts.ablate(lay, [neu]))
    if a2.button("Add to edit: prune neuron", key="vv_add_prune"):
        panels.add_to_edit(drafts.prune(lay, [neu]))
    if a3.button("Open on Neurons page", key="vv_to_neurons"):
        st.session_state["neuron_selected"] = (lay, neu)
        st.switch_page("pages/3_Neurons.py")
