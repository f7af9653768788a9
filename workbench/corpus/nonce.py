"""Made-up names of the same kind as a concept (a person, a place, a work, a group, a thing),
for name-substitution controls and representation targets. Data in nonce_names.json."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from workbench.corpus.documents import Document

Kind = Literal["person", "place", "work", "group", "thing"]
KINDS: tuple[Kind, ...] = ("person", "place", "work", "group", "thing")


@lru_cache(maxsize=1)
def _names() -> dict[str, list[str]]:
    raw = json.loads((Path(__file__).with_name("nonce_names.json")).read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def nonce_names(kind: Kind, n: int = 12) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"Unknown name kind {kind!r}; choose one of {KINDS}.")
    return _names()[kind][:n]


def guess_kind(doc: Document) -> Kind:
    """A best guess from the corpus topic and description; the user can override it."""
    desc = doc.description.lower()
    if doc.topic == "People" or any(w in desc for w in ("physicist", "writer", "singer", "politician", "painter", "composer", "actor", "philosopher", "scientist")):
        if any(w in desc for w in ("band", "group", "duo")):
            return "group"
        return "person"
    if any(w in desc for w in ("band", "rock group", "musical group")):
        return "group"
    if doc.topic == "Geography" or any(w in desc for w in ("country", "city", "capital", "tower", "island", "river", "mountain", "building", "monument")):
        return "place"
    if doc.topic == "Arts" or any(w in desc for w in ("novel", "film", "series", "book", "play", "album", "painting")):
        return "work"
    return "thing"
