"""glibc allocator settings for a process that holds one model and serves many threads.

Measured on the embedded model (bench/preview_bench.py, 8 users' edits previewing at once),
with glibc's defaults the process carried ~290 MB of freed heap above the weights:
- glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
  activation-sized tensors come from the heap and stay resident when freed;
- every thread that allocates gets its own arena (up to 8 per core), and Streamlit runs each
  browser session, and the preview batcher its decode loop, in its own thread.
A fixed mmap threshold (large tensors are mapped and unmapped, so freeing returns them) and
two arenas bring it to ~150 MB with the same tokens/s. Variables a user sets (MALLOC_*) win.
Small blocks still fragment: a batched decode frees its cache slices and activations in another
order than it took them, and glibc gives free heap back by itself only from the heap's top, so
each preview left 45-80 MB resident for the next to start from; `trim_heap` after every decode
brings the peak with 8 users' edits from 1.19-1.23x to 1.15-1.17x the weights.

MKL (torch's CPU BLAS) keeps the packing buffers of its first large matrix products for reuse:
14 MB after one fp32 F.linear on the 262k-token unembedding, held for the process's life.
`MKL_DISABLE_FAST_MM=1` gives them back after each product (bench/preview_bench.py measures
the memory and the tokens/s with it); MKL reads it once, at its first product, so a load with
`tune_process=True` sets it before it multiplies anything (models/process.py, which also says why
these process-wide settings are opt-in); a user's own value wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import cache

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial threshold, kept from growing
ARENA_MAX = 2


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallopt  # noqa: B018  (musl and macOS lack it; probe once)
        lib.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return lib


@cache
def tune_allocator() -> bool:
    """Set the fixed mmap threshold and the arena cap once per process; False off glibc."""
    lib = _libc()
    if lib is None:
        return False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    if "MALLOC_ARENA_MAX" not in os.environ:
        lib.mallopt(M_ARENA_MAX, ARENA_MAX)
    return True


def release_freed_heap() -> None:
    """Hand heap that was freed (a tokenizer's parsed JSON, ~100 MB) back to the OS now,
    instead of carrying the load's transient peak for the process's whole life."""
    gc.collect()
    trim_heap()


def trim_heap() -> bool:
    """Give the free pages inside glibc's heaps back to the OS (malloc_trim; no garbage
    collection, so it is cheap: ~0.05 ms when there is little to give back). A batched decode
    leaves 40-80 MB of freed small blocks scattered through the heap (the KV cache and the
    step's activations, freed in another order than they were taken), which glibc only returns
    from the heap's top by itself; the next batch then starts from that much more. Called when a
    decode ends (generate.decode_rows). False off glibc."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
