"""Documents and a corpus with fast selection by title, topic and substring."""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    doc_id: int
    title: str
    text: str
    description: str = ""
    topic: str = ""


@dataclass(eq=False)
class Corpus:
    """An ordered list of documents with title and topic indexes."""

    corpus_id: str
    documents: list[Document]
    _by_title: dict[str, Document] = field(init=False, repr=False)
    _by_lower_title: dict[str, Document] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.documents:
            raise ValueError(f"Corpus {self.corpus_id!r} is empty: it has no documents.")
        self._by_title = {d.title: d for d in self.documents}
        self._by_lower_title = {d.title.lower(): d for d in self.documents}

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    @property
    def titles(self) -> list[str]:
        return [d.title for d in self.documents]

    @property
    def topics(self) -> list[str]:
        return sorted({d.topic for d in self.documents if d.topic})

    def get(self, title: str) -> Document:
        """Exact title, falling back to a case-insensitive match; KeyError names close titles."""
        doc = self._by_title.get(title) or self._by_lower_title.get(title.lower())
        if doc is None:
            close = self.search_titles(title, limit=5) or difflib.get_close_matches(
                title, self.titles, n=5, cutoff=0.75
            )
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise KeyError(f"No document titled {title!r} in corpus {self.corpus_id!r}.{hint}")
        return doc

    def has(self, title: str) -> bool:
        return title in self._by_title or title.lower() in self._by_lower_title

    def search_titles(self, query: str, limit: int = 20) -> list[str]:
        q = query.lower().strip()
        if not q:
            return []
        starts = [d.title for d in self.documents if d.title.lower().startswith(q)]
        inside = [d.title for d in self.documents if q in d.title.lower() and d.title not in starts]
        return (starts + inside)[:limit]

    def by_topic(self, topic: str) -> list[Document]:
        return [d for d in self.documents if d.topic == topic]

    def containing(self, terms: Sequence[str], whole_word: bool = True) -> list[Document]:
        """Documents whose text or title mentions any of the terms (case-sensitive)."""
        if not terms:
            return []
        alternatives = "|".join(re.escape(t) for t in terms)
        pattern = re.compile(rf"\b(?:{alternatives})\b" if whole_word else alternatives)
        return [d for d in self.documents if pattern.search(d.text) or pattern.search(d.title)]

    def sample(self, n: int, seed: int = 0, exclude: Iterable[int] = ()) -> list[Document]:
        excluded = set(exclude)
        pool = [d for d in self.documents if d.doc_id not in excluded]
        rng = random.Random(seed)
        return rng.sample(pool, min(n, len(pool)))

    def texts(self) -> list[str]:
        return [d.text for d in self.documents]
