"""Preview speed and sharing on the adapter path, every ratio measured side by side in one run:

1. side-by-side preview (base and edited as one batch of 2, `generate.stream_pair`) vs two
   sequential single-row generations (what the preview did before adapters), in fp32 and bf16,
   with and without the skinny unembedding (models/skinny.py); target >= 1.7x, aim 3x;
2. a forward pass with an adapter routed on every row vs the bare base forward; target >= 0.95;
   the preview's decode vs plain transformers `generate` in the same dtype and batch (1 and 2)
   on a second copy of the checkpoint; target >= 0.9;
3. total tokens/s of 4 users previewing at once through the PreviewBatcher vs 1 user; >= 2.0x;
4. peak RSS with 8 users' edits compiled and previewed vs one copy of the weights; <= 1.2x
   (RSS counted above what the process held before the model loaded: Python, torch and the
   other libraries are not the model's).

    python bench/preview_bench.py [--model embedded] [--tokens 24] [--rounds 3] [--no-bf16]
    python bench/preview_bench.py --memory-only    # 4. alone, about a minute; no timings

The last line is `side-by-side speedup: X.XXx` (the default preview path, fp32, vs sequential).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import workbench  # noqa: E402, F401  (before torch, as in app.py: its MKL setting must precede torch)

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from workbench.adapters import Adapter, use  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.edits.compile import compile_spec  # noqa: E402
from workbench.generate import PreviewBatcher, SamplingParams, decode_rows, request, stream_pair  # noqa: E402
from workbench.models import ModelBundle, load_bundle, parse_source  # noqa: E402
from workbench.ui.draft import EditDraft, ablate  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
PROMPTS = [PROMPT, "Harry Potter is a series of novels by", "The river Nile flows through", "In 1969 the first"]


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_split_mb() -> tuple[float, float]:
    """(file-backed, anonymous) resident MB: the mmapped safetensors weights are file-backed,
    the tokenizer, activations, caches and adapters are anonymous."""
    fields: dict[str, float] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["Rss"] - fields["Anonymous"], fields["Anonymous"]


def library_pages_mb(checkpoint: Path | None) -> float:
    """Resident file-backed MB outside the checkpoint: the code pages of torch and the other
    libraries, which a first forward pass faults in (~20 MB) and which are not the model's."""
    total, current = 0.0, ""
    ckpt = str(Path(checkpoint).resolve()) if checkpoint is not None else None  # smaps names resolved paths
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and not head[0].endswith(":"):
                current = head[5] if len(head) > 5 else ""
            elif head and head[0] == "Rss:" and current.startswith("/"):
                if ckpt is None or not current.startswith(ckpt):
                    total += int(head[1]) / 1024
    return total


def peak_rss_mb() -> float:
    """The process's lifetime peak (includes the one-time spike of loading the checkpoint)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sampled_peak_rss_mb(run: Callable[[], object], every_s: float = 0.02) -> float:
    """The highest current RSS seen while `run` runs (sampled by a thread): the memory of what
    runs now, without the load spike that the lifetime peak keeps."""
    peak = [rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss_mb())


def edit(bundle: ModelBundle, seed: int) -> Adapter:
    """A typical edit: a few hundred value vectors ablated on three layers."""
    draft = EditDraft(name=f"user-{seed}")
    n = bundle.n_layers
    for layer in (n // 3, n // 2, (2 * n) // 3):
        draft.add(ablate(layer, [(seed * 97 + i * 13) % bundle.d_mlp for i in range(96)]))
    return compile_spec(draft.to_spec(bundle), bundle)


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median wall seconds of `rounds` calls after one warm-up."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sequential(bundle: ModelBundle, ad: Adapter, n: int, settings: Settings) -> None:
    for a in (None, ad):
        for _ in decode_rows(bundle, [request(PROMPT, a, SamplingParams(max_new_tokens=n), settings)]):
            pass


def pair(bundle: ModelBundle, ad: Adapter, n: int, settings: Settings) -> None:
    for _ in stream_pair(bundle, PROMPT, ad, SamplingParams(max_new_tokens=n), settings):
        pass


def plain_head(bundle: ModelBundle) -> Callable[[], None]:
    """Temporarily give the unembedding F.linear back (to show what the skinny path buys)."""
    head = bundle.hf_model.get_output_embeddings()
    head = getattr(head, "_original_component", head)
    saved = head.forward
    head.forward = lambda x: F.linear(x, head.weight, head.bias)  # type: ignore[method-assign]

    def restore() -> None:
        head.forward = saved  # type: ignore[method-assign]

    return restore


def side_by_side(bundle: ModelBundle, label: str, n: int, rounds: int, settings: Settings) -> tuple[float, float]:
    """(sequential s, batched pair s) for n tokens per side; prints the comparison."""
    ad = edit(bundle, 0)
    seq = timed(lambda: sequential(bundle, ad, n, settings), rounds)
    batched = timed(lambda: pair(bundle, ad, n, settings), rounds)
    restore = plain_head(bundle)
    try:
        batched_linear = timed(lambda: pair(bundle, ad, n, settings), rounds)
    finally:
        restore()
    tok = 2 * n
    head = bundle.hf_model.get_output_embeddings()
    plan = getattr(getattr(head, "_original_component", head), "_workbench_skinny", None)
    chose = "F.linear at every row count" if plan is None else "per row count " + ", ".join(
        f"{b}->{k}@{r}" for b, (k, r) in plan.items())
    print(f"[{label}] {n} tokens per side: two sequential generations {tok / seq:.1f} tok/s · side-by-side batch "
          f"of 2, default path (the load measured and chose {chose}) {tok / batched:.1f} tok/s ({seq / batched:.2f}x) "
          "· same batch with F.linear unembedding "
          f"{tok / batched_linear:.1f} tok/s ({seq / batched_linear:.2f}x)")
    return seq, batched


def against_plain_generate(bundle: ModelBundle, label: str, n: int, rounds: int, settings: Settings) -> list[float]:
    """The preview's decode (`decode_rows`, no edit) vs plain transformers `generate` (greedy,
    exactly n new tokens) on a second copy of the checkpoint loaded by `from_pretrained` in the
    same dtype, batch 1 and batch 2 of the same prompt, interleaved; prints and returns the
    ratios (preview tok/s / generate tok/s; target >= 0.9)."""
    from transformers import AutoModelForCausalLM

    dtype = next(bundle.hf_model.parameters()).dtype
    plain = AutoModelForCausalLM.from_pretrained(bundle.path, dtype=dtype).eval()
    tok = bundle.tokenizer
    ratios = []
    for batch in (1, 2):
        enc = tok([PROMPT] * batch, return_tensors="pt")

        def hf(enc: object = enc) -> None:
            with torch.inference_mode():
                plain.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)  # type: ignore[arg-type]

        def ours(batch: int = batch) -> None:
            rows = [request(PROMPT, None, SamplingParams(max_new_tokens=n), settings) for _ in range(batch)]
            for _ in decode_rows(bundle, rows):
                pass

        hf_s, ours_s = [], []
        for _ in range(2):  # interleaved so load changes hit both alike
            hf_s.append(timed(hf, rounds))
            ours_s.append(timed(ours, rounds))
        g, o = batch * n / min(hf_s), batch * n / min(ours_s)
        ratios.append(o / g)
        print(f"[{label}] batch {batch}: plain transformers generate {g:.1f} tok/s · the preview's decode {o:.1f} tok/s "
              f"(preview / generate {o / g:.2f}; target >= 0.9)")
    return ratios  # the second copy goes with this frame


def adapter_forward(bundle: ModelBundle, rounds: int) -> None:
    ids = bundle.tokenizer([PROMPT * 4], return_tensors="pt").input_ids
    ad = edit(bundle, 1)

    def run(a: Adapter | None) -> None:
        with torch.inference_mode(), use(bundle, a):
            bundle.hf_model(input_ids=ids, logits_to_keep=1)

    bare, hooked = [], []
    run(None)
    run(ad)
    for _ in range(rounds * 3):  # interleaved so load changes hit both alike
        bare.append(timed(lambda: run(None), 1))
        hooked.append(timed(lambda: run(ad), 1))
    b, h = statistics.median(bare), statistics.median(hooked)
    print(f"forward of {ids.shape[1]} tokens: bare {b * 1000:.0f} ms · with a 3-layer adapter {h * 1000:.0f} ms "
          f"(bare/adapter {b / h:.2f}; target >= 0.95)")


def users_at_once(bundle: ModelBundle, adapters: list[Adapter], n: int, settings: Settings) -> float:
    batcher = PreviewBatcher(bundle)
    counts = [0] * len(adapters)

    def user(i: int) -> None:
        for _ in stream_pair(bundle, PROMPTS[i % len(PROMPTS)], adapters[i], SamplingParams(max_new_tokens=n),
                             settings, batcher=batcher):
            counts[i] += 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(adapters))]
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 measurements")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory measurement (4.): one warm-up preview instead of the timings")
    args = parser.parse_args()
    settings = Settings.from_env()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    import transformer_lens.model_bridge  # noqa: F401  (the libraries, imported before the baseline)
    import transformers  # noqa: F401

    gc.collect()
    rss0 = rss_mb()
    _, anon0 = rss_split_mb()
    libs0 = library_pages_mb(None)
    bundle = load_bundle(parse_source(args.model), tune_process=True)
    _, anon_loaded = rss_split_mb()
    weights_mb = sum(p.numel() * p.element_size() for p in bundle.hf_model.parameters()) / 2**20
    rss_loaded = rss_mb()

    adapters = [edit(bundle, s) for s in range(8)]
    if args.memory_only:
        pair(bundle, adapters[0], args.tokens, settings)  # every weight page touched, as after the timings
        users_at_once(bundle, adapters[:4], args.tokens, settings)
    else:
        seq32, pair32 = side_by_side(bundle, "fp32", args.tokens, args.rounds, settings)
        adapter_forward(bundle, args.rounds)
        one = statistics.median(users_at_once(bundle, adapters[:1], args.tokens, settings) for _ in range(2))
        four = statistics.median(users_at_once(bundle, adapters[:4], args.tokens, settings) for _ in range(2))
        print(f"previews through the batcher: 1 user {one:.1f} tok/s · 4 users at once {four:.1f} tok/s in total "
              f"({four / one:.2f}x; target >= 2.0x)")
    warm = rss_mb()  # the base model after previews: every weight page touched
    file_warm, anon_warm = rss_split_mb()
    peak = sampled_peak_rss_mb(lambda: users_at_once(bundle, adapters, args.tokens, settings))  # all 8 edits live
    libs = library_pages_mb(bundle.path) - libs0  # library code pages faulted in since the baseline
    print(f"memory split after base previews: file-backed {file_warm:.0f} MB (the mmapped weights), anonymous "
          f"{anon_warm - anon0:.0f} MB above the libraries ({anon_loaded - anon0:.0f} MB of it from the load: "
          "tokenizer, bridge; the rest activations and caches)")
    print(f"memory: weights {weights_mb:.0f} MB · process RSS {rss0:.0f} MB before the model, {rss_loaded:.0f} MB "
          f"loaded, {warm:.0f} MB after base previews, peak {peak:.0f} MB while 8 users' edits preview "
          f"(peak / after base previews {peak / warm:.2f}x) · the model's share of the peak (above the libraries, "
          f"less {libs:.0f} MB of library code pages faulted in since) is {(peak - rss0 - libs) / weights_mb:.2f}x "
          "the weights, which includes the tokenizer, the bridge and the activations; target <= 1.2x · the 8 "
          f"adapters hold {sum(a.nbytes() for a in adapters) / 2**20:.1f} MB · lifetime peak {peak_rss_mb():.0f} MB "
          "(the one-time load spike)")

    if args.memory_only:
        return
    against_plain_generate(bundle, "fp32", args.tokens, args.rounds, settings)  # after the memory figures
    if not args.no_bf16:
        del bundle
        gc.collect()
        bf16 = load_bundle(parse_source(args.model), tune_process=True)
        bf16.hf_model.to(torch.bfloat16)
        _, pair16 = side_by_side(bf16, "bf16", args.tokens, args.rounds, settings)
        against_plain_generate(bf16, "bf16", args.tokens, args.rounds, settings)
        print(f"bf16 side-by-side batch vs two sequential fp32 generations: {seq32 / pair16:.2f}x")
    print(f"side-by-side speedup: {seq32 / pair32:.2f}x")


if __name__ == "__main__":
    main()
