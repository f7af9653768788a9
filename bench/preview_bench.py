"""Preview latency and sharing, measured side by side in one run on one model:
- time to first streamed token of a preview (workbench.generate.stream_generate: lock, apply the
  edit, prefill, first token) vs a bare HF `generate(max_new_tokens=1)` call (target overhead
  < 20%), base and edited;
- preview throughput (new tokens/s summed over users) with two simulated users previewing at
  once (threads sharing the one model behind the model lock) vs one user;

    python bench/preview_bench.py [--model embedded] [--tokens 24] [--rounds 5]

Measured 2026-11-24 (embedded Gemma 3 270M, 2 cores shared with an erasure benchmark, load ~3):
time to first token, bare HF generate 1352 ms vs preview base 1502 ms (+11%) and edited (3-layer
ablation) 1525 ms (+13%), target < +20%; throughput one user 9.0 tok/s vs two users at once 8.9
tok/s in total (0.98).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from workbench.config import Settings  # noqa: E402
from workbench.edits.overlay import compile_spec  # noqa: E402
from workbench.generate import SamplingParams, stream_generate  # noqa: E402
from workbench.models import load_bundle, parse_source  # noqa: E402
from workbench.ui.draft import EditDraft, ablate  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"


def hf_first_token_s(bundle: object) -> float:
    tok = bundle.tokenizer  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        bundle.hf_model.generate(ids, max_new_tokens=1, do_sample=False)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def stream_first_token_s(bundle: object, overlay: object, settings: Settings) -> float:
    t0 = time.perf_counter()
    stream = stream_generate(bundle, PROMPT, overlay, SamplingParams(max_new_tokens=4), settings)  # type: ignore[arg-type]
    next(stream)
    dt = time.perf_counter() - t0
    stream.close()
    return dt


def preview_tokens(bundle: object, overlay: object, settings: Settings, n: int) -> int:
    count = 0
    for _ in stream_generate(bundle, PROMPT, overlay, SamplingParams(max_new_tokens=n), settings):  # type: ignore[arg-type]
        count += 1
    return count


def throughput(bundle: object, overlays: list[object], settings: Settings, n: int) -> float:
    """New tokens/s summed over users previewing at once (one thread per user)."""
    counts = [0] * len(overlays)

    def user(i: int) -> None:
        counts[i] = preview_tokens(bundle, overlays[i], settings, n)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(overlays))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    bundle = load_bundle(parse_source(args.model))
    draft = EditDraft(name="bench")
    for layer in (4, 6, 8):
        draft.add(ablate(layer, list(range(0, 64))))
    overlay = compile_spec(draft.to_spec(bundle), bundle)
    hf_first_token_s(bundle)  # warm-up
    stream_first_token_s(bundle, None, settings)

    hf, base, edited = [], [], []
    for _ in range(args.rounds):  # interleaved, so load changes hit all three alike
        hf.append(hf_first_token_s(bundle))
        base.append(stream_first_token_s(bundle, None, settings))
        edited.append(stream_first_token_s(bundle, overlay, settings))
    m_hf, m_base, m_ed = (statistics.median(x) for x in (hf, base, edited))
    print(f"time to first token (median of {args.rounds}): bare HF generate {m_hf * 1000:.0f} ms · "
          f"preview base {m_base * 1000:.0f} ms ({m_base / m_hf - 1:+.0%}) · "
          f"preview edited {m_ed * 1000:.0f} ms ({m_ed / m_hf - 1:+.0%})   target < +20%")

    one = statistics.median(throughput(bundle, [overlay], settings, args.tokens) for _ in range(2))
    two = statistics.median(throughput(bundle, [overlay, None], settings, args.tokens) for _ in range(2))
    print(f"preview throughput: one user {one:.1f} tok/s · two users at once {two:.1f} tok/s in total "
          f"(ratio {two / one:.2f}; the model lock serialises previews, so ~1.0 means no loss to sharing)")


if __name__ == "__main__":
    main()
