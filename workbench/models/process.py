"""Opt-in speed and memory settings for a process that holds one model and serves many threads.

`load_bundle(..., tune_process=True)` (and `wb.load(..., tune_process=True)`) applies them; the app
(workbench/ui/resources.py) and the CLI (workbench/cli/common.py) pass it, a library load does not.
They change no result: every number a tuned process computes is the one an untuned process
computes (float summation order of the unembedding aside). Each one reaches beyond the bundle
it comes with, which is why a notebook or a host application has to ask for them:

1. `MKL_DISABLE_FAST_MM=1` in `os.environ` (whole process, for its life): MKL, torch's CPU BLAS,
   then gives back the packing buffers of its large matrix products after each one instead of
   keeping them for the process's life. MKL reads the variable once, at the process's first
   matrix product, so it only takes effect when the load is the first thing that multiplies
   (as in the app and the CLI); a value the user set wins.
2. glibc `mallopt` (whole process, for its life, and cannot be undone or read back): a fixed
   mmap threshold and at most two malloc arenas, so tensors freed by the serving threads go
   back to the OS instead of staying resident (`models/memory.py`, `tune_allocator`);
   `MALLOC_*` variables the user set win. After the load, `malloc_trim` hands the load's freed
   heap back (`release_freed_heap`).
3. The unembedding's `forward` (this model's output embedding module, replaced in place): a
   batched decode of a few rows on the CPU runs `W_U @ h.T` where that measured faster than
   `F.linear` on this machine (`models/skinny.py`); the load spends a second or two timing both.
4. The tokenizer's private construction tables (`_vocab`, `_merges`: this tokenizer only) are
   set to None after its Rust backend is built: the Python copies of the vocabulary and merges
   that transformers keeps but no longer reads (`models/bundle.py`, `_drop_construction_tables`).
5. Python's cyclic garbage collector (whole process): after the load, one collection and then
   `gc.freeze()`, which moves every object alive at that point (the imported libraries, the model's
   modules and parameters: about half a million objects with torch and transformers loaded) into
   the collector's permanent generation. A full collection then scans only what the serving
   threads made since, instead of 0.3-0.45 s of the GIL on this machine each time, during which
   no session's page and no preview can run. Frozen objects are still freed by reference counting;
   only cycles among them are never collected, and the load leaves none behind that matter.

None of them is needed for a correct result; the tokenizer's `add_bos_token=True` and its
file-backed load (bundle.py, `_load_tokenizer`) are not among them: they are public loading
options that decide the tokenizer the bridge uses, so every load applies them.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from workbench.models.memory import release_freed_heap, tune_allocator
from workbench.models.skinny import install_skinny_unembedding

MKL_FAST_MM = "MKL_DISABLE_FAST_MM"


def tune_process_before_load() -> None:
    """Settings 1 and 2 (the whole process): before the load's first allocation and product."""
    os.environ.setdefault(MKL_FAST_MM, "1")
    tune_allocator()


def tune_process_after_load(hf_model: Any) -> None:
    """Setting 3 on the loaded model, the load's freed heap back to the OS, then setting 5."""
    install_skinny_unembedding(hf_model)
    freeze_loaded_objects()
    release_freed_heap()


def freeze_loaded_objects() -> None:
    """Setting 5: collect the load's garbage once, then keep everything alive now out of later
    collections (`gc.freeze`). Idempotent in effect; a second load freezes its own objects."""
    gc.collect()
    gc.freeze()
