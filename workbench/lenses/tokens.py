"""Token display and the 'clean token' filter used before any top-k over the vocabulary."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import torch

_ANGLE = re.compile(r"^<[^<>]*>$")  # <unused12>, <0x0A>, <start_of_image>, <mask> ...


def display_token(raw: str) -> str:
    """SentencePiece piece -> text as it reads in a sentence ('▁Paris' -> ' Paris')."""
    return raw.replace("▁", " ").replace("Ġ", " ").replace("Ċ", "\n")


@lru_cache(maxsize=8)
def _vocab_strings(tokenizer_id: int, tokenizer: Any, vocab_size: int) -> tuple[str, ...]:
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    pieces = [p if p is not None else "" for p in pieces]
    pieces += [""] * (vocab_size - len(pieces))
    return tuple(display_token(p) for p in pieces)


def vocab_strings(tokenizer: Any, vocab_size: int) -> tuple[str, ...]:
    """Display strings of every token id (cached per tokenizer)."""
    return _vocab_strings(id(tokenizer), tokenizer, vocab_size)


def clean_token_mask(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """[vocab] bool: True for tokens worth showing (not special, unused, byte or punctuation-only)."""
    strings = vocab_strings(tokenizer, vocab_size)
    raw = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, s in enumerate(strings):
        piece = raw[i] if i < len(raw) else None
        if i in special or piece is None or _ANGLE.match(piece):
            continue
        if any(ch.isalnum() for ch in s):
            mask[i] = True
    return mask


def single_token_ids(tokenizer: Any, words: list[str]) -> dict[str, int]:
    """Map each word to its token id when it is exactly one token (leading space included in
    the word if wanted); words that split into several tokens are left out."""
    out: dict[str, int] = {}
    for w in words:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out[w] = int(ids[0])
    return out
