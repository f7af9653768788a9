"""One tokenizer, many threads: a tokenizer's encoding calls, one at a time.

A fast (Rust-backed) tokenizer keeps its padding and truncation settings on the one backend
object it wraps. Every call first sets them for itself (`set_truncation_and_padding`) and then
encodes. On a server where two threads tokenise at once (an erase job's padded batch beside a
page's single prompt) the second call undoes the first's padding before the first has encoded,
and the first batch comes back ragged: "Unable to create tensor, you should probably activate
truncation and/or padding". The 8-user load bench (bench/server_load.py) saw an erase job fail
that way after 23 minutes.

`serialise_encoding` puts a lock around that tokenizer's `_encode_plus`, the one method that
`tokenizer(...)`, `encode`, `encode_plus` and `batch_encode_plus` all go through (transformers
5), on that instance only. An encoding call takes microseconds to milliseconds, so threads that
queue on the lock lose nothing measurable; decoding does not touch those settings and is left alone.
"""

from __future__ import annotations

import threading
from typing import Any

LOCK_ATTR = "_workbench_encode_lock"


def serialise_encoding(tokenizer: Any) -> Any:
    """Wrap `tokenizer._encode_plus` in a lock of its own (idempotent); returns the tokenizer.
    The wrapper is an instance attribute, so the class and other tokenizers are unchanged."""
    if getattr(tokenizer, LOCK_ATTR, None) is not None or not hasattr(tokenizer, "_encode_plus"):
        return tokenizer
    lock = threading.RLock()
    encode = tokenizer._encode_plus  # bound to this tokenizer

    def locked_encode_plus(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return encode(*args, **kwargs)

    tokenizer._encode_plus = locked_encode_plus
    setattr(tokenizer, LOCK_ATTR, lock)
    return tokenizer
