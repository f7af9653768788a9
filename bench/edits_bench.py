"""Edits benchmark, measured side by side in one run:
- edited vs unedited greedy generation tokens/s through workbench.generate (target >= 0.95),
- HF generate vs TransformerLens bridge generate tokens/s (previews must use the fast path),
- compile time of a 3-layer PISCES-like spec into an adapter vs one forward pass: PISCES
  (remove_sae_features) on layer 6 with the newest local SAE plus ablations on layers 4 and 8, or
  ablations on all three when there is no local SAE (before adapters this was the apply + revert
  of swapped weights; the table below keeps those older numbers),
- wall time of `erase` end to end (fact set, method, scorecard), per stage.

    python bench/edits_bench.py [--model embedded] [--tokens 24] [--erase-steps N | --no-erase]

Measured once (embedded Gemma 3 270M, 2 CPU cores, load avg 0.6, 24 tokens, 3 rounds):

| measurement                                   | value                          | target  |
|-----------------------------------------------|--------------------------------|---------|
| generation tok/s, base vs edited              | 15.7 vs 15.8 (ratio 1.00)      | >= 0.95 |
| HF generate vs TransformerLens bridge, tok/s  | 15.8 vs 15.5 (HF/TL 1.02)      |         |
| apply+revert, PISCES l6 + ablate l4, l8       | 19.1 ms verified / 9.3 ms not  |         |
|   vs one forward pass (10 tokens, 165 ms)     | 0.116 verified / 0.056 not     | < 0.1   |
| same, 2026-11-24, verify modes (load 1.4 + CI | restore 10.8 ms, full 27.5 ms, |         |
|   run; forward 842 ms, so ratios flatter)     | none 0.0 ms; restore ~0.065x of a quiet 165 ms forward | < 0.1 |
| erase "Harry Potter" (optimise, 40 steps)     | 216 s: facts 12.8, targets 10.9, optimise 102.0, scorecard 90.1 | |
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

from workbench.config import Settings  # noqa: E402
from workbench.edits.compile import compile_spec  # noqa: E402
from workbench.edits.spec import AblateValueVectors, EditSpec, ModelRef, RemoveSaeFeatures, SaeRef  # noqa: E402
from workbench.generate import GenerationResult, SamplingParams, stream_generate  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


def three_layer_spec(bundle, saes_dir: Path):  # type: ignore[no-untyped-def]
    """(spec, sae_loader, label): PISCES on layer 6 + ablations on 4 and 8, or three ablations."""
    from workbench.edits.spec import sae_sha256
    from workbench.methods.pisces_search import find_local_sae
    from workbench.sae.sources import spec_sae_loader

    model = ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256)
    layers = sorted({min(layer, bundle.n_layers - 1) for layer in (4, 6, 8)})
    ablate = [AblateValueVectors(layer=layer, neurons=list(range(0, 64)), mode="zero") for layer in layers]
    try:
        folder = find_local_sae(saes_dir, bundle.model_id, 6)
    except FileNotFoundError:
        return EditSpec(name="bench 3-layer", model=model, operations=ablate), None, "ablate x3 (no local SAE)"
    loader = spec_sae_loader(saes_dir)
    ref = SaeRef(id=folder.name, sha256="0" * 64)
    ref = SaeRef(id=folder.name, sha256=sae_sha256(loader(ref, 6)))
    ops = [op for op in ablate if op.layer != 6] + [RemoveSaeFeatures(layer=6, features=[0, 1, 2, 3], tau=0.7,
                                                                         signed=False)]
    return EditSpec(name="bench 3-layer pisces", model=model, sae=ref, operations=ops), loader, \
        f"PISCES l6 ({folder.name}) + ablate l4, l8"


class StageTimer:
    """A Progress that records the wall time of each stage."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self._name: str | None = None
        self._t = time.perf_counter()

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.close()
        self._name, self._t = name, time.perf_counter()

    def advance(self, n: int = 1, **info: object) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        if self._name is not None:
            self.stages.append((self._name, time.perf_counter() - self._t))
            self._name = None


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
    parser.add_argument("--concept", default="Harry Potter")
    parser.add_argument("--erase-method", default="optimise")
    parser.add_argument("--erase-steps", type=int, help="optimisation steps (default: OptimiseConfig's)")
    parser.add_argument("--no-erase", action="store_true", help="skip the end-to-end erase timing")
    args = parser.parse_args()
    settings = Settings.from_env()
    bundle = load_bundle(parse_source(args.model), settings)
    spec, sae_loader, label = three_layer_spec(bundle, settings.saes_dir)
    overlay = compile_spec(spec, bundle, sae_loader=sae_loader)
    print(f"3-layer spec: {label}")
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
    compile_spec(spec, bundle, sae_loader=sae_loader)
    t = time.perf_counter()
    for _ in range(args.rounds):
        compile_spec(spec, bundle, sae_loader=sae_loader)
    comp = (time.perf_counter() - t) / args.rounds
    print(f"compiling the 3-layer spec to an adapter vs one forward pass ({ids.shape[1]} tokens, {fwd * 1000:.0f} ms): "
          f"{comp * 1000:.1f} ms ({comp / fwd:.3f}x); applying it costs nothing beyond the forward hook "
          "(bench/preview_bench.py measures that)")

    if not args.no_erase:
        from workbench.corpus import load_wiki
        from workbench.methods.erase import EraseOptions, erase
        from workbench.methods.optimise import OptimiseConfig

        timer = StageTimer()
        t = time.perf_counter()
        result = erase(bundle, load_wiki("en"), args.concept, args.erase_method, timer,
                       options=EraseOptions(optimise=None if args.erase_steps is None else OptimiseConfig(steps=args.erase_steps)))
        timer.close()
        total = time.perf_counter() - t
        steps = result.spec.operations[0].params.get("steps_run", "-") if args.erase_method == "optimise" else "-"
        print(f"erase {args.concept!r} --method {args.erase_method} end to end: {total:.0f} s "
              f"(steps run {steps}; scorecard score {result.scorecard.score:.3f})" if result.scorecard else "")
        for name, seconds in timer.stages:
            print(f"  {seconds:7.1f} s  {name}")


if __name__ == "__main__":
    main()
