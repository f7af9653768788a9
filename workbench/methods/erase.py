"""The concept-erasure pipeline: corpus concept -> fact set -> method -> EditSpec (+ payload)
-> candidate table -> scorecard.

    result = erase(bundle, corpus, "Harry Potter")               # method "optimise" (default)
    save_spec(result.spec, "hp.json", payload=result.payload or None)

Methods (one page each under docs/methods/):
  optimise  localized optimisation of ~256 value vectors, fact + representation targets together
            (OptimiseConfig target 'both'); one OptimiseValueVectors op + a payload of deltas.
            The default: on the dev benchmark (bench/erasure.py, README) the method that holds every
            control (neighbours, general, other concepts, perplexity) on the most concepts.
  pisces-rows
            PISCES's row selection (SAE features firing on the fact set, their rows by the tau
            rule) as the rows of the localized optimisation, instead of activation contrast.
  rewrite   closed-form (MEMIT-style) rewrite of the name's key in MLPs 3-7 so the residual at the
            name looks like made-up names after layer 8 (methods/key_rewrite.py); every row of those
            layers' W_out changes, the delta travels in the payload like 'optimise'.
  rewrite-optimise
            'rewrite', then 'optimise' trained with the rewrite in place: two operations in one spec.
            The strongest erasure measured (closest to the name-dependent goal) but it costs
            neighbours and general prompts, so it is not the default.
  rewrite-cf
            'rewrite' whose desired outputs make the next-token distributions after the name match
            the base's with made-up names (KL, the full model in the loop), with neighbour names'
            keys held in the solve (issue 16's counterfactual-name target).
  rewrite-null
            'rewrite-cf' solved in the null space of general text's keys and the neighbour names'
            (AlphaEdit's projection, methods/null_space.py): what those keys write cannot move
            beyond the projection's bound.
  optimise-cf
            'optimise' trained on that counterfactual target alone, neighbour names in the retain KL.
  optimise-facts / optimise-repr
            the same with only the fact (unlikelihood) or only the representation target; kept
            so the bench can compare the two halves of the default.
  pisces    2(b) with the newest local SAE at the default SAE layer: candidate features with their evidence, neuron
            signs at concept-token positions, a default selection, a tau x mu search on
            HM(efficacy, specificity). Needs `python -m workbench sae train` first.
  ablate    zero the value vectors with the largest concept-vs-neutral activation contrast.
  project   project the concept's difference-of-means direction out of W_out (2(d)).
  rmu       RMU (WMDP paper): dense deltas on W_out of three layers drive the residual on the
            concept's text to a fixed random vector (methods/rmu.py).
  elm       ELM (Gandikota et al.): low-rank deltas on W_out of a few layers train the model toward its
            own novice-vs-expert steered distribution on the concept's text (methods/elm.py).

Every method returns a candidate table of plain dataclasses (rows or SAE features, with the
evidence that chose them) so the app and CLI can show why the edit touches what it touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from workbench.benchmark.scorecard import EvalOptions, Scorecard, evaluate
from workbench.corpus import Corpus
from workbench.edits.compile import compile_spec
from workbench.edits.spec import AblateValueVectors, EditSpec, ModelRef, ProjectOutDirection, SaeRef
from workbench.methods.elm import ElmConfig, elm_unlearn, to_elm_operation
from workbench.methods.facts import FactSet, build_fact_set
from workbench.methods.key_rewrite import RewriteConfig, rewrite_name_key
from workbench.methods.optimise import OptimiseConfig, Target, optimise_value_vectors, to_operation
from workbench.methods.pisces_search import FeatureCandidate
from workbench.methods.registry import METHODS, Method, StrengthKnob, register
from workbench.methods.retain import RetainConfig, retain_documents
from workbench.methods.rmu import RmuConfig, rmu_unlearn, to_rmu_operation
from workbench.methods.rows import contrast_rows, mlp_hidden_means
from workbench.models import ModelBundle, layout
from workbench.models.chat import check_chat_template
from workbench.models.depth import default_sae_layer, fit_layers
from workbench.progress import NULL_PROGRESS, Progress

DEFAULT_METHOD = "optimise"
# rewrite-cf's defaults: the counterfactual target, each neighbour name's key counting as one of the
# concept's, one strong lam (on Japan lam 300 kept 0.34 of the KL but dropped general prompts 1.00 -> 0.91
# and added 3.5% perplexity; lam 3000 kept 0.35, general 0.96, +0.5%) and 60 steps (the fit settles by then)
REWRITE_CF = RewriteConfig(target="counterfactual", neighbour_key_weight=1.0, lams=(3000.0,), steps=60)


@dataclass
class RowCandidate:
    """One value vector (W_out row) a method considered, with the number that ranked it."""

    layer: int
    neuron: int
    score: float
    evidence: str  # what `score` is, e.g. "contrast z", "|delta| / |v|", "|cos(v~, u)| / max"
    selected: bool = True


Candidate = RowCandidate | FeatureCandidate


LISTED_ROWS = 256  # candidate rows a method lists (the most changed first)


ABLATE_LAYERS = (2, 3, 4, 5, 6, 7, 8)  # on the 18-layer reference model


@dataclass(frozen=True)
class AblateConfig:
    """'ablate': zero the value vectors with the largest concept-vs-neutral contrast."""

    n_rows: int = 256  # rows zeroed
    runners_up: int = 32  # unselected rows listed after the selected ones
    layers: tuple[int, ...] | None = None  # None = ABLATE_LAYERS at this model's depth (models/depth.py)


@dataclass(frozen=True)
class ProjectConfig:
    """'project': the concept's difference of means at `layer`'s MLP, projected out of the W_out
    rows of layers `first_layer`..`layer` that align with it (|cos| >= tau x the largest).
    None = 6 and 2 of the 18-layer reference model, at this model's depth (models/depth.py)."""

    layer: int | None = None
    first_layer: int | None = None
    tau: float = 0.5

    def layers_for(self, n_layers: int) -> list[int]:
        """The projected layers on an `n_layers` model; the direction is taken at the last."""
        last = fit_layers(None if self.layer is None else (self.layer,), (6,), n_layers)[0]
        first = fit_layers(None if self.first_layer is None else (self.first_layer,), (2,), n_layers)[0]
        return list(range(min(first, last), last + 1))


@dataclass(frozen=True)
class PiscesConfig:
    """'pisces' (closed-form removal, tau x mu search) and 'pisces-rows' (the SAE features' rows as
    the rows of the localized optimisation; their number is OptimiseConfig.n_rows)."""

    layer: int | None = None  # the layer of the local SAE; None = the default SAE layer at this model's depth
    site: str | None = None  # SAE site; None = the newest local SAE of the layer
    sae_id: str | None = None  # a specific local SAE folder
    min_target_prob: float = 0.05  # fact tokens the base model predicts at least this likely
    n_candidates: int = 8  # 'pisces': candidate features shown
    n_select: int = 4  # 'pisces': features removed by default
    taus: tuple[float, ...] = (0.9, 0.7, 0.5)  # 'pisces': the search grid
    mus: tuple[float, ...] = (8.0, 16.0, 32.0)
    n_features: int = 16  # 'pisces-rows': features by contrast on the fact set
    row_tau: float = 0.5  # 'pisces-rows': tau rule for a feature's rows

    def layer_for(self, n_layers: int) -> int:
        """The SAE layer on a model of `n_layers` layers."""
        return self.layer if self.layer is not None else default_sae_layer(n_layers)


@dataclass(frozen=True)
class EraseOptions:
    """Knobs of the pipeline; defaults are what the CLI and app use."""

    # One config per method, no knob twice: steps and rows of the optimise methods live in
    # OptimiseConfig (the method sets its target), the rest in the method's own config.
    optimise: OptimiseConfig | None = None  # optimise, optimise-*, rewrite-optimise, pisces-rows; None = defaults
    rewrite: RewriteConfig | None = None  # 'rewrite' and 'rewrite-optimise'; None = RewriteConfig()
    ablate: AblateConfig = field(default_factory=AblateConfig)
    project: ProjectConfig = field(default_factory=ProjectConfig)
    pisces: PiscesConfig = field(default_factory=PiscesConfig)  # 'pisces' and 'pisces-rows'
    rmu: RmuConfig = field(default_factory=RmuConfig)  # 'rmu' (methods/rmu.py)
    elm: ElmConfig = field(default_factory=ElmConfig)  # 'elm' (methods/elm.py)
    saes_dir: Path | None = None  # where the pisces methods find their SAE; None = Settings.from_env().saes_dir
    score: bool = True  # run the scorecard (evaluate) at the end
    eval_options: EvalOptions = field(default_factory=EvalOptions)  # its chat_template: set from the one below
    # Instruct models: the model's own fact samples (when erase builds the fact set) and the
    # scorecard's generations go through the tokenizer's chat template (models/chat.py); recorded
    # in the spec. The one knob for both: erase sets eval_options.chat_template from it.
    chat_template: bool = False


DEFAULT_OPTIONS = EraseOptions()  # frozen: one shared default


def erase_options(method: str, *, steps: int | None = None, score: bool = True, relearn: bool = False,
                  chat_template: bool = False, saes_dir: Path | None = None) -> EraseOptions:
    """The EraseOptions of the few settings a person picks (the Erase page's controls, the
    `erase` and `compare` CLI flags): `steps` of the localized optimisation for a method that
    optimises (ignored by the others, which keep their own configs), the scorecard and its
    relearning test, the chat template, where the pisces methods find their SAE."""
    from workbench.benchmark.relearn import RelearnConfig

    registered = METHODS.get(method)
    optimise = OptimiseConfig(steps=int(steps)) if steps is not None and registered and registered.optimises else None
    return EraseOptions(optimise=optimise, saes_dir=saes_dir, score=score, chat_template=chat_template,
                        eval_options=EvalOptions(relearn=RelearnConfig() if relearn else None))


@dataclass
class MethodRun:
    operations: list[Any]
    payload: dict[str, torch.Tensor] = field(default_factory=dict)
    candidates: list[Any] = field(default_factory=list)
    sae: SaeRef | None = None
    sae_loader: Callable[[SaeRef, int], Any] | None = None
    grid: list[dict[str, float]] = field(default_factory=list)


@dataclass
class EraseResult:
    spec: EditSpec
    payload: dict[str, torch.Tensor]  # safetensors payload of the spec ({} for weight-free ops)
    fact_set: FactSet
    candidates: list[Any]  # RowCandidate or FeatureCandidate rows, selected first
    scorecard: Scorecard | None
    grid: list[dict[str, float]] = field(default_factory=list)  # PISCES tau x mu search
    seconds: float = 0.0  # all of it: the fact set when erase built it, the method, the scorecard
    edit_seconds: float = 0.0  # the method alone (what `python -m workbench compare` and the page compare)
    score_seconds: float = 0.0  # the scorecard (and its relearning test); 0 without one

    def candidate_rows(self) -> list[dict[str, Any]]:
        """The candidate table as plain dicts (UI tables, JSON)."""
        from dataclasses import asdict

        return [asdict(c) for c in self.candidates]


MethodFn = Callable[[ModelBundle, Corpus, FactSet, EraseOptions, Progress], MethodRun]


def _optimise_target(target: Target) -> MethodFn:
    def run(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
        return _optimise(bundle, corpus, facts, opts, progress, target)

    return run


def _delta_candidates(bundle: ModelBundle, rows: dict[int, list[int]], deltas: dict[int, torch.Tensor],
                      limit: int | None = LISTED_ROWS) -> list[RowCandidate]:
    """The rows the deltas changed, most changed first relative to their value vector (the first
    `limit`; None: all)."""
    candidates = []
    for layer, idx in rows.items():
        v = layout.w_out(bundle.hf_model, layer).detach().float()[idx]  # [r, d]
        rel = deltas[layer].float().norm(dim=1) / v.norm(dim=1).clamp_min(1e-12)  # [r]
        candidates += [RowCandidate(layer, i, float(s), "|delta| / |v|") for i, s in zip(idx, rel.tolist(), strict=True)]
    candidates.sort(key=lambda c: -c.score)
    return candidates[:limit]


def _optimise(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress,
              target: Target = "both", rows: dict[int, list[int]] | None = None) -> MethodRun:
    # the method decides the target; opts.optimise carries every other setting
    cfg = replace(METHODS["optimise"].config_of(opts).fitted(bundle.n_layers), target=target)
    result = optimise_value_vectors(bundle, facts, corpus, cfg, rows=rows, progress=progress)
    op, payload = to_operation(result, cfg)
    return MethodRun([op], payload, _delta_candidates(bundle, result.rows, result.deltas, limit=None))


def _rewrite_cf(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    """'rewrite' with the counterfactual desired outputs and the neighbour names' keys kept
    (REWRITE_CF, or opts.rewrite with its target set to the counterfactual)."""
    cfg = METHODS["rewrite-cf"].config_of(opts)
    return _rewrite(bundle, corpus, facts, replace(opts, rewrite=replace(cfg, target="counterfactual")), progress)


def _rewrite(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    cfg = METHODS["rewrite"].config_of(opts)
    result, solves = rewrite_name_key(bundle, facts, corpus, cfg, progress)
    op, payload = to_operation(result, cfg, prefix="rewrite")
    candidates = []
    for layer, idx in result.rows.items():
        v = layout.w_out(bundle.hf_model, layer).detach().float()[idx]  # [m, d]
        rel = result.deltas[layer].float().norm(dim=1) / v.norm(dim=1).clamp_min(1e-12)  # [m]
        solve = next(s for s in solves if s.layer == layer)
        evidence = (f"|delta| / |v| (lam {solve.lam:g}; name's distance to made-up names "
                    f"{solve.remaining_before:.2f} -> {solve.remaining_after:.2f})")
        top = rel.argsort(descending=True)[:LISTED_ROWS].tolist()
        candidates += [RowCandidate(layer, idx[i], float(rel[i]), evidence) for i in top]
    candidates.sort(key=lambda c: -c.score)
    return MethodRun([op], payload, candidates[:LISTED_ROWS])  # the most changed rows of all layers


def _rewrite_optimise(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions,
                      progress: Progress) -> MethodRun:
    """'rewrite', then 'optimise' trained on top of it (its KL anchors to the rewritten model):
    the rewrite removes who the name is, the optimisation the facts the name's removal left."""
    from workbench.methods.key_rewrite import full_layer_deltas

    first = _rewrite(bundle, corpus, facts, opts, progress)
    deltas = {t.layer: first.payload[t.delta] for t in first.operations[0].targets}
    with full_layer_deltas(bundle, deltas):
        second = _optimise(bundle, corpus, facts, opts, progress)
    return MethodRun([*first.operations, *second.operations], {**first.payload, **second.payload},
                     [*second.candidates, *first.candidates])


def _pisces_rows(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions,
                 progress: Progress) -> MethodRun:
    from workbench.config import Settings
    from workbench.methods.pisces_search import sae_feature_rows

    saes_dir = opts.saes_dir or Settings.from_env().saes_dir
    progress.stage("SAE features by contrast on the fact set -> their W_out rows (tau rule)")
    p = opts.pisces
    rows, features = sae_feature_rows(bundle, corpus, facts, saes_dir, layer=p.layer_for(bundle.n_layers), n_features=p.n_features,
                                      tau=p.row_tau, max_rows=(opts.optimise or OptimiseConfig()).n_rows,
                                      min_target_prob=p.min_target_prob, site=p.site, sae_id=p.sae_id)
    run = _optimise(bundle, corpus, facts, opts, progress, "both", rows)
    run.candidates = [*sorted(features, key=lambda c: not c.selected), *run.candidates]
    return run


def _ablate(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    layers = list(fit_layers(opts.ablate.layers, ABLATE_LAYERS, bundle.n_layers))
    retain_cfg = RetainConfig()
    progress.stage("ablate: activation contrast, concept vs neutral text")
    retain = [d.text for d in retain_documents(corpus, facts, retain_cfg)]
    n_mean, n_std = mlp_hidden_means(bundle, retain, layers, retain_cfg.max_len)
    c_mean, _ = mlp_hidden_means(bundle, facts.texts(), layers, retain_cfg.max_len)
    n_rows = opts.ablate.n_rows
    scores = contrast_rows(c_mean, n_mean, n_std)
    flat = sorted(((float(s), layer, i) for layer, z in scores.items() for i, s in enumerate(z.tolist())), reverse=True)
    candidates = [RowCandidate(layer, i, s, "contrast z", selected=k < n_rows)
                  for k, (s, layer, i) in enumerate(flat[: n_rows + opts.ablate.runners_up])]
    rows: dict[int, list[int]] = {}
    for c in candidates:
        if c.selected:
            rows.setdefault(c.layer, []).append(c.neuron)
    ops = [AblateValueVectors(layer=layer, neurons=sorted(idx), mode="zero") for layer, idx in sorted(rows.items())]
    return MethodRun(ops, candidates=candidates)


def _project(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    retain_cfg, p = RetainConfig(), opts.project
    layers = p.layers_for(bundle.n_layers)
    layer = layers[-1]
    progress.stage("project: difference of means, concept vs neutral text")
    neutral = [d.text for d in retain_documents(corpus, facts, retain_cfg)]
    c_mean, _ = mlp_hidden_means(bundle, facts.texts(), [layer], retain_cfg.max_len)
    n_mean, _ = mlp_hidden_means(bundle, neutral, [layer], retain_cfg.max_len)
    u = (c_mean[layer] - n_mean[layer]) @ layout.w_out(bundle.hf_model, layer).detach().float()  # [d_model]
    u = u / u.norm()
    candidates = []
    for lay in layers:  # the rows project_out will edit: |cos(gamma * v_i, u)| >= tau * max
        vt = layout.w_out(bundle.hf_model, lay).detach().float() * layout.post_ffn_gain(bundle.hf_model, lay)  # [m, d]
        cos = (vt @ u).abs() / vt.norm(dim=1).clamp_min(1e-12)  # [m]
        rel = cos / cos.max()
        candidates += [RowCandidate(lay, int(i), float(rel[i]), "|cos(v~, u)| / max") for i in
                       torch.nonzero(rel >= p.tau).flatten().tolist()]
    candidates.sort(key=lambda c: -c.score)
    op = ProjectOutDirection(layers=layers, direction=u.tolist(), alpha=1.0, tau=p.tau)
    return MethodRun([op], candidates=candidates)


def _pisces(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    from workbench.config import Settings
    from workbench.methods.pisces_search import pisces_erase
    from workbench.sae.sources import spec_sae_loader

    saes_dir = opts.saes_dir or Settings.from_env().saes_dir
    p = opts.pisces
    result = pisces_erase(bundle, corpus, facts, saes_dir, layer=p.layer_for(bundle.n_layers), n_candidates=p.n_candidates,
                          n_select=p.n_select, taus=p.taus, mus=p.mus, min_target_prob=p.min_target_prob,
                          site=p.site, sae_id=p.sae_id, progress=progress)
    candidates = sorted(result.candidates, key=lambda c: (not c.selected, c.removal_effect))
    return MethodRun(list(result.spec.operations), candidates=candidates, sae=result.spec.sae,
                     sae_loader=spec_sae_loader(saes_dir), grid=result.grid)


# ---------------------------------------------------------------- strength knobs
# What the per-concept strength search (methods/strength.py) raises for each method, `level`
# times the method's default strength: the optimisation's steps for the optimise family, the key
# rewrite's acceptance threshold `max_remaining` (a smaller remaining distance to made-up names
# takes a smaller, stronger lam), rewrite-cf's lam itself (divided by the level), the number of
# zeroed rows for 'ablate'.
def _times(n: int, level: float) -> int:
    """`n` (steps, rows) at `level` times, at least 1."""
    return max(1, round(n * level))


def _more_steps(opts: EraseOptions, level: float) -> EraseOptions:
    cfg = METHODS["optimise"].config_of(opts)
    return replace(opts, optimise=replace(cfg, steps=_times(cfg.steps, level)))


def _smaller_remaining(opts: EraseOptions, level: float) -> EraseOptions:
    cfg = opts.rewrite or RewriteConfig()
    return replace(opts, rewrite=replace(cfg, max_remaining=cfg.max_remaining / level))


def _smaller_lams(method: str) -> Callable[[EraseOptions, float], EraseOptions]:
    """The knob of a rewrite method whose lams are tried in turn: every lam divided by the level,
    on the method's own config (rewrite-cf's REWRITE_CF, rewrite-null's REWRITE_NULL)."""
    def scale(opts: EraseOptions, level: float) -> EraseOptions:
        cfg = METHODS[method].config_of(opts)
        return replace(opts, rewrite=replace(cfg, lams=tuple(lam / level for lam in cfg.lams)))

    return scale


def _more_rows(opts: EraseOptions, level: float) -> EraseOptions:
    return replace(opts, ablate=replace(opts.ablate, n_rows=_times(opts.ablate.n_rows, level)))


STEPS = StrengthKnob("optimisation steps", _more_steps)
REWRITE_REMAINING = StrengthKnob("1 / max_remaining", _smaller_remaining)
REWRITE_LAM = StrengthKnob("1 / lam", _smaller_lams("rewrite-cf"))
ABLATE_ROWS = StrengthKnob("rows zeroed", _more_rows)


# ---------------------------------------------------------------- the methods
# One `register` call per method (registry.py): its function, the Erase page's label and
# description ({placeholders} filled from the configs by ui.erase.config_numbers; the measured
# numbers come from the results file), what it needs and the knob the strength search raises.
# Registration order is the order of the page's options, the CLI's choices and `bench --all`.
# name-dep = prompts that need the concept's name; base is 1.00 on every prompt of the benchmark.
register(Method(
    "optimise", _optimise, "Localized optimisation (default)",
    "Optimises additive deltas on {rows} value vectors (layers {optimise_layers}) so the concept's facts become "
    "unlikely and its name stops looking like itself, with a KL penalty on neutral, neighbour and "
    "'collision' text. Holds every control on the most concepts of any method; broad concepts "
    "(countries, sports) are barely erased and same-genre places lose neighbours. ~4 min of "
    "optimisation + ~1 min scorecard on 2 idle CPU cores.", optimises=True, strength=STEPS,
    config="optimise", default_config=OptimiseConfig()))
register(Method(
    "pisces", _pisces, "PISCES (SAE features, closed form)",
    "Removes SAE features of the value vectors in parameter space with the tau/mu rule and a small "
    "tau x mu search. Needs a local SAE of layer {sae_layer} (Home → Train an SAE). Not specific with our 270M "
    "SAE: it costs general prompts and perplexity.", needs_sae=True, config="pisces"))
register(Method(
    "ablate", _ablate, "Zero contrast-ranked value vectors",
    "Zeroes the {ablate_rows} W_out rows that fire most on the concept vs neutral text (ConceptVectors-style). "
    "Fast (seconds) but weak.", strength=ABLATE_ROWS, config="ablate"))
register(Method(
    "project", _project, "Project out the concept direction",
    "Removes the difference-of-means direction from W_out rows of layers {project_layers}. Weak and costly in "
    "perplexity.", config="project"))
register(Method(
    "optimise-facts", _optimise_target("facts"), "Localized optimisation, fact target only",
    "Only the unlikelihood on the fact set (no representation target): the facts' answer words are "
    "also the neighbours', so neighbours suffer.", optimises=True, strength=STEPS,
    config="optimise", default_config=OptimiseConfig()))
register(Method(
    "optimise-repr", _optimise_target("representation"), "Localized optimisation, representation target only",
    "Only 'make the name look like made-up names' (no fact list): keeps every control but erases "
    "little.", optimises=True, strength=STEPS, config="optimise", default_config=OptimiseConfig()))
register(Method(
    "optimise-cf", _optimise_target("counterfactual"), "Localized optimisation, counterfactual-name target",
    "Trains the same value vectors so that, on text about the concept, the model's next-token "
    "distributions after the name match its own distributions with made-up names of the same kind "
    "(\"never heard of X\"), with other same-topic names in the retain set; no unlikelihood on answer "
    "words.", optimises=True, strength=STEPS, config="optimise", default_config=OptimiseConfig()))
register(Method(
    "pisces-rows", _pisces_rows, "SAE feature rows + localized optimisation",
    "PISCES's selection (SAE features that fire on the fact set; their W_out rows by the tau rule) "
    "as the rows the localized optimisation edits. Keeps neighbours and perplexity but erases less "
    "than the contrast rows. Needs a local SAE of layer {sae_layer}.", needs_sae=True, optimises=True,
    strength=STEPS, config="pisces"))
register(Method(
    "rewrite", _rewrite, "Key rewrite (closed form, MEMIT-style)",
    "Rewrites MLPs {rewrite_layers} so the residual at the concept name looks like that of made-up names of the "
    "same kind; no fact list needed. Reaches broad concepts the optimisation misses and keeps "
    "neighbours, but costs general prompts; cue-answerable prompts stay. Every row of the {n_rewrite_layers} layers "
    "changes. ~4 min.", strength=REWRITE_REMAINING, config="rewrite", default_config=RewriteConfig()))
register(Method(
    "rewrite-optimise", _rewrite_optimise, "Key rewrite + optimisation (strongest, costs neighbours)",
    "The key rewrite below, then the localized optimisation trained on top of it. Comes closest to "
    "the concept goal and resists facts restated in the prompt best, but breaks a control (neighbours, "
    "general prompts) on most concepts. ~7-15 min on 2 CPU cores.", optimises=True, strength=STEPS,
    config="rewrite", default_config=RewriteConfig()))
register(Method(
    "rewrite-cf", _rewrite_cf, "Key rewrite to the counterfactual name",
    "Rewrites MLPs {rewrite_layers} at the concept name so that the model's next-token distributions after the "
    "name match its own with made-up names of the same kind (\"never heard of X\"), while other "
    "names of the same kind (other countries for Japan) keep their keys. Acts on the name, so it "
    "reaches broad concepts (countries, cities, sports); a rank-1 change per layer. ~5 min.",
    strength=REWRITE_LAM, config="rewrite", default_config=REWRITE_CF))


# ---------------------------------------------------------------- baselines from the literature
# RMU and ELM (issue 31), restricted to the W_out of a few consecutive layers: dense (RMU) or
# low-rank (ELM) deltas baked into one OptimiseValueVectors operation each. Their strength knob is
# their own number of training steps.
def _rmu(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    result, cfg, problem = rmu_unlearn(bundle, facts, corpus, opts.rmu, progress)
    op, payload = to_rmu_operation(result, cfg, problem)
    return MethodRun([op], payload, _delta_candidates(bundle, result.rows, result.deltas))


def _elm(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    result, cfg, problem = elm_unlearn(bundle, facts, corpus, opts.elm, progress)
    op, payload = to_elm_operation(result, cfg, problem)
    return MethodRun([op], payload, _delta_candidates(bundle, result.rows, result.deltas))


def _more_rmu_steps(opts: EraseOptions, level: float) -> EraseOptions:
    return replace(opts, rmu=replace(opts.rmu, steps=_times(opts.rmu.steps, level)))


def _more_elm_steps(opts: EraseOptions, level: float) -> EraseOptions:
    return replace(opts, elm=replace(opts.elm, steps=_times(opts.elm.steps, level)))


register(Method(
    "rmu", _rmu, "RMU (representation misdirection, WMDP baseline)",
    "Trains dense deltas on W_out of layers {rmu_layers} so that the residual after layer {rmu_layer} on the "
    "concept's text is pulled toward one fixed random vector, {rmu_scale} times the model's own activation norm there, "
    "while an MSE on neutral and neighbour text holds it in place elsewhere (Li et al., the WMDP paper). "
    "A literature baseline: it scrambles what later layers read on the concept rather than removing "
    "facts, and every row of those layers changes.", strength=StrengthKnob("RMU steps", _more_rmu_steps),
    config="rmu"))
register(Method(
    "elm", _elm, "ELM (erasure of language memory baseline)",
    "Trains rank-{elm_rank} deltas on W_out of layers {elm_layers} toward the model's own next-token "
    "distribution on the concept's text pushed from 'written by an expert on it' toward 'written by someone "
    "who never heard of it', with a KL on neutral and neighbour text and the model's own steered "
    "continuations for fluency (Gandikota et al.). A literature baseline; the slowest of the methods per "
    "step, since every loss reads the full vocabulary.", strength=StrengthKnob("ELM steps", _more_elm_steps),
    config="elm"))



# ---------------------------------------------------------------- the key rewrite in the null space
# AlphaEdit's projection (issue 31, methods/null_space.py): rewrite-cf's desired outputs, solved with the
# change projected off the keys of general corpus text and of the neighbour names, so what those keys
# write cannot move beyond the null space's leak bound. `lams` are the projected solve's relative ridge
# (1 keeps half of the desired output along the keys' shared direction), tried largest first.
REWRITE_NULL = replace(REWRITE_CF, null_space_tokens=100_000, lams=(1.0, 0.1, 0.01))


def _rewrite_null(bundle: ModelBundle, corpus: Corpus, facts: FactSet, opts: EraseOptions,
                  progress: Progress) -> MethodRun:
    """'rewrite-cf' with the null-space-projected solve: REWRITE_NULL, or opts.rewrite with the
    counterfactual target and, if it sets no null_space_tokens, as many preserved tokens as its
    own retain covariance (cov_tokens), so a small test config stays small."""
    cfg = METHODS["rewrite-null"].config_of(opts)
    cfg = replace(cfg, target="counterfactual", null_space_tokens=cfg.null_space_tokens or cfg.cov_tokens)
    return _rewrite(bundle, corpus, facts, replace(opts, rewrite=cfg), progress)


register(Method(
    "rewrite-null", _rewrite_null, "Key rewrite in the null space of general text (AlphaEdit)",
    "The counterfactual key rewrite of MLPs {rewrite_layers}, with each weight change projected onto the "
    "directions that keys of general text (a large corpus sample) and of other names of the same kind "
    "(almost) never take, as AlphaEdit does: what the model writes for ordinary text cannot move beyond "
    "a bound fixed by that projection, instead of being traded against the fit. Acts on the name; a rank-1 "
    "change per layer. The preserved sample is built once per model (minutes), then cached.",
    strength=StrengthKnob("1 / ridge", _smaller_lams("rewrite-null")), config="rewrite", default_config=REWRITE_NULL))

def check_method(bundle: ModelBundle, method: str, options: EraseOptions = DEFAULT_OPTIONS) -> None:
    """Raise the one sentence that says why `method` cannot run on this model, before any work
    starts (the fact set's sampling takes a while): the SAE methods need a local SAE at their
    layer (FileNotFoundError naming the command that trains one). An unknown method passes
    (`erase` names it first)."""
    registered = METHODS.get(method)
    if registered is not None and registered.needs_sae:
        from workbench.config import Settings
        from workbench.methods.pisces_search import find_local_sae

        p = options.pisces
        find_local_sae(options.saes_dir or Settings.from_env().saes_dir, bundle.model_id,
                       p.layer_for(bundle.n_layers), p.site, p.sae_id)


def check_concept(corpus: Corpus, concept: str, *, as_name: bool = False) -> str:
    """How `concept` will be erased: 'article' (a corpus title) or 'name' (a name the corpus has
    no article for: its facts come from the sentences that mention it and from the model's own
    samples). A name that is close to titles raises ValueError naming them, unless `as_name`:
    the user probably means one ('The Legend of Zelda' for 'Zelda')."""
    if not concept.strip():
        raise ValueError("The concept is empty: give a corpus title or a name.")
    if corpus.has(concept):
        return "article"
    close = corpus.close_titles(concept)
    if close and not as_name:
        mentions = len(corpus.containing([concept.strip()]))
        raise ValueError(
            f"The corpus has no article titled {concept!r}. Did you mean: {', '.join(close)}? Erase one of "
            f"those, or erase {concept!r} as a name ({mentions} article(s) mention it; facts from those "
            "sentences and the model's own samples): --as-name on the command line, 'erase as a name' on "
            "the page.")
    return "name"


def erase(
    bundle: ModelBundle,
    corpus: Corpus,
    concept: str,
    method: str = DEFAULT_METHOD,
    progress: Progress = NULL_PROGRESS,
    *,
    fact_set: FactSet | None = None,
    options: EraseOptions = DEFAULT_OPTIONS,
    about: str = "",
    as_name: bool = False,
) -> EraseResult:
    """Erase one concept with one method: a corpus title, or any name (see `check_concept`).

    `fact_set` replaces the built one (the user may have edited it); `about` is a one-line
    description that guides the kind of a name without an article. Raises ValueError with a
    sentence for an unknown method, or for a name that is not a title but close to some
    (unless `as_name`), or for `options.chat_template` on a tokenizer without a chat template."""
    if method not in METHODS:
        raise ValueError(f"Unknown erasure method {method!r}; choose one of {', '.join(METHODS)}.")
    check_method(bundle, method, options)
    check_chat_template(bundle.tokenizer, options.chat_template)
    if fact_set is None:
        how = check_concept(corpus, concept, as_name=as_name)
        if how == "name" and options.score and corpus.mention_document(concept) is None:
            raise ValueError(f"No article of the corpus mentions {concept!r}, so the scorecard has no prompts to "
                             "test the erasure on: run without the scorecard (--no-eval) or give a fact set.")
    t0 = time.perf_counter()
    facts = fact_set or build_fact_set(bundle, corpus, concept, progress=progress, about=about,
                                       chat_template=options.chat_template)
    t_method = time.perf_counter()
    run = METHODS[method].run(bundle, corpus, facts, options, progress)
    t_edit = time.perf_counter()
    spec = EditSpec(
        name=f"erase {facts.concept} ({method})",
        model=ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256),
        sae=run.sae,
        operations=run.operations,
        notes=f"workbench erase --concept {facts.concept!r} --method {method}"
              f"{' --chat-template' if options.chat_template else ''}; {len(facts.facts)} facts",
        chat_template=options.chat_template,
    )
    card = None
    if options.score:
        adapter = compile_spec(spec, bundle, sae_loader=run.sae_loader, payload=run.payload or None)
        card = evaluate(bundle, concept, adapter, corpus=corpus,
                        options=replace(options.eval_options, chat_template=options.chat_template), progress=progress)
    t_end = time.perf_counter()
    return EraseResult(spec=spec, payload=run.payload, fact_set=facts, candidates=run.candidates, scorecard=card,
                       grid=run.grid, seconds=t_end - t0, edit_seconds=t_edit - t_method,
                       score_seconds=t_end - t_edit if card is not None else 0.0)
