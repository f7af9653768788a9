"""Tokenised batches of corpus text for activation collection."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos], 1 = real token
    doc_index: list[int]  # which input text each row came from

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def token_batches(
    tokenizer: object,
    texts: Sequence[str],
    max_len: int = 128,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> Iterator[TokenBatch]:
    """Tokenise texts (BOS prepended, truncated to max_len) into right-padded batches.

    Stops once max_tokens real tokens have been yielded (the last batch may overshoot by less
    than one batch).
    """
    if not texts:
        raise ValueError("No texts to tokenise: the corpus selection is empty.")
    total = 0
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        enc = tokenizer(  # type: ignore[operator]
            chunk,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_len,
            padding_side="right",
        )
        batch = TokenBatch(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            doc_index=list(range(start, start + len(chunk))),
        )
        yield batch
        total += batch.n_tokens
        if max_tokens is not None and total >= max_tokens:
            return
