"""The embedded model's tokenizer is read straight from its tokenizer.json (models/bundle.py,
FILE_BACKED_TOKENIZERS) instead of through its class, to save the class's Python copies of the
vocabulary: it must encode, decode and pad exactly as the class does."""

from __future__ import annotations

import pytest

from workbench.corpus import load_wiki
from workbench.models.bundle import FILE_BACKED_TOKENIZERS


def test_the_file_backed_classes_pad_on_the_side_their_class_does() -> None:
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    for name, side in FILE_BACKED_TOKENIZERS.items():
        assert tokenizer_class_from_name(name).padding_side == side, name


@pytest.mark.integration
def test_embedded_tokenizer_equals_its_class_on_corpus_text(embedded_bundle) -> None:
    from transformers import AutoTokenizer

    ours = embedded_bundle.tokenizer
    ref = AutoTokenizer.from_pretrained(str(embedded_bundle.path), add_bos_token=True)
    assert type(ref).__name__ in FILE_BACKED_TOKENIZERS and type(ours).__name__ not in FILE_BACKED_TOKENIZERS
    texts = [d.text for d in load_wiki("en").documents[:400]] + [
        "  two  spaces", "\ttab\n\nnewlines ", "<start_of_turn>user\nhi<end_of_turn>", "<unused5> x",
        "Ä ß 中文 😀", "a\u00a0b", "",
    ]
    for t in texts:
        a, b = ours(t).input_ids, ref(t).input_ids
        assert a == b, t[:60]
        assert ours.decode(a) == ref.decode(b)
    assert ours.padding_side == ref.padding_side and ours.pad_token_id == ref.pad_token_id
    assert ours.all_special_ids == ref.all_special_ids and ours.chat_template == ref.chat_template
    batch = ["short", "a longer text than that"]
    assert ours(batch, padding=True).input_ids == ref(batch, padding=True).input_ids
