"""The retain text: what an edit must leave alone, beside the concept's own text.

Same-topic neighbours (other novels for a novel), neutral extracts of any topic and, for the
localized optimisation, "collision" articles that use the fact target words about something
else. Every method that contrasts the concept with other text (optimise, rewrite, ablate,
project, PISCES) draws it from here with one `RetainConfig`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.corpus import Corpus, Document
from workbench.methods.facts import FactSet


@dataclass(frozen=True)
class RetainConfig:
    """Which retain articles a method reads, and how much of any text."""

    n_neighbours: int = 40  # same-topic articles that do not mention the concept, most similar first
    n_neutral: int = 60  # neutral extracts of any topic
    # Collision retain (issue 8, the localized optimisation): corpus articles that use the fact
    # target words without being about the concept; in every retain text the positions whose
    # next token is a target token are held by the KL, where the unlikelihood would leak.
    n_collisions: int = 40
    # tokens read of each text, the retain text and the concept's own (facts, frames) alike, so
    # both sides of every contrast are cut the same way
    max_len: int = 64
    sample_seed: int = 1  # seed of the neutral sample


def retain_split(corpus: Corpus, facts: FactSet, cfg: RetainConfig) -> tuple[list[Document], list[Document]]:
    """(neighbours, neutral): same-topic articles that do not mention the concept, ranked by how
    much their description shares with the concept's (other novels for a novel), and neutral
    extracts of any topic. Kept apart so that a topic with few articles never passes a neutral
    article off as a neighbour."""
    doc = corpus.document_for(facts.concept)
    mentioning = {d.doc_id for d in corpus.containing([facts.name])} | {doc.doc_id}
    words = {w for w in doc.description.lower().split() if len(w) > 3}
    same_topic = [d for d in corpus.by_topic(doc.topic) if d.doc_id not in mentioning]
    same_topic.sort(key=lambda d: (-len(words & set(d.description.lower().split())), d.doc_id))
    neighbours = same_topic[: cfg.n_neighbours]
    taken = mentioning | {d.doc_id for d in neighbours}
    neutral = corpus.sample(cfg.n_neutral, seed=cfg.sample_seed, exclude=taken)
    return neighbours, neutral


def retain_documents(corpus: Corpus, facts: FactSet, cfg: RetainConfig) -> list[Document]:
    """The retain articles: neighbours first, then neutral extracts (`retain_split`)."""
    neighbours, neutral = retain_split(corpus, facts, cfg)
    return neighbours + neutral


def collision_documents(corpus: Corpus, facts: FactSet, tokenizer: Any, target_ids: Sequence[int],
                        cfg: RetainConfig, exclude: set[int]) -> list[Document]:
    """Articles that use the fact target words but do not name the concept, most target words
    first: the text where unlearning those words would show up as collateral damage."""
    if not target_ids or cfg.n_collisions <= 0:
        return []
    words = sorted({w for w in (tokenizer.decode([t]).strip() for t in target_ids) if len(w) >= 3 and w.isalpha()})
    if not words:
        return []
    mentioning = {d.doc_id for d in corpus.containing([facts.name])}
    found = [d for d in corpus.containing(words) if d.doc_id not in mentioning and d.doc_id not in exclude]
    found.sort(key=lambda d: (-sum(w in d.text for w in words), d.doc_id))
    return found[: cfg.n_collisions]


def collision_mask(ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: Sequence[int]) -> torch.Tensor:
    """[n, pos] True at p when the real token at p+1 is a fact target token (the prediction made
    at p is one the unlikelihood pushes down)."""
    out = torch.zeros_like(ids, dtype=torch.bool)
    if not target_ids:
        return out
    hit = torch.isin(ids[:, 1:], torch.tensor(list(target_ids), dtype=ids.dtype)) & attention_mask[:, 1:].bool()
    out[:, :-1] = hit
    return out


def sample_retain_texts(colliding: Sequence[int], plain: Sequence[int], size: int, share: float,
                        rng: random.Random) -> list[int]:
    """Retain texts of one step: `share` of them (when there are any) contain a collision."""
    n_col = min(len(colliding), round(size * share)) if colliding else 0
    pick = rng.sample(list(colliding), n_col)
    rest = min(len(plain), size - n_col)
    pick += rng.sample(list(plain), rest)
    if len(pick) < size:  # few plain texts: fill from the colliding ones
        left = [i for i in colliding if i not in pick]
        pick += rng.sample(left, min(len(left), size - len(pick)))
    return pick


def sample_retain_positions(
    enc: dict[str, torch.Tensor], pick: Sequence[int], per_text: int, rng: random.Random,
    always: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Retain texts of this step and their KL positions: every `always` position (collisions,
    up to per_text) plus random real positions up to per_text. Returns ids, bool mask."""
    idx = list(pick)
    ids = enc["input_ids"][idx]
    am = enc["attention_mask"][idx]
    width = int(am.sum(1).max())
    ids, am = ids[:, :width], am[:, :width]
    mask = torch.zeros_like(am, dtype=torch.bool)
    for r, row in enumerate(idx):
        n = int(am[r].sum())
        fixed = torch.nonzero(always[row, :width]).flatten().tolist()[:per_text] if always is not None else []
        for p in fixed:
            mask[r, p] = True
        free = [p for p in range(1, n) if p not in fixed]
        for p in rng.sample(free, min(per_text - len(fixed), len(free))) if free else []:
            mask[r, p] = True
    return ids, mask
