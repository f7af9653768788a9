"""Token boundaries from the tokenizer, not from a marker character: the same answers on a
SentencePiece-style vocabulary ('▁Paris'), a byte-level BPE one ('ĠParis') and a tokenizer
without offsets (decoded prefixes); and layer defaults placed at the same depth on any model."""

from __future__ import annotations

from typing import Any

import pytest

from workbench.lenses.tokens import (
    Encoded,
    continuation_ids,
    encode_with_spans,
    piece_text,
    tokenizer_kind,
    vocab_strings,
)
from workbench.models.depth import at_depth, describe_layers, fit_layers, layers_at_depth
from workbench.models.tiny import TOKENIZERS, build_tokenizer

TEXT = "The Eiffel Tower in Paris, near the Seine, was built in 1889."


@pytest.fixture(scope="module", params=["gemma3", "mistral", "llama", "gpt2", "qwen2"])
def tok(request: pytest.FixtureRequest) -> Any:
    built = build_tokenizer(TOKENIZERS[request.param], 2048, 400)
    built.family = request.param
    return built


def _words(enc: Encoded) -> list[tuple[str, str]]:
    return [w for p in range(len(enc.ids)) if (w := enc.word_at(p)) is not None]


def test_kind_is_read_from_the_tokenizer(tok: Any) -> None:
    assert tokenizer_kind(tok) == TOKENIZERS[tok.family].kind


def test_every_word_start_is_found_whatever_marks_it(tok: Any) -> None:
    enc = encode_with_spans(tok, TEXT)
    assert len(enc.spans) == len(enc.ids)
    whole = [w for _, w in _words(enc)]
    # each alphabetic word of the text starts exactly once, and only at its first token
    assert whole == ["The", "Eiffel", "Tower", "in", "Paris", "near", "the", "Seine", "was", "built", "in"]
    for p in range(len(enc.ids)):
        got = enc.word_at(p)
        if got is not None:
            start, end = enc.spans[p]
            assert TEXT[start:end].strip() == got[0] and got[1].startswith(got[0])


def test_name_position_and_continuation_ids(tok: Any) -> None:
    enc = encode_with_spans(tok, TEXT)
    end = TEXT.index("Paris") + len("Paris") - 1
    last = enc.token_at_char(end)
    assert last is not None
    start, stop = enc.spans[last]
    assert start <= end < stop  # the token holding the name's last letter (it may carry the comma too)
    assert "Paris" in tok.decode(enc.ids[: last + 1], skip_special_tokens=True)
    assert "Paris" not in tok.decode(enc.ids[:last], skip_special_tokens=True)
    prompt = "The capital of France is"
    ids = continuation_ids(tok, prompt, "Paris")
    full = tok(prompt + " Paris")["input_ids"]
    assert full[len(full) - len(ids):] == ids and tok.decode(ids).strip() == "Paris"


def test_display_strings_read_as_text(tok: Any) -> None:
    strings = vocab_strings(tok, len(tok))
    for word in ("Paris", "the"):
        (i,) = tok(" " + word, add_special_tokens=False)["input_ids"][-1:]
        if tok.decode([i]).strip() == word:
            assert strings[i] in (" " + word, word)
    assert not any(ch in "".join(strings) for ch in ("Ġ", "▁"))


def test_byte_level_pieces_decode_to_utf8() -> None:
    assert piece_text("ĠParis", "byte_level") == " Paris"
    assert piece_text("Ã©", "byte_level") == "é"
    assert piece_text("Ã", "byte_level") == "\ufffd"  # half of a two-byte character
    assert piece_text("▁Paris", "sentencepiece") == " Paris"
    assert piece_text("<0x0A>", "sentencepiece") == "\n"


class _NoOffsets:
    """A tokenizer without offsets (a slow tokenizer): spans come from decoded prefixes."""

    is_fast = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.all_special_ids = inner.all_special_ids

    def __call__(self, text: str, **kw: Any) -> Any:
        return self.inner(text, **kw)

    def decode(self, ids: list[int], **kw: Any) -> str:
        return self.inner.decode(ids, **kw)


def test_spans_from_decoded_prefixes_agree_with_offsets(tok: Any) -> None:
    fast = encode_with_spans(tok, TEXT)
    slow = encode_with_spans(_NoOffsets(tok), TEXT)
    assert slow.ids == fast.ids
    assert [w for _, w in _words(slow)] == [w for _, w in _words(fast)]
    name_end = TEXT.index("Paris") + 4
    assert slow.token_at_char(name_end) == fast.token_at_char(name_end)


def test_layers_at_the_same_depth() -> None:
    assert at_depth(6, 18) == 6 and layers_at_depth((1, 2, 3, 4, 5, 6, 7, 8), 18) == (1, 2, 3, 4, 5, 6, 7, 8)
    deep = layers_at_depth((1, 2, 3, 4, 5, 6, 7, 8), 36)
    assert deep[0] == 2 and deep[-1] == 16  # twice as deep: the same share of the network, not its first quarter
    assert layers_at_depth((1, 8), 4) == (0, 1) and at_depth(17, 4) == 3
    assert fit_layers(None, (3, 4), 30) == layers_at_depth((3, 4), 30)
    assert fit_layers((2, 9), (3,), 4) == (2,) and fit_layers((2, 9), (3,), 4, clip=True) == (2, 3)
    assert describe_layers((3, 4, 5)) == "3-5" and describe_layers((2, 5)) == "2, 5"
