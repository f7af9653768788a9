"""Concept-erasure methods: from a corpus concept to an EditSpec (+ payload).

`erase(bundle, corpus, concept, method)` is what `python -m workbench erase`, the app and
bench/erasure.py call. The default, "optimise-both", is the best method measured on the dev
benchmark (bench/erasure.py; numbers in the README): a localized optimised edit of ~256 value
vectors with the fact and representation targets together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.corpus import Corpus
from workbench.edits.facts import FactSet, build_fact_set
from workbench.edits.optimise import (
    OptimiseConfig,
    mlp_hidden_means,
    optimise_value_vectors,
    retain_documents,
    select_rows,
    to_operation,
)
from workbench.edits.spec import AblateValueVectors, EditSpec, ModelRef, ProjectOutDirection, SaeRef
from workbench.models import ModelBundle, layout
from workbench.progress import NullProgress, Progress


@dataclass
class MethodOutput:
    """What a method contributes to a spec: operations, payload tensors, the SAE it used."""

    operations: list[Any]
    payload: dict[str, torch.Tensor] = field(default_factory=dict)
    sae: SaeRef | None = None


Method = Callable[[ModelBundle, Corpus, FactSet, Progress], MethodOutput]
DEFAULT_METHOD = "optimise-both"


def _optimise(target: str, steps: int | None = None) -> Method:
    def run(bundle: ModelBundle, corpus: Corpus, facts: FactSet, progress: Progress) -> MethodOutput:
        cfg = OptimiseConfig(target=target).fitted(bundle.n_layers)  # type: ignore[arg-type]
        if steps is not None:
            from dataclasses import replace

            cfg = replace(cfg, steps=steps)
        result = optimise_value_vectors(bundle, facts, corpus, cfg, progress=progress)
        op, payload = to_operation(result, cfg)
        return MethodOutput([op], payload)

    return run


def ablate_contrast_rows(bundle: ModelBundle, corpus: Corpus, facts: FactSet, progress: Progress) -> MethodOutput:
    """Zero the 256 value vectors of layers 2-8 with the largest activation contrast (ConceptVectors-style)."""
    cfg = OptimiseConfig(target="facts", layers=(2, 3, 4, 5, 6, 7, 8)).fitted(bundle.n_layers)
    progress.stage("selecting rows by activation contrast")
    rows = select_rows(bundle, facts, retain_documents(corpus, facts, cfg), None, cfg)
    return MethodOutput([AblateValueVectors(layer=layer, neurons=idx, mode="zero") for layer, idx in rows.items()])


def project_concept_direction(bundle: ModelBundle, corpus: Corpus, facts: FactSet, progress: Progress) -> MethodOutput:
    """Project the concept-vs-neutral difference of the layer-6 MLP output (residual
    coordinates) out of the value vectors of layers 2-6, rows with large cosine only (tau 0.5)."""
    cfg = OptimiseConfig()
    layer = min(6, bundle.n_layers - 1)
    progress.stage("difference of means")
    neutral = [d.text for d in retain_documents(corpus, facts, cfg)]
    c_mean, _ = mlp_hidden_means(bundle, facts.texts(), [layer], cfg.max_len)
    n_mean, _ = mlp_hidden_means(bundle, neutral, [layer], cfg.max_len)
    direction = (c_mean[layer] - n_mean[layer]) @ layout.w_out(bundle.hf_model, layer).detach().float()
    direction = direction / direction.norm()
    layers = list(range(min(2, layer), layer + 1))
    return MethodOutput([ProjectOutDirection(layers=layers, direction=direction.tolist(), alpha=1.0, tau=0.5)])


OPTIMISE_TARGETS = {"optimise-both": "both", "optimise-facts": "facts", "optimise-repr": "representation"}
def pisces_features(bundle: ModelBundle, corpus: Corpus, facts: FactSet, progress: Progress) -> MethodOutput:
    """PISCES closed form with the newest local layer-6 SAE (candidates, signs, tau x mu search)."""
    from workbench.config import Settings
    from workbench.edits.pisces_search import pisces_erase

    result = pisces_erase(bundle, corpus, facts, Settings.from_env().saes_dir, progress=progress)
    return MethodOutput(list(result.spec.operations), sae=result.spec.sae)


METHODS: dict[str, Method] = {
    **{name: _optimise(target) for name, target in OPTIMISE_TARGETS.items()},
    "ablate": ablate_contrast_rows,
    "project": project_concept_direction,
    "pisces": pisces_features,
}


@dataclass
class EraseResult:
    spec: EditSpec
    payload: dict[str, torch.Tensor]
    facts: FactSet
    seconds: float


def erase(
    bundle: ModelBundle,
    corpus: Corpus,
    concept: str,
    method: str = DEFAULT_METHOD,
    facts: FactSet | None = None,
    steps: int | None = None,
    progress: Progress = NullProgress(),
) -> EraseResult:
    """Build the fact set (unless given: the user may have edited it) and run one method."""
    if method not in METHODS:
        raise ValueError(f"Unknown erasure method {method!r}; choose one of {sorted(METHODS)}.")
    t0 = time.perf_counter()
    facts = facts or build_fact_set(bundle, corpus, concept, progress=progress)
    run = _optimise(OPTIMISE_TARGETS[method], steps) if steps is not None and method in OPTIMISE_TARGETS \
        else METHODS[method]
    out = run(bundle, corpus, facts, progress)
    spec = EditSpec(
        name=f"erase {facts.concept} ({method})",
        model=ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256),
        sae=out.sae,
        operations=out.operations,
        notes=f"workbench erase --concept {facts.concept!r} --method {method}; {len(facts.facts)} facts",
    )
    return EraseResult(spec=spec, payload=out.payload, facts=facts, seconds=time.perf_counter() - t0)
