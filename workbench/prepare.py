"""Builds of the SAE-free analyses into the store: value-vector vocab projections, neuron
statistics on a corpus, and concept analyses (neuron contrast, histograms, concept vectors).

Each function writes slice by slice (one layer, one corpus, one concept) through
`Store.write_slices` (a concept's slices together, `Store.save_concept_build`), each slice's
built mark in the same transaction as its rows, so an interrupted build keeps every finished
slice and a rerun resumes with the first unfinished one. The CLI (`python -m workbench prepare`) and the app's background
jobs call these same functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from workbench.corpus import ConceptSet, Corpus
from workbench.lenses import vocab
from workbench.lenses.activations import (
    CollectConfig,
    RunningStats,
    StatsCollector,
    collect_stats,
    effect_size,
    run_pass,
    stats_table,
)
from workbench.lenses.concept_vectors import DocMeansCollector, concept_vectors, mlp_hidden_to_residual
from workbench.lenses.tokens import clean_token_mask, vocab_strings
from workbench.models import ModelBundle, layout
from workbench.progress import NULL_PROGRESS, Progress
from workbench.store import SliceRows, Store


@dataclass
class PrepareConfig:
    """What `prepare` builds. Defaults take a few minutes for the embedded model on 2 cores."""

    layers: list[int] | None = None  # None = all layers
    k: int = 30
    lenses: list[str] = field(default_factory=lambda: ["gain_aware"])
    stat_tokens: int = 20_000
    stat_site: str = "mlp.hook_pre"
    corpus_docs: int = 2_000
    concepts: list[str] = field(default_factory=lambda: ["Harry Potter", "Paris"])
    concept_docs: int = 32
    force: bool = False


@dataclass
class BuildReport:
    artefact: str
    part: str
    seconds: float
    rows: int
    skipped: bool = False


def register_model(store: Store, bundle: ModelBundle) -> None:
    cfg = bundle.config.to_dict() if hasattr(bundle.config, "to_dict") else {}
    store.upsert_model(
        bundle.model_id, bundle.source.describe(), str(bundle.path), bundle.weights_sha256, cfg,
        bundle.n_layers, bundle.d_model, bundle.d_mlp,
    )


def _layers(bundle: ModelBundle, layers: Sequence[int] | None) -> list[int]:
    chosen = list(range(bundle.n_layers)) if layers is None else sorted(set(layers))
    for layer in chosen:
        bundle.check_layer(layer)
    return chosen


def build_vocab_projections(
    store: Store, bundle: ModelBundle, cfg: PrepareConfig, progress: Progress = NULL_PROGRESS
) -> list[BuildReport]:
    """Top/bottom-k tokens of every value vector of the chosen layers, one layer per slice."""
    layers = _layers(bundle, cfg.layers)
    mask = clean_token_mask(bundle.tokenizer, bundle.vocab_size)
    strings = vocab_strings(bundle.tokenizer, bundle.vocab_size)
    reports = []
    for lens in cfg.lenses:
        todo = [layer for layer in layers
                if cfg.force or not store.is_built(bundle.model_id, f"vocab:{lens}", f"layer={layer}")]
        reports += [BuildReport(f"vocab:{lens}", f"layer={layer}", 0.0, 0, True)
                    for layer in layers if layer not in todo]
        progress.stage(f"vocab projection ({lens})", total=len(todo), unit="layer")
        t0 = time.perf_counter()
        for layer, norms, proj in vocab.iter_layer_projections(
            bundle.hf_model, todo, mask, k=cfg.k, lens=lens  # type: ignore[arg-type]
        ):
            vv, tokens = projection_frames(bundle, layer, lens, norms, proj, strings)
            seconds = time.perf_counter() - t0
            store.write_slices(
                bundle.model_id, f"vocab:{lens}", f"layer={layer}",
                {"value_vectors": vv, "value_vector_tokens": tokens},
                key={"model_id": bundle.model_id, "lens": lens, "layer": layer},
                params={"k": cfg.k}, seconds=seconds,
            )
            reports.append(BuildReport(f"vocab:{lens}", f"layer={layer}", seconds, len(tokens)))
            progress.advance(1)
            t0 = time.perf_counter()
    return reports


def projection_frames(
    bundle: ModelBundle, layer: int, lens: str, norms: torch.Tensor, proj: vocab.VocabProjection,
    strings: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n, k = proj.top_ids.shape
    gain = layout.post_ffn_gain(bundle.hf_model, layer)
    gain_norms = (layout.w_out(bundle.hf_model, layer).detach().float() * gain).norm(dim=1)
    vv = pd.DataFrame({
        "model_id": bundle.model_id, "lens": lens, "layer": layer, "neuron": np.arange(n),
        "norm": norms.numpy(), "gain_norm": gain_norms.numpy(),
        "logit_mean": proj.mean.numpy(), "logit_std": proj.std.numpy(),
    })
    parts = []
    for side, ids, logits in (("top", proj.top_ids, proj.top_logits), ("bottom", proj.bottom_ids, proj.bottom_logits)):
        flat_ids = ids.flatten().numpy()
        parts.append(pd.DataFrame({
            "model_id": bundle.model_id, "lens": lens, "layer": layer,
            "neuron": np.repeat(np.arange(n), k), "side": side, "rank": np.tile(np.arange(k), n),
            "token_id": flat_ids, "token": [strings[i] for i in flat_ids],
            "logit": logits.flatten().numpy(),
        }))
    return vv, pd.concat(parts, ignore_index=True)


def stats_frames(
    model_id: str, corpus_id: str, site: str, stats: dict[int, RunningStats]
) -> dict[int, dict[str, pd.DataFrame]]:
    frames = {}
    for layer, st in stats.items():
        cols = stats_table(st)
        counts = cols.pop("counts")
        table = pd.DataFrame(cols)
        table["counts"] = list(counts.astype(np.int32))
        table.insert(0, "layer", layer)
        table.insert(0, "site", site)
        table.insert(0, "corpus_id", corpus_id)
        table.insert(0, "model_id", model_id)
        assert st.edges is not None
        edges = pd.DataFrame({"model_id": [model_id], "corpus_id": [corpus_id], "site": [site],
                              "layer": [layer], "edges": [st.edges.numpy().astype(float)]})
        frames[layer] = {"neuron_stats": table, "hist_edges": edges}
    return frames


def build_neuron_stats(
    store: Store, bundle: ModelBundle, corpus: Corpus, cfg: PrepareConfig,
    progress: Progress = NULL_PROGRESS,
) -> list[BuildReport]:
    """Per-neuron mean/std/quantiles/histogram of cfg.stat_site over a corpus sample."""
    layers = _layers(bundle, cfg.layers)
    corpus_id = f"{corpus.corpus_id}:{cfg.stat_tokens}"
    artefact = f"stats:{cfg.stat_site}:{corpus_id}"
    todo = [layer for layer in layers if cfg.force or not store.is_built(bundle.model_id, artefact, f"layer={layer}")]
    if not todo:
        return [BuildReport(artefact, "all", 0.0, 0, True)]
    texts = [d.text for d in corpus.sample(cfg.corpus_docs, seed=0)]
    progress.stage(f"neuron statistics on {corpus.corpus_id} (layers {todo[0]}-{todo[-1]})",
                   total=cfg.stat_tokens, unit="tok")
    t0 = time.perf_counter()
    stats = collect_stats(
        bundle.bridge, bundle.tokenizer, texts, todo,
        CollectConfig(site=cfg.stat_site, max_tokens=cfg.stat_tokens),
        on_batch=lambda n: progress.advance(n),
    )
    seconds = time.perf_counter() - t0
    reports = []
    for layer, frames in stats_frames(bundle.model_id, corpus_id, cfg.stat_site, stats).items():
        store.write_slices(
            bundle.model_id, artefact, f"layer={layer}", frames,
            key={"model_id": bundle.model_id, "corpus_id": corpus_id, "site": cfg.stat_site, "layer": layer},
            params={"tokens": stats[layer].n}, seconds=seconds / len(stats),
        )
        reports.append(BuildReport(artefact, f"layer={layer}", seconds / len(stats), len(frames["neuron_stats"])))
    return reports


def build_concept(
    store: Store, bundle: ModelBundle, concept: ConceptSet, cfg: PrepareConfig,
    progress: Progress = NULL_PROGRESS, neutral_corpus_id: str | None = None,
) -> BuildReport:
    """Neuron contrast (concept vs neutral), concept/neutral histograms and concept vectors of
    one concept set, written as one slice."""
    artefact = f"concept:{concept.concept_id}"
    if not cfg.force and store.is_built(bundle.model_id, artefact, "all"):
        return BuildReport(artefact, "all", 0.0, 0, True)
    layers = _layers(bundle, cfg.layers)
    t0 = time.perf_counter()
    pos_texts = [d.text for d in concept.positive]
    neg_texts = [d.text for d in concept.negative]
    edges = _existing_edges(store, bundle.model_id, neutral_corpus_id, cfg.stat_site, layers)
    progress.stage(f"concept '{concept.name}': activations ({len(pos_texts)} concept + {len(neg_texts)} neutral docs, 1 pass each)", unit="tok")
    pos_stats, pos_means = _concept_pass(bundle, pos_texts, layers, cfg.stat_site, edges, progress)
    neg_stats, neg_means = _concept_pass(bundle, neg_texts, layers, cfg.stat_site,
                                         {layer: s.edges for layer, s in pos_stats.items()}, progress)  # type: ignore[misc]
    contrast = []
    for layer in layers:
        p, n = pos_stats[layer], neg_stats[layer]
        d = effect_size(p.mean, p.std, p.n, n.mean, n.std, n.n)
        contrast.append(pd.DataFrame({
            "model_id": bundle.model_id, "concept_id": concept.concept_id, "site": cfg.stat_site,
            "layer": layer, "neuron": np.arange(p.width), "mean_pos": p.mean.numpy(),
            "mean_neg": n.mean.numpy(), "std_pos": p.std.numpy(), "std_neg": n.std.numpy(),
            "diff": (p.mean - n.mean).numpy(), "effect_size": d.numpy(),
        }))
    vectors = concept_vector_frame(bundle, concept.concept_id, layers, pos_means, neg_means)
    frames: dict[str, pd.DataFrame] = {
        "neuron_contrast": pd.concat(contrast, ignore_index=True),
        "concept_vectors": vectors,
    }
    seconds = time.perf_counter() - t0
    # Concept/neutral histograms live under their own corpus ids so the Neurons page can overlay
    # them. They, the concept set and the analyses are written in one transaction, the concept's
    # own "all" slice (its built mark) last: a killed build leaves nothing of this concept or all of it.
    slices = []
    for suffix, st in (("pos", pos_stats), ("neg", neg_stats)):
        corpus_id = f"concept:{concept.concept_id}:{suffix}"
        for layer, fr in stats_frames(bundle.model_id, corpus_id, cfg.stat_site, st).items():
            slices.append(SliceRows(f"stats:{cfg.stat_site}:{corpus_id}", f"layer={layer}", fr,
                                    key={"model_id": bundle.model_id, "corpus_id": corpus_id,
                                         "site": cfg.stat_site, "layer": layer}))
    slices.append(SliceRows(artefact, "all", frames, key={"model_id": bundle.model_id, "concept_id": concept.concept_id},
                            params={"positive": len(pos_texts), "negative": len(neg_texts)}, seconds=seconds))
    store.save_concept_build(bundle.model_id, concept.concept_id, concept.name, concept.terms,
                             [d.title for d in concept.positive], len(concept.negative), slices)
    return BuildReport(artefact, "all", seconds, len(frames["neuron_contrast"]))


def build_concepts(
    store: Store, bundle: ModelBundle, corpus: Corpus, cfg: PrepareConfig, progress: Progress = NULL_PROGRESS,
    neutral_corpus_id: str | None = None,
) -> list[BuildReport]:
    """`build_concept` for each of cfg.concepts that the corpus has an article for (others are
    skipped with a message), binned like the neutral statistics `neutral_corpus_id` (default:
    cfg.stat_tokens tokens of this corpus)."""
    from workbench.corpus import build_concept_set

    reports = []
    neutral_id = neutral_corpus_id or f"{corpus.corpus_id}:{cfg.stat_tokens}"
    for name in cfg.concepts:
        if not corpus.has(name):
            progress.message(f"skipping concept {name!r}: no such title in the corpus")
            continue
        concept = build_concept_set(corpus, name, n_positive=cfg.concept_docs, n_negative=2 * cfg.concept_docs)
        reports.append(build_concept(store, bundle, concept, cfg, progress, neutral_corpus_id=neutral_id))
    return reports


def _concept_pass(
    bundle: ModelBundle, texts: list[str], layers: list[int], site: str,
    edges: dict[int, torch.Tensor] | None, progress: Progress,
) -> tuple[dict[int, RunningStats], dict[str, torch.Tensor]]:
    """One forward pass: neuron statistics of `site` and per-document concept-vector means."""
    stats = StatsCollector(layers, site, edges=edges)
    means = DocMeansCollector(layers)
    run_pass(bundle.bridge, bundle.tokenizer, texts, [stats, means], on_batch=progress.advance)
    return stats.stats, means.result()


def _existing_edges(
    store: Store, model_id: str, corpus_id: str | None, site: str, layers: list[int]
) -> dict[int, torch.Tensor] | None:
    if corpus_id is None:
        return None
    frame = store.hist_edges(model_id, corpus_id, site)
    edges = {int(r.layer): torch.tensor(np.asarray(r.edges, dtype=float)) for r in frame.itertuples()}
    return edges if all(layer in edges for layer in layers) else None


def concept_vector_frame(
    bundle: ModelBundle, concept_id: str, layers: list[int],
    pos_means: dict[str, torch.Tensor], neg_means: dict[str, torch.Tensor], k: int = 20,
) -> pd.DataFrame:
    mask = clean_token_mask(bundle.tokenizer, bundle.vocab_size)
    strings = vocab_strings(bundle.tokenizer, bundle.vocab_size)
    unembed = layout.unembed(bundle.hf_model)
    rows = []
    for site in pos_means:
        cv = concept_vectors(pos_means[site], neg_means[site], layers, site)
        if site == "resid":
            residual = cv.vectors
        else:
            residual = torch.stack([
                mlp_hidden_to_residual(cv.vectors[i], layout.w_out(bundle.hf_model, layer).detach().float(),
                                       layout.post_ffn_gain(bundle.hf_model, layer))
                for i, layer in enumerate(layers)
            ])
        proj = vocab.project_topk(vocab.residual_directions(bundle.hf_model, residual), unembed, k=k, mask=mask)
        for i, layer in enumerate(layers):
            rows.append({
                "model_id": bundle.model_id, "concept_id": concept_id, "site": site, "layer": layer,
                "vector": cv.vectors[i].numpy().astype(np.float32), "norm": float(cv.vectors[i].norm()),
                "auroc": float(cv.auroc[i]),
                "top_tokens": [strings[j] for j in proj.top_ids[i].tolist()],
                "bottom_tokens": [strings[j] for j in proj.bottom_ids[i].tolist()],
            })
    return pd.DataFrame(rows)


def config_dict(cfg: PrepareConfig) -> dict[str, object]:
    return asdict(cfg)
