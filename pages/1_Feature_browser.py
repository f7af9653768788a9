"""Feature browser: SAE features of the MLP output (search by token, label or concept set; a
feature page with what it promotes, how often it fires, where it fires, the W_out rows that carry
it, and "remove it" for the edit), and the value-vector browser (W_out rows by the tokens they
promote or suppress)."""

from __future__ import annotations

import streamlit as st

from workbench.edits.spec import SaeRef, sae_sha256
from workbench.jobs import sae_contrast_job
from workbench.models.depth import default_sae_layer
from workbench.sae.catalogue import tau_rows
from workbench.ui import draft as drafts
from workbench.ui import features as ui_features
from workbench.ui import panels, plots

st.set_page_config(page_title="Feature browser · workbench", page_icon="🔎", layout="wide")
st.title("Feature browser")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
model_id = bundle.model_id
n_layers = int(bundle.n_layers)
tab_sae, tab_vv = st.tabs(["SAE features", "Value vectors (W_out rows)"])


def feature_page(sae_row: dict, feature: int) -> None:
    """Everything about one feature, and 'remove it' for the edit."""
    sae_id = str(sae_row["sae_id"])
    try:
        detail = store.feature_detail(sae_id, feature)
    except KeyError as err:
        st.error(err.args[0])
        return
    st.markdown(f"### Feature {feature} · {detail['label']}")
    _label_editor(sae_id, feature, detail)
    dead = not float(detail["density"]) > 0
    _activity(sae_id, detail, dead)
    st.markdown("#### W_out rows that carry it")
    st.caption(ui_features.row_score_text(ui_features.is_transcoder(sae_row)))
    chosen = _carrying_rows(sae_row, feature)
    if chosen is not None:
        _remove_button(sae_row, feature, *chosen, dead=dead)


def _label_editor(sae_id: str, feature: int, detail: dict) -> None:
    l1, l2 = st.columns([4, 1])
    label = l1.text_input("Label (yours survives catalogue rebuilds)", value=str(detail["label"]),
                          key=f"fb_label_{sae_id}_{feature}", max_chars=200)
    if l2.button("Save label", key="fb_label_save", disabled=label.strip() == str(detail["label"])):
        try:
            store.set_feature_label(sae_id, feature, label)
        except (ValueError, KeyError) as err:
            st.error(str(err))
        else:
            st.toast(f"Label of feature {feature} saved.")
            st.rerun()
    if detail["auto_label"] != detail["label"]:
        st.caption(f"automatic label: {detail['auto_label']}")


def _activity(sae_id: str, detail: dict, dead: bool) -> None:
    """Density and activations, what the decoder direction promotes, and the top snippets."""
    m1, m2, m3 = st.columns(3)
    m1.metric("density", "dead" if dead else f"{detail['density']:.3%}",
              help=ui_features.density_text(float(detail["density"])))
    m2.metric("max activation", f"{detail['max_act']:.2f}")
    m3.metric("mean activation over all tokens", f"{detail['mean_act']:.3f}")
    st.caption(ui_features.density_text(float(detail["density"])))
    examples = detail["examples"]
    c1, c2 = st.columns(2)
    with c1:
        if detail["tokens"].empty:
            st.info("No vocab projection stored for this feature.")
        else:
            st.plotly_chart(plots.token_bars(detail["tokens"], "What its decoder direction promotes / suppresses", n=12),
                            width="stretch", key="fb_tokens")
    with c2:
        dens = store.feature_densities(sae_id)
        st.plotly_chart(plots.density_histogram(dens["density"], float(detail["density"]), "How often features fire"),
                        width="stretch", key="fb_density")
        if not examples.empty:
            st.plotly_chart(plots.activation_bars(examples, "Top activations"), width="stretch", key="fb_acts")
    st.markdown("#### Top activating snippets")
    st.caption("The highlighted token is where it fires; a stronger fill means a higher activation.")
    if examples.empty:
        st.info("It never fired in the catalogue sweep: a dead feature.")
    for ex in examples.itertuples():
        st.markdown(ui_features.example_html(str(ex.snippet), float(ex.activation), str(ex.title),
                                             float(detail["max_act"])), unsafe_allow_html=True)


def _carrying_rows(sae_row: dict, feature: int) -> tuple[object, float] | None:
    """The stored strongest rows and the tau selection; (the SAE, tau), or None when the SAE
    can't be loaded (the page says why)."""
    r1, r2 = st.columns(2)
    with r1:
        stored = store.rows_of_feature(str(sae_row["sae_id"]), feature)
        st.caption(f"strongest stored rows of layer {sae_row['layer']}")
        st.dataframe(stored, hide_index=True, width="stretch", height=ui_features.table_height(len(stored)))
    with r2:
        tau = st.slider("tau (rows with |s| > tau x max)", 0.05, 1.0, 0.7, 0.05, key="fb_tau")
        sae = panels.sae_or_error(sae_row["path"], "tau rows and 'remove'")
        if sae is None:
            return None
        chosen = tau_rows(bundle.hf_model, sae, feature, tau)
        st.caption(f"{len(chosen)} row(s) selected at tau {tau:g}: the rows a removal rewrites")
        st.dataframe(chosen.head(50), hide_index=True, width="stretch",
                     height=ui_features.table_height(min(len(chosen), 50)))
    return sae, tau


def _remove_button(sae_row: dict, feature: int, sae: object, tau: float, *, dead: bool) -> None:
    a1, a2, a3 = st.columns([1, 2, 2], vertical_alignment="center")
    mu = a1.number_input("mu (edit magnitude)", 0.5, 128.0, 16.0, 0.5, key="fb_mu")
    a2.caption("Unsigned (eta = +1): the neuron sign rule needs the concept's text; the Erase page's "
               "'pisces' method measures it."
               + (" This feature never fired in the sweep: removing it changes little on this corpus." if dead else ""))
    how = "PISCES on its decoder direction" if ui_features.is_transcoder(sae_row) else "PISCES"
    if a3.button(f"Add to edit: remove feature {feature} ({how}, tau {tau:g}, mu {mu:g})", key="fb_add", type="primary"):
        try:
            drafts.draft().use_sae(SaeRef(id=str(sae_row["sae_id"]), sha256=sae_sha256(sae)))
        except ValueError as err:
            st.error(str(err))
        else:
            panels.add_to_edit(drafts.remove_features(int(sae_row["layer"]), [feature], tau=tau, mu=mu))


def sae_browser() -> None:
    saes = store.list_saes(model_id)
    if saes.empty:
        st.info("No SAE is catalogued for this model yet: train one on **Home** (SAE section), or run "
                f"`python -m workbench sae train --layer {default_sae_layer(bundle.n_layers)}`. The value-vector browser (next tab) works without one.")
        return
    rows = saes.to_dict("records")
    pick = st.selectbox("SAE", range(len(rows)), index=len(rows) - 1, key="fb_sae",
                        format_func=lambda i: ui_features.sae_label(rows[i]))
    sae_row = rows[pick]
    sae_id = str(sae_row["sae_id"])
    q = ui_features.sae_quality(sae_row.get("metrics_json"))
    if q.get("dead_fraction", 0) > 0.5:
        st.warning(f"{q['dead_fraction']:.0%} of this SAE's features are dead: many concepts have no feature of their own.")
    s1, s2 = st.columns([3, 2])
    how = s2.radio("Search by", ["token or label", "concept set"], horizontal=True, key="fb_how")
    results = None
    if how == "token or label":
        text = s1.text_input("Token or label", placeholder="e.g. river, Paris, film", key="fb_query")
        if text.strip():
            results = store.search_features(sae_id, text)
            if results.empty:
                st.warning(f"No feature fires on, promotes or is labelled {text!r}.")
    else:
        sets = store.concept_sets()
        if sets.empty:
            s1.info("No concept set exists yet: build one on Concept vectors.")
        else:
            names = dict(zip(sets["concept_id"], sets["name"], strict=True))
            cid = s1.selectbox("Concept set", list(names), format_func=lambda c: names[c], key="fb_concept")
            results = store.features_by_contrast(sae_id, cid)
            if results.empty:
                st.info(f"The features' contrast on '{names[cid]}' is not built yet for this SAE.")
                if st.button("Build it (a background job, ~1 min)", key="fb_contrast"):
                    sae = panels.sae_or_error(sae_row["path"])
                    if sae is not None:
                        panels.start_job("sae-contrast", f"SAE contrast '{names[cid]}'",
                                         sae_contrast_job(store, bundle, sae, sae_id, cid))
                panels.job_panel(kinds=("sae-contrast",), limit=1)
                results = None
    if results is not None and not results.empty:
        st.caption(f"{len(results)} feature(s), best evidence first")
        show = results.copy()
        show["top_tokens"] = [", ".join(t[:6]) for t in show["top_tokens"]]
        st.dataframe(show, hide_index=True, width="stretch", height=240)
        st.session_state["fb_feature"] = int(st.selectbox(
            "Open feature", list(results["feature"]), key="fb_pick",
            format_func=lambda f: f"{f} · {results.set_index('feature').loc[f, 'label']}"))
    with st.expander("Go to a feature by number"):
        g1, g2 = st.columns([1, 1])
        number = g1.number_input("feature", 0, int(sae_row["d_sae"]) - 1, 0, key="fb_go_number")
        if g2.button("Open", key="fb_go"):
            st.session_state["fb_feature"] = int(number)
    feature = st.session_state.get("fb_feature")
    if feature is not None:
        feature_page(sae_row, int(feature))


with tab_sae:
    sae_browser()

with tab_vv:
    st.subheader("Value vectors")
    st.caption(f"Gain-aware lens: a row's direction in the residual stream is {bundle.architecture.row_direction}, "
               "then the final norm and unembedding (see docs/models.md, 'Gain-aware vs reference lens').")

    c1, c2, c3 = st.columns([3, 1, 1])
    query = c1.text_input("Search tokens", placeholder="e.g. Paris, wizard, chess", key="vv_query")
    layer_choice = c2.selectbox("Layer", ["all", *range(n_layers)], key="vv_layer")
    how = c3.radio("Match", ["contains", "exact token"], key="vv_how", horizontal=False)
    layer = None if layer_choice == "all" else int(layer_choice)

    if query.strip():
        if how == "exact token":
            hits = store.neurons_with_token(model_id, query if query.startswith(" ") else " " + query.strip(),
                                            layer=layer)
            hits = hits.assign(side="top", hits=1, exact=1, matched=[[query]] * len(hits))
        else:
            hits = store.neurons_matching(model_id, query, layer=layer)
        if hits.empty:
            st.warning(f"No value vector has {query!r} among its top/bottom tokens"
                       + ("" if store.builds(model_id).shape[0] else " — nothing is built yet: use 'Build vocab projections' on Home") + ".")
        else:
            st.caption(f"{len(hits)} value vector(s) match.")
            show = hits.copy()
            show["matched"] = [", ".join(repr(t) for t in m[:6]) for m in show["matched"]]
            st.dataframe(show[["layer", "neuron", "side", "exact", "hits", "matched"]], hide_index=True, height=220,
                         width="stretch")
            options = [f"L{int(r.layer)}/{int(r.neuron)}" for r in hits.itertuples()]
            pick = st.selectbox("Inspect", options, key="vv_pick")
            lay, neu = pick[1:].split("/")
            st.session_state["vv_selected"] = (int(lay), int(neu))

    with st.expander("Go to a neuron by number"):
        g1, g2, g3 = st.columns([1, 1, 1])
        gl = g1.number_input("layer", 0, n_layers - 1, 0, key="vv_go_layer")
        gn = g2.number_input("neuron", 0, int(bundle.d_mlp) - 1, 0, key="vv_go_neuron")
        if g3.button("Show", key="vv_go"):
            st.session_state["vv_selected"] = (int(gl), int(gn))

    selected = st.session_state.get("vv_selected")
    if selected:
        lay, neu = selected
        tokens = store.value_vector_tokens(model_id, lay, neu)
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
