"""The default erase's optimisation beside a candidate recipe, side by side in one process on one concept.

    python bench/optimise_speed.py --candidate steps=24             # Harry Potter, embedded model
    python bench/optimise_speed.py --concept "Eiffel Tower" --candidate retain_batch=4 --repeat 2

Both recipes run on the same fact set, in turn (`--repeat` alternates them), so the ratio compares
like with like on whatever the machine is doing; keep the load steady while it runs. It times
`optimise_value_vectors` (targets, retain set, row selection and the steps) and prints, per recipe,
seconds, steps run and the held-out facts' target probability at the end (lower is more erased).
Quality on the dev benchmark is measured by bench/erasure.py (`--methods optimise`), not here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from erasure import config_overrides  # noqa: E402  (bench/erasure.py's --set, the same FIELD=VALUE rules)

from workbench.corpus import load_wiki  # noqa: E402
from workbench.methods.facts import build_fact_set  # noqa: E402
from workbench.methods.optimise import OptimiseConfig, optimise_value_vectors  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402


@dataclass
class RecipeTiming:
    recipe: str
    seconds: float
    steps: int
    val_target_prob: float | None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="Harry Potter")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--candidate", action="append", default=[], metavar="FIELD=VALUE", required=True,
                        help="OptimiseConfig field of the candidate recipe (repeatable): steps=24")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (default, candidate)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: bench/results/...)")
    args = parser.parse_args()

    bundle = load_bundle(parse_source(args.model))
    corpus = load_wiki("en")
    facts = build_fact_set(bundle, corpus, args.concept)
    recipes = {"default": OptimiseConfig(), "candidate " + " ".join(args.candidate):
               config_overrides(OptimiseConfig(), args.candidate)}
    timings: list[RecipeTiming] = []
    for _ in range(args.repeat):
        for name, cfg in recipes.items():
            t0 = time.perf_counter()
            result = optimise_value_vectors(bundle, facts, corpus, cfg)
            seconds = time.perf_counter() - t0
            vals = [h["val_target_prob"] for h in result.history if "val_target_prob" in h]
            timings.append(RecipeTiming(name, round(seconds, 1), len(result.history),
                                        round(vals[-1], 4) if vals else None))
            print(f"{name:40s} {seconds:7.1f} s  {len(result.history):3d} steps  "
                  f"val target prob {timings[-1].val_target_prob}", flush=True)
    mean = {name: sum(t.seconds for t in timings if t.recipe == name) / args.repeat for name in recipes}
    default, candidate = mean.values()
    print(f"candidate / default: {candidate:.1f} s / {default:.1f} s = {candidate / default:.2f} "
          f"({default / candidate:.2f}x faster) on {args.concept!r}, {torch.get_num_threads()} thread(s)")
    out = args.out or ROOT / "bench" / "results" / f"optimise-speed-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps({"concept": args.concept, "model": args.model, "threads": torch.get_num_threads(),
                               "candidate": args.candidate, "timings": [asdict(t) for t in timings],
                               "ratio": round(candidate / default, 3)},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
