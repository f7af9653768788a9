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

    def titles_naming(self, name: str, limit: int = 5) -> list[str]:
        """Titles that contain `name` as a whole word (case-insensitive), shortest first: the
        articles a user probably means by a name that is not a title ('The Legend of Zelda'
        for 'Zelda', 'Walt Disney' for 'Disney')."""
        word = re.compile(rf"\b{re.escape(name.strip())}\b", re.IGNORECASE)
        hits = [d.title for d in self.documents if word.search(d.title) and d.title.lower() != name.strip().lower()]
        return sorted(hits, key=len)[:limit]

    def close_titles(self, name: str, limit: int = 5) -> list[str]:
        """Titles a user probably means by a name that is not one: titles containing it as a
        word ('The Legend of Zelda' for 'Zelda'), else close spellings ('Harry Potter' for
        'Harry Pottr')."""
        return self.titles_naming(name, limit) or difflib.get_close_matches(name, self.titles, n=limit, cutoff=0.75)

    def document_for(self, name: str, about: str = "") -> Document:
        """The article titled `name`, else a stand-in for a concept without one: the sentences
        that mention it (`mention_document`), or an empty document when none does. Every reader
        of a concept's article (fact set, retain set, probe) goes through here."""
        if self.has(name):
            return self.get(name)
        return self.mention_document(name, about) or Document(doc_id=-1, title=name.strip(), text="",
                                                               description=about)

    def mention_document(self, name: str, about: str = "", max_sentences: int = 40) -> Document | None:
        """A stand-in article for a concept the corpus has no article for: the sentences of other
        articles that name it (whole word, case-sensitive), under the most common topic of those
        articles, with `about` as its description. None when no article names it."""
        pattern = re.compile(rf"\b{re.escape(name.strip())}\b")
        sentences: list[str] = []
        topics: dict[str, int] = {}
        for d in self.containing([name.strip()]):
            topics[d.topic] = topics.get(d.topic, 0) + 1
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", d.text) if pattern.search(s)]
        if not sentences:
            return None
        topic = max(topics, key=lambda t: topics[t]) if topics else ""
        return Document(doc_id=-1, title=name.strip(), text=" ".join(sentences[:max_sentences]),
                        description=about, topic=topic)
