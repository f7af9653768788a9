"""Strength searched per concept against the scorecard's own verdicts.

A fixed strength cannot serve a broad concept (Japan) and a narrow one (the Beatles) at once.
`search_strength` runs a method at rising strengths and stops at the first level where either
the concept is gone (its verdict passes) or a control breaks (neighbours, general prompts,
other concepts, perplexity, specificity); it keeps the strongest level whose controls held,
and says which of the two stopped it.

The knob each method raises is the `strength` of its registration (`METHODS`, registry.py;
the knobs are defined beside the methods in erase.py): the optimisation's steps for the
optimise family, the key rewrite's acceptance threshold, rewrite-cf's lam, rewrite-null's ridge
(divided by the level, like rewrite-cf's lam), the number of zeroed rows for 'ablate'. A method
registered without one is refused with a sentence.
Every level costs one erase and one scorecard, so the search costs `len(levels)` times the
method at most; it is opt-in (`erase --search-strength`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from workbench.corpus import Corpus
from workbench.methods.erase import DEFAULT_OPTIONS, METHODS, EraseOptions, EraseResult, erase
from workbench.methods.registry import searchable
from workbench.models import ModelBundle
from workbench.progress import NULL_PROGRESS, Progress

LEVELS = (0.5, 1.0, 2.0)  # multiples of the method's default strength


@dataclass
class StrengthLevel:
    level: float
    concept_gone: bool
    broken_controls: list[str]
    outcome: str
    seconds: float


@dataclass
class StrengthResult:
    method: str
    knob: str
    chosen: EraseResult  # the strongest level whose controls held (else the weakest tried)
    chosen_level: float
    stopped_by: str  # 'concept gone' | 'control broke' | 'strongest level reached'
    levels: list[StrengthLevel] = field(default_factory=list)

    def summary(self) -> str:
        tried = ", ".join(f"x{s.level:g}: {'gone' if s.concept_gone else 'kept'}"
                          + (f", broke {len(s.broken_controls)}" if s.broken_controls else "") for s in self.levels)
        return (f"strength search of {self.method} ({self.knob}): stopped by {self.stopped_by}; kept x{self.chosen_level:g} "
                f"[{tried}]")


def search_strength(
    bundle: ModelBundle,
    corpus: Corpus,
    concept: str,
    method: str,
    progress: Progress = NULL_PROGRESS,
    *,
    options: EraseOptions = DEFAULT_OPTIONS,
    levels: tuple[float, ...] = LEVELS,
    **erase_kw: Any,
) -> StrengthResult:
    """Raise the method's strength level by level (see the module docstring); every level is
    scored, so `options.score` is forced on."""
    registered = METHODS.get(method)
    strength = registered.strength if registered is not None else None
    if strength is None:
        raise ValueError(f"Method {method!r} has no strength to search; searchable: {', '.join(searchable())}.")
    if not levels or sorted(levels) != list(levels):
        raise ValueError(f"Strength levels must be given weakest first (got {levels}).")
    knob, scale = strength.name, strength.scale
    tried: list[StrengthLevel] = []
    kept: tuple[float, EraseResult] | None = None
    stopped_by = "strongest level reached"
    facts = erase_kw.pop("fact_set", None)
    for level in levels:
        progress.stage(f"strength x{level:g} of {method} ({knob})")
        result = erase(bundle, corpus, concept, method, progress, options=replace(scale(options, level), score=True),
                       fact_set=facts, **erase_kw)
        facts = result.fact_set  # the same fact set at every level
        card = result.scorecard
        assert card is not None  # score=True
        tried.append(StrengthLevel(level, card.concept_gone, card.broken_controls, card.outcome, result.seconds))
        if card.broken_controls:
            stopped_by = "control broke"
            kept = kept or (level, result)  # nothing weaker held: report the weakest as it is
            break
        kept = (level, result)
        if card.concept_gone:
            stopped_by = "concept gone"
            break
    assert kept is not None
    return StrengthResult(method, knob, kept[1], kept[0], stopped_by, tried)
