"""Erasure method comparison on the dev benchmark: every method on every chosen concept, one
table (concept accuracy first-token / continuation, split by name-dependence; neighbours;
general; other concepts; perplexity change; re-introduction; weights changed; wall time).

    python bench/erasure.py --concepts "Harry Potter,Eiffel Tower" --methods optimise,ablate
    python bench/erasure.py --all            # all dev concepts x all methods (hours on 2 cores)

Rows are appended to bench/results/erasure-<model>.jsonl as they finish, so a long run can be stopped
and its finished rows kept; `--table` reprints the table from that file and `--docs` regenerates the
tables of docs/results.md from it (the file is the one source of the numbers docs/results.md and the
Erase page quote).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from workbench.benchmark.devbench import load_devbench  # noqa: E402
from workbench.benchmark.goals import (  # noqa: E402
    TIERS,
    ErasureGoal,
    controls_held,
    goal_checks,
    goal_summary,
    latest_rows,
    mean_row,
    tier,
)
from workbench.benchmark.relearn import RelearnConfig  # noqa: E402
from workbench.benchmark.results import (  # noqa: E402
    HELD_OUT,
    RESULTS_DOC,
    RESULTS_FILE,
    load_rows,
    replace_results_block,
    results_block,
)
from workbench.benchmark.scorecard import EvalOptions, evaluate  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.corpus import Corpus, load_wiki  # noqa: E402
from workbench.corpus.concept import slug  # noqa: E402
from workbench.edits.compile import compile_spec  # noqa: E402
from workbench.methods.erase import METHODS, REWRITE_CF, REWRITE_NULL, EraseOptions, PiscesConfig, erase  # noqa: E402
from workbench.methods.facts import FactSet, build_fact_set  # noqa: E402
from workbench.methods.key_rewrite import RewriteConfig  # noqa: E402
from workbench.methods.optimise import OptimiseConfig  # noqa: E402

# the rewrite methods' own defaults, which `--set` overrides
REWRITE_DEFAULTS = {"rewrite": RewriteConfig(), "rewrite-cf": REWRITE_CF, "rewrite-null": REWRITE_NULL}
from workbench.models import ModelBundle, load_bundle, parse_source  # noqa: E402
from workbench.progress import TqdmProgress  # noqa: E402
from workbench.sae.sources import spec_sae_loader  # noqa: E402

OUT = ROOT / "cache" / "erasure"
_DEV = load_devbench()
DEV_BUILD, DEV_TITLES = _DEV.provenance.built_at, {c.title for c in _DEV.concepts} | {c.name for c in _DEV.concepts}


def fact_set_for(bundle: ModelBundle, corpus: Corpus, concept: str) -> FactSet:
    """Built once per concept and cached, so every method edits with the same target text."""
    path = OUT / f"facts-{bundle.model_id}-{slug(concept)}.json"
    if path.exists():
        return FactSet.from_json(path.read_text())
    facts = build_fact_set(bundle, corpus, concept, progress=TqdmProgress())
    path.write_text(facts.to_json())
    return facts


def config_overrides(base: Any, pairs: list[str]) -> Any:
    """A config dataclass with FIELD=VALUE strings applied (values typed like the field's
    default; tuples as comma lists; a field of a composed config dotted, retain.n_neutral=30).
    An unknown field exits naming it."""
    for pair in pairs:
        key, _, raw = pair.partition("=")
        base = _override(base, key.split("."), raw)
    return base


def _override(cfg: Any, path: list[str], raw: str) -> Any:
    head = path[0]
    if not hasattr(cfg, head):
        sys.exit(f"{type(cfg).__name__} has no field {head!r}")
    default = getattr(cfg, head)
    if len(path) > 1:
        value = _override(default, path[1:], raw)
    elif isinstance(default, tuple):
        kind = type(default[0]) if default else int
        value = tuple(kind(x) for x in raw.split(","))
    else:
        value = type(default)(raw)
    return replace(cfg, **{head: value})


def optimise_overrides(pairs: list[str], n_layers: int) -> OptimiseConfig | None:
    """OptimiseConfig from FIELD=VALUE strings (None when there are none)."""
    return config_overrides(OptimiseConfig().fitted(n_layers), pairs) if pairs else None


def run_one(bundle: ModelBundle, corpus: Corpus, concept: str, method: str,
            optimise: OptimiseConfig | None = None, key_names: list[str] | None = None,
            rewrite: RewriteConfig | None = None, pisces: dict[str, Any] | None = None,
            relearn: bool = False) -> dict[str, Any]:
    facts = fact_set_for(bundle, corpus, concept)
    if key_names:
        facts = replace(facts, key_names=key_names)
    t0 = time.perf_counter()
    result = erase(bundle, corpus, concept, method, TqdmProgress(), fact_set=facts,
                   options=EraseOptions(score=False, optimise=optimise, rewrite=rewrite,
                                        pisces=PiscesConfig(**(pisces or {}))))
    edit_s = time.perf_counter() - t0
    overlay = compile_spec(result.spec, bundle, sae_loader=spec_sae_loader(Settings.from_env().saes_dir),
                           payload=result.payload or None)
    n_weights = _changed(bundle, overlay)
    t1 = time.perf_counter()
    card = evaluate(bundle, concept, overlay, options=EvalOptions(relearn=RelearnConfig() if relearn else None),
                    progress=TqdmProgress())
    eval_s = time.perf_counter() - t1
    m = {r["metric"]: r for r in card.rows()}

    def pick(name: str, side: str = "after") -> float | None:
        return m[name][side] if name in m else None

    ppl_b, ppl_a = pick("neutral perplexity", "before"), pick("neutral perplexity")
    row = {
        "concept": concept, "method": method,
        "concept_first": pick("concept first-token acc"), "concept_cont": pick("concept continuation acc"),
        "concept_answered": pick("concept answered"),
        "name_dep": pick("concept answered (name-dependent)"), "cue": pick("concept answered (cue-answerable)"),
        "neighbours": pick("neighbours answered"), "general": pick("general answered"),
        "others": pick("other concepts first-token acc"),
        "others_base": pick("other concepts first-token acc", "before"),
        "ppl_change_pct": 100 * (ppl_a / ppl_b - 1) if ppl_a and ppl_b else None,
        "reintro": pick("re-introduced in context answered"),
        "reintro_not_stated": pick("re-introduced, answer not in context"),
        "answer_prob_before": pick("concept answer prob", "before"), "answer_prob_after": pick("concept answer prob"),
        "weights_changed": n_weights, "edit_s": round(edit_s, 1), "eval_s": round(eval_s, 1),
        "score": card.score, "verdicts": card.verdicts, "fluent": card.fluent,
        "devbench": DEV_BUILD if concept in DEV_TITLES else HELD_OUT,  # what it was scored against
    }
    if card.relearn is not None:  # the relearning test (RelearnConfig's defaults), timed inside eval_s
        rl = card.relearn
        row.update(relearn_base=rl.base, relearn_edited=rl.edited, relearned=rl.relearned,
                   relearn_recovered=rl.recovered, relearn_prompts=rl.prompts, relearn_s=round(rl.seconds, 1))
    row["tier"] = tier(row)  # the same rule the tables apply (older rows get it computed when read)
    return row


def _changed(bundle: ModelBundle, adapter: Any) -> int:
    """Number of W_out entries the adapter changes."""
    from workbench.adapters import merged_w_out
    from workbench.models import layout

    total = 0
    for layer, delta in adapter.deltas.items():
        base = layout.w_out(bundle.hf_model, layer).detach()
        total += int((merged_w_out(base, delta) != base).sum())
    return total


COLUMNS = [("concept", 20), ("method", 14), ("concept_first", 6), ("concept_cont", 6), ("name_dep", 6), ("cue", 6),
           ("neighbours", 6), ("general", 6), ("others", 6), ("ppl_change_pct", 7), ("reintro", 6),
           ("relearned", 6), ("weights_changed", 9), ("edit_s", 7)]


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows, then per method the mean row and which parts of the goal (ErasureGoal) it meets,
    and on how many concepts the controls all held."""
    head = " ".join(f"{name[:w]:>{w}}" for name, w in COLUMNS) + " controls"
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for name, w in COLUMNS:
            v = r.get(name)
            cells.append(f"{v:>{w}.2f}" if isinstance(v, float) else f"{str(v)[:w]:>{w}}")
        print(" ".join(cells) + ("     held" if controls_held(r) else "   BROKEN"))
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    print("\nmean over concepts (goal: " + ", ".join(f"{k} {v}" for k, v in vars(ErasureGoal()).items()) + ")")
    for method, group in by_method.items():
        means = mean_row(group)
        held = sum(controls_held(g) for g in group)
        print(f"{'(' + str(len(group)) + ' concepts)':>20} {method:>14} " + " ".join(
            f"{means[n]:>{w}.2f}" if means.get(n) is not None else f"{'-':>{w}}" for n, w in COLUMNS[2:]))
        print(f"{'':>35} {goal_summary(goal_checks(means))}; controls held on {held}/{len(group)} concepts")
        tiers = Counter(r.get("tier") or tier(r) for r in group)
        print(f"{'':>35} tiers: " + ", ".join(f"{t} {tiers[t]}" for t in TIERS if tiers[t]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="Harry Potter")
    parser.add_argument("--methods", default="optimise")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--table", action="store_true", help="only print the table of finished rows")
    parser.add_argument("--docs", action="store_true", help="regenerate docs/results.md's tables from the results file")
    parser.add_argument("--sae-site", default=None, choices=["hook_mlp_out", "mlp.hook_out"],
                        help="site of the local layer-6 SAE the pisces methods use (default: the newest)")
    parser.add_argument("--sae-id", default=None, help="local SAE folder the pisces methods use")
    parser.add_argument("--relearn", action="store_true",
                        help="also run the relearning test (2 epochs, lr 1e-5, <=100 concept texts) on each edit")
    parser.add_argument("--tag", default="", help="label appended to the method name in the rows (a variant)")
    parser.add_argument("--key-names", default="", help="comma-separated FactSet.key_names for this run's concepts")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override: OptimiseConfig for the optimise methods (--set steps=60), "
                             "RewriteConfig for rewrite and rewrite-cf (--set layers=4,6); the shared retain "
                             "and frames configs dotted (--set retain.n_neutral=30)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = RESULTS_FILE.with_name(f"erasure-{args.model}.jsonl")  # the one results file (benchmark/results.py)
    if args.docs:
        RESULTS_DOC.write_text(replace_results_block(RESULTS_DOC.read_text(), results_block(load_rows(results))))
        print(f"{RESULTS_DOC}: tables regenerated from {results}")
        return
    if args.table:
        print_table(latest_rows([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))
        return
    concepts = [c.title for c in load_devbench().concepts] if args.all else [c.strip() for c in args.concepts.split(",")]
    methods = list(METHODS) if args.all else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    bundle = load_bundle(parse_source(args.model))
    corpus = load_wiki("en")
    pisces = {k: v for k, v in (("site", args.sae_site), ("sae_id", args.sae_id)) if v}
    rows = []
    for concept in concepts:
        for method in methods:
            print(f"\n=== {concept} / {method} ===", flush=True)
            keys = [k.strip() for k in args.key_names.split(",") if k.strip()]
            if method in REWRITE_DEFAULTS:
                defaults = REWRITE_DEFAULTS[method]
                row = run_one(bundle, corpus, concept, method, key_names=keys,
                              rewrite=config_overrides(defaults, args.set) if args.set else None,
                              relearn=args.relearn)
            else:
                row = run_one(bundle, corpus, concept, method, optimise_overrides(args.set, bundle.n_layers), keys,
                              pisces=pisces, relearn=args.relearn)
            if method.startswith("pisces"):
                row["sae"] = args.sae_id or args.sae_site
            row["key_names"] = keys
            if args.tag:
                row["method"] = f"{method}:{args.tag}"
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
