"""Catalogue an SAE into the store: features, vocab tokens, examples and row scores of one
SAE written in a single transaction (the side-effect edge of workbench.sae.catalogue)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.corpus.documents import Document
from workbench.models.sites import SAESite
from workbench.progress import NullProgress, Progress
from workbench.sae.catalogue import (
    CATALOGUE_TOKENS,
    FeatureCatalogue,
    Lens,
    build_catalogue,
    row_feature_scores,
)


def index_sae(
    store: Any,
    bundle: Any,
    sae: Any,
    sae_id: str,
    sha256: str,
    documents: list[Document],
    corpus_id: str = "wiki-en",
    max_tokens: int = CATALOGUE_TOKENS,
    source: str = "local",
    path: Path | str | None = None,  # a folder, or 'pretrained:RELEASE/SAE_ID' (what load_sae takes)
    metrics: dict[str, Any] | None = None,
    lens: Lens = "gain_aware",
    progress: Progress | None = None,
) -> FeatureCatalogue:
    """Build the catalogue (one corpus sweep) and the row scores, then store both at once."""

    progress = progress or NullProgress()
    cat = build_catalogue(bundle, sae, sae_id, documents, corpus_id=corpus_id,
                          max_tokens=max_tokens, lens=lens, progress=progress)
    site = SAESite.of_sae(sae)
    scores = row_feature_scores(bundle.hf_model, sae, lens=lens)
    k = getattr(sae.cfg, "k", None)
    store.save_sae_catalogue({"sae_id": sae_id, "model_id": bundle.model_id, "hook": site.hook_name, "layer": site.layer,
         "d_sae": cat.d_sae, "k": float(k) if k is not None else (metrics or {}).get("l0"),
         "architecture": sae.cfg.architecture(), "source": source,
         "trained_on": corpus_id, "metrics_json": json.dumps(metrics or {}),
         "path": str(path) if path else None, "sha256": sha256, "lens": lens,
         "corpus_id": corpus_id, "n_tokens": cat.n_tokens, "seconds": cat.seconds},
        cat.features, cat.tokens, cat.examples, scores,
    )
    return cat


def catalogue_into_store(store: Any, bundle: Any, sae: Any, sae_id: str, sha256: str, path: Path | str | None,
                         metrics: dict[str, Any] | None, max_tokens: int = CATALOGUE_TOKENS,
                         progress: Progress | None = None) -> FeatureCatalogue:
    """Catalogue an SAE over the embedded corpus, shuffled so the sweep spans all topics: what
    `sae catalogue`, `sae train` and the app's SAE jobs all call."""
    from workbench.corpus.wiki import load_wiki

    corpus = load_wiki("en")
    docs = corpus.sample(len(corpus), seed=1)
    from workbench.sae.sources import parse_pretrained

    source = "pretrained" if path is not None and parse_pretrained(str(path)) else "local"
    return index_sae(store, bundle, sae, sae_id, sha256, docs, corpus_id=corpus.corpus_id, max_tokens=max_tokens,
                     source=source, path=path, metrics=metrics, progress=progress)


def catalogue_pretrained(store: Any, bundle: Any, release: str, sae_id: str, max_tokens: int = CATALOGUE_TOKENS,
                         progress: Progress | None = None, hub: bool = True) -> FeatureCatalogue:
    """Load an SAE or transcoder of SAELens's registry (local HF cache, or the hub when `hub`)
    and catalogue it, stored under 'RELEASE/SAE_ID' with the reference `load_sae` takes back:
    what `sae catalogue --sae pretrained:...` and the Home panel's job call."""
    from workbench.sae.sources import PRETRAINED_PREFIX, load_pretrained_sae

    sae, full_id, sha = load_pretrained_sae(release, sae_id, hub=hub)
    return catalogue_into_store(store, bundle, sae, full_id, sha, PRETRAINED_PREFIX + full_id, None,
                                max_tokens, progress)


def catalogue_folder(store: Any, bundle: Any, path: Path, max_tokens: int = CATALOGUE_TOKENS,
                     progress: Progress | None = None) -> FeatureCatalogue:
    """Load a local SAE folder (safetensors only) with its training metrics and catalogue it."""
    from workbench.sae.sources import load_local_sae
    from workbench.sae.train import METRICS_FILE

    sae, sae_id, sha = load_local_sae(Path(path))
    metrics_file = Path(path) / METRICS_FILE
    metrics = json.loads(metrics_file.read_text())["metrics"] if metrics_file.exists() else None
    return catalogue_into_store(store, bundle, sae, sae_id, sha, Path(path), metrics, max_tokens, progress)
