"""Tokens as text: display strings, the 'clean token' filter, and where tokens sit in a text.

Nothing here looks for a marker character such as SentencePiece's '▁' or byte-level BPE's 'Ġ' to
decide where a word starts: word starts, name positions and continuations come from the
tokenizer's character offsets (`encode_with_spans`), or from decoded prefixes for a tokenizer
without offsets, so every method and lens reasons the same way about Gemma's SentencePiece
vocabulary, Llama 3's or GPT-2's byte-level BPE, or any other tokenizer. Display strings of
vocabulary pieces are decoded by the tokenizer's kind (`tokenizer_kind`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch

_ANGLE = re.compile(r"^<[^<>]*>$")  # <unused12>, <0x0A>, <start_of_image>, <mask> ...
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte fallback
_LETTERS = re.compile(r"[^\W\d_]+")  # a run of letters (any script)

TokenizerKind = Literal["byte_level", "sentencepiece", "other"]


def tokenizer_kind(tokenizer: Any) -> TokenizerKind:
    """How the tokenizer writes text into its vocabulary pieces.

    'byte_level': GPT-2-style byte-to-unicode pieces (GPT-2, Llama 3, Qwen, OLMo, GPT-NeoX);
    'sentencepiece': spaces written as '▁' (Gemma, Llama 2, Mistral); 'other' otherwise. Read
    from the fast tokenizer's decoder and pre-tokenizer (a few hundred bytes of JSON, not the
    vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "byte_level" if hasattr(tokenizer, "byte_encoder") else "other"
    parts = [getattr(backend, name, None) for name in ("decoder", "pre_tokenizer", "normalizer")]
    state = " ".join(str(p.__getstate__()) for p in parts if p is not None and hasattr(p, "__getstate__"))
    if "ByteLevel" in state:
        return "byte_level"
    if "▁" in state or "Metaspace" in state:
        return "sentencepiece"
    return "other"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character of each byte, inverted (char -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def piece_text(piece: str, kind: TokenizerKind) -> str:
    """A vocabulary piece as it reads in a sentence: 'ĠParis' (byte-level) and '▁Paris'
    (SentencePiece) both give ' Paris'; byte-level pieces of a multi-byte character that is cut
    in two read as U+FFFD."""
    if kind == "byte_level":
        table = _byte_decoder()
        if all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece).decode("utf-8", errors="replace")
        return piece
    if kind == "sentencepiece":
        byte = _BYTE_PIECE.match(piece)
        if byte:
            value = int(byte.group(1), 16)
            return chr(value) if value < 128 else "\ufffd"
        return piece.replace("▁", " ")
    return piece


@lru_cache(maxsize=8)
def _vocab_strings(tokenizer_id: int, tokenizer: Any, vocab_size: int) -> tuple[str, ...]:
    n = min(vocab_size, len(tokenizer))
    kind = tokenizer_kind(tokenizer)
    if kind == "other":  # no piece convention known: ask the tokenizer to decode each id
        strings = [tokenizer.decode([i]) for i in range(n)]
    else:
        pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
        strings = [piece_text(p, kind) if p is not None else "" for p in pieces]
    return tuple(strings + [""] * (vocab_size - n))


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
        if i in special or piece is None or _ANGLE.match(piece) or "\ufffd" in s:
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


Span = tuple[int, int]  # [start, end) characters of the text a token covers; (p, p) for special tokens


@dataclass(frozen=True)
class Encoded:
    """One text's token ids with the characters each token covers."""

    text: str
    ids: list[int]
    spans: list[Span]

    def token_at_char(self, char: int) -> int | None:
        """The position of the last token that covers character `char` (None when the text was
        truncated before it)."""
        found = None
        for p, (start, end) in enumerate(self.spans):
            if start <= char < end:
                found = p
        return found

    def word_at(self, position: int) -> tuple[str, str] | None:
        """(the token's own letters, the whole word) when the token at `position` starts a word
        made of letters, else None. A word starts where a letter follows a non-word character or
        the start of the text; the whole word runs on over later letters (its rarity is judged on
        all of it)."""
        start, end = self.spans[position]
        text = self.text
        while start < end and text[start].isspace():
            start += 1
        if start >= end or not text[start].isalpha():
            return None
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "'’-_"):
            return None
        own = text[start:end]
        whole = _LETTERS.match(text, start)
        return own, whole.group(0) if whole else own

    def starts_after(self, char: int) -> int:
        """The first token position whose span starts at or after `char` (len(ids) when none)."""
        for p, (start, end) in enumerate(self.spans):
            if end > start and start >= char:
                return p
        return len(self.ids)


def encode_with_spans(tokenizer: Any, text: str, max_length: int | None = None,
                      add_special_tokens: bool = True) -> Encoded:
    """Token ids of `text` (as `tokenizer(text)` gives them) and each token's character span.

    Fast tokenizers report offsets; others get spans from decoded prefixes (the characters each
    extra token adds to the decoded text). Special tokens (BOS) get an empty span."""
    kw: dict[str, Any] = {"add_special_tokens": add_special_tokens}
    if max_length is not None:
        kw.update(truncation=True, max_length=max_length)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, return_offsets_mapping=True, **kw)
        ids = list(enc["input_ids"])
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        spans = [(s, s) if i in special else (int(s), int(e))
                 for i, (s, e) in zip(ids, enc["offset_mapping"], strict=True)]
        return Encoded(text, ids, spans)
    ids = list(tokenizer(text, **kw)["input_ids"])
    return Encoded(text, ids, _spans_from_prefixes(tokenizer, text, ids))


def _spans_from_prefixes(tokenizer: Any, text: str, ids: Sequence[int]) -> list[Span]:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    spans: list[Span] = []
    kept: list[int] = []
    done = 0
    for i in ids:
        if i in special:
            spans.append((done, done))
            continue
        kept.append(i)
        decoded = tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = len(decoded) if text.startswith(decoded) else min(len(text), len(decoded))
        spans.append((done, max(end, done)))
        done = max(end, done)
    return spans


def continuation_ids(tokenizer: Any, prompt: str, continuation: str) -> list[int]:
    """Token ids of `continuation` as the model reads it right after `prompt` (a leading space
    is added when neither side has one): the tokens of prompt + continuation that start at or
    after the prompt's end, so a tokenizer that merges across the boundary, or writes a word
    start differently mid-text than at the start of a text, is handled the same way."""
    if prompt and not prompt[-1:].isspace() and not continuation[:1].isspace():
        continuation = " " + continuation
    enc = encode_with_spans(tokenizer, prompt + continuation)
    first = enc.starts_after(len(prompt))
    # a token that straddles the boundary belongs to the continuation as well
    for p, (start, end) in enumerate(enc.spans):
        if start < len(prompt) < end:
            first = min(first, p)
            break
    return enc.ids[first:]


def pad_id(tokenizer: Any) -> int:
    """The id padded positions hold: the pad token, else EOS (GPT-2, Llama 3 and GPT-NeoX ship
    none), else 0. Padded positions are always masked out, so any id serves."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def pad_ids(seqs: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """Right-pad token id lists into one [n, longest] tensor."""
    longest = max((len(s) for s in seqs), default=0)
    return torch.tensor([list(s) + [pad] * (longest - len(s)) for s in seqs], dtype=torch.long).reshape(len(seqs), longest)
