"""Concept vectors: build a concept set (corpus titles, terms), see how separable it is per
layer (AUROC), what its difference-of-means direction says in vocabulary terms, and add
'project it out' to the edit."""

from __future__ import annotations

import json

import streamlit as st
import torch

from workbench.jobs import concept_job
from workbench.lenses.concept_vectors import nearest_sae_features, nearest_value_vectors
from workbench.ui import draft as drafts
from workbench.ui import features as ui_features
from workbench.ui import panels, plots, resources

st.set_page_config(page_title="Concept vectors · workbench", page_icon="🧭", layout="wide")
st.title("Concept vectors")
bundle, store = panels.need_bundle_and_store()
panels.edit_sidebar()
model_id = bundle.model_id
n_layers = int(bundle.n_layers)

sets = store.concept_sets()
names = store.built_concepts(model_id)  # concept_id -> name
built = list(names)

with st.expander("Build a concept set", expanded=not built):
    wiki = resources.wiki()
    name = st.text_input("Concept name", placeholder="e.g. Chess", key="cv_name")
    title_query = st.text_input("Find corpus articles", value=name, key="cv_title_query",
                                help="Titles of the embedded Wikipedia summaries (~10k vital articles).")
    topic = st.selectbox("…or every article of a corpus topic", ["(none)", *wiki.topics], key="cv_topic")
    if topic != "(none)":
        candidates = [d.title for d in wiki.by_topic(topic)]
    else:
        candidates = wiki.search_titles(title_query, limit=30) if title_query.strip() else []
    default = candidates[:48] if topic != "(none)" else candidates[:1]
    titles = st.multiselect("Concept articles", candidates, default=default, key=f"cv_titles_{topic}")
    terms_text = st.text_input("Extra terms (comma-separated; articles mentioning them count as concept)",
                               key="cv_terms")
    pasted = st.text_area("…and/or paste concept text (one document per blank-line-separated block)",
                          key="cv_pasted", height=90, max_chars=resources.settings().limits.max_prompt_chars * 10)
    texts = [block.strip() for block in pasted.split("\n\n") if block.strip()]
    n_docs = st.slider("Concept documents (at most)", 8, 96, 48, step=8, key="cv_docs")
    force = st.checkbox("Rebuild if it exists", key="cv_force")
    neutral = [c for c in store.stat_corpora(model_id) if not c.startswith("concept:")]
    if st.button("Build concept", key="cv_build", disabled=not name.strip()):
        terms = [t.strip() for t in terms_text.split(",") if t.strip()]
        if not titles and not terms and not texts and not wiki.has(name.strip()):
            st.error(f"No article is titled {name!r}: pick concept articles, give terms or paste text.")
        else:
            panels.start_job("concept", f"Concept '{name.strip()}'",
                             concept_job(store, bundle, name.strip(), titles=titles, terms=terms, n_docs=n_docs,
                                         neutral_corpus_id=neutral[-1] if neutral else None, force=force,
                                         texts=texts))
    panels.job_panel(kinds=("concept",), limit=3)

if not built:
    st.info("No concept is built for this model yet: build one above (Home's Prepare does not build concepts).")
    st.stop()

cid = st.selectbox("Concept", built, format_func=lambda c: f"{names.get(c, c)} ({c})", key="cv_concept")
st.session_state["concept_id"] = cid
row = sets[sets["concept_id"] == cid].iloc[0]
st.caption(f"{len(json.loads(row['positive_titles_json']))} concept docs vs {row['n_negative']} neutral docs · "
           f"terms: {', '.join(json.loads(row['terms_json']))}")

vectors = store.concept_vectors(model_id, cid)
if vectors.empty:
    st.warning("This concept has no vectors for this model.")
    st.stop()
st.plotly_chart(plots.line_by_layer(vectors, "auroc", "site", "How well the concept direction separates concept "
                                    "from neutral documents (AUROC per layer)", y_range=(0.4, 1.02)),
                width="stretch", key="cv_auroc")

site = st.radio("Site", sorted(vectors["site"].unique()), horizontal=True, key="cv_site",
                help="resid: residual stream after the layer (RMS-normalised). mlp_hidden: MLP hidden activations, "
                     "mapped through W_out (and the post-FFN norm's gain, on families that have one) for the vocab "
                     "projection.")
table = vectors[vectors["site"] == site][["layer", "auroc", "norm", "top_tokens", "bottom_tokens"]].copy()
table["top_tokens"] = [", ".join(repr(t) for t in toks[:10]) for toks in table["top_tokens"]]
table["bottom_tokens"] = [", ".join(repr(t) for t in toks[:10]) for toks in table["bottom_tokens"]]
st.markdown("**Vocabulary projection per layer** (top: what the direction promotes)")
st.dataframe(table, hide_index=True, width="stretch", height=min(38 * (len(table) + 1), 420))

st.subheader("Add to edit: project the concept direction out of W_out")
resid = vectors[vectors["site"] == "resid"].sort_values("layer")
if resid.empty:
    st.info("Only residual-stream concept vectors can be projected out; this concept has none.")
else:
    best = int(resid.sort_values("auroc", ascending=False).iloc[0]["layer"])
    p1, p2, p3 = st.columns([1, 2, 1])
    source_layer = p1.selectbox("Direction from layer", list(resid["layer"]), index=list(resid["layer"]).index(best),
                                key="cv_src_layer", help="Defaults to the layer with the best AUROC.")
    target_layers = p2.multiselect("Remove it from W_out of layers", list(range(n_layers)), default=[best],
                                   key="cv_targets")
    alpha = p3.slider("alpha", 0.0, 1.0, 1.0, 0.05, key="cv_alpha")
    if st.button("Add to edit: project out", key="cv_add", disabled=not target_layers):
        vec = resid[resid["layer"] == source_layer].iloc[0]["vector"]
        panels.add_to_edit(drafts.project_out(target_layers, list(vec), alpha=alpha))

    st.subheader("Nearest value vectors")
    st.caption("W_out rows (as written into the residual stream) most aligned with this direction, in either "
               "sign: the neurons that write the concept. Cosine > 0 promotes it, < 0 suppresses it.")
    n1, n2 = st.columns([3, 1])
    near_layers = n1.multiselect("Search W_out of layers", list(range(n_layers)),
                                 default=list(range(max(0, source_layer - 2), min(n_layers, source_layer + 1))),
                                 key="cv_near_layers")
    n_near = n2.number_input("rows", 5, 100, 20, key="cv_near_k")
    u = torch.tensor(list(resid[resid["layer"] == source_layer].iloc[0]["vector"]))  # [d_model]
    if near_layers:
        near = nearest_value_vectors(bundle.hf_model, u, near_layers, int(n_near))
        st.dataframe(near, hide_index=True, width="stretch", height=ui_features.table_height(len(near), cap=320))
        if st.button(f"Add to edit: ablate these {len(near)} rows", key="cv_near_ablate"):
            for layer, group in near.groupby("layer"):
                panels.add_to_edit(drafts.ablate(int(layer), [int(n) for n in group["neuron"]]), rerun=False)
            st.rerun()

    st.subheader("Nearest SAE features")
    saes = store.list_saes(model_id)
    if saes.empty:
        st.caption("No SAE is catalogued for this model (Home → Train an SAE).")
    else:
        sae_row = saes.iloc[-1]
        st.caption(f"Decoder directions of {ui_features.sae_label(sae_row.to_dict())} most aligned with the direction.")
        sae = panels.sae_or_error(sae_row["path"])
        if sae is not None:
            feats = nearest_sae_features(sae.W_dec, u, int(n_near))
            labels = store.feature_labels(str(sae_row["sae_id"]), [int(f) for f in feats["feature"]])
            st.dataframe(feats.assign(label=[labels.get(int(f), "") for f in feats["feature"]]), hide_index=True,
                         width="stretch", height=ui_features.table_height(len(feats), cap=320))
