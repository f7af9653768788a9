"""Corpora: embedded Wikipedia summaries, user text files, concept sets, token batches."""

from workbench.corpus.concept import ConceptSet, build_concept_set
from workbench.corpus.documents import Corpus, Document
from workbench.corpus.text_files import load_text_corpus
from workbench.corpus.wiki import load_wiki

__all__ = [
    "ConceptSet",
    "Corpus",
    "Document",
    "build_concept_set",
    "load_text_corpus",
    "load_wiki",
]
