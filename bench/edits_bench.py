"""Edits benchmark, measured side by side in one run:
- edited vs unedited greedy generation tokens/s through workbench.generate (target >= 0.95),
- HF generate vs TransformerLens bridge generate tokens/s (previews must use the fast path),
- apply + revert time of a 3-layer spec vs one forward pass (target < 0.1x).

    python bench/edits_bench.py [--model embedded] [--tokens 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from workbench.edits.overlay import apply_overlay, compile_spec  # noqa: E402
from workbench.edits.spec import AblateValueVectors, EditSpec, ModelRef  # noqa: E402
from workbench.generate import GenerationResult, SamplingParams, stream_generate  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


def three_layer_spec(bundle) -> EditSpec:  # type: ignore[no-untyped-def]
    layers = [min(layer, bundle.n_layers - 1) for layer in (4, 6, 8)]
    return EditSpec(
        name="bench 3-layer", model=ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256),
        operations=[AblateValueVectors(layer=layer, neurons=list(range(0, 64)), mode="zero") for layer in sorted(set(layers))],
    )


def gen_tps(bundle, overlay, tokens: int) -> float:  # type: ignore[no-untyped-def]
    res = GenerationResult(prompt=PROMPT, edited=overlay is not None)
    for _ in stream_generate(bundle, PROMPT, overlay, SamplingParams(max_new_tokens=tokens), result=res):
        pass
    return res.tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bundle = load_bundle(parse_source(args.model))
    overlay = compile_spec(three_layer_spec(bundle), bundle)
    print(f"load avg {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")

    gen_tps(bundle, None, 4)  # warm-up (first call builds caches)
    gen_tps(bundle, overlay, 4)
    base, edited = [], []
    for _ in range(args.rounds):  # interleaved so load changes hit both sides alike
        base.append(gen_tps(bundle, None, args.tokens))
        edited.append(gen_tps(bundle, overlay, args.tokens))
    b, e = sorted(base)[len(base) // 2], sorted(edited)[len(edited) // 2]
    print(f"generation (workbench.generate, greedy, {args.tokens} tokens): base {b:.1f} tok/s, "
          f"edited {e:.1f} tok/s, ratio {e / b:.2f} (target >= 0.95)")

    ids = bundle.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        t = time.perf_counter()
        out = bundle.hf_model.generate(ids, max_new_tokens=args.tokens, do_sample=False, min_new_tokens=args.tokens)
        hf_tps = (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)
        t = time.perf_counter()
        tl_out = bundle.bridge.generate(PROMPT, max_new_tokens=args.tokens, do_sample=False, verbose=False,
                                        return_type="tokens")
        tl_tps = (tl_out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)
    print(f"HF generate {hf_tps:.1f} tok/s vs TransformerLens bridge generate {tl_tps:.1f} tok/s "
          f"(ratio HF/TL {hf_tps / tl_tps:.2f}); previews use HF")

    with torch.no_grad():
        bundle.hf_model(ids)
        t = time.perf_counter()
        for _ in range(args.rounds):
            bundle.hf_model(ids)
        fwd = (time.perf_counter() - t) / args.rounds
    t = time.perf_counter()
    for _ in range(args.rounds):
        with apply_overlay(bundle, overlay):
            pass
    swap = (time.perf_counter() - t) / args.rounds
    with apply_overlay(bundle, overlay, verify=False):
        pass
    t = time.perf_counter()
    for _ in range(args.rounds):
        with apply_overlay(bundle, overlay, verify=False):
            pass
    swap_nv = (time.perf_counter() - t) / args.rounds
    print(f"apply+revert of a 3-layer spec: {swap * 1000:.1f} ms with sha256 verification, "
          f"{swap_nv * 1000:.2f} ms without; one forward pass ({ids.shape[1]} tokens) {fwd * 1000:.0f} ms; "
          f"ratio {swap / fwd:.3f} / {swap_nv / fwd:.4f} (target < 0.1)")


if __name__ == "__main__":
    main()
