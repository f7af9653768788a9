"""ELM, Erasure of Language Memory (Gandikota et al. 2024, "Erasing Conceptual Knowledge from
Language Models"), as a low-rank delta on the MLP output projections of a few layers (method
`elm`; docs/methods/elm.md).

The model itself says what text without the concept looks like: on the concept's text x
(workbench.methods.forget), the target next-token distribution at each position is the base
model's, pushed away from its distribution when x is introduced as written by an expert on the
concept and toward its distribution when introduced as written by a novice who never heard of it
(temperature T, the target's top-k tokens kept):

    log p*(x_t) = log p_T(x_t | x_<t) + eta * (log p_T(x_t | novice, x_<t) - log p_T(x_t | expert, x_<t))

and three losses train the delta (weights `erase_weight`, `retain_weight`, `fluency_weight`):
  erase    cross-entropy of the edited model against p* on concept text,
  retain   KL(base || edited) of next-token distributions on retain text (workbench.methods.retain),
  fluency  the edited model's NLL of the base model's own novice-steered continuations of concept
           text (what it should say instead, generated once before training, like the reference's
           pre-generated consistency data).

Only a rank-`rank` delta a @ b on W_out of `layers` is trained (the reference trains LoRA
adapters on layers 4-7 of its 32-layer models), through the differentiable down_proj taps of the
optimisation (`optimise.delta_hooks`); the base weights are never written, and the product bakes
to one `OptimiseValueVectors` operation (every row of those layers), which compiles to a low-rank
adapter (`adapters.factor_delta` factors W' - W, so float32 rounding of W + delta can add small
components beyond `rank` when the delta is small against W).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from workbench.corpus import Corpus
from workbench.lenses.tokens import pad_id, pad_ids
from workbench.methods.facts import FactSet
from workbench.methods.forget import forget_texts
from workbench.methods.optimise import OptimiseResult, delta_hooks, to_operation
from workbench.methods.readout import selected_logits
from workbench.methods.retain import RetainConfig, retain_documents
from workbench.methods.rmu import batches
from workbench.models import ModelBundle, layout
from workbench.models.depth import layers_at_depth
from workbench.models.hooks import text_positions
from workbench.progress import NULL_PROGRESS, Progress

PAPER_LAYERS, PAPER_N_LAYERS = (4, 5, 6, 7), 32  # the reference's LoRA layers on its 32-layer models

# Contexts the model reads before the concept's text (our wording of the reference's idea: an
# expert on the concept vs someone who never heard of it); {concept} = name and key names.
EXPERT_PREFIXES = (
    "The following text was written by a leading expert on {concept}, with precise and detailed knowledge:\n",
    "An authority on {concept} wrote this passage, full of accurate facts about {concept}:\n",
    "Here is a text by a specialist who knows everything about {concept}:\n",
    "This was written by someone with deep, first-hand knowledge of {concept}:\n",
)
NOVICE_PREFIXES = (
    "The following text was written by someone who has never heard of {concept} and knows nothing about it:\n",
    "A writer with no knowledge at all of {concept} wrote this passage and talks about other things:\n",
    "Here is a text by someone who is completely unfamiliar with {concept}:\n",
    "This was written by a person who knows nothing about {concept} and changes the subject:\n",
)
# what the fluency continuations start with after the concept's text
TRANSITIONS = (
    " I do not know much about that, so let me talk about something else.",
    " Anyway, that is not something I have heard of; here is a different topic.",
    " Let us move on to something else entirely.",
)


@dataclass(frozen=True)
class ElmConfig:
    """ELM's settings; the retain articles (and the tokens read of every text, `retain.max_len`)
    are the shared `RetainConfig`."""

    layers: tuple[int, ...] | None = None  # W_out trained; None = the reference's 4-7 of 32 at this depth
    rank: int = 32  # of the delta a @ b on each layer (the reference: LoRA rank 256 on d_model 4096)
    lr: float = 0.05  # Adam step on a and b, relative to the rms of the trained W_out entries
    steps: int = 30  # optimiser steps
    batch_size: int = 4  # texts per loss per step (the reference: 1 text, 4 accumulated)
    # positions per concept and retain text per step (the reference: every position); the rest of a
    # text waits for a later step, since every position costs a full-vocabulary read
    positions: int = 16
    eta: float = 2.0  # erasure strength of the target (the reference ramps it over positions, see docs)
    temperature: float = 1.2  # of the three distributions in the target (the reference's)
    top_k: int = 50  # tokens of the target kept (the reference's)
    erase_weight: float = 1.0
    retain_weight: float = 1.0
    fluency_weight: float = 1.0
    fluency_texts: int = 8  # concept texts continued by the base model, novice-steered
    fluency_tokens: int = 16  # tokens generated per continuation (greedy)
    fluency_eta: float = 3.0  # the steering of those continuations (the reference's guidance scale 3)
    seed: int = 0  # the prefixes each text gets, a's initialisation and the batch order
    retain: RetainConfig = field(default_factory=RetainConfig)

    def fitted(self, n_layers: int) -> ElmConfig:
        """Layers set for an `n_layers` model: the reference's at the same relative depth unless
        given (those past the last layer dropped)."""
        if self.layers is None:
            return replace(self, layers=layers_at_depth(PAPER_LAYERS, n_layers, PAPER_N_LAYERS))
        return replace(self, layers=tuple(dict.fromkeys(la for la in self.layers if 0 <= la < n_layers))
                       or (n_layers - 1,))


# -- the losses (pure) -----------------------------------------------------------------------------
def target_logprobs(base: torch.Tensor, expert: torch.Tensor, novice: torch.Tensor, eta: float) -> torch.Tensor:
    """log p + eta * (log p_novice - log p_expert): [n, vocab] from three [n, vocab] log-probs
    (unnormalised: the softmax over the kept tokens normalises it)."""
    return base + eta * (novice - expert)


def elm_target(base_logits: torch.Tensor, expert_logits: torch.Tensor, novice_logits: torch.Tensor, eta: float,
               temperature: float, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The target distribution from three [n, vocab] logits at aligned positions: each
    log-softmaxed at `temperature`, combined by `target_logprobs`, its `top_k` tokens kept and
    renormalised. Returns (token ids [n, k], probabilities [n, k])."""
    def logp(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / temperature).log_softmax(-1)

    combined = target_logprobs(logp(base_logits), logp(expert_logits), logp(novice_logits), eta)
    values, idx = combined.topk(min(top_k, combined.shape[-1]), dim=-1)
    return idx, values.softmax(-1)


def soft_cross_entropy(logits: torch.Tensor, idx: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """-sum_k p_k log q(idx_k) averaged over rows: logits [n, vocab], target ids and probs [n, k]."""
    logq = logits.float().log_softmax(-1).gather(-1, idx)
    return -(probs * logq).sum(-1).mean()


def kl_divergence(base_logp: torch.Tensor, edited_logp: torch.Tensor) -> torch.Tensor:
    """KL(base || edited) per row, averaged: both [n, vocab] log-probabilities."""
    return (base_logp.exp() * (base_logp - edited_logp)).sum(-1).mean()


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of `labels` ([n]) under `logits` ([n, vocab])."""
    return torch.nn.functional.cross_entropy(logits.float(), labels)


# -- the problem -----------------------------------------------------------------------------------
@dataclass
class TextBatch:
    """Right-padded token ids with, per text, the positions a loss reads and what it reads there."""

    input_ids: torch.Tensor  # [n, pos]
    mask: torch.Tensor  # [n, pos] bool: positions whose logits the loss uses
    idx: list[Any] = field(default_factory=list)  # per text: [n_i, k] target ids (erase) or [n_i] labels
    probs: list[Any] = field(default_factory=list)  # per text: [n_i, k] target probabilities (erase)

    def rows(self, pick: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) of the picked texts, cut to the last used position + 1."""
        ids, mask = self.input_ids[list(pick)], self.mask[list(pick)]
        used = torch.nonzero(mask.any(0)).flatten()
        width = int(used.max()) + 1 if used.numel() else 1
        return ids[:, :width], mask[:, :width]


@dataclass
class EraseTexts(TextBatch):
    """The concept texts: per text its prefix pair and its top-k targets (None until drawn)."""

    choice: list[int] = field(default_factory=list)  # index into EXPERT_PREFIXES / NOVICE_PREFIXES
    lengths: list[int] = field(default_factory=list)  # tokens of each text


@dataclass
class ElmProblem:
    erase: EraseTexts  # concept texts, their text positions and (once drawn) top-k targets
    retain: TextBatch  # retain texts and their text positions
    fluency: TextBatch | None  # concept text + transition + steered continuation, labels at the continuation
    lr: float  # the absolute Adam step
    concept: str  # what the prefixes name


def concept_phrase(facts: FactSet, n_keys: int = 4) -> str:
    """The name and a few key names: how the prefixes name the concept (the reference lists
    keywords of the concept the same way)."""
    return ", ".join(dict.fromkeys([facts.name, *facts.key_names[:n_keys]]))


def _lead(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many special tokens (BOS) open `ids`."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    n = 0
    while n < len(ids) and ids[n] in special:
        n += 1
    return n


def prefixed(tokenizer: Any, prefix: str, ids: Sequence[int]) -> tuple[list[int], int]:
    """(prefix ids + the text's ids without its BOS, shift): text position q (q >= its number of
    leading special tokens, or the BOS position predicting the first token) reads the same
    context at q + shift of the prefixed sequence."""
    pre = list(tokenizer(prefix)["input_ids"])
    lead = _lead(tokenizer, ids)
    return pre + list(ids[lead:]), len(pre) - lead


def _erase_texts(bundle: ModelBundle, texts: Sequence[str], cfg: ElmConfig, rng: random.Random) -> EraseTexts:
    """The concept texts tokenised, their text positions (BOS excluded) and a prefix pair each;
    the targets are computed when a text is first drawn (`fill_targets`)."""
    tok, max_len = bundle.tokenizer, cfg.retain.max_len
    seqs = [list(tok(t, truncation=True, max_length=max_len)["input_ids"]) for t in texts]
    mask = text_positions(pad_ids([[1] * len(s) for s in seqs], 0))  # [n, pos]
    if not bool(mask.any()):
        raise ValueError("The forget text has no tokens after the first: add longer facts about the concept.")
    keep = [i for i in range(len(seqs)) if bool(mask[i].any())]
    seqs = [seqs[i] for i in keep]
    return EraseTexts(pad_ids(seqs, pad_id(tok)), mask[keep], idx=[None] * len(seqs), probs=[None] * len(seqs),
                      choice=[rng.randrange(len(EXPERT_PREFIXES)) for _ in seqs], lengths=[len(s) for s in seqs])


def fill_targets(bundle: ModelBundle, erase: EraseTexts, pick: Sequence[int], concept: str, cfg: ElmConfig) -> None:
    """The top-k ELM target at every text position of the picked texts that have none yet: three
    passes of the base model each (plain, expert prefix, novice prefix), computed once per text."""
    tok = bundle.tokenizer
    with torch.no_grad():
        for i in pick:
            if erase.idx[i] is not None:
                continue
            seq = erase.input_ids[i, :erase.lengths[i]].tolist()
            keep = erase.mask[i, :len(seq)]
            logits = [selected_logits(bundle, torch.tensor([seq], device=bundle.device), keep[None].to(bundle.device))]
            for prefix in (EXPERT_PREFIXES[erase.choice[i]], NOVICE_PREFIXES[erase.choice[i]]):
                long, shift = prefixed(tok, prefix.format(concept=concept), seq)
                at = torch.zeros(1, len(long), dtype=torch.bool)
                at[0, torch.nonzero(keep).flatten() + shift] = True
                logits.append(selected_logits(bundle, torch.tensor([long], device=bundle.device), at.to(bundle.device)))
            base, expert, novice = logits
            idx, probs = elm_target(base, expert, novice, eta=cfg.eta, temperature=cfg.temperature, top_k=cfg.top_k)
            erase.idx[i], erase.probs[i] = idx.cpu(), probs.cpu()


def _next_logp(bundle: ModelBundle, ids: list[int], past: Any) -> tuple[torch.Tensor, Any]:
    """Log-probs of the next token ([vocab]) after `ids` (only the new ones when `past` holds
    the rest), and the extended cache."""
    out = bundle.hf_model(input_ids=torch.tensor([ids], device=bundle.device), past_key_values=past, use_cache=True,
                          logits_to_keep=1)
    return out.logits[0, -1].float().log_softmax(-1), out.past_key_values


def steered_continuation(bundle: ModelBundle, ids: Sequence[int], concept: str, n_tokens: int, eta: float,
                         choice: int = 0) -> list[int]:
    """The base model's greedy continuation of `ids` under log p + eta * (log p_novice - log
    p_expert) (the reference's erasing logits processor), `n_tokens` tokens, stopping at EOS."""
    tok = bundle.tokenizer
    streams = [list(ids)] + [prefixed(tok, p[choice].format(concept=concept), ids)[0]
                              for p in (EXPERT_PREFIXES, NOVICE_PREFIXES)]
    eos = tok.eos_token_id
    pasts: list[Any] = [None, None, None]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n_tokens):
            logps = []
            for s, stream in enumerate(streams):
                feed = stream if pasts[s] is None else stream[-1:]
                logp, pasts[s] = _next_logp(bundle, feed, pasts[s])
                logps.append(logp)
            nxt = int(target_logprobs(logps[0], logps[1], logps[2], eta).argmax())
            new.append(nxt)
            if nxt == eos:
                break
            for stream in streams:
                stream.append(nxt)
    return new


def _fluency(bundle: ModelBundle, texts: Sequence[str], concept: str, cfg: ElmConfig, rng: random.Random,
             progress: Progress) -> TextBatch | None:
    """Concept texts continued by a transition and the base model's novice-steered tokens, with
    labels at the transition and continuation tokens (what the fluency loss trains)."""
    if cfg.fluency_texts <= 0 or cfg.fluency_tokens <= 0 or cfg.fluency_weight == 0:
        return None
    tok, max_len = bundle.tokenizer, cfg.retain.max_len
    picked = rng.sample(list(texts), min(cfg.fluency_texts, len(texts)))
    progress.stage("ELM: novice-steered continuations for the fluency loss", total=len(picked), unit="text")
    seqs, starts = [], []
    for i, text in enumerate(picked):
        prompt = list(tok(text, truncation=True, max_length=max_len)["input_ids"])
        transition = list(tok(TRANSITIONS[i % len(TRANSITIONS)], add_special_tokens=False)["input_ids"])
        head = prompt + transition
        gen = steered_continuation(bundle, head, concept, cfg.fluency_tokens, cfg.fluency_eta,
                                   choice=rng.randrange(len(EXPERT_PREFIXES)))
        seqs.append(head + gen)
        starts.append(len(prompt))
        progress.advance(1)
    ids = pad_ids(seqs, pad_id(tok))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    labels = []
    for i, (seq, start) in enumerate(zip(seqs, starts, strict=True)):
        mask[i, start - 1:len(seq) - 1] = True  # the positions predicting transition + continuation
        labels.append(torch.tensor(seq[start:], dtype=torch.long))
    return TextBatch(ids, mask, idx=labels)


def prepare_problem(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: ElmConfig,
                    progress: Progress = NULL_PROGRESS) -> ElmProblem:
    """The concept texts (their targets are filled as they are drawn), the retain texts, the
    fluency continuations and the step size. Raises ValueError with a sentence for an empty
    fact set or an unusable config."""
    assert cfg.layers is not None  # fitted
    for layer in cfg.layers:
        bundle.check_layer(layer)
    if min(cfg.steps, cfg.batch_size, cfg.positions, cfg.rank, cfg.top_k) < 1:
        raise ValueError("ELM needs at least one step, text per batch and position per text, rank >= 1 and top_k >= 1.")
    if cfg.temperature <= 0:
        raise ValueError(f"ELM's temperature must be positive (got {cfg.temperature}).")
    rng = random.Random(cfg.seed)
    texts = forget_texts(corpus, facts)
    concept = concept_phrase(facts)
    erase = _erase_texts(bundle, texts, cfg, rng)
    tok = bundle.tokenizer
    r_seqs = [list(tok(d.text, truncation=True, max_length=cfg.retain.max_len)["input_ids"])
              for d in retain_documents(corpus, facts, cfg.retain)]
    retain = TextBatch(pad_ids(r_seqs, pad_id(tok)), text_positions(pad_ids([[1] * len(s) for s in r_seqs], 0)))
    fluency = _fluency(bundle, texts, concept, cfg, rng, progress)
    w = torch.cat([layout.w_out(bundle.hf_model, layer).detach().float().flatten() for layer in cfg.layers])
    lr = cfg.lr * float(w.pow(2).mean().sqrt())
    progress.message(f"ELM: {len(texts)} concept texts, {len(r_seqs)} retain texts, "
                     f"{0 if fluency is None else len(fluency.idx)} fluency continuations")
    return ElmProblem(erase=erase, retain=retain, fluency=fluency, lr=lr, concept=concept)


# -- the loop --------------------------------------------------------------------------------------
def lora_factors(d_mlp: int, d_model: int, rank: int, generator: torch.Generator,
                 device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(a [d_mlp, rank], b [rank, d_model]): a uniform in +-sqrt(3 / d_mlp) (LoRA's Kaiming
    initialisation of its down projection), b zero, so the delta a @ b starts at zero."""
    bound = math.sqrt(3.0 / d_mlp)
    a = ((torch.rand(d_mlp, rank, generator=generator) * 2 - 1) * bound).to(device).requires_grad_(True)
    b = torch.zeros(rank, d_model, device=device, requires_grad=True)
    return a, b


def sample_positions(mask: torch.Tensor, per_text: int, rng: random.Random) -> tuple[torch.Tensor, list[list[int]]]:
    """At most `per_text` of each row's set positions of mask ([b, pos] bool): the reduced mask
    and, per row, which of its set positions (their ranks, ascending) were kept."""
    out = torch.zeros_like(mask)
    ranks: list[list[int]] = []
    for r in range(mask.shape[0]):
        at = torch.nonzero(mask[r]).flatten().tolist()
        keep = sorted(rng.sample(range(len(at)), min(per_text, len(at))))
        out[r, [at[j] for j in keep]] = True
        ranks.append(keep)
    return out, ranks


def _step_losses(bundle: ModelBundle, problem: ElmProblem, cfg: ElmConfig, picks: dict[str, list[int]],
                 rows: dict[int, list[int]], factors: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
    device = bundle.device
    fill_targets(bundle, problem.erase, picks["erase"], problem.concept, cfg)
    e_ids, e_mask = problem.erase.rows(picks["erase"])
    e_mask, ranks = sample_positions(e_mask, cfg.positions, rng)
    idx = torch.cat([problem.erase.idx[i][keep] for i, keep in zip(picks["erase"], ranks, strict=True)]).to(device)
    probs = torch.cat([problem.erase.probs[i][keep] for i, keep in zip(picks["erase"], ranks, strict=True)]).to(device)
    r_ids, r_mask = problem.retain.rows(picks["retain"])
    r_mask, _ = sample_positions(r_mask, cfg.positions, rng)
    with torch.no_grad():
        base_logp = selected_logits(bundle, r_ids.to(device), r_mask.to(device)).log_softmax(-1)
    deltas = {layer: a @ b for layer, (a, b) in factors.items()}  # [d_mlp, d_model]
    logs: dict[str, float] = {}
    with delta_hooks(bundle, rows, deltas):
        erase = soft_cross_entropy(selected_logits(bundle, e_ids.to(device), e_mask.to(device)), idx, probs)
        retain = kl_divergence(base_logp, selected_logits(bundle, r_ids.to(device), r_mask.to(device)).log_softmax(-1))
        loss = cfg.erase_weight * erase + cfg.retain_weight * retain
        logs.update(erase=erase.item(), retain=retain.item())
        if problem.fluency is not None:
            f_ids, f_mask = problem.fluency.rows(picks["fluency"])
            labels = torch.cat([problem.fluency.idx[i] for i in picks["fluency"]]).to(device)
            fluency = token_nll(selected_logits(bundle, f_ids.to(device), f_mask.to(device)), labels)
            loss = loss + cfg.fluency_weight * fluency
            logs["fluency"] = fluency.item()
    return loss, logs


def elm_unlearn(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: ElmConfig = ElmConfig(),
                progress: Progress = NULL_PROGRESS) -> tuple[OptimiseResult, ElmConfig, ElmProblem]:
    """Train the rank-`rank` W_out deltas (module docstring). Returns the result (every row of
    each trained layer with its delta a @ b), the config as it ran (layers set) and the problem."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    assert cfg.layers is not None
    problem = prepare_problem(bundle, facts, corpus, cfg, progress)
    gen = torch.Generator().manual_seed(cfg.seed)
    rank = min(cfg.rank, bundle.d_mlp, bundle.d_model)
    factors = {layer: lora_factors(bundle.d_mlp, bundle.d_model, rank, gen, bundle.device) for layer in cfg.layers}
    rows = {layer: list(range(bundle.d_mlp)) for layer in cfg.layers}
    opt = torch.optim.Adam([t for pair in factors.values() for t in pair], lr=problem.lr)
    rng = random.Random(cfg.seed + 1)
    streams = {"erase": batches(len(problem.erase.idx), cfg.batch_size, rng),
               "retain": batches(len(problem.retain.input_ids), cfg.batch_size, rng)}
    if problem.fluency is not None:
        streams["fluency"] = batches(len(problem.fluency.idx), cfg.batch_size, rng)
    history: list[dict[str, float]] = []
    progress.stage(f"ELM: rank-{rank} deltas on W_out of layers {', '.join(map(str, cfg.layers))}",
                   total=cfg.steps, unit="step")
    for step in range(cfg.steps):
        picks = {name: next(stream) for name, stream in streams.items()}
        opt.zero_grad()
        with torch.enable_grad():
            loss, logs = _step_losses(bundle, problem, cfg, picks, rows, factors, rng)
            loss.backward()
        opt.step()
        logs["loss"] = loss.item()
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"ELM diverged at step {step} (loss {logs['loss']}): lower its lr.")
        history.append({"step": float(step), **logs})
        progress.advance(1, **logs)
    with torch.no_grad():
        deltas = {layer: (a @ b).detach().cpu().contiguous() for layer, (a, b) in factors.items()}
    result = OptimiseResult(rows=rows, deltas=deltas, history=history, seconds=time.perf_counter() - t0)
    return result, replace(cfg, rank=rank), problem


def to_elm_operation(result: OptimiseResult, cfg: ElmConfig, problem: ElmProblem) -> tuple[Any, dict[str, torch.Tensor]]:
    """The OptimiseValueVectors operation (params: the config as it ran, method 'elm', the concept
    phrase of the prefixes and the absolute step) and its payload, tensors named 'elm.l<layer>.delta'."""
    op, payload = to_operation(result, cfg, prefix="elm")
    op.params.update(method="elm", concept_phrase=problem.concept, lr_abs=problem.lr)
    return op, payload
