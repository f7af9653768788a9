"""Scorecard wall time, in one run on the same probe and edit: base and edited in the same
forward passes (`evaluate`), measured in separate passes one after the other (the scorecard
before adapters), and a second scorecard of the same concept whose base side comes from the
cache (safe now that the base is never written). Target: <= 0.6x the separate passes.

Measured 2026-12-02 (embedded model, 2 idle cores, 'Harry Potter', 82 prompts): same passes
174.6 s vs separate 176.6 s (0.99: on CPU the forward passes are compute-bound, so stacking
the rows saves little).

    python bench/scorecard_speed.py ["Harry Potter"] [--model embedded] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import workbench.evaluate as evaluate_mod  # noqa: E402
from workbench.benchmark.probe import build_probe  # noqa: E402
from workbench.corpus import load_wiki  # noqa: E402
from workbench.edits.compile import compile_spec  # noqa: E402
from workbench.evaluate import evaluate, measure_each  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402
from workbench.ui.draft import EditDraft, ablate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concept", nargs="?", default="Harry Potter")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    bundle = load_bundle(parse_source(args.model))
    probe = build_probe(bundle, load_wiki("en"), args.concept)
    draft = EditDraft(name="bench")
    for layer in (4, 6, 8):
        draft.add(ablate(layer, list(range(0, 256, 2))))
    adapter = compile_spec(draft.to_spec(bundle), bundle)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, probe "
          f"'{probe.name}': {sum(len(v) for v in (probe.cloze, probe.questions, probe.neighbours, probe.general))} "
          "prompts")
    same, separate, cached = [], [], []
    for _ in range(args.rounds):  # interleaved so load changes hit both alike
        evaluate_mod._BASE_CACHE.clear()
        t0 = time.perf_counter()
        evaluate(bundle, probe, adapter)
        same.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        evaluate(bundle, probe, adapter)  # the base side comes from the cache
        cached.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        measure_each(bundle, probe, (None,))
        measure_each(bundle, probe, (adapter,))
        separate.append(time.perf_counter() - t0)
    s, p, c = statistics.median(same), statistics.median(separate), statistics.median(cached)
    print(f"scorecard: base and edited in the same passes {s:.1f} s · in separate passes {p:.1f} s "
          f"(ratio {s / p:.2f}) · a second scorecard of the concept, base cached, {c:.1f} s (ratio {c / p:.2f}; "
          "target <= 0.6)")


if __name__ == "__main__":
    main()
