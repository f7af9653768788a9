"""Localized optimised edit of value vectors (`optimise_value_vectors`).

Only an additive delta on a few hundred chosen rows of W_out (value vectors) is trained; every
other weight stays frozen. The loss combines
  (a) a fact target: unlikelihood -log(1 - p) on the concept-specific next tokens of the
      concept's fact set (workbench.methods.facts),
  (b) a representation target: at the concept name's last token in many frames, the residual
      after each of `repr_layers` should look like the mean residual of made-up names of the
      same kind in the same frames (removes "who/what the concept is" without a fact list),
  (c) KL(base || edited) of next-token distributions on retain text (neutral extracts,
      neighbouring same-topic articles, and "collision" articles that use the fact target
      words about something else), which keeps everything else. Every retain position whose
      next token is a fact target token is always in the KL: that is where unlearning a word
      would leak into other concepts (e.g. 'France' after 'The Louvre is in Paris,').
and, optionally (`cf_weight` > 0, method `optimise-cf`),
  (d) a counterfactual-name target: on text about the concept (fact sentences, name frames), the
      edited model's next-token distributions at the name's last token and every position after
      it should match the base model's on the same text with the name replaced by made-up names
      of the same kind (what "never heard of X" looks like; the benchmark's floor is measured
      that way), as a cross-entropy to the base's top-k of that distribution; and neighbour
      names (other same-topic titles: other countries for Japan) in the same texts join the
      retain set, so the edit changes what the name means, not the answers' words.
The result is a row-sparse adapter delta on `W_out[rows]` (see docs/methods/optimise.md
for the recipe this follows and what it achieved).

This module holds the config, the problem (everything the loop needs, built once), the training
loop and baking; the parts it is built from live beside it, shared with the other methods:
  frames.py          FRAMES, the name frames and their made-up-name targets (b)
  retain.py          the retain articles, collisions and the per-step retain sample (c)
  counterfactual.py  the counterfactual-name target and its loss (d)
  rows.py            row selection by activation contrast
  losses.py          the fact and representation losses (a, b)
  readout.py         last hidden state, logits at chosen positions, residuals after layers
"""

from __future__ import annotations

import math
import random
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

import torch

from workbench.adapters.routing import DownProjEdit, down_proj_edits
from workbench.corpus import Corpus, Document
from workbench.methods.counterfactual import (
    CounterfactualBatch,
    build_counterfactual,
    counterfactual_cross_entropy,
    counterfactual_loss,
    counterfactual_texts,
    neighbour_name_texts,
)
from workbench.methods.facts import FactSet, FactTargets, fact_targets, split_sentences
from workbench.methods.frames import (
    FRAMES,
    FrameBatch,
    FramesConfig,
    build_frames,
    last_name_position,
    name_frames,
)
from workbench.methods.losses import repr_loss, target_prob, unlikelihood
from workbench.methods.readout import final_hidden, logits_at, residuals_after, selected_logits
from workbench.methods.retain import (
    RetainConfig,
    collision_documents,
    collision_mask,
    retain_documents,
    retain_split,
    sample_retain_positions,
    sample_retain_texts,
)
from workbench.methods.rows import contrast_rows, mlp_hidden_means, select_rows, top_rows
from workbench.models import ModelBundle, layout
from workbench.models.depth import fit_layers
from workbench.progress import NULL_PROGRESS, Progress

# This module's names and, re-exported, those that lived here before the split into the modules
# beside it (frames, retain, counterfactual, rows, losses, readout), so existing imports still work.
__all__ = [
    "DEFAULT_LAYERS", "DEFAULT_REPR_LAYERS", "FRAMES", "CounterfactualBatch", "DownProjEdit", "FrameBatch",
    "FramesConfig", "OptimiseConfig", "OptimiseProblem", "OptimiseResult", "RetainConfig", "Target", "bake",
    "build_counterfactual", "build_frames", "collision_documents", "collision_mask", "contrast_rows",
    "counterfactual_cross_entropy", "counterfactual_loss", "counterfactual_texts", "delta_hooks", "down_proj_edits",
    "final_hidden", "last_name_position", "logits_at", "loss_terms", "mlp_hidden_means", "name_frames",
    "neighbour_name_texts", "optimise_value_vectors", "prepare_problem", "residuals_after", "retain_documents",
    "retain_split", "select_rows", "selected_logits", "to_operation", "top_rows",
]

Target = Literal["facts", "representation", "both", "counterfactual"]

DEFAULT_LAYERS = (1, 2, 3, 4, 5, 6, 7, 8)  # W_out layers edited, on the 18-layer reference model
DEFAULT_REPR_LAYERS = (8,)  # residual target layer, on the reference model


@dataclass(frozen=True)
class OptimiseConfig:
    """Defaults follow the recipe in docs/methods/optimise.md. Layers are stated on the 18-layer
    reference model; `fitted` places them at the same depth of the model in hand. The retain
    articles and the made-up/neighbour-name settings are the shared `retain` and `frames` configs."""

    target: Target = "both"
    # None = DEFAULT_LAYERS / DEFAULT_REPR_LAYERS at this model's depth (`fitted`); layers given
    # explicitly are taken as they are
    layers: tuple[int, ...] | None = None
    n_rows: int = 256
    # 40: 24 steps reach the same held-out target probability in 0.67x the time, but lost a tier on
    # 3 of 8 dev concepts (docs/methods/optimise.md, "Making it faster")
    steps: int = 40
    lr_scale: float = 0.025  # lr = lr_scale * mean row norm / sqrt(d_model)
    fact_weight: float = 1.0
    repr_weight: float = 1.0
    kl_weight: float = 3.0
    repr_layers: tuple[int, ...] | None = None  # residuals (after these layers) pulled to made-up names
    min_target_prob: float = 0.05
    concept_batch: int = 4
    frame_batch: int = 8
    retain_batch: int = 8
    retain_positions: int = 12  # per retain text per step
    val_fraction: float = 0.2
    eval_every: int = 5
    patience: int = 3
    collision_share: float = 0.5  # of each retain batch, texts that contain a collision (retain.n_collisions)
    cf_weight: float = 0.0  # (d) counterfactual-name target beside the others; target 'counterfactual' = (d) alone
    seed: int = 0  # the training's own randomness: batches, the held-out facts
    retain: RetainConfig = field(default_factory=RetainConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)

    def fitted(self, n_layers: int) -> OptimiseConfig:
        """The recipe on a model of `n_layers` layers, with every layer set: the defaults (stated
        on the 18-layer reference model) at the same relative depth (models/depth.py), given
        layers as they are (those past the model's last layer dropped)."""
        return replace(self, layers=fit_layers(self.layers, DEFAULT_LAYERS, n_layers),
                       repr_layers=fit_layers(self.repr_layers, DEFAULT_REPR_LAYERS, n_layers, clip=True))


@dataclass
class OptimiseResult:
    rows: dict[int, list[int]]  # layer -> neuron ids
    deltas: dict[int, torch.Tensor]  # layer -> [n_rows_layer, d_model], added to W_out rows
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def n_weights(self) -> int:
        return sum(d.numel() for d in self.deltas.values())


def delta_hooks(bundle: ModelBundle, rows: dict[int, list[int]], deltas: dict[int, torch.Tensor]) -> AbstractContextManager[None]:
    """Adds h[..., rows] @ delta to each chosen layer's down_proj output: the same as adding
    delta to those W_out rows, but differentiable in delta, free to remove and seen by this
    thread's forward passes only (an erase job trains while other users preview)."""
    def add_rows(index: torch.Tensor, delta: torch.Tensor) -> DownProjEdit:
        return lambda h, out: out + h[..., index] @ delta

    edits = {layer: add_rows(torch.tensor(idx, dtype=torch.long), deltas[layer]) for layer, idx in rows.items()}
    return down_proj_edits(bundle, edits)


# -- the problem -----------------------------------------------------------------------------------
@dataclass
class OptimiseProblem:
    """Everything the training loop needs, built once: the fact targets, the made-up-name
    frames, the retain texts (tokenised) with their collision positions, and the rows."""

    rows: dict[int, list[int]]  # layer -> neuron ids whose W_out rows get a delta
    targets: FactTargets | None  # unlikelihood targets (target 'facts' or 'both')
    frames: FrameBatch | None  # representation frames (target 'representation' or 'both')
    fact_train: list[int]
    fact_val: list[int]
    retain_enc: Any  # tokenizer output of the retain texts: input_ids, attention_mask [n, pos]
    collide: torch.Tensor  # [n, pos] bool: positions whose next token is a fact target token
    colliding: list[int]  # retain texts with a collision position
    plain: list[int]  # the others
    lr: float
    counterfactual: CounterfactualBatch | None = None  # target (d), when cf_weight > 0


def prepare_problem(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: OptimiseConfig,
                    rows: dict[int, list[int]] | None, progress: Progress) -> OptimiseProblem:
    """Targets, frames, retain set and rows (activation contrast unless given), and the step size."""
    if not facts.facts:
        raise ValueError("The fact set is empty: add facts before optimising.")
    if cfg.layers is None or cfg.repr_layers is None:
        raise ValueError("The optimisation's layers are unset: pass cfg.fitted(bundle.n_layers).")
    layers, repr_layers = cfg.layers, cfg.repr_layers
    for layer in layers:
        bundle.check_layer(layer)
    progress.stage("preparing targets and retain set", total=None)
    max_len = cfg.retain.max_len
    targets = fact_targets(bundle, facts, corpus, max_len, min_prob=cfg.min_target_prob) \
        if cfg.target in ("facts", "both") else None
    target_ids = sorted({int(t) for t in targets.targets[targets.targets >= 0].tolist()}) if targets else []
    neighbours, retain = _retain_articles(bundle, facts, corpus, cfg.retain, target_ids)
    retain_texts = [s for d in retain for s in split_sentences(d.text)[:3]] or [d.text for d in retain]
    counterfactual = None
    if cfg.target == "counterfactual" or cfg.cf_weight > 0:
        progress.message("counterfactual target: the base model on the texts with made-up names")
        counterfactual = build_counterfactual(bundle, facts, cfg.frames, max_len)
        if counterfactual is None:
            raise ValueError(f"No text about {facts.name!r} aligns with made-up names; add facts that name it.")
        retain_texts += neighbour_name_texts(facts, neighbours, cfg.frames.n_neighbour_names)
    frames = build_frames(bundle, facts, repr_layers, max_len) if cfg.target in ("representation", "both") else None
    if rows is None:
        progress.message("selecting rows by activation contrast")
        rows = select_rows(bundle, facts, retain, frames, target=cfg.target, layers=layers, n_rows=cfg.n_rows,
                           max_len=max_len)
    for layer, idx in rows.items():
        bundle.check_layer(layer)
        bundle.check_neurons(idx)
    norms = torch.cat([layout.w_out(bundle.hf_model, layer).detach()[idx].norm(dim=1) for layer, idx in rows.items()])
    fact_train, fact_val = _split_facts(targets, cfg.val_fraction, cfg.seed) if targets is not None else ([], [])
    retain_enc = bundle.tokenizer(retain_texts, return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_len, padding_side="right")
    collide = collision_mask(retain_enc["input_ids"], retain_enc["attention_mask"], target_ids)  # [n, pos]
    has_collision = collide.any(dim=1).tolist()  # [n]
    problem = OptimiseProblem(
        rows=rows, targets=targets, frames=frames, fact_train=fact_train, fact_val=fact_val,
        retain_enc=retain_enc, collide=collide,
        colliding=[i for i, hit in enumerate(has_collision) if hit],
        plain=[i for i, hit in enumerate(has_collision) if not hit],
        lr=cfg.lr_scale * float(norms.mean()) / math.sqrt(bundle.d_model),
        counterfactual=counterfactual,
    )
    progress.message(f"retain: {len(retain_texts)} texts, {len(problem.colliding)} with {int(collide.sum())} "
                     f"target-token positions")
    return problem


def _retain_articles(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: RetainConfig,
                     target_ids: list[int]) -> tuple[list[Document], list[Document]]:
    """(neighbours, every retain article): neighbours, neutral extracts, then the collision
    articles of the fact target tokens."""
    neighbours, neutral = retain_split(corpus, facts, cfg)
    retain = neighbours + neutral
    retain += collision_documents(corpus, facts, bundle.tokenizer, target_ids, cfg, exclude={d.doc_id for d in retain})
    return neighbours, retain


def _split_facts(targets: FactTargets, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    with_targets = [i for i in range(len(targets.targets)) if (targets.targets[i] >= 0).any()]
    if not with_targets:
        raise ValueError(
            "No fact has a concept-specific next token that the base model predicts; add facts "
            "(e.g. sentences naming the concept's people, places and events)."
        )
    rng = random.Random(seed)
    rng.shuffle(with_targets)
    n_val = int(len(with_targets) * val_fraction) if len(with_targets) >= 5 else 0
    return with_targets[n_val:], with_targets[:n_val] or with_targets[:1]


# -- the loop --------------------------------------------------------------------------------------
def loss_terms(bundle: ModelBundle, problem: OptimiseProblem, cfg: OptimiseConfig, rng: random.Random,
               deltas: dict[int, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss = fact_weight * unlikelihood + repr_weight * representation + kl_weight * KL
    on retain positions (the base's own distribution there), with the deltas hooked in."""
    logs: dict[str, float] = {}
    loss = torch.zeros(())
    pick = sample_retain_texts(problem.colliding, problem.plain, cfg.retain_batch, cfg.collision_share, rng)
    r_ids, r_mask = sample_retain_positions(problem.retain_enc, pick, cfg.retain_positions, rng, problem.collide)
    with torch.no_grad():
        base_logp = selected_logits(bundle, r_ids, r_mask).log_softmax(-1)
    with torch.enable_grad(), delta_hooks(bundle, problem.rows, deltas):
        if problem.targets is not None and problem.fact_train:
            pick = rng.sample(problem.fact_train, min(cfg.concept_batch, len(problem.fact_train)))
            ul = unlikelihood(bundle, problem.targets, pick)
            loss = loss + cfg.fact_weight * ul
            logs["unlikelihood"] = ul.item()
        if problem.frames is not None:
            pick = rng.sample(range(len(problem.frames.last)), min(cfg.frame_batch, len(problem.frames.last)))
            rl = repr_loss(bundle, problem.frames, pick)
            loss = loss + cfg.repr_weight * rl
            logs["repr"] = rl.item()
        cf = problem.counterfactual
        if cf is not None:
            pick = rng.sample(range(len(cf.input_ids)), min(cfg.frames.cf_batch, len(cf.input_ids)))
            cl = counterfactual_loss(bundle, cf, pick)
            loss = loss + (cfg.cf_weight or 1.0) * cl
            logs["counterfactual"] = cl.item()
        edited_logp = selected_logits(bundle, r_ids, r_mask).log_softmax(-1)
        kl = (base_logp.exp() * (base_logp - edited_logp)).sum(-1).mean()
        loss = loss + cfg.kl_weight * kl
        logs["kl"] = kl.item()
    return loss, logs


def optimise_value_vectors(
    bundle: ModelBundle,
    facts: FactSet,
    corpus: Corpus,
    cfg: OptimiseConfig = OptimiseConfig(),
    rows: dict[int, list[int]] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> OptimiseResult:
    """Train additive deltas on the chosen W_out rows (see module docstring). `rows` defaults
    to activation-contrast selection; any selection (SAE feature rows by the tau rule, a
    hand-picked list) can be passed instead. Stops early when the held-out facts' target
    probability stops falling (cfg.patience evaluations) or drops below 0.005."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    problem = prepare_problem(bundle, facts, corpus, cfg, rows, progress)
    deltas = {layer: torch.zeros(len(idx), bundle.d_model, requires_grad=True) for layer, idx in problem.rows.items()}
    opt = torch.optim.Adam(list(deltas.values()), lr=problem.lr)
    history: list[dict[str, float]] = []
    best_val, bad_evals, stopped = float("inf"), 0, False
    n_rows = sum(len(v) for v in problem.rows.values())
    progress.stage(f"optimising {n_rows} value vectors", total=cfg.steps, unit="step")
    for step in range(cfg.steps):
        opt.zero_grad()
        loss, logs = loss_terms(bundle, problem, cfg, rng, deltas)
        with torch.enable_grad():
            loss.backward()
        opt.step()
        logs = {"step": float(step), **logs, "loss": loss.item()}
        if problem.targets is not None and problem.fact_val and ((step + 1) % cfg.eval_every == 0
                                                                 or step == cfg.steps - 1):
            with torch.no_grad(), delta_hooks(bundle, problem.rows, deltas):
                val = float(target_prob(bundle, problem.targets, problem.fact_val))
            logs["val_target_prob"] = val
            best_val, bad_evals = (val, 0) if val < best_val - 1e-4 else (best_val, bad_evals + 1)
            stopped = bad_evals >= cfg.patience or val < 0.005
        history.append(logs)
        progress.advance(1, **{k: v for k, v in logs.items() if k != "step"})
        if stopped:
            break
    return OptimiseResult(rows=problem.rows, deltas={k: v.detach().clone() for k, v in deltas.items()},
                          history=history, seconds=time.perf_counter() - t0, stopped_early=stopped)


# -- baking ----------------------------------------------------------------------------------------
def bake(bundle: ModelBundle, result: OptimiseResult) -> dict[str, torch.Tensor]:
    """Replacement output-projection weights (HF names, stored orientation) with the deltas
    added to the chosen rows of W_out."""
    out = {}
    for layer, idx in result.rows.items():
        w = layout.w_out(bundle.hf_model, layer).detach().clone()  # [d_mlp, d_model]
        w[torch.tensor(idx)] += result.deltas[layer].to(w.dtype)
        out[layout.out_proj_name(bundle.hf_model, layer)] = layout.w_out_to_storage(bundle.hf_model, w).contiguous()
    return out


def config_params(cfg: Any) -> dict[str, int | float | str | bool]:
    """A config dataclass as flat scalar params: composed configs (`retain`, `frames`) under
    dotted names ('retain.max_len'), anything not a scalar as its str."""
    out: dict[str, int | float | str | bool] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            out.update({f"{f.name}.{k}": v for k, v in config_params(value).items()})
        else:
            out[f.name] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


def to_operation(result: OptimiseResult, cfg: Any, prefix: str = "optimise") -> tuple[Any, dict[str, torch.Tensor]]:
    """The spec operation (OptimiseValueVectors) and its safetensors payload for a result; `cfg`
    (the dataclass config that made it) is recorded in the operation's params (`config_params`),
    and the payload tensors are named '<prefix>.l<layer>.delta' (distinct prefixes let two such
    ops share a spec)."""
    from workbench.edits.spec import OptimiseValueVectors, ValueVectorDelta

    payload = {f"{prefix}.l{layer}.delta": result.deltas[layer].contiguous() for layer in result.rows}
    params = config_params(cfg)
    params.update(steps_run=len(result.history), seconds=round(result.seconds, 1), stopped_early=result.stopped_early)
    op = OptimiseValueVectors(
        targets=[ValueVectorDelta(layer=layer, rows=rows, delta=f"{prefix}.l{layer}.delta")
                 for layer, rows in result.rows.items()],
        params=params,
    )
    return op, payload
