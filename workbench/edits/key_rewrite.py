"""Closed-form rewrite of the concept name's key in one MLP (MEMIT-style), so that after
`repr_layers` the residual at the name looks like that of made-up names of the same kind.

Why (measured, issue 8): replacing the layer-8 residual at the name's last token by the mean
residual of made-up names in the same prompt removes the concept's facts almost completely
("The capital of Japan is" -> p(Tokyo) 0.25 -> 0.00), but only when the match is close: with
30% of the distance left, p(yen) after "The currency of Japan is the" is still 0.36. The
gradient-trained value-vector edit (optimise.py) reaches about that 30% on single-token names
(Japan, Paris) and leaves them answered, so this method solves for the edit instead:

1. keys k_j = h (down_proj input) of layer `layer` at the name's last token in frame j;
2. desired outputs: a per-frame vector d_j added to that MLP's raw output at the name
   position is optimised (a few hundred parameters, forwards up to max(repr_layers)) until the
   residuals match the made-up-name targets; the post-FFN RMSNorm is in the loop, so no
   division by its ill-conditioned gain is needed;
3. the weight change that maps every k_j to d_j while moving the layer's output on ordinary
   text as little as possible (C = E[h h^T] over retain text):
       dW = (K^T K + lam * n * C)^-1 K^T D            (W_out: [d_mlp, d_model], h @ W_out)
   the largest `lam` of a short list that still leaves <= `max_remaining` of the distance on the
   frames is kept (the most conservative edit that erases).

The result is an additive delta on every row of one W_out, so it travels as an
`optimise_value_vectors` operation with its delta in the safetensors payload, like optimise.py's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from workbench.corpus import Corpus
from workbench.edits.facts import FactSet, split_sentences
from workbench.edits.optimise import (
    FrameBatch,
    OptimiseConfig,
    OptimiseResult,
    build_frames,
    residuals_after,
    retain_documents,
)
from workbench.models import ModelBundle, layout
from workbench.progress import NullProgress, Progress


@dataclass(frozen=True)
class RewriteConfig:
    """Defaults: rewrite layer 5's W_out so the name looks made-up after layer 8."""

    layers: tuple[int, ...] = (5,)  # MLPs rewritten, in order; each removes what is left
    repr_layers: tuple[int, ...] = (8,)
    steps: int = 150  # optimisation of the desired outputs d_j
    lr: float = 0.1  # Adam step, relative to the rms of the MLP output at the name
    output_penalty: float = 1e-3  # ||d_j||^2 / ||o_j||^2 weight: the smallest change that does it
    lams: tuple[float, ...] = (30.0, 10.0, 3.0, 1.0, 0.3, 0.1)  # tried largest first
    max_remaining: float = 0.15  # sqrt(repr loss / base repr loss) on the frames to accept a lam
    cov_tokens: int = 16_000
    max_len: int = 64
    n_retain_neutral: int = 60
    n_retain_neighbours: int = 40
    seed: int = 0

    def frames_config(self) -> OptimiseConfig:
        return OptimiseConfig(repr_layers=self.repr_layers, max_len=self.max_len, n_retain_neutral=self.n_retain_neutral,
                              n_retain_neighbours=self.n_retain_neighbours, seed=self.seed)

    def fitted(self, n_layers: int) -> RewriteConfig:
        layers = tuple(layer for layer in self.layers if layer < n_layers) or (max(0, n_layers - 2),)
        repr_layers = tuple(dict.fromkeys(min(layer, n_layers - 1) for layer in self.repr_layers))
        if max(layers) >= max(repr_layers):
            repr_layers = (min(n_layers - 1, max(layers) + 1),)
        return replace(self, layers=layers, repr_layers=repr_layers)


@dataclass
class LayerSolve:
    """What the closed form did at one layer (for the candidate table and the bench)."""

    layer: int
    lam: float
    remaining_before: float  # sqrt(repr loss / base repr loss) with only earlier layers edited
    remaining_desired: float  # with the optimised d_j added exactly
    remaining_after: float  # with the solved weight change
    output_change_neutral: float  # mean ||h dW|| / ||h W_out|| on retain tokens
    tried: list[dict[str, float]] = field(default_factory=list)


@contextmanager
def _added_at_name(bundle: ModelBundle, layer: int, last: torch.Tensor, add: torch.Tensor) -> Iterator[None]:
    """Adds add[j] [d_model] to the raw MLP output of `layer` at position last[j] of row j."""
    rows = torch.arange(len(last))

    def hook(_m: torch.nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[rows, last] = out[rows, last] + add
        return out

    handle = layout.mlp_module(bundle.hf_model, layer).down_proj.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _delta_on_w_out(bundle: ModelBundle, deltas: dict[int, torch.Tensor]) -> Iterator[None]:
    """down_proj output += h @ delta for each layer (delta: [d_mlp, d_model])."""
    handles = []
    for layer, delta in deltas.items():
        def hook(_m: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor,
                 delta: torch.Tensor = delta) -> torch.Tensor:
            return out + inp[0] @ delta

        handles.append(layout.mlp_module(bundle.hf_model, layer).down_proj.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _capture_mlp(bundle: ModelBundle, ids: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, raw output) of layer's down_proj for a batch: [batch, pos, d_mlp], [batch, pos, d_model]."""
    got: dict[str, torch.Tensor] = {}

    def hook(_m: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        got["h"], got["o"] = inp[0].detach(), out.detach()

    handle = layout.mlp_module(bundle.hf_model, layer).down_proj.register_forward_hook(hook)
    try:
        residuals_after(bundle, ids, [layer])
    finally:
        handle.remove()
    return got["h"], got["o"]


def repr_distance(bundle: ModelBundle, frames: FrameBatch) -> torch.Tensor:
    """Per frame, sum over repr layers of ||r - t||^2 / ||t||^2 at the name's last token: [n]."""
    resid = residuals_after(bundle, frames.input_ids, list(frames.target))
    rows = torch.arange(len(frames.last))
    out = torch.zeros(len(frames.last))
    for layer, target in frames.target.items():
        h = resid[layer][rows, frames.last]
        out = out + (h - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-6)
    return out


def key_covariance(bundle: ModelBundle, texts: Sequence[str], layer: int, max_tokens: int, max_len: int) -> torch.Tensor:
    """C = mean h h^T of layer's down_proj input over the texts' real tokens (BOS excluded): [d_mlp, d_mlp]."""
    tok = bundle.tokenizer
    c = torch.zeros(bundle.d_mlp, bundle.d_mlp, dtype=torch.float64)
    n = 0
    for start in range(0, len(texts), 8):
        enc = tok(list(texts[start:start + 8]), return_tensors="pt", padding=True, truncation=True,
                  max_length=max_len, padding_side="right")
        h, _ = _capture_mlp(bundle, enc["input_ids"], layer)
        keep = enc["attention_mask"].bool().clone()
        keep[:, 0] = False
        x = h[keep].double()  # [n_tok, d_mlp]
        c += x.T @ x
        n += x.shape[0]
        if n >= max_tokens:
            break
    if n == 0:
        raise ValueError("No retain tokens for the key covariance.")
    return (c / n).float()


def solve_delta(keys: torch.Tensor, desired: torch.Tensor, cov: torch.Tensor, lam: float) -> torch.Tensor:
    """dW = (K^T K + lam * n * C)^-1 K^T D: the change of W_out ([d_mlp, d_model]) mapping each key
    k_j ([n, d_mlp]) to its desired output change d_j ([n, d_model]) at least cost on C."""
    k, d = keys.double(), desired.double()
    a = k.T @ k + lam * k.shape[0] * cov.double()
    a = a + 1e-6 * a.diagonal().mean() * torch.eye(a.shape[0], dtype=a.dtype)
    return torch.linalg.solve(a, k.T @ d).float()


def rewrite_name_key(
    bundle: ModelBundle,
    facts: FactSet,
    corpus: Corpus,
    cfg: RewriteConfig = RewriteConfig(),
    progress: Progress = NullProgress(),
) -> tuple[OptimiseResult, list[LayerSolve]]:
    """Solve the rewrite (see module docstring). Returns the deltas as an OptimiseResult (rows =
    every neuron of each rewritten layer) and what each layer's solve did."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    for layer in cfg.layers:
        bundle.check_layer(layer)
    torch.manual_seed(cfg.seed)
    with bundle.lock:
        progress.stage("frames and made-up-name targets", total=None)
        frames = build_frames(bundle, facts, cfg.frames_config())
        retain = [s for d in retain_documents(corpus, facts, cfg.frames_config()) for s in split_sentences(d.text)[:3]]
        with torch.no_grad():
            base_dist = repr_distance(bundle, frames).clamp_min(1e-9)  # [n]
        deltas: dict[int, torch.Tensor] = {}
        solves: list[LayerSolve] = []
        rows = torch.arange(len(frames.last))
        for layer in cfg.layers:
            with torch.no_grad(), _delta_on_w_out(bundle, deltas):
                h, o = _capture_mlp(bundle, frames.input_ids, layer)
                keys, outs = h[rows, frames.last], o[rows, frames.last]  # [n, d_mlp], [n, d_model]
                before = float((repr_distance(bundle, frames) / base_dist).mean().sqrt())
            progress.stage(f"layer {layer}: desired MLP outputs at the name", total=cfg.steps, unit="step")
            scale = float(outs.pow(2).mean().sqrt())
            add = torch.zeros_like(outs, requires_grad=True)
            opt = torch.optim.Adam([add], lr=cfg.lr * scale)
            for _ in range(cfg.steps):
                opt.zero_grad()
                with _delta_on_w_out(bundle, deltas), _added_at_name(bundle, layer, frames.last, add):
                    dist = repr_distance(bundle, frames) / base_dist
                penalty = add.pow(2).sum(-1) / outs.pow(2).sum(-1).clamp_min(1e-9)
                loss = dist.mean() + cfg.output_penalty * penalty.mean()
                loss.backward()
                opt.step()
                progress.advance(1, remaining=float(dist.mean().sqrt()))
            desired = add.detach()
            with torch.no_grad(), _delta_on_w_out(bundle, deltas), _added_at_name(bundle, layer, frames.last, desired):
                remaining_desired = float((repr_distance(bundle, frames) / base_dist).mean().sqrt())
            progress.stage(f"layer {layer}: key covariance on retain text", total=None)
            with torch.no_grad(), _delta_on_w_out(bundle, deltas):
                cov = key_covariance(bundle, retain, layer, cfg.cov_tokens, cfg.max_len)
            w_out = layout.w_out(bundle.hf_model, layer).detach().float()  # [d_mlp, d_model]
            base_energy = float(torch.trace(w_out.T @ cov @ w_out))  # E||h W_out||^2
            tried, chosen = [], None
            for lam in cfg.lams:
                delta = solve_delta(keys, desired, cov, lam)
                with torch.no_grad(), _delta_on_w_out(bundle, {**deltas, layer: delta}):
                    rem = float((repr_distance(bundle, frames) / base_dist).mean().sqrt())
                change = (float(torch.trace(delta.T @ cov @ delta)) / max(base_energy, 1e-12)) ** 0.5
                tried.append({"lam": lam, "remaining": rem, "neutral_change": change})
                chosen = (lam, delta, rem, change)
                if rem <= cfg.max_remaining:
                    break
            if chosen is None:
                raise ValueError("RewriteConfig.lams is empty: give at least one lam.")
            lam, delta, rem, change = chosen
            deltas[layer] = delta
            solves.append(LayerSolve(layer, lam, before, remaining_desired, rem, change, tried))
            progress.message(f"layer {layer}: lam {lam:g}, remaining {before:.2f} -> {rem:.2f}, "
                             f"output change on retain text {change:.3f}")
    result = OptimiseResult(
        rows={layer: list(range(bundle.d_mlp)) for layer in deltas},
        deltas={layer: d.contiguous() for layer, d in deltas.items()},
        history=[{"layer": float(s.layer), "lam": s.lam, "remaining": s.remaining_after} for s in solves],
        seconds=time.perf_counter() - t0,
    )
    return result, solves
