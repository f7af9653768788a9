"""SAE benchmark: training tok/s vs a bare forward up to the layer (the training's floor),
catalogue build time per 1k features, and p50/p95 of the four store searches.

Run: python bench/sae_bench.py [--model embedded|tiny] [--layer 6] [--tokens 16384]
     [--width 1024] [--catalogue-tokens 4000] [--sae-id ID  (search an existing catalogue)]
Prints numbers measured side by side in one run; no assertions (timings are noisy here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def forward_tok_s(bundle, hook: str, layer: int, texts: list[str], tokens: int, context: int) -> float:  # type: ignore[no-untyped-def]
    import torch

    from workbench.corpus.batches import token_batches

    n, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for batch in token_batches(bundle.tokenizer, texts, max_len=context, batch_size=16, max_tokens=tokens):
            bundle.bridge.run_with_cache(batch.input_ids, names_filter=[hook], stop_at_layer=layer + 1,
                                         attention_mask=batch.attention_mask)
            n += batch.n_tokens
    return n / (time.perf_counter() - t0)


def percentiles(fn, repeats: int = 30) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16_384)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--catalogue-tokens", type=int, default=4000)
    parser.add_argument("--store", help="search this store instead of the benchmark's own")
    parser.add_argument("--sae-id", help="SAE id catalogued in --store to time the searches on")
    args = parser.parse_args()

    from workbench.config import Settings
    from workbench.corpus.concept import build_concept_set
    from workbench.corpus.wiki import load_wiki
    from workbench.models import load_bundle, parse_source
    from workbench.sae.catalogue import feature_contrast
    from workbench.sae.index import index_sae
    from workbench.sae.train import SAETrainConfig, train_sae
    from workbench.store import Store

    base = Settings.from_env()
    bundle = load_bundle(parse_source(args.model), base)
    corpus = load_wiki("en")
    docs = corpus.sample(2000, seed=11)
    texts = [d.text for d in docs]
    tmp = Path(tempfile.mkdtemp(prefix="sae-bench-"))
    (tmp / "models").symlink_to(base.models_dir.resolve(), target_is_directory=True)
    settings = Settings(cache_dir=tmp)

    cfg = SAETrainConfig(layer=args.layer, width=args.width, k=args.k, tokens=args.tokens,
                         norm_batches=2, eval_tokens=2000, holdout_docs=50)
    fwd = forward_tok_s(bundle, cfg.hook_name, cfg.layer, texts, 8192, cfg.context_size)
    result = train_sae(bundle, cfg, settings, texts=texts)
    norm_tokens = cfg.norm_batches * cfg.train_batch_tokens
    train = (cfg.tokens + norm_tokens) / result.metrics.train_seconds
    print(f"model {bundle.model_id}, hook {cfg.hook_name}, d_sae {cfg.width}, k {cfg.k}")
    print(f"  forward up to layer {cfg.layer}:   {fwd:8.0f} tok/s")
    print(f"  SAE training (SAELens runner): {train:8.0f} tok/s  ({train / fwd:.2f}x forward; "
          f"{cfg.tokens} + {norm_tokens} norm tokens in {result.metrics.train_seconds:.0f} s)")

    store = Store(tmp / "bench.duckdb")
    t0 = time.perf_counter()
    cat = index_sae(store, bundle, result.sae, result.sae_id, result.sha256, docs,
                    max_tokens=args.catalogue_tokens)
    secs = time.perf_counter() - t0
    print(f"  catalogue ({cat.n_tokens} tokens, vocab projection, examples, row scores, store write): "
          f"{secs:.1f} s = {secs / cat.d_sae * 1000:.1f} s per 1k features")
    concept = build_concept_set(corpus, "Paris", n_positive=8, n_negative=8)
    store.save_feature_contrast(result.sae_id, concept.concept_id,
                          feature_contrast(bundle, result.sae, concept, max_tokens=1000))

    sae_id = result.sae_id
    if args.store:
        store.close()
        from workbench.store import open_store

        store = open_store(Path(args.store), read_only=True)
        sae_id = args.sae_id or sae_id
    queries = {
        "search_features('Paris')": lambda: store.search_features(sae_id, "Paris"),
        "17.features_of_row()": lambda: store.features_of_row(sae_id, 17),
        "5.rows_of_feature()": lambda: store.rows_of_feature(sae_id, 5),
        "features_by_contrast": lambda: store.features_by_contrast(sae_id, concept.concept_id),
    }
    for name, fn in queries.items():
        p50, p95 = percentiles(fn)
        print(f"  {name:<28} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")
    store.close()


if __name__ == "__main__":
    main()
