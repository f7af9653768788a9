"""Concept sets: documents about a concept (positive) and neutral documents (negative)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.corpus.documents import Corpus, Document


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "concept"


@dataclass
class ConceptSet:
    """Positive documents (the concept's article and ones that mention it) and neutral ones."""

    name: str
    positive: list[Document]
    negative: list[Document]
    terms: list[str] = field(default_factory=list)

    @property
    def concept_id(self) -> str:
        return slug(self.name)

    def __post_init__(self) -> None:
        if not self.positive:
            raise ValueError(f"Concept set {self.name!r} has no positive documents.")
        if not self.negative:
            raise ValueError(f"Concept set {self.name!r} has no neutral documents.")


def build_concept_set(
    corpus: Corpus,
    name: str,
    titles: Sequence[str] = (),
    terms: Sequence[str] = (),
    n_positive: int = 64,
    n_negative: int = 128,
    seed: int = 0,
    texts: Sequence[str] = (),
) -> ConceptSet:
    """Build a concept set from corpus titles, search terms and/or pasted texts.

    Positive: pasted texts (as documents titled 'pasted text N', doc ids < 0), the named
    articles, then articles mentioning any term (title of the article included as a term). Negative: a seeded sample of articles that mention none of the terms,
    half from the positives' topics (matched style) and half from anywhere.
    """
    titles = list(titles)
    if not titles and corpus.has(name):
        titles = [corpus.get(name).title]
    terms = [t for t in terms if t.strip()]
    pasted = [Document(doc_id=-(i + 1), title=f"pasted text {i + 1}", text=t.strip())
              for i, t in enumerate(x for x in texts if x.strip())]
    if not terms:
        terms = list(titles) or ([] if pasted else [name])
    positive: list[Document] = pasted + [corpus.get(t) for t in titles]
    seen = {d.doc_id for d in positive}
    for doc in corpus.containing(terms) if terms else []:
        if len(positive) >= n_positive:
            break
        if doc.doc_id not in seen:
            positive.append(doc)
            seen.add(doc.doc_id)
    if not positive:
        raise ValueError(
            f"No document in {corpus.corpus_id!r} is titled {titles} or mentions {terms}."
        )
    mentioning = ({d.doc_id for d in corpus.containing(terms)} if terms else set()) | seen
    topics = {d.topic for d in positive if d.topic}
    same_topic = [d for d in corpus if d.topic in topics and d.doc_id not in mentioning]
    import random

    rng = random.Random(seed)
    negative = rng.sample(same_topic, min(n_negative // 2, len(same_topic)))
    taken = mentioning | {d.doc_id for d in negative}
    rest = [d for d in corpus if d.doc_id not in taken]
    negative += rng.sample(rest, min(n_negative - len(negative), len(rest)))
    return ConceptSet(name=name, positive=positive, negative=negative, terms=list(terms))
