"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark"), on the
MLP output projections of a few consecutive layers (method `rmu`; docs/methods/rmu.md).

The residual stream after layer l on the concept's text (workbench.methods.forget) is driven to a
fixed random vector c*u, which scrambles what later layers read there; on retain text
(workbench.methods.retain) it is held where the frozen model has it:

    L = mean ||h_l(x_forget) - c*u||^2 / d_model  +  alpha * mean ||h_l(x_retain) - h_l^base(x_retain)||^2 / d_model

Only a dense delta on W_out of layers l-2..l is trained (the reference trains the same
`mlp.down_proj` weights of Zephyr-7B's layers 5-7 with its loss at layer 7), through the
differentiable down_proj taps of the optimisation (`optimise.delta_hooks`): the base weights are
never written, and the result bakes to one `OptimiseValueVectors` operation whose rows are every
row of those layers. The steering coefficient is relative to the model's own activation norm at
l (c = steering_scale * mean token norm of the forget text there), since an absolute c (Zephyr's
6.5) is tied to one model's scale.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from workbench.corpus import Corpus
from workbench.methods.facts import FactSet
from workbench.methods.forget import forget_texts
from workbench.methods.optimise import OptimiseResult, delta_hooks, to_operation
from workbench.methods.readout import residuals_after
from workbench.methods.retain import RetainConfig, retain_documents
from workbench.models import ModelBundle, layout
from workbench.models.depth import at_depth
from workbench.models.hooks import text_positions
from workbench.progress import NULL_PROGRESS, Progress

PAPER_LAYER, PAPER_N_LAYERS = 7, 32  # the reference's loss layer on Zephyr-7B (32 layers)
TRAINED_BELOW = 2  # the reference trains layers l-2..l


@dataclass(frozen=True)
class RmuConfig:
    """RMU's settings; the retain articles (and the tokens read of every text, `retain.max_len`)
    are the shared `RetainConfig`."""

    layer: int | None = None  # l, where the forget loss reads the residual; None = Zephyr's 7 of 32 at this depth
    layers: tuple[int, ...] | None = None  # W_out trained (each <= l); None = l-2..l
    # c = steering_scale * mean token norm of the base residual at l on the forget text (BOS excluded)
    steering_scale: float = 4.0
    steering_coeff: float | None = None  # an absolute c instead (the reference's 6.5 on Zephyr)
    alpha: float = 1200.0  # retain weight (the reference's Zephyr run)
    lr: float = 0.01  # Adam step, relative to the rms of the trained W_out entries
    steps: int = 80  # batches (the reference script's default max_num_batches; its Zephyr run used 150)
    batch_size: int = 4  # forget texts and retain texts per step (the reference's batch_size)
    seed: int = 0  # the random direction u and the batch order
    retain: RetainConfig = field(default_factory=RetainConfig)

    def fitted(self, n_layers: int) -> RmuConfig:
        """Layers set for an `n_layers` model: l at the reference's relative depth unless given
        (clipped to the last layer), the trained layers l-2..l unless given."""
        layer = at_depth(PAPER_LAYER, n_layers, PAPER_N_LAYERS) if self.layer is None else min(max(self.layer, 0),
                                                                                              n_layers - 1)
        layers = tuple(range(max(0, layer - TRAINED_BELOW), layer + 1)) if self.layers is None else self.layers
        return replace(self, layer=layer, layers=tuple(dict.fromkeys(layers)))


# -- the losses (pure) -----------------------------------------------------------------------------
def control_vector(d_model: int, coeff: float, generator: torch.Generator) -> torch.Tensor:
    """c*u: [d_model], u uniform on [0, 1)^d_model then unit-normalised (the reference draws it
    with torch.rand, so u lies in the positive orthant, not in a random direction)."""
    u = torch.rand(d_model, generator=generator)
    return coeff * u / u.norm()


def forget_loss(acts: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """MSE between the residuals at the forget tokens ([n, d_model]) and c*u ([d_model]); zero
    when every activation is c*u."""
    return (acts.float() - control.to(acts.device)).pow(2).mean()


def retain_loss(acts: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """MSE between the edited and the frozen residuals at the retain tokens (both [n, d_model])."""
    return (acts.float() - frozen.float()).pow(2).mean()


# -- the problem -----------------------------------------------------------------------------------
@dataclass
class RmuProblem:
    """What the loop needs, built once: the tokenised forget and retain texts and c*u."""

    forget: dict[str, torch.Tensor]  # input_ids, attention_mask [n_forget, pos], right-padded
    retain: dict[str, torch.Tensor]  # the same for the retain texts
    control: torch.Tensor  # [d_model] c*u
    coeff: float  # c
    base_norm: float  # mean token norm of the base residual at l on the forget text
    lr: float  # the absolute Adam step
    frozen: dict[int, torch.Tensor] = field(default_factory=dict)  # retain text -> [n_i, d_model], filled as drawn


def _encode(bundle: ModelBundle, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = bundle.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                           padding_side="right")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _rows(enc: dict[str, torch.Tensor], pick: Sequence[int], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, text mask) of the picked texts, cut to their longest: [b, pos] each."""
    idx = list(pick)
    am = enc["attention_mask"][idx]
    width = int(am.sum(1).max())
    return enc["input_ids"][idx, :width].to(device), text_positions(am[:, :width]).to(device)


def residual_at(bundle: ModelBundle, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual after `layer` at the masked tokens: [n, d_model] (the pass stops there)."""
    return residuals_after(bundle, ids, [layer])[layer][mask]


def frozen_retain(bundle: ModelBundle, problem: RmuProblem, pick: Sequence[int], layer: int) -> torch.Tensor:
    """The base residual after `layer` at the text tokens of the picked retain texts, in pick
    order ([n, d_model]); each text's is computed once, when first drawn."""
    todo = [i for i in dict.fromkeys(pick) if i not in problem.frozen]
    if todo:
        ids, mask = _rows(problem.retain, todo, bundle.device)
        with torch.no_grad():
            acts = residuals_after(bundle, ids, [layer])[layer]  # [b, pos, d_model]
        for row, i in enumerate(todo):
            problem.frozen[i] = acts[row][mask[row]].detach()
    return torch.cat([problem.frozen[i] for i in pick])


def prepare_problem(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: RmuConfig,
                    progress: Progress = NULL_PROGRESS) -> RmuProblem:
    """Forget and retain texts, the base activation norm at l, c*u and the step size. Raises
    ValueError with a sentence for an empty fact set or layers the loss cannot see."""
    assert cfg.layer is not None and cfg.layers is not None  # fitted
    bundle.check_layer(cfg.layer)
    for layer in cfg.layers:
        bundle.check_layer(layer)
    if max(cfg.layers) > cfg.layer:
        raise ValueError(f"RMU trains W_out at or below its loss layer {cfg.layer}; layers "
                         f"{[la for la in cfg.layers if la > cfg.layer]} would not change the residual it reads.")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("RMU needs at least one step of at least one text.")
    progress.stage("RMU: forget and retain text, activation norm", total=None)
    max_len = cfg.retain.max_len
    forget = _encode(bundle, forget_texts(corpus, facts), max_len)
    if int(text_positions(forget["attention_mask"]).sum()) == 0:
        raise ValueError("The forget text has no tokens after the first: add longer facts about the concept.")
    retain = _encode(bundle, [d.text for d in retain_documents(corpus, facts, cfg.retain)], max_len)
    norms = []
    with torch.no_grad():
        for start in range(0, len(forget["input_ids"]), 8):
            ids, mask = _rows(forget, range(start, min(start + 8, len(forget["input_ids"]))), bundle.device)
            norms.append(residual_at(bundle, ids, mask, cfg.layer).float().norm(dim=-1).cpu())
    base_norm = float(torch.cat(norms).mean())
    coeff = cfg.steering_coeff if cfg.steering_coeff is not None else cfg.steering_scale * base_norm
    control = control_vector(bundle.d_model, coeff, torch.Generator().manual_seed(cfg.seed)).to(bundle.device)
    w = torch.cat([layout.w_out(bundle.hf_model, layer).detach().float().flatten() for layer in cfg.layers])
    lr = cfg.lr * float(w.pow(2).mean().sqrt())
    progress.message(f"RMU: {len(forget['input_ids'])} forget texts, {len(retain['input_ids'])} retain texts; "
                     f"residual norm at layer {cfg.layer} {base_norm:.3g}, steering coefficient {coeff:.3g}")
    return RmuProblem(forget=forget, retain=retain, control=control, coeff=coeff, base_norm=base_norm, lr=lr)


def batches(n: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of `size` distinct indices of range(n), each pass in a new shuffled order
    (a batch never spans two passes, so it never repeats an index)."""
    size = min(size, n)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]


# -- the loop --------------------------------------------------------------------------------------
def rmu_unlearn(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: RmuConfig = RmuConfig(),
                progress: Progress = NULL_PROGRESS) -> tuple[OptimiseResult, RmuConfig, RmuProblem]:
    """Train the dense W_out deltas (module docstring). Returns the result (every row of each
    trained layer with its delta), the config as it ran (layers and the steering coefficient
    set) and the problem."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    if cfg.layer is None or cfg.layers is None:
        raise ValueError("RmuConfig.fitted left the layers unset.")
    loss_layer, layers = cfg.layer, cfg.layers
    problem = prepare_problem(bundle, facts, corpus, cfg, progress)
    cfg = replace(cfg, steering_coeff=problem.coeff)
    rng = random.Random(cfg.seed)
    rows = {layer: list(range(bundle.d_mlp)) for layer in layers}
    deltas = {layer: torch.zeros(bundle.d_mlp, bundle.d_model, device=bundle.device, requires_grad=True)
              for layer in layers}
    opt = torch.optim.Adam(list(deltas.values()), lr=problem.lr)
    forget_batches = batches(len(problem.forget["input_ids"]), cfg.batch_size, rng)
    retain_batches = batches(len(problem.retain["input_ids"]), cfg.batch_size, rng)
    history: list[dict[str, float]] = []
    progress.stage(f"RMU: W_out of layers {', '.join(map(str, layers))} (loss at layer {loss_layer})",
                   total=cfg.steps, unit="step")
    for step in range(cfg.steps):
        f_ids, f_mask = _rows(problem.forget, next(forget_batches), bundle.device)
        r_pick = next(retain_batches)
        r_ids, r_mask = _rows(problem.retain, r_pick, bundle.device)
        frozen = frozen_retain(bundle, problem, r_pick, loss_layer)
        opt.zero_grad()
        with torch.enable_grad(), delta_hooks(bundle, rows, deltas):
            lf = forget_loss(residual_at(bundle, f_ids, f_mask, loss_layer), problem.control)
            lr_ = retain_loss(residual_at(bundle, r_ids, r_mask, loss_layer), frozen)
            loss = lf + cfg.alpha * lr_
            loss.backward()
        opt.step()
        logs = {"forget": lf.item(), "retain": lr_.item(), "loss": loss.item()}
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"RMU diverged at step {step} (loss {logs['loss']}): lower its lr.")
        history.append({"step": float(step), **logs})
        progress.advance(1, **logs)
    result = OptimiseResult(rows=rows, deltas={k: v.detach().cpu().clone() for k, v in deltas.items()},
                            history=history, seconds=time.perf_counter() - t0)
    return result, cfg, problem


def to_rmu_operation(result: OptimiseResult, cfg: RmuConfig, problem: RmuProblem) -> tuple[Any, dict[str, torch.Tensor]]:
    """The OptimiseValueVectors operation (params: the config as it ran, method 'rmu', the
    activation norm and the absolute step) and its payload, tensors named 'rmu.l<layer>.delta'."""
    op, payload = to_operation(result, cfg, prefix="rmu")
    op.params.update(method="rmu", base_norm=round(problem.base_norm, 4), lr_abs=problem.lr)
    return op, payload
