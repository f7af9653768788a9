"""Embedded corpus, user text corpora, concept sets and token batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.corpus import build_concept_set, load_text_corpus, load_wiki
from workbench.corpus.batches import token_batches


def test_wiki_corpus_loads_with_fields():
    corpus = load_wiki("en")
    assert len(corpus) > 9000
    doc = corpus.get("Eiffel Tower")
    assert "Paris" in doc.text and doc.topic
    assert corpus.get("eiffel tower") is doc
    assert "Eiffel Tower" in corpus.search_titles("eiffel")
    assert all(d.topic == "Arts" for d in corpus.by_topic("Arts"))


def test_unknown_title_suggests_close_ones():
    with pytest.raises(KeyError, match="Did you mean"):
        load_wiki("en").get("Eiffel Towr")


def test_text_corpus_lines_and_folder(tmp_path: Path):
    f = tmp_path / "notes.txt"
    f.write_text("first document\n\nsecond document\n")
    corpus = load_text_corpus(f)
    assert [d.text for d in corpus] == ["first document", "second document"]
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha text")
    (folder / "b.txt").write_text("beta text")
    assert load_text_corpus(folder).titles == ["a", "b"]


def test_empty_text_corpus_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty"):
        load_text_corpus(f)


def test_concept_set_positive_mentions_negative_does_not():
    corpus = load_wiki("en")
    cs = build_concept_set(corpus, "Paris", n_positive=20, n_negative=30)
    assert cs.positive[0].title == "Paris"
    assert all("Paris" in d.text or "Paris" in d.title for d in cs.positive)
    assert not any("Paris" in d.text for d in cs.negative)
    assert len(cs.negative) == 30
    assert cs.concept_id == "paris"


def test_token_batches_stop_at_max_tokens(tiny_bundle):
    texts = [d.text for d in load_wiki("en").sample(40, seed=1)]
    batches = list(token_batches(tiny_bundle.tokenizer, texts, max_len=32, batch_size=4, max_tokens=200))
    total = sum(b.n_tokens for b in batches)
    assert 200 <= total < 200 + 4 * 32
    assert all(int(b.input_ids[0, 0]) == tiny_bundle.tokenizer.bos_token_id for b in batches)


def test_concept_set_from_pasted_text_only_and_with_titles() -> None:
    from workbench.corpus import build_concept_set, load_wiki

    wiki = load_wiki("en")
    only = build_concept_set(wiki, "My notes", texts=["Zorblat is a made-up game.", "  ", "Zorblat has rules."],
                             n_negative=10)
    assert [d.title for d in only.positive] == ["pasted text 1", "pasted text 2"]
    assert all(d.doc_id < 0 for d in only.positive) and len(only.negative) == 10
    both = build_concept_set(wiki, "Paris+", titles=["Paris"], texts=["Paris notes."], n_positive=5, n_negative=4)
    assert both.positive[0].title == "pasted text 1" and both.positive[1].title == "Paris"
