"""Scorecard wall time, in one run on the same probe and edit:

- today's scorecard: base and edited in the same passes (`evaluate`): prompts in left-padded
  batches of 16 rows, each prompt's next-token score taken from the first step of its greedy
  continuation;
- the scorecard before adapters (commit 9e58fd9), kept here as the baseline: base, then edited,
  in separate passes, prompts grouped by exact token length (no padding, so small batches), a
  next-token pass and then a Hugging Face `generate` pass for the continuations;
- a second scorecard of the same concept, whose base side comes from the cache (safe now that
  the base is never written).

Target: <= 0.6x the baseline.

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

import workbench.benchmark.scorecard as evaluate_mod  # noqa: E402
from workbench.adapters import Adapter, use  # noqa: E402
from workbench.benchmark.probe import build_probe  # noqa: E402
from workbench.benchmark.runner import encode, text_logprobs_each  # noqa: E402
from workbench.benchmark.scorecard import EvalOptions, evaluate, prompt_sets  # noqa: E402
from workbench.corpus import load_wiki  # noqa: E402
from workbench.edits.compile import compile_spec  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402
from workbench.ui.draft import EditDraft, ablate  # noqa: E402

DEFAULT_OPTIONS = EvalOptions()


@torch.no_grad()
def baseline_measure(bundle, probe, variant: Adapter | None, options: EvalOptions = DEFAULT_OPTIONS) -> None:
    """The forward passes of the pre-adapter scorecard for one variant (results discarded)."""
    model, tok = bundle.hf_model, bundle.tokenizer
    sets = prompt_sets(probe)
    flat = [p for name in sets for p in sets[name]]
    conts = [p.prompt for name in options.continuation_sets for p in sets[name]]
    with use(bundle, variant):
        for prompts, steps in (([p.prompt for p in flat], 0), (conts, options.max_new_tokens),
                               (probe.generation_prompts, options.generation_tokens)):
            seqs = encode(tok, prompts)
            groups: dict[int, list[list[int]]] = {}
            for s in seqs:
                groups.setdefault(len(s), []).append(s)
            for same in groups.values():
                for j in range(0, len(same), 32 if steps == 0 else 16):
                    ids = torch.tensor(same[j:j + (32 if steps == 0 else 16)])
                    if steps == 0:
                        torch.log_softmax(model(input_ids=ids, logits_to_keep=1).logits[:, -1].float(), -1)
                    else:
                        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                                       do_sample=False, top_p=None, top_k=None, temperature=None,
                                       pad_token_id=tok.pad_token_id)
    text_logprobs_each(bundle, probe.neutral_texts, (variant,), options.neutral_max_tokens, batch_size=2,
                       top_k=options.kl_top_k)


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
        baseline_measure(bundle, probe, None)
        baseline_measure(bundle, probe, adapter)
        separate.append(time.perf_counter() - t0)
    s, p, c = statistics.median(same), statistics.median(separate), statistics.median(cached)
    print(f"scorecard: today's (same passes, padded batches) {s:.1f} s · before adapters (separate passes, "
          f"exact-length batches) {p:.1f} s · ratio {s / p:.2f} (target <= 0.6)")
    print(f"second scorecard of the same concept, base side cached: {c:.1f} s · ratio {c / p:.2f}")


if __name__ == "__main__":
    main()
