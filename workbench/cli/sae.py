"""CLI pieces for SAEs, wired into `python -m workbench` by workbench/cli/main.py:

    sae train --layer 6 [--tokens N --width W --k K --hook H --no-catalogue]
    sae list
    features search "Paris" --sae ID
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from typing import Any

from workbench.cli.common import UserError, load_bundle_for, settings_for
from workbench.models.depth import DEFAULT_SAE_LAYER, default_sae_layer


def _say(text: str, err: bool = False) -> None:
    """CLI output (this module is the CLI's, so it writes to the terminal)."""
    (sys.stderr if err else sys.stdout).write(text + "\n")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from workbench.sae.train import SITES, SAETrainConfig

    d = SAETrainConfig()
    sae = subparsers.add_parser("sae", help="train, list and catalogue SAEs")
    sae_sub = sae.add_subparsers(dest="sae_command", required=True)

    p = sae_sub.add_parser("train", help="train an SAE with SAELens on the corpus (cached per config)")
    p.add_argument("--layer", type=int, default=None,
                   help=f"layer (default: {d.layer} of 18 on the embedded model, the same depth on others)")
    p.add_argument("--hook", default=d.site, choices=SITES, help="site within the layer")
    p.add_argument("--tokens", type=int, default=d.tokens, help="training tokens")
    p.add_argument("--width", type=int, default=d.width, help="number of features (d_sae)")
    p.add_argument("--k", type=int, default=d.k, help="active features per token (BatchTopK mean)")
    p.add_argument("--architecture", default=d.architecture, choices=["batchtopk", "topk"])
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--corpus", default=d.corpus, help="training text: en, es, fr or a mix such as en+fr+es")
    p.add_argument("--catalogue-tokens", type=int, default=50_000, help="corpus tokens for the catalogue sweep")
    p.add_argument("--no-catalogue", action="store_true", help="train only, do not catalogue into the store")
    p.add_argument("--force", action="store_true", help="retrain even if this config is cached")
    p.set_defaults(func=cmd_sae_train)

    p = sae_sub.add_parser("catalogue", help="(re)build the store catalogue of a trained SAE folder")
    p.add_argument("--sae", required=True, help="SAE id (folder under cache/saes), a folder path, or "
                   "pretrained:RELEASE/SAE_ID from the local Hugging Face cache (e.g. pretrained:"
                   "gemma-scope-2-270m-pt-mlp-all/layer_6_width_16k_l0_small; transcoders too)")
    p.add_argument("--catalogue-tokens", type=int, default=50_000)
    p.set_defaults(func=cmd_sae_catalogue)

    p = sae_sub.add_parser("list", help="SAEs on disk and in the store")
    p.set_defaults(func=cmd_sae_list)

    feats = subparsers.add_parser("features", help="search SAE features in the store")
    f_sub = feats.add_subparsers(dest="features_command", required=True)
    p = f_sub.add_parser("search", help="features by vocab token or label text")
    p.add_argument("text")
    p.add_argument("--sae", help="SAE id (default: the only / latest catalogued SAE)")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_features_search)


def _catalogue(args: argparse.Namespace, settings: Any, bundle: Any, sae: Any, sae_id: str,
               sha256: str, path: Any, metrics: dict[str, Any] | None) -> None:
    from workbench.progress import TqdmProgress
    from workbench.sae.index import catalogue_into_store
    from workbench.store import open_store

    store = open_store(settings.store_path)
    try:
        cat = catalogue_into_store(store, bundle, sae, sae_id, sha256, path, metrics,
                                   max_tokens=args.catalogue_tokens, progress=TqdmProgress())
    finally:
        store.close()
    _report(cat, settings)


def _report(cat: Any, settings: Any) -> None:
    _say(f"catalogued {cat.d_sae} features over {cat.n_tokens} tokens in {cat.seconds:.0f} s "
          f"-> {settings.store_path}")


def cmd_sae_train(args: argparse.Namespace) -> int:
    from workbench.progress import TqdmProgress
    from workbench.sae.train import SAETrainConfig, train_sae

    try:
        cfg = SAETrainConfig(layer=DEFAULT_SAE_LAYER if args.layer is None else args.layer, site=args.hook, tokens=args.tokens, width=args.width,
                             k=args.k, architecture=args.architecture, lr=args.lr, corpus=args.corpus)
    except ValueError as err:
        raise UserError(str(err)) from err
    settings, bundle = load_bundle_for(args)
    if args.layer is None:
        cfg = replace(cfg, layer=default_sae_layer(bundle.n_layers))
    if not 0 <= cfg.layer < bundle.n_layers:
        raise UserError(f"Layer {cfg.layer} is out of range: the model has layers 0-{bundle.n_layers - 1}.")
    t0 = time.perf_counter()
    result = train_sae(bundle, cfg, settings, progress=TqdmProgress(), force=args.force)
    m = result.metrics
    _say(f"SAE {result.sae_id}\n  path {result.path}\n  sha256 {result.sha256}\n"
          f"  trained {m.train_tokens} tokens in {m.train_seconds:.0f} s; held-out EV {m.explained_variance:.3f}, "
          f"L0 {m.l0:.1f}, dead {m.dead_fraction:.1%}, dense {m.dense_fraction:.1%} ({time.perf_counter() - t0:.0f} s)")
    if not args.no_catalogue:
        _catalogue(args, settings, bundle, result.sae, result.sae_id, result.sha256, result.path, m.to_dict())
    return 0


def cmd_sae_catalogue(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.progress import TqdmProgress
    from workbench.sae.index import catalogue_folder, catalogue_pretrained
    from workbench.sae.sources import SAELoadError, parse_pretrained
    from workbench.store import open_store

    try:
        pretrained = parse_pretrained(args.sae)
    except SAELoadError as err:
        raise UserError(str(err)) from err
    settings, bundle = load_bundle_for(args)
    store = open_store(settings.store_path)
    try:
        if pretrained is not None:
            cat = catalogue_pretrained(store, bundle, *pretrained, max_tokens=args.catalogue_tokens,
                                       progress=TqdmProgress())
        else:
            path = Path(args.sae) if Path(args.sae).is_dir() else settings.saes_dir / args.sae
            cat = catalogue_folder(store, bundle, path, max_tokens=args.catalogue_tokens, progress=TqdmProgress())
    finally:
        store.close()
    _report(cat, settings)
    return 0


def cmd_sae_list(args: argparse.Namespace) -> int:
    from workbench.sae.sources import list_local_saes
    from workbench.store import open_store

    settings = settings_for(args)
    stored = set()
    if settings.store_path.exists():
        store = open_store(settings.store_path, read_only=True)
        try:
            stored = set(store.list_saes()["sae_id"]) if "saes" in store.table_counts() else set()
        finally:
            store.close()
    entries = list_local_saes(settings.saes_dir)
    if not entries:
        _say(f"No SAEs under {settings.saes_dir}. Train one: python -m workbench sae train")
        return 0
    for e in entries:
        m = e.get("workbench_metrics", {}).get("metrics", {})
        quality = (f"EV {m['explained_variance']:.3f} L0 {m['l0']:.1f} dead {m['dead_fraction']:.0%}"
                   if m else "no metrics")
        flag = "catalogued" if e["sae_id"] in stored else "not catalogued"
        _say(f"{e['sae_id']}  {quality}  {flag}" + (f"  ERROR {e['error']}" if "error" in e else ""))
    return 0


def cmd_features_search(args: argparse.Namespace) -> int:
    from workbench.store import open_store

    settings = settings_for(args)
    if not settings.store_path.exists():
        raise UserError(f"No store at {settings.store_path}; run `python -m workbench sae train` first.")
    store = open_store(settings.store_path, read_only=True)
    try:
        saes = store.list_saes()
        if saes.empty:
            raise UserError("No SAE is catalogued yet; run `python -m workbench sae train`.")
        sae_id = args.sae or str(saes["sae_id"].iloc[-1])
        if sae_id not in set(saes["sae_id"]):
            raise UserError(f"SAE {sae_id!r} is not catalogued; known: {', '.join(saes['sae_id'])}.")
        t0 = time.perf_counter()
        hits = store.search_features(sae_id, args.text, limit=args.limit)
        ms = (time.perf_counter() - t0) * 1000
    finally:
        store.close()
    _say(f"{len(hits)} feature(s) of {sae_id} matching {args.text!r} ({ms:.1f} ms)", err=True)
    for row in hits.itertuples():
        if row.match == "token":
            where = f"vocab {row.side} #{int(row.rank)} logit {row.logit:.2f}"
        elif row.match == "fires_on":
            where = f"fires on it, act {row.logit:.1f}"
        else:
            where = "label/tokens"
        tops = " ".join(list(row.top_tokens)[:8])
        _say(f"  f{row.feature:<6} {row.label[:40]:<40} density {row.density:.4f} max {row.max_act:.1f}  "
              f"[{where}]  top: {tops}")
    return 0
