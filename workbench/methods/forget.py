"""The forget text of the fine-tuning baselines (RMU, ELM): the concept's own text.

RMU and ELM train on documents about the concept rather than on single facts: the corpus
article cut into windows of a few consecutive sentences (documents, as in the papers' forget
corpora), then every fact-set sentence (the article's, the mentions' and the model's own
samples, as the user kept them). The retain side is `workbench.methods.retain`.
"""

from __future__ import annotations

from workbench.corpus import Corpus
from workbench.methods.facts import FactSet, split_sentences

WINDOW_SENTENCES = 3  # consecutive article sentences per forget document


def forget_texts(corpus: Corpus, facts: FactSet, window: int = WINDOW_SENTENCES) -> list[str]:
    """Article windows of `window` sentences (when the concept is a corpus title), then the fact
    sentences; each text once, in that order. Raises ValueError when the fact set is empty: the
    fact set is what the user chose to erase, so an emptied one is refused rather than replaced
    by the article."""
    if not facts.facts:
        raise ValueError("The fact set is empty: add facts about the concept before erasing it.")
    texts: list[str] = []
    if corpus.has(facts.concept):
        sentences = split_sentences(corpus.get(facts.concept).text)
        texts += [" ".join(sentences[i:i + window]) for i in range(0, len(sentences), window)]
    texts += [t for t in facts.texts() if t.strip()]
    out = list(dict.fromkeys(texts))
    if not out:
        raise ValueError("The fact set has no text: add facts about the concept before erasing it.")
    return out
