"""SAE recipes side by side on the same cached activations (workbench.sae.sweep): site (post-norm
`hook_mlp_out` vs pre-norm `mlp.hook_out`), width, k, learning rate, batch size, dead-feature
window, aux-loss weight, training corpus. One forward pass collects every hook's activations;
each recipe then trains with SAELens's SAETrainer and is scored on held-out English text:
explained variance, L0, dead and dense fractions, and the share of the next-token loss it
recovers when spliced into the model.

    python bench/sae_sweep.py --layer 6 --vary site=hook_mlp_out,mlp.hook_out --vary train_batch_tokens:lr=4096:3e-4,1024:1e-3
    python bench/sae_sweep.py --set tokens=800000 --cache-tokens 800000 --corpus en+fr+es
    python bench/sae_sweep.py --table

Rows are appended to cache/sae_sweep/results.jsonl as they finish; `--save` keeps each SAE as a
local SAE folder (cache/saes/<id>.cache<N>/, SAELens format plus the workbench's config and
metrics), which `sae catalogue`, the app and the PISCES erase methods use like a trained one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "cache" / "sae_sweep"
COLUMNS = [("hook", 22), ("corpus", 9), ("width", 6), ("k", 4), ("lr", 7), ("batch", 6), ("tokens", 8),
           ("aux", 4), ("dead_window", 5), ("b_dec_init", 5), ("ev", 6), ("l0", 6), ("dead", 6), ("dense", 6), ("ce_recovered", 6),
           ("seconds", 7)]


def typed(cfg: Any, key: str, raw: str) -> Any:
    names = {f.name for f in fields(cfg)}
    if key not in names:
        sys.exit(f"SAETrainConfig has no field {key!r}; choose from {sorted(names)}")
    default = getattr(cfg, key)
    return raw if isinstance(default, str) else type(default)(float(raw) if isinstance(default, int) else raw)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(" ".join(f"{n[:w]:>{w}}" for n, w in COLUMNS))
    for r in rows:
        print(" ".join(f"{r.get(n):>{w}.3g}" if isinstance(r.get(n), float) else f"{str(r.get(n))[:w]:>{w}}"
                       for n, w in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--corpus", default="en", help="training text: en, or a mix like en+fr+es")
    parser.add_argument("--cache-tokens", type=int, default=400_000, help="activations cached per hook")
    parser.add_argument("--eval-tokens", type=int, default=20_000)
    parser.add_argument("--ce-tokens", type=int, default=4096, help="tokens for the spliced-loss score (0 = skip)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="base SAETrainConfig field")
    parser.add_argument("--vary", action="append", default=[], metavar="FIELD=A,B", help="one run per value (product)")
    parser.add_argument("--save", action="store_true", help="keep each SAE under cache/sae_sweep/")
    parser.add_argument("--table", action="store_true", help="only print the table of finished rows")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = OUT / "results.jsonl"
    if args.table:
        print_table([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
        return

    from workbench.config import Settings
    from workbench.corpus.wiki import load_wiki, wiki_texts
    from workbench.models import load_bundle, parse_source
    from workbench.progress import TqdmProgress
    from workbench.sae.sweep import sweep
    from workbench.sae.train import SAETrainConfig, save_local_sae, split_texts

    base = SAETrainConfig(layer=args.layer, tokens=args.cache_tokens, corpus=args.corpus)
    for pair in args.set:
        key, _, raw = pair.partition("=")
        base = replace(base, **{key: typed(base, key, raw)})
    axes = []  # each axis: a list of {field: value} settings; fields joined by ':' vary together
    for pair in args.vary:
        key, _, raw = pair.partition("=")
        keys = key.split(":")
        axis = []
        for value in raw.split(","):
            parts = value.split(":")
            if len(parts) != len(keys):
                sys.exit(f"--vary {key}: value {value!r} needs {len(keys)} ':'-separated parts")
            axis.append({k: typed(base, k, v) for k, v in zip(keys, parts, strict=True)})
        axes.append(axis)
    configs = [replace(base, **{k: v for setting in combo for k, v in setting.items()})
               for combo in itertools.product(*axes)] if axes else [base]

    settings = Settings.from_env()
    bundle = load_bundle(parse_source(args.model), settings)
    train_texts, _ = split_texts(wiki_texts(args.corpus), base.holdout_docs, base.seed)
    english = load_wiki("en").texts()
    _, held_out = split_texts(english, base.holdout_docs, base.seed)
    held = set(held_out)
    train_texts = [t for t in train_texts if t not in held]  # the English held-out never trains
    print(f"{len(configs)} recipes on {bundle.model_id}; cache {args.cache_tokens} tokens of {args.corpus}; "
          f"held-out {len(held_out)} English articles", flush=True)
    t0 = time.perf_counter()
    rows = []
    for row in sweep(bundle, configs, train_texts, held_out, args.cache_tokens, args.eval_tokens, args.ce_tokens,
                     progress=TqdmProgress()):
        record = {**row.as_dict(), "corpus": args.corpus, "cache_tokens": args.cache_tokens,
                  "loss_first": row.metrics.loss_first, "loss_last": row.metrics.loss_last}
        if args.save:
            record["saved"] = save_local_sae(row.sae, bundle, row.config, row.metrics, settings,
                                             args.cache_tokens).name
        rows.append(record)
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    print(f"\nall recipes in {time.perf_counter() - t0:.0f} s (activations collected once)")
    print_table(rows)


if __name__ == "__main__":
    main()
