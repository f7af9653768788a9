"""Closed-form rewrite of the concept name's key in one MLP (MEMIT-style), so that after
`repr_layers` the residual at the name looks like that of made-up names of the same kind.

Why (measured, issue 8): replacing the layer-8 residual at the name's last token by the mean
residual of made-up names in the same prompt removes the concept's facts almost completely
("The capital of Japan is" -> p(Tokyo) 0.25 -> 0.00), but only when the match is close: with
30% of the distance left, p(yen) after "The currency of Japan is the" is still 0.36. The
gradient-trained value-vector edit (optimise.py) reaches about that 30% on single-token names
(Japan, Paris) and leaves them answered, so this method solves for the edit instead:

1. keys k_j = h (down_proj input) of layer `layer` at the name's last token in frame j;
2. desired outputs: one vector d per MLP, added to its raw output at the name position in
   every frame, is optimised (forwards up to max(repr_layers)) until the residuals match the
   made-up-name targets; the post-FFN RMSNorm is in the loop, so no division by its
   ill-conditioned gain is needed (per-frame vectors, tried first, learn slowly on minibatches
   and have no reason to carry over to unseen prompts);
3. the weight change that maps every k_j to d_j while moving the layer's output on ordinary
   text as little as possible (C = E[h h^T] over retain text):
       dW = (K^T K + lam * n * C)^-1 K^T D            (W_out: [d_mlp, d_model], h @ W_out)
   the largest `lam` of a short list that still leaves <= `max_remaining` of the distance on the
   frames is kept (the most conservative edit that erases); the search stops early once a
   smaller lam reaches less than the one before it (fitting the frames' keys more exactly then
   generalises worse: on Japan's counterfactual target, lam 300 -> 1 left 0.34 -> 0.52).

With `target="counterfactual"` (method `rewrite-cf`, issue 16) step 2 optimises the desired
outputs against the base's own behaviour on the same texts with made-up names instead: KL of the
edited next-token distributions at the name and every later position to the base's on the
made-up-name text (counterfactual.py's `build_counterfactual`), the full model in the loop. And step 3
keeps the keys of neighbour names (other names of the same kind, in the same frames) where they
are: they join K with a desired change of 0, weighted by `neighbour_key_weight` per key, so the
solve is told which other names the edit must not move, not only the average retain token.

With `null_space_tokens` > 0 (method `rewrite-null`, issue 31) step 3 is AlphaEdit's instead:
the change is projected onto the approximate null space of the keys of a large general sample plus
the neighbour names' keys (null_space.py), dW = P X with X = argmin ||K P X - D||^2 + ridge ||X||^2,
so the outputs for those keys cannot move beyond the projection's leak bound whatever the fit asks
for; `lams` are then the solve's relative ridge, searched with the same accept rule.

The result is an additive delta on every row of each edited W_out, so it travels as an
`optimise_value_vectors` operation with its delta in the safetensors payload, like optimise.py's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from workbench.adapters.routing import DownProjEdit, down_proj_edits
from workbench.config import Settings
from workbench.corpus import Corpus, Document
from workbench.lenses.tokens import pad_id, pad_ids
from workbench.methods.counterfactual import (
    CounterfactualBatch,
    build_counterfactual,
    counterfactual_cross_entropy,
)
from workbench.methods.facts import FactSet, split_sentences
from workbench.methods.frames import FRAMES, FrameBatch, FramesConfig, build_frames, last_name_position
from workbench.methods.null_space import (
    leak_bound,
    null_space_projector,
    preserved_covariances,
    projected_ridge,
    solve_projected,
)
from workbench.methods.optimise import OptimiseResult
from workbench.methods.readout import residuals_after
from workbench.methods.retain import RetainConfig, retain_split
from workbench.models import ModelBundle, layout
from workbench.models.depth import fit_layers
from workbench.models.hooks import capture, mlp_hidden, text_positions
from workbench.progress import NULL_PROGRESS, Progress

RewriteTarget = Literal["representation", "counterfactual"]
DEFAULT_LAYERS = (3, 4, 5, 6, 7)  # MLPs rewritten, on the 18-layer reference model
DEFAULT_REPR_LAYERS = (8,)


@dataclass(frozen=True)
class RewriteConfig:
    """Defaults: rewrite layers 3-7's W_out so the name looks made-up after layer 8 (on the
    18-layer reference model; the same depth on others, see `fitted`). The retain text (key
    covariances, held names) and the made-up/neighbour-name settings (counterfactual target, kept
    keys) are the shared `retain` and `frames` configs."""

    target: RewriteTarget = "representation"  # what the desired outputs are optimised for (see module doc)
    layers: tuple[int, ...] | None = None  # MLPs rewritten together; None = DEFAULT_LAYERS at this depth
    repr_layers: tuple[int, ...] | None = None  # None = DEFAULT_REPR_LAYERS at this depth
    steps: int = 100  # optimisation of the desired outputs d_j
    frame_batch: int = 24  # frames per optimisation step
    lr: float = 0.2  # Adam step, relative to the rms of the MLP output at the name
    output_penalty: float = 1e-5  # ||d_j||^2 / ||o_j||^2 weight (per layer): a tie-breaker only
    lams: tuple[float, ...] = (300.0, 100.0, 30.0, 10.0, 3.0, 1.0)  # tried largest (most conservative) first
    max_remaining: float = 0.15  # sqrt(mean repr loss / mean base repr loss) on the frames to accept a lam
    max_neutral_change: float = 0.03  # sqrt(E||h dW||^2 / E||h W_out||^2) on retain text, per layer
    cov_tokens: int = 16_000  # retain tokens of the key covariance C
    # frames.n_neighbour_names same-topic titles have their keys kept by the solve, each weighted
    # neighbour_key_weight relative to one concept key (0 = off)
    neighbour_key_weight: float = 0.0
    n_other_names: int = 0  # titles of the neutral retain articles (other topics) kept the same way
    # AlphaEdit's null-space projection (method rewrite-null, null_space.py): > 0 projects each weight
    # change off the keys of this many general corpus tokens plus the held names' keys (weighted
    # neighbour_key_weight), and `lams` become the projected solve's relative ridge (projected_ridge)
    null_space_tokens: int = 0
    # eigenvalues below this x the largest span the null space (AlphaEdit's absolute 2e-2, relative to
    # the largest eigenvalue of the embedded model's rewritten layers, lands around this value)
    null_space_threshold: float = 1e-3
    seed: int = 0  # the frame minibatches of the desired-output fit
    retain: RetainConfig = field(default_factory=RetainConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)

    def fitted(self, n_layers: int) -> RewriteConfig:
        """Every layer set for an `n_layers` model: defaults at the same relative depth
        (models/depth.py), given layers as they are, the residual target after the last
        rewritten MLP."""
        layers = fit_layers(self.layers, DEFAULT_LAYERS, n_layers)
        repr_layers = fit_layers(self.repr_layers, DEFAULT_REPR_LAYERS, n_layers, clip=True)
        if max(layers) >= max(repr_layers):
            if max(layers) + 1 < n_layers:
                repr_layers = (max(layers) + 1,)
            else:  # a model too shallow for both: rewrite below the target layer
                layers = tuple(layer for layer in layers if layer < n_layers - 1) or (max(0, n_layers - 2),)
                repr_layers = (n_layers - 1,)
        return replace(self, layers=layers, repr_layers=repr_layers)


@dataclass
class LayerSolve:
    """What the closed form did at one layer (for the candidate table and the bench)."""

    layer: int
    lam: float
    remaining_before: float  # sqrt(mean repr loss / mean base repr loss) before the edit (1.0)
    remaining_desired: float  # with the optimised d_j added exactly
    remaining_after: float  # with the solved weight change
    output_change_neutral: float  # mean ||h dW|| / ||h W_out|| on retain tokens
    tried: list[dict[str, float]] = field(default_factory=list)
    null_dims: int = 0  # null-space variant: directions of the projector's range (0 = no projection)
    leak_bound: float = 0.0  # and E||h dW||^2 / ||dW||^2 at most, h drawn like the preserved keys


def _added_at_names(bundle: ModelBundle, last: torch.Tensor, adds: dict[int, torch.Tensor]) -> AbstractContextManager[None]:
    """Adds adds[layer][j] [d_model] to the raw MLP output of each layer at position last[j] of row j."""
    rows = torch.arange(len(last))

    def at_names(add: torch.Tensor) -> DownProjEdit:
        def edit(_h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[rows, last] = out[rows, last] + add
            return out

        return edit

    return down_proj_edits(bundle, {layer: at_names(add) for layer, add in adds.items()})


def full_layer_deltas(bundle: ModelBundle, deltas: dict[int, torch.Tensor]) -> AbstractContextManager[None]:
    """down_proj output += h @ delta for each layer (delta: [d_mlp, d_model], every row)."""
    def add(delta: torch.Tensor) -> DownProjEdit:
        return lambda h, out: out + h @ delta

    return down_proj_edits(bundle, {layer: add(d) for layer, d in deltas.items()})


def _mlp_outputs(bundle: ModelBundle, ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Raw MLP output (down_proj's, before the post-FFN norm) per layer: {layer: [batch, pos, d_model]}."""
    names = {layer: f"blocks.{layer}.mlp.hook_out" for layer in layers}
    got = capture(bundle.bridge, ids, list(names.values()))
    return {layer: got[name] for layer, name in names.items()}


def repr_distance(bundle: ModelBundle, frames: FrameBatch) -> torch.Tensor:
    """Per frame, sum over repr layers of ||r - t||^2 / ||t||^2 at the name's last token: [n]."""
    resid = residuals_after(bundle, frames.input_ids, list(frames.target))
    rows = torch.arange(len(frames.last))
    out = torch.zeros(len(frames.last))
    for layer, target in frames.target.items():
        h = resid[layer][rows, frames.last]
        out = out + (h - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-6)
    return out


def key_covariances(bundle: ModelBundle, texts: Sequence[str], layers: Sequence[int], max_tokens: int,
                    max_len: int) -> dict[int, torch.Tensor]:
    """C_l = mean h h^T of each layer's down_proj input over the texts' real tokens (BOS
    excluded), one forward pass for all layers: {layer: [d_mlp, d_mlp]}."""
    tok = bundle.tokenizer
    sums = {layer: torch.zeros(bundle.d_mlp, bundle.d_mlp, dtype=torch.float64) for layer in layers}
    n = 0
    with torch.no_grad():
        for start in range(0, len(texts), 8):
            enc = tok(list(texts[start:start + 8]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_len, padding_side="right")
            got = mlp_hidden(bundle.bridge, enc["input_ids"], layers, attention_mask=enc["attention_mask"])
            keep = text_positions(enc["attention_mask"])
            for layer in layers:
                x = got[layer][keep]  # [n_tok, d_mlp]
                sums[layer] += (x.T @ x).double()  # one batch in float32, the running sum in float64
            n += int(keep.sum())
            if n >= max_tokens:
                break
    if n == 0:
        raise ValueError("No retain tokens for the key covariance.")
    return {layer: (c / n).float() for layer, c in sums.items()}


def solve_delta(keys: torch.Tensor, desired: torch.Tensor, cov: torch.Tensor, lam: float,
                n_keys: int | None = None) -> torch.Tensor:
    """dW = (K^T K + lam * n * C)^-1 K^T D: the change of W_out ([d_mlp, d_model]) mapping each key
    k_j ([n, d_mlp]) to its desired output change d_j ([n, d_model]) at least cost on C. n is
    n_keys (the concept's keys) when K also holds kept keys with d = 0, else len(keys)."""
    k, d = keys.double(), desired.double()
    a = k.T @ k + lam * (n_keys or k.shape[0]) * cov.double()
    a = a + 1e-6 * a.diagonal().mean() * torch.eye(a.shape[0], dtype=a.dtype)
    return torch.linalg.solve(a, k.T @ d).float()


def rewrite_name_key(
    bundle: ModelBundle,
    facts: FactSet,
    corpus: Corpus,
    cfg: RewriteConfig = RewriteConfig(),
    progress: Progress = NULL_PROGRESS,
) -> tuple[OptimiseResult, list[LayerSolve]]:
    """Solve the rewrite (see module docstring). Returns the deltas as an OptimiseResult (rows =
    every neuron of each rewritten layer) and what each layer's solve did.

    The desired outputs of all `layers` are optimised jointly (one post-FFN-normalised MLP output
    can only rotate, not grow, so one layer alone may not reach the target), then each layer's
    weight change is solved for its own keys, measured with the others' additions in place."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    if cfg.layers is None or cfg.repr_layers is None:
        raise ValueError("RewriteConfig.fitted left the layers unset.")
    layers, repr_layers = sorted(set(cfg.layers)), cfg.repr_layers
    for layer in layers:
        bundle.check_layer(layer)
    counterfactual = cfg.target == "counterfactual"  # its objective has its own targets, not the frames'
    progress.stage("frames" if counterfactual else "frames and made-up-name targets", total=None)
    frames = build_frames(bundle, facts, repr_layers, cfg.retain.max_len, with_targets=not counterfactual)
    neighbours, neutral = retain_split(corpus, facts, cfg.retain)
    objective = _objective(bundle, facts, frames, cfg, progress)
    shared = fit_desired_outputs(bundle, frames, objective, layers, cfg, progress)
    desired = {layer: v.expand(len(frames.last), -1).contiguous() for layer, v in shared.items()}
    with torch.no_grad():
        remaining_desired = objective.remaining(shared)
    progress.stage("key covariance on retain text", total=None)
    retain = [s for d in neighbours + neutral for s in split_sentences(d.text)[:3]]
    with torch.no_grad():
        covs = key_covariances(bundle, retain, layers, cfg.cov_tokens, cfg.retain.max_len)
    kept = neighbour_frames(bundle, facts, held_names(neighbours, neutral, cfg), cfg.retain.max_len) \
        if cfg.neighbour_key_weight > 0 else None
    projectors: dict[int, torch.Tensor] | None = None
    leaks: dict[int, float] = {}
    if cfg.null_space_tokens > 0:  # the held names' keys join the preserved keys instead of the solve
        projectors, leaks = null_space_projectors(bundle, corpus, layers, kept, cfg, progress)
        kept = None
    candidates, tried = search_lams(bundle, frames, layers, desired, covs, kept, objective, cfg, progress,
                                    projectors=projectors)
    lam, deltas, rem, _ = choose_lam(candidates, cfg.max_remaining, cfg.max_neutral_change)
    progress.message(f"lam {lam:g}: {objective.what} 1.00 -> {rem:.2f} "
                     f"(desired outputs reach {remaining_desired:.2f})")
    solves = [LayerSolve(layer, lam, 1.0, remaining_desired, rem,
                         next(t[f"change_l{layer}"] for t in tried if t["lam"] == lam), tried,
                         int(projectors[layer].trace().round()) if projectors else 0, leaks.get(layer, 0.0))
              for layer in layers]
    result = OptimiseResult(
        rows={layer: list(range(bundle.d_mlp)) for layer in layers},
        deltas={layer: d.contiguous() for layer, d in deltas.items()},
        history=tried,
        seconds=time.perf_counter() - t0,
    )
    return result, solves


def _objective(bundle: ModelBundle, facts: FactSet, frames: FrameBatch, cfg: RewriteConfig,
               progress: Progress) -> _Objective:
    """Step 2's objective: the residual at the name pulled to made-up names' (the frames'
    targets), or with target 'counterfactual' the base's distributions on made-up-name text."""
    if cfg.target != "counterfactual":
        return _ReprObjective(bundle, frames)
    progress.stage("made-up-name distributions (counterfactual target)", total=None)
    cf = build_counterfactual(bundle, facts, cfg.frames, cfg.retain.max_len)
    if cf is None:
        raise ValueError(f"No text about {facts.name!r} tokenises the same after made-up names, so the "
                         "counterfactual target has nothing to train on; use the 'rewrite' method.")
    return _CounterfactualObjective(bundle, cf, cfg.frames.cf_batch)


def fit_desired_outputs(bundle: ModelBundle, frames: FrameBatch, objective: _Objective, layers: Sequence[int],
                        cfg: RewriteConfig, progress: Progress) -> dict[int, torch.Tensor]:
    """Step 2: one vector per layer ({layer: [d_model]}), added to the raw MLP output at the name in
    every frame, optimised (Adam, `cfg.steps` minibatches) until the objective is met."""
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = torch.arange(len(frames.last))
    with torch.no_grad():
        outs = {layer: o[rows, frames.last] for layer, o in _mlp_outputs(bundle, frames.input_ids, layers).items()}
    scales = {layer: float(o.pow(2).mean().sqrt()) for layer, o in outs.items()}
    # one vector per layer, shared by every frame (as ROME's v*): it is updated at every step
    # and has to work in all contexts, which is what the held-out prompts need
    shared = {layer: torch.zeros(bundle.d_model, requires_grad=True) for layer in layers}
    opt = torch.optim.Adam([{"params": [shared[layer]], "lr": cfg.lr * scales[layer]} for layer in layers])
    progress.stage(f"desired MLP outputs at the name (layers {list(layers)})", total=cfg.steps, unit="step")
    for _ in range(cfg.steps):
        pick = torch.randperm(objective.n, generator=gen)[: objective.batch(cfg.frame_batch)]
        opt.zero_grad()
        ratio = objective.loss(shared, pick)  # [picked], 1.0 with nothing added
        penalty = sum(shared[layer].pow(2).sum() / outs[layer].pow(2).sum(-1).mean().clamp_min(1e-9)
                      for layer in layers)
        loss = ratio.mean() + cfg.output_penalty * penalty
        loss.backward()
        opt.step()
        progress.advance(1, remaining=float(ratio.detach().mean().clamp_min(0).sqrt()))
    return {layer: v.detach() for layer, v in shared.items()}


def null_space_projectors(bundle: ModelBundle, corpus: Corpus, layers: Sequence[int], kept: FrameBatch | None,
                          cfg: RewriteConfig, progress: Progress) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """AlphaEdit's P per layer ({layer: [d_mlp, d_mlp]}, null_space.py): the null space of the
    preserved keys' second moment, C0 (cfg.null_space_tokens corpus tokens, cached per model) +
    neighbour_key_weight x the mean N^T N of the held names' keys (read on the base model).
    Also each layer's leak bound, the largest eigenvalue of P C P ({layer: float})."""
    covs = preserved_covariances(bundle, corpus, layers, cfg.null_space_tokens,
                                 (bundle.settings or Settings.from_env()).cache_dir, progress)
    with torch.no_grad():
        held = _keys_at_names(bundle, kept, layers) if kept is not None else {}
    out, leaks = {}, {}
    for layer in layers:
        cov = covs[layer]
        if layer in held:
            cov = cov + cfg.neighbour_key_weight * held[layer].T @ held[layer] / len(held[layer])
        out[layer] = null_space_projector(cov, cfg.null_space_threshold)
        leaks[layer] = leak_bound(cov, out[layer])
        top = float(torch.linalg.eigvalsh(cov.double())[-1])
        progress.message(f"layer {layer}: null space of {int(out[layer].trace().round())} of {bundle.d_mlp} "
                         f"directions, E||h dW||^2 <= {leaks[layer] / max(top, 1e-30):.1e} x the largest "
                         "preserved eigenvalue x ||dW||^2")
    return out, leaks


LamCandidate = tuple[float, dict[int, torch.Tensor], float, float]  # lam, deltas, remaining, neutral change


def search_lams(bundle: ModelBundle, frames: FrameBatch, layers: Sequence[int], desired: dict[int, torch.Tensor],
                covs: dict[int, torch.Tensor], kept: FrameBatch | None, objective: _Objective, cfg: RewriteConfig,
                progress: Progress, *, projectors: dict[int, torch.Tensor] | None = None,
                ) -> tuple[list[LamCandidate], list[dict[str, float]]]:
    """Step 3 for each lam of `cfg.lams` (largest first), measured on the objective and as the
    change of each layer's output on retain text; stops at the first that erases within the
    change budget, or once a looser solve reaches less than the stricter one before it.
    With `projectors` (null-space variant) each lam is the projected solve's relative ridge.
    Returns the candidates and their table (one dict per lam tried)."""
    energy = {layer: float(torch.trace(layout.w_out(bundle.hf_model, layer).detach().float().T @ covs[layer]
                                       @ layout.w_out(bundle.hf_model, layer).detach().float()))
              for layer in layers}  # E||h W_out||^2 on retain text
    tried: list[dict[str, float]] = []
    candidates: list[LamCandidate] = []
    progress.stage("solving the weight change per lam", total=len(cfg.lams))
    for lam in cfg.lams:
        deltas = _solve_in_order(bundle, frames, layers, desired, covs, lam, kept, cfg.neighbour_key_weight,
                                 projectors)
        with torch.no_grad(), full_layer_deltas(bundle, deltas):
            rem = objective.remaining(None)
        change = {layer: (float(torch.trace(d.T @ covs[layer] @ d)) / max(energy[layer], 1e-12)) ** 0.5
                  for layer, d in deltas.items()}
        tried.append({"lam": lam, "remaining": rem, **{f"change_l{k}": v for k, v in change.items()}})
        candidates.append((lam, deltas, rem, max(change.values())))
        progress.advance(1, lam=lam, remaining=rem)
        if rem <= cfg.max_remaining and max(change.values()) <= cfg.max_neutral_change:
            break
        if len(candidates) >= 2 and rem > candidates[-2][2]:
            break  # a looser solve reached less than the stricter one before it: past the best lam
    if not candidates:
        raise ValueError("RewriteConfig.lams is empty: give at least one lam.")
    return candidates, tried


class _Objective:
    """What the desired outputs are fitted to and the lam is accepted on: `loss` is a per-item
    ratio to the unedited model (1.0 = nothing changed, 0 = target reached) with one shared vector
    per layer added at the name; `remaining` is sqrt(mean ratio) over every item, with those
    additions (None: only what is hooked in already, e.g. a solved weight change)."""

    what = ""
    n = 0

    def batch(self, frame_batch: int) -> int:
        return frame_batch

    def loss(self, shared: dict[int, torch.Tensor], pick: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def remaining(self, shared: dict[int, torch.Tensor] | None) -> float:
        raise NotImplementedError


class _ReprObjective(_Objective):
    """The residual after repr_layers at the name's last token, pulled to the made-up names'."""

    what = "name's distance to made-up names"

    def __init__(self, bundle: ModelBundle, frames: FrameBatch) -> None:
        self.bundle, self.frames, self.n = bundle, frames, len(frames.last)
        with torch.no_grad():
            # one scale for all frames: a frame whose name already sits near the made-up names
            # must not dominate (per-frame ratios blew up on Paris, which many frames mention)
            self.base = repr_distance(bundle, frames).mean().clamp_min(1e-9)  # scalar

    def loss(self, shared: dict[int, torch.Tensor], pick: torch.Tensor) -> torch.Tensor:
        sub = _subset(self.frames, pick)
        with _added_at_names(self.bundle, sub.last, {k: v.expand(len(pick), -1) for k, v in shared.items()}):
            return repr_distance(self.bundle, sub) / self.base

    def remaining(self, shared: dict[int, torch.Tensor] | None) -> float:
        f = self.frames
        with _added_at_names(self.bundle, f.last, {k: v.expand(len(f.last), -1) for k, v in (shared or {}).items()}):
            return float((repr_distance(self.bundle, f) / self.base).mean().sqrt())


class _CounterfactualObjective(_Objective):
    """KL (top-k) of the next-token distributions at the name and after it to the base's on the
    same text with made-up names, as a ratio to the unedited model's KL, per text. The top-k KL
    of a model that matched the target exactly is -log(top-k mass), not 0, so that floor is
    taken off both sides of the ratio."""

    what = "KL to the made-up-name distributions"

    def __init__(self, bundle: ModelBundle, cf: CounterfactualBatch, cf_batch: int) -> None:
        self.bundle, self.cf, self.n, self.cf_batch = bundle, cf, len(cf.input_ids), cf_batch
        self.last = cf.mask.float().argmax(1)  # [n] first trained position = the name's last token
        # entropy of the renormalised target plus the floor: CE - this = KL above a perfect match
        self.offset = -(cf.top_p * cf.top_p.clamp_min(1e-12).log()).sum(-1) - cf.top_mass.clamp_min(1e-12).log()
        with torch.no_grad():
            self.base = self._kl(torch.arange(self.n), None).clamp_min(1e-6)  # [n] KL of the unedited model

    def batch(self, frame_batch: int) -> int:
        return self.cf_batch

    def _kl(self, pick: torch.Tensor, shared: dict[int, torch.Tensor] | None) -> torch.Tensor:
        """Per picked text (pick sorted): mean top-k KL over its trained positions: [len(pick)]."""
        out = []
        for start in range(0, len(pick), self.cf_batch):  # logits are [positions, vocab]: chunked
            part = pick[start:start + self.cf_batch]
            adds = {k: v.expand(len(part), -1) for k, v in (shared or {}).items()}
            with _added_at_names(self.bundle, self.last[part], adds):
                ce = counterfactual_cross_entropy(self.bundle, self.cf, part.tolist())  # [n_pos]
            keep = torch.isin(self.cf.row_of, part)
            which = torch.searchsorted(part, self.cf.row_of[keep])  # position -> index in part
            kl = torch.zeros(len(part)).index_add(0, which, ce - self.offset[keep])  # summed per text
            out.append(kl / torch.bincount(which, minlength=len(part)).clamp_min(1))
        return torch.cat(out)

    def loss(self, shared: dict[int, torch.Tensor], pick: torch.Tensor) -> torch.Tensor:
        pick = pick.sort().values
        return self._kl(pick, shared) / self.base[pick]

    def remaining(self, shared: dict[int, torch.Tensor] | None) -> float:
        ratio = self._kl(torch.arange(self.n), shared) / self.base
        return float(ratio.mean().clamp_min(0).sqrt())


def held_names(neighbours: Sequence[Document], neutral: Sequence[Document], cfg: RewriteConfig) -> list[str]:
    """The names whose keys the solve keeps: the titles of the first `frames.n_neighbour_names` of
    `retain_split`'s same-topic neighbours (most similar first), then of the first `n_other_names`
    neutral retain articles (random titles of other topics)."""
    return ([d.title for d in neighbours[: cfg.frames.n_neighbour_names]]
            + [d.title for d in neutral[: cfg.n_other_names]])


def neighbour_frames(bundle: ModelBundle, facts: FactSet, names: Sequence[str], max_len: int) -> FrameBatch | None:
    """The generic name frames with each neighbour name (other names of the same kind) in place
    of the concept's: the keys the rewrite must leave where they are. target is empty."""
    tok = bundle.tokenizer
    seqs, lasts = [], []
    for name in names:
        if not name or name == facts.name:
            continue
        for frame in FRAMES:
            ids, last = last_name_position(tok, frame, name, max_len)
            seqs.append(ids)
            lasts.append(last)
    if not seqs:
        return None
    return FrameBatch(pad_ids(seqs, pad_id(tok)), torch.tensor(lasts), {})


def choose_lam(candidates: Sequence[LamCandidate], max_remaining: float, max_change: float) -> LamCandidate:
    """(lam, deltas, remaining, neutral change) to keep, from candidates in the order tried
    (largest lam first): the first that erases (remaining <= max_remaining) within the change
    budget; else the one that erases most within the budget; else the smallest change."""
    within = [c for c in candidates if c[3] <= max_change]
    for c in within:
        if c[2] <= max_remaining:
            return c
    if within:
        return min(within, key=lambda c: c[2])
    return min(candidates, key=lambda c: c[3])


def _solve_in_order(bundle: ModelBundle, frames: FrameBatch, layers: Sequence[int], desired: dict[int, torch.Tensor],
                    covs: dict[int, torch.Tensor], lam: float, kept: FrameBatch | None = None,
                    kept_weight: float = 0.0, projectors: dict[int, torch.Tensor] | None = None,
                    ) -> dict[int, torch.Tensor]:
    """Solve the layers in order, as MEMIT does: each layer's keys are read with the earlier
    layers' solved weights in place and the later layers' desired additions still hooked.
    `kept` frames (neighbour names) add their keys with a desired change of 0, each weighted
    `kept_weight` relative to one concept key. With `projectors` the change is AlphaEdit's
    null-space-projected solve, lam its relative ridge."""
    deltas: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(layers):
        later = {other: desired[other] for other in layers[i:]}
        with torch.no_grad(), full_layer_deltas(bundle, deltas), _added_at_names(bundle, frames.last, later):
            keys = _keys_at_names(bundle, frames, [layer])[layer]  # [n, d_mlp]
        if projectors is not None:
            p = projectors[layer]
            deltas[layer] = solve_projected(keys, desired[layer], p, projected_ridge(keys, p, lam))
        elif kept is not None and kept_weight > 0:
            with torch.no_grad(), full_layer_deltas(bundle, deltas):
                other = _keys_at_names(bundle, kept, [layer])[layer]  # [m, d_mlp]
            deltas[layer] = _solve_kept(keys, desired[layer], other, covs[layer], lam, kept_weight)
        else:
            deltas[layer] = solve_delta(keys, desired[layer], covs[layer], lam)
    return deltas


def _solve_kept(keys: torch.Tensor, desired: torch.Tensor, kept: torch.Tensor, cov: torch.Tensor, lam: float,
                weight: float) -> torch.Tensor:
    """solve_delta with kept keys ([m, d_mlp]) asked to change by 0, each counting `weight`
    concept keys: dW = (K^T K + w N^T N + lam n C)^-1 K^T D."""
    k = torch.cat([keys, kept * weight ** 0.5])
    d = torch.cat([desired, desired.new_zeros(len(kept), desired.shape[1])])
    return solve_delta(k, d, cov, lam, n_keys=len(keys))


def _subset(frames: FrameBatch, pick: torch.Tensor) -> FrameBatch:
    width = int(frames.last[pick].max()) + 1
    return FrameBatch(frames.input_ids[pick, :width], frames.last[pick],
                      {layer: t[pick] for layer, t in frames.target.items()})


def _keys_at_names(bundle: ModelBundle, frames: FrameBatch, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """h (down_proj input) of each layer at the name's last token: {layer: [n, d_mlp]}."""
    rows = torch.arange(len(frames.last))
    return {layer: h[rows, frames.last] for layer, h in mlp_hidden(bundle.bridge, frames.input_ids, layers).items()}
