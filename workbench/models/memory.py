"""glibc allocator settings for a process that holds one model and serves many threads.

Measured on the embedded model (bench/preview_bench.py, 8 users' edits previewing at once),
with glibc's defaults the process carried ~290 MB of freed heap above the weights:
- glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
  activation-sized tensors come from the heap and stay resident when freed;
- every thread that allocates gets its own arena (up to 8 per core), and Streamlit runs each
  browser session, and the preview batcher its decode loop, in its own thread.
A fixed mmap threshold (large tensors are mapped and unmapped, so freeing returns them) and
two arenas bring it to ~150 MB with the same tokens/s. Variables a user sets (MALLOC_*) win.

MKL (torch's CPU BLAS) keeps the packing buffers of its first large matrix products for reuse:
14 MB after one fp32 F.linear on the 262k-token unembedding, held for the process's life.
`MKL_DISABLE_FAST_MM=1` gives them back after each product (bench/preview_bench.py measures
the memory and the tokens/s with it); MKL reads it once, at its first product, so the
workbench package sets it when it is imported (workbench/__init__.py); a user's own value wins.
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
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
