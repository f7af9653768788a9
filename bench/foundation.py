"""Foundation benchmark: model load cold vs warm, memory vs one copy of the weights,
activation collection with stop_at_layer vs a full forward, vocab projection vs bare matmul.

Run: python bench/foundation.py [--model embedded] [--skip-cold]
Prints ratios measured side by side in one run; no assertions (timings are noisy here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOAD_SNIPPET = """
import json, resource, sys, time
from pathlib import Path
from workbench.config import Settings
from workbench.models import load_bundle, parse_source
t = time.perf_counter()
b = load_bundle(parse_source(sys.argv[1]), Settings(cache_dir=Path(sys.argv[2])), tune_process=True)
secs = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": secs, "peak_rss": rss, "weight_bytes": b.weight_bytes()}))
"""

BASELINE_SNIPPET = """
import json, resource
import torch, transformers
print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _run(snippet: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", snippet, *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_load(model: str, skip_cold: bool) -> None:
    cache = ROOT / "cache"
    warm = _run(LOAD_SNIPPET, model, str(cache))
    base = _run(BASELINE_SNIPPET)
    print(f"load warm (safetensors)         {warm['seconds']:7.1f} s")
    if not skip_cold and model == "embedded":
        with tempfile.TemporaryDirectory() as tmp:
            cold = _run(LOAD_SNIPPET, model, tmp)
        print(f"load cold (GGUF -> safetensors) {cold['seconds']:7.1f} s   cold/warm = {cold['seconds'] / warm['seconds']:.1f}x")
    extra = warm["peak_rss"] - base["peak_rss"]
    print(f"peak RSS of bundle process      {warm['peak_rss'] / 2**30:7.2f} GiB (torch+transformers alone: "
          f"{base['peak_rss'] / 2**30:.2f} GiB)")
    print(f"fp32 weight bytes               {warm['weight_bytes'] / 2**30:7.2f} GiB")
    print(f"(peak RSS - import baseline) / weight bytes = {extra / warm['weight_bytes']:.2f}  (target <= 1.3)")


def bench_compute(model: str) -> None:
    import torch

    from workbench.config import Settings
    from workbench.corpus import load_wiki
    from workbench.corpus.batches import token_batches
    from workbench.lenses import vocab
    from workbench.lenses.tokens import clean_token_mask
    from workbench.models import layout, load_bundle, parse_source

    b = load_bundle(parse_source(model), Settings.from_env())
    texts = [d.text for d in load_wiki("en").sample(64, seed=0)]
    batches = list(token_batches(b.tokenizer, texts, max_len=128, batch_size=8, max_tokens=3000))
    n_tok = sum(x.n_tokens for x in batches)
    stop = 7
    with torch.no_grad():
        t = time.perf_counter()
        for x in batches:
            b.bridge.run_with_cache(x.input_ids, stop_at_layer=stop,
                                    names_filter=lambda n: n == f"blocks.{stop - 1}.mlp.hook_pre")
        part = time.perf_counter() - t
        t = time.perf_counter()
        for x in batches:
            b.bridge.run_with_cache(x.input_ids, names_filter=lambda n: n == f"blocks.{stop - 1}.mlp.hook_pre")
        full = time.perf_counter() - t
    print(f"activation collection, layers 0-{stop - 1} with stop_at_layer: {n_tok / part:8.0f} tok/s")
    print(f"activation collection, full forward:                 {n_tok / full:8.0f} tok/s   "
          f"speed-up {full / part:.1f}x")

    layers = list(range(b.n_layers)) if model != "embedded" else [0, 6, 12]
    mask = clean_token_mask(b.tokenizer, b.vocab_size)
    unembed = layout.unembed(b.hf_model)
    with torch.no_grad():
        t = time.perf_counter()
        for layer in layers:
            rows = vocab.value_vector_directions(b.hf_model, layer, "gain_aware")
            for start in range(0, unembed.shape[1], 16384):
                _ = rows @ unembed[:, start:start + 16384]
        bare = time.perf_counter() - t
        t = time.perf_counter()
        for _ in vocab.iter_layer_projections(b.hf_model, layers, mask, k=30):
            pass
        lens = time.perf_counter() - t
    print(f"vocab projection of {len(layers)} layers: {lens:6.1f} s; bare matmul {bare:6.1f} s; "
          f"ratio {lens / bare:.2f}x (target <= 1.5); per layer {lens / len(layers):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    print(f"torch threads: {__import__('torch').get_num_threads()}, load avg: {os.getloadavg()[0]:.1f}")
    bench_load(args.model, args.skip_cold)
    bench_compute(args.model)


if __name__ == "__main__":
    main()
