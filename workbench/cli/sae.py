"""CLI pieces for SAEs, wired into `python -m workbench` by workbench/cli/main.py:

    sae train [--layer L] [--tokens N --width W --k K --hook H --no-catalogue]
    sae list                     (local SAE folders and the store's catalogues, pretrained ones included)
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


def _tokens(args: argparse.Namespace) -> int:
    """--catalogue-tokens, else the catalogue builders' own default (imported when a command runs:
    the catalogue module loads torch, which `--help` should not wait for)."""
    from workbench.sae.catalogue import CATALOGUE_TOKENS

    return CATALOGUE_TOKENS if args.catalogue_tokens is None else int(args.catalogue_tokens)


def _say(text: str, err: bool = False) -> None:
    """CLI output (this module is the CLI's, so it writes to the terminal)."""
    (sys.stderr if err else sys.stdout).write(text + "\n")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--catalogue-tokens", type=int, default=None,
                   help="corpus tokens for the catalogue sweep (default: the catalogue's own, sae.catalogue.CATALOGUE_TOKENS)")
    p.add_argument("--no-catalogue", action="store_true", help="train only, do not catalogue into the store")
    p.add_argument("--force", action="store_true", help="retrain even if this config is cached")
    p.set_defaults(func=cmd_sae_train)

    p = sae_sub.add_parser("catalogue", help="(re)build the store catalogue of a trained SAE folder")
    p.add_argument("--sae", required=True, help="SAE id (folder under cache/saes), a folder path, or "
                   "pretrained:RELEASE/SAE_ID from the local Hugging Face cache (e.g. pretrained:"
                   "gemma-scope-2-270m-pt-mlp-all/layer_6_width_16k_l0_small; transcoders too)")
    p.add_argument("--catalogue-tokens", type=int, default=None)
    p.set_defaults(func=cmd_sae_catalogue)

    p = sae_sub.add_parser("list", help="SAE folders on disk and the SAEs the store has catalogues of (pretrained too)")
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
                                   max_tokens=_tokens(args), progress=TqdmProgress())
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
            cat = catalogue_pretrained(store, bundle, *pretrained, max_tokens=_tokens(args),
                                       progress=TqdmProgress())
        else:
            path = Path(args.sae) if Path(args.sae).is_dir() else settings.saes_dir / args.sae
            cat = catalogue_folder(store, bundle, path, max_tokens=_tokens(args), progress=TqdmProgress())
    finally:
        store.close()
    _report(cat, settings)
    return 0


def cmd_sae_list(args: argparse.Namespace) -> int:
    """Every SAE the workbench can use, marked with where it lives: the folders under the SAE
    directory (trained or imported, with their held-out metrics and whether the store has their
    catalogue) and the SAEs the store has catalogues of without such a folder (pretrained
    releases, read from the Hugging Face cache, and folders catalogued from elsewhere)."""
    from workbench.sae.sources import list_local_saes

    settings = settings_for(args)
    catalogued = _catalogued_saes(settings.store_path)
    local = list_local_saes(settings.saes_dir)
    if not local and not catalogued:
        _say(f"No SAEs under {settings.saes_dir} and none catalogued in {settings.store_path}. Train one: "
             "python -m workbench sae train, or catalogue a pretrained one: "
             "python -m workbench sae catalogue --sae pretrained:RELEASE/SAE_ID")
        return 0
    for line in sae_listing(local, catalogued, str(settings.saes_dir), str(settings.store_path)):
        _say(line)
    return 0


def _catalogued_saes(store_path: Any) -> list[dict[str, Any]]:
    """The store's SAE rows (sae_id, model_id, layer, hook, d_sae, source, path), oldest first;
    none when there is no store or it has no SAE table yet."""
    from workbench.store import open_store

    if not store_path.exists():
        return []
    store = open_store(store_path, read_only=True)
    try:
        if "saes" not in store.table_counts():
            return []
        return list(store.list_saes().to_dict("records"))
    finally:
        store.close()


def sae_listing(local: list[dict[str, Any]], catalogued: list[dict[str, Any]], saes_dir: str,
                store_path: str) -> list[str]:
    """The lines of `sae list`: local folders first (metrics, catalogued or not), then the
    store's catalogues that have no folder under `saes_dir`, each saying what it is and the
    reference `--sae` and the pages take."""
    from pathlib import Path

    from workbench.sae.sources import PRETRAINED_PREFIX

    stored = {str(row["sae_id"]) for row in catalogued}
    lines = [f"Local SAE folders under {saes_dir}:" if local else f"No SAE folders under {saes_dir}."]
    for e in local:
        m = e.get("workbench_metrics", {}).get("metrics", {})
        quality = (f"EV {m['explained_variance']:.3f} L0 {m['l0']:.1f} dead {m['dead_fraction']:.0%}"
                   if m else "no metrics")
        flag = "catalogued" if e["sae_id"] in stored else "not catalogued"
        lines.append(f"  {e['sae_id']}  [local folder]  {quality}  {flag}"
                     + (f"  ERROR {e['error']}" if "error" in e else ""))
    folders = {str(e["sae_id"]) for e in local}
    rest = [row for row in catalogued if str(row["sae_id"]) not in folders]
    if rest:
        lines.append(f"Catalogued in the store {store_path} (no folder under {saes_dir}):")
    for row in rest:
        path = str(row.get("path") or "")
        if row.get("source") == "pretrained" or path.startswith(PRETRAINED_PREFIX):
            kind = f"[pretrained]  load with {path or PRETRAINED_PREFIX + str(row['sae_id'])}"
        elif path and Path(path).is_dir():
            kind = f"[local folder elsewhere]  {path}"
        else:
            kind = f"[catalogue only: its folder {path or '(unknown)'} is gone]"
        lines.append(f"  {row['sae_id']}  {kind}  model {row['model_id']}, layer {row['layer']} {row['hook']}, "
                     f"{int(row['d_sae'])} features  catalogued")
    return lines


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
