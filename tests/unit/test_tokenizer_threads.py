"""The one tokenizer of a served model is used by many threads: a padded batch must keep its
padding while another thread tokenises (workbench/models/tokenizer_threads.py)."""

from __future__ import annotations

import threading
from typing import Any

from workbench.models.tokenizer_threads import LOCK_ATTR, serialise_encoding


def test_a_padded_batch_keeps_its_padding_while_another_thread_tokenises(tiny_bundle: Any) -> None:
    tok = tiny_bundle.tokenizer
    assert getattr(tok, LOCK_ATTR, None) is not None  # load_bundle installed it
    other_ids: list[list[int]] = []
    other = threading.Thread(target=lambda: other_ids.append(tok("one prompt, no padding")["input_ids"]))
    set_for_this_call = tok.set_truncation_and_padding

    def then_another_thread_tokenises(*args: Any, **kwargs: Any) -> None:
        set_for_this_call(*args, **kwargs)  # this call's padding is now on the shared backend ...
        if other.ident is None:
            other.start()  # ... and another thread tokenises before this call has encoded: without
            other.join(timeout=0.5)  # the lock it would set no padding here, and the batch is ragged

    tok.set_truncation_and_padding = then_another_thread_tokenises
    try:
        batch = tok(["a", "a much longer text than the first one"], padding=True, return_tensors="pt")
    finally:
        del tok.set_truncation_and_padding
    other.join()
    assert batch["input_ids"].shape[0] == 2 and bool((batch["attention_mask"][0] == 0).any())
    assert other_ids and other_ids[0] == tok("one prompt, no padding")["input_ids"]


def test_serialise_encoding_wraps_once(tiny_bundle: Any) -> None:
    tok = tiny_bundle.tokenizer
    wrapper = tok._encode_plus
    assert "_encode_plus" in vars(tok)  # on the instance: the class, and other tokenizers, unchanged
    assert serialise_encoding(tok) is tok and tok._encode_plus is wrapper  # a second load does not nest locks
