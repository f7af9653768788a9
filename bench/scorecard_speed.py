"""Time a scorecard on the real model (base side, then a second call with the base cached).

    PYTHONPATH=. python bench/scorecard_speed.py "Harry Potter"

Measured 2026-11-23, 2 busy cores, 1 torch thread, no edit: first call 243 s (base + edited),
second call 105 s (edited side only).
"""

from __future__ import annotations

import sys
import time

import torch

from workbench.evaluate import evaluate
from workbench.models import ModelSource, load_bundle


def main() -> None:
    torch.set_num_threads(1)  # 1 thread is ~6x faster than 2 when other processes share the 2 cores
    bundle = load_bundle(ModelSource("embedded"))
    name = sys.argv[1] if len(sys.argv) > 1 else "Harry Potter"
    t0 = time.perf_counter()
    evaluate(bundle, name)
    t1 = time.perf_counter()
    card = evaluate(bundle, name)
    t2 = time.perf_counter()
    print(f"first call {t1 - t0:.0f} s, base cached {t2 - t1:.0f} s")
    for row in card.rows():
        print(row)
    print("\n".join(card.verdicts))


if __name__ == "__main__":
    main()
