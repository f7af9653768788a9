"""Feature-catalogue cost against SAE width, measured side by side in one run on the real model.

Random JumpReLU SAEs in Gemma Scope 2's cache layout (workbench/sae/tiny.py), loaded through
`load_sae`, catalogued over the same corpus tokens:

1. time of a 16k-wide catalogue vs a 4096-wide one; target <= 4x (the sweep streams one
   document's [pos, d_sae] at a time, the vocab projection and the row scores run in blocks);
2. with --big: a 262k-wide one (Gemma Scope 2's widest) builds at all, and its peak RSS above
   the loaded model; target: the whole process within 8 GB.

    python bench/catalogue_bench.py [--tokens 2000] [--big]

Prints `catalogue 16k / 4k: X.XXx` and, with --big, `catalogue 262k peak RSS: N MB`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.corpus.wiki import load_wiki  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402
from workbench.sae.catalogue import build_catalogue, row_feature_scores  # noqa: E402
from workbench.sae.sources import load_sae  # noqa: E402
from workbench.sae.tiny import write_gemma_scope_2  # noqa: E402

# Gemma Scope 2 for the 270M model comes in widths 16k and 262k; the 4096-wide comparison SAE
# is written into the registry's `l0_big` 16k slot (the catalogue reads the width from the tensors).
SLOTS = {4096: "layer_6_width_16k_l0_big", 16384: "layer_6_width_16k_l0_small", 262144: "layer_6_width_262k_l0_small"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed_catalogue(bundle, cache: Path, width: int, docs, tokens: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds, peak RSS MB sampled while it ran) for one width's catalogue + row scores."""
    write_gemma_scope_2(cache, f"mlp_out_all/{SLOTS[width]}", bundle.d_model, width, threshold=0.5)
    sae, sae_id, _ = load_sae(f"pretrained:gemma-scope-2-270m-pt-mlp-all/{SLOTS[width]}", cache)
    assert int(sae.cfg.d_sae) == width
    peak = [rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        build_catalogue(bundle, sae, sae_id, docs, max_tokens=tokens)
        row_feature_scores(bundle.hf_model, sae)
    finally:
        done.set()
        sampler.join()
    return time.perf_counter() - t0, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--big", action="store_true", help="also build a 262k-wide catalogue (minutes)")
    args = parser.parse_args()
    bundle = load_bundle(parse_source(args.model))
    docs = load_wiki("en").sample(400, seed=3)
    print(f"load average {os.getloadavg()[0]:.1f}; model loaded, RSS {rss_mb():.0f} MB; "
          f"{args.tokens} corpus tokens per catalogue")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HUB_CACHE"] = tmp
        small, _ = timed_catalogue(bundle, Path(tmp), 4096, docs, args.tokens)
        print(f"  4096 features: {small:.1f} s")
        mid, _ = timed_catalogue(bundle, Path(tmp), 16384, docs, args.tokens)
        print(f"  16384 features: {mid:.1f} s")
        print(f"catalogue 16k / 4k: {mid / small:.2f}x (target <= 4x)")
        if args.big:
            big, peak = timed_catalogue(bundle, Path(tmp), 262144, docs, args.tokens)
            life = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  262144 features: {big:.0f} s")
            print(f"catalogue 262k peak RSS: {peak:.0f} MB sampled, {life:.0f} MB lifetime (target: within 8192 MB)")


if __name__ == "__main__":
    main()
