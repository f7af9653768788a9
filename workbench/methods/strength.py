"""Strength searched per concept against the scorecard's own verdicts.

A fixed strength cannot serve a broad concept (Japan) and a narrow one (the Beatles) at once.
`search_strength` runs a method at rising strengths and stops at the first level where either
the concept is gone (its verdict passes) or a control breaks (neighbours, general prompts,
other concepts, perplexity, specificity); it keeps the strongest level whose controls held,
and says which of the two stopped it.

The knob each method raises (`STRENGTH_KNOBS`): the optimisation's steps for the optimise
family, the key rewrite's acceptance threshold `max_remaining` (a smaller remaining distance
to made-up names takes a smaller, stronger lam), rewrite-cf's lam itself (divided by the
level), the number of zeroed rows for 'ablate'.
Every level costs one erase and one scorecard, so the search costs `len(levels)` times the
method at most; it is opt-in (`erase --search-strength`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.corpus import Corpus
from workbench.methods.erase import REWRITE_CF, EraseOptions, EraseResult, erase
from workbench.methods.key_rewrite import RewriteConfig
from workbench.methods.optimise import OptimiseConfig
from workbench.models import ModelBundle
from workbench.progress import NullProgress, Progress

LEVELS = (0.5, 1.0, 2.0)  # multiples of the method's default strength


def _steps(opts: EraseOptions, level: float) -> EraseOptions:
    cfg = opts.optimise or OptimiseConfig()
    return replace(opts, optimise=replace(cfg, steps=max(1, round(cfg.steps * level))))


def _rewrite(opts: EraseOptions, level: float) -> EraseOptions:
    cfg = opts.rewrite or RewriteConfig()
    return replace(opts, rewrite=replace(cfg, max_remaining=cfg.max_remaining / level))


def _rewrite_lam(opts: EraseOptions, level: float) -> EraseOptions:
    cfg = opts.rewrite or REWRITE_CF
    return replace(opts, rewrite=replace(cfg, lams=tuple(lam / level for lam in cfg.lams)))


def _rows(opts: EraseOptions, level: float) -> EraseOptions:
    return replace(opts, ablate=replace(opts.ablate, n_rows=max(1, round(opts.ablate.n_rows * level))))


STRENGTH_KNOBS: dict[str, tuple[str, Callable[[EraseOptions, float], EraseOptions]]] = {
    "optimise": ("optimisation steps", _steps),
    "optimise-facts": ("optimisation steps", _steps),
    "optimise-repr": ("optimisation steps", _steps),
    "optimise-cf": ("optimisation steps", _steps),
    "pisces-rows": ("optimisation steps", _steps),
    "rewrite-optimise": ("optimisation steps", _steps),
    "rewrite": ("1 / max_remaining", _rewrite),
    "rewrite-cf": ("1 / lam", _rewrite_lam),
    "ablate": ("rows zeroed", _rows),
}


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
    progress: Progress = NullProgress(),
    *,
    options: EraseOptions = EraseOptions(),
    levels: tuple[float, ...] = LEVELS,
    **erase_kw: Any,
) -> StrengthResult:
    """Raise the method's strength level by level (see the module docstring); every level is
    scored, so `options.score` is forced on."""
    if method not in STRENGTH_KNOBS:
        raise ValueError(f"Method {method!r} has no strength to search; searchable: {', '.join(STRENGTH_KNOBS)}.")
    if not levels or sorted(levels) != list(levels):
        raise ValueError(f"Strength levels must be given weakest first (got {levels}).")
    knob, scale = STRENGTH_KNOBS[method]
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
