"""Batched model calls used by the benchmark and the scorecard.

Prompts are sorted by token length and left-padded into batches (attention mask and position
ids follow the padding, `generate.left_padded`), so a batched result equals the one-prompt
result up to float summation order; tests/unit/test_benchmark.py checks it. Full-text scoring
(`text_logprobs*`) groups texts of equal length instead and needs no padding.
Every `*_each` function runs several model variants (None = base, or an Adapter) in the same
forward passes: each batch is repeated once per variant and routed row by row
(workbench.adapters.route), and one result is returned per variant. The plain functions are
the base-model case. `prompt_outcomes_each` scores a prompt's next token and continues it
greedily in the same passes (the prompt's forward pass is the decode's first step). Nothing
here writes the weights or needs a lock.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.adapters import Adapter, route
from workbench.generate import GenerationResult, RowRequest, SamplingParams, decode_rows, left_padded
from workbench.lenses.tokens import continuation_ids, pad_id
from workbench.models import ModelBundle
from workbench.models.chat import check_chat_template, prompt_ids

Variants = Sequence[Adapter | None]


@dataclass(frozen=True)
class NextToken:
    """What the model does right after one prompt."""

    top_id: int  # greedy next token
    top_text: str
    answer_id: int  # first token of " " + answer
    answer_prob: float  # p(answer_id | prompt)
    answer_informative: bool = True  # False when the answer's first token is only whitespace (" 11" -> " ")

    @property
    def first_token_correct(self) -> bool:
        """Greedy token is the answer's first token, and that token is more than whitespace."""
        return self.top_id == self.answer_id and self.answer_informative


@dataclass(frozen=True)
class TopKDist:
    """A next-token distribution kept as its top-k log-probs plus the leftover mass.

    Enough to compute KL(base || edited) without keeping the 262k-wide distribution."""

    ids: torch.Tensor  # [positions, k] long
    logprobs: torch.Tensor  # [positions, k] float32
    rest_logprob: torch.Tensor  # [positions] log(1 - sum exp(logprobs))


def answer_token_ids(tokenizer, answer: str, prompt: str = "") -> list[int]:
    """Token ids of the answer as it continues `prompt` (a leading space is added): the tokens
    of prompt + answer from the prompt's end on (lenses.tokens.continuation_ids), so a
    tokenizer that writes a word start differently mid-text gives the ids the model predicts.
    Without a prompt, the answer alone with its leading space."""
    if prompt:
        return continuation_ids(tokenizer, prompt, answer)
    text = answer if answer[:1].isspace() else " " + answer
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids with BOS, optionally truncated to max_tokens (BOS included)."""
    out = []
    for t in texts:
        ids = list(tokenizer(t).input_ids)
        out.append(ids[:max_tokens] if max_tokens else ids)
    return out


def _same_length(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Batches of indices whose sequences have equal length (no padding needed)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    batches = []
    for _, idx in sorted(groups.items()):
        for j in range(0, len(idx), batch_size):
            batches.append(idx[j : j + batch_size])
    return batches


def _by_length(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by sequence length, so left padding stays short."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def _device(bundle: ModelBundle) -> torch.device:
    return next(bundle.hf_model.parameters()).device


def _pad_id(bundle: ModelBundle) -> int:
    return pad_id(bundle.tokenizer)


def _logits_each(
    bundle: ModelBundle, ids: torch.Tensor, variants: Variants, mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None, **kw: object,
) -> torch.Tensor:
    """Logits of one batch ids [b, pos] under every variant: [n_variants, b, pos', vocab]."""
    n, b = len(variants), ids.shape[0]
    if mask is not None:
        kw["attention_mask"] = mask.repeat(n, 1)
    if positions is not None:
        kw["position_ids"] = positions.repeat(n, 1)
    with route(bundle, [v for v in variants for _ in range(b)]):
        logits = bundle.hf_model(input_ids=ids.repeat(n, 1), **kw).logits
    return logits.view(n, b, *logits.shape[1:])


@torch.no_grad()
def last_logprobs(bundle: ModelBundle, prompts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Log-probs of the next token after each prompt.  # [n_prompts, vocab]"""
    return last_logprobs_each(bundle, prompts, (None,), batch_size)[0]


@torch.no_grad()
def last_logprobs_each(bundle: ModelBundle, prompts: Sequence[str], variants: Variants,
                       batch_size: int = 32) -> torch.Tensor:
    """Next-token log-probs per variant: [n_variants, n_prompts, vocab]."""
    seqs = encode(bundle.tokenizer, prompts)
    out = torch.empty(len(variants), len(seqs), bundle.hf_model.config.vocab_size)
    per_batch = max(1, batch_size // len(variants))
    for idx in _by_length(seqs, per_batch):
        ids, mask, positions = left_padded([seqs[i] for i in idx], _pad_id(bundle), _device(bundle))
        logits = _logits_each(bundle, ids, variants, mask, positions, logits_to_keep=1)[:, :, -1].float()  # [v, b, vocab]
        out[:, idx] = torch.log_softmax(logits, dim=-1).cpu()
    return out


def next_tokens(
    bundle: ModelBundle, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 32
) -> list[NextToken]:
    """Greedy next token and the probability of each answer's first token."""
    return next_tokens_each(bundle, prompts, answers, (None,), batch_size)[0]


def next_tokens_each(
    bundle: ModelBundle, prompts: Sequence[str], answers: Sequence[str], variants: Variants, batch_size: int = 32
) -> list[list[NextToken]]:
    """next_tokens under each variant, from shared forward passes."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    if not prompts:
        return [[] for _ in variants]
    lps = last_logprobs_each(bundle, prompts, variants, batch_size)  # [v, n, vocab]
    answer_ids = [answer_token_ids(bundle.tokenizer, ans, prompt)[0] for prompt, ans in zip(prompts, answers, strict=True)]
    return [[_next_token(bundle.tokenizer, lp[i], aid) for i, aid in enumerate(answer_ids)] for lp in lps]


def _next_token(tokenizer, logprobs: torch.Tensor, aid: int) -> NextToken:  # logprobs [vocab]
    top = int(logprobs.argmax())
    informative = bool(tokenizer.decode([aid]).strip())
    return NextToken(top, tokenizer.decode([top]), aid, math.exp(float(logprobs[aid])), informative)


@torch.no_grad()
def greedy_continuations(
    bundle: ModelBundle, prompts: Sequence[str], max_new_tokens: int = 8, batch_size: int = 16
) -> list[str]:
    """Greedy continuation text of each prompt (no padding: batches of equal length)."""
    return greedy_continuations_each(bundle, prompts, (None,), max_new_tokens, batch_size)[0]


@torch.no_grad()
def greedy_continuations_each(
    bundle: ModelBundle, prompts: Sequence[str], variants: Variants, max_new_tokens: int = 8, batch_size: int = 16,
    *, chat_template: bool = False,
) -> list[list[str]]:
    """Greedy continuations under each variant; batch_size rows (prompts x variants) per batch.
    `chat_template`: each prompt goes to the model as one user turn of its chat template
    (models/chat.py), and the continuation is the model's reply."""
    answers = [""] * len(prompts)
    return prompt_outcomes_each(bundle, prompts, answers, variants, max_new_tokens, batch_size, score=False,
                                chat_template=chat_template)[1]


@torch.no_grad()
def prompt_outcomes_each(
    bundle: ModelBundle, prompts: Sequence[str], answers: Sequence[str], variants: Variants,
    max_new_tokens: int = 8, rows_per_batch: int = 16, *, score: bool = True, chat_template: bool = False,
) -> tuple[list[list[NextToken]], list[list[str]]]:
    """next_tokens_each and greedy_continuations_each in the same passes: the prompt's forward
    pass scores the answer's first token and is the first step of the greedy decode.

    `rows_per_batch` counts prompts x variants; 16 keeps the CPU unembedding on its fast path
    (models/skinny.py). Returns (next tokens per variant, continuation text per variant).
    `chat_template` (continuations only, score=False: an answer continues the prompt's text, not
    a chat turn) sends each prompt as a chat turn; ValueError when the tokenizer has no template."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    if chat_template and score:
        raise ValueError("Answers are scored as continuations of the prompt's text; use the chat template "
                         "for continuations only (score=False).")
    check_chat_template(bundle.tokenizer, chat_template)
    n, tok = len(variants), bundle.tokenizer
    nts: list[list[NextToken | None]] = [[None] * len(prompts) for _ in variants]
    conts = [[""] * len(prompts) for _ in variants]
    seqs = [prompt_ids(tok, p, chat_template) for p in prompts]  # what decode_rows feeds, for the buckets
    answer_ids = [answer_token_ids(tok, ans, prompt)[0] for prompt, ans in zip(prompts, answers, strict=True)]
    for idx in _by_length(seqs, max(1, rows_per_batch // n)):
        rows = [
            RowRequest(prompts[i], v, SamplingParams(max_new_tokens=max_new_tokens), max_new_tokens, math.inf,
                       GenerationResult(prompt=prompts[i], edited=v is not None), chat_template)
            for v in variants for i in idx
        ]

        def first(step: int, logits: torch.Tensor, idx: list[int] = idx) -> None:  # logits [v * b, vocab]
            if step != 0 or not score:
                return
            lp = torch.log_softmax(logits.float(), dim=-1).cpu().view(n, len(idx), -1)
            for v in range(n):
                for row, i in enumerate(idx):
                    nts[v][i] = _next_token(tok, lp[v, row], answer_ids[i])

        for _ in decode_rows(bundle, rows, on_logits=first):
            pass
        for v in range(n):
            for row, i in enumerate(idx):
                conts[v][i] = rows[v * len(idx) + row].result.text
    return [[t for t in per if t is not None] for per in nts], conts


@torch.no_grad()
def text_logprobs(
    bundle: ModelBundle, texts: Sequence[str], max_tokens: int = 128, batch_size: int = 8, top_k: int = 64
) -> tuple[torch.Tensor, TopKDist]:
    """Per-token log-likelihood of each text and its next-token distributions (top-k form).

    Returns (token_logprobs [positions], dist) over all predicted positions of all texts in
    text order (position 1..len-1 of each text)."""
    seqs = encode(bundle.tokenizer, texts, max_tokens)
    per_text: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(seqs)
    for idx in _same_length(seqs, batch_size):
        ids = torch.tensor([seqs[i] for i in idx], device=_device(bundle))
        logits = bundle.hf_model(input_ids=ids).logits[:, :-1].float()  # [b, pos-1, vocab]
        lp = torch.log_softmax(logits, dim=-1)
        tgt = ids[:, 1:]
        tok_lp = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [b, pos-1]
        top_lp, top_id = lp.topk(top_k, dim=-1)  # [b, pos-1, k]
        rest = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-7))  # [b, pos-1]
        for row, i in enumerate(idx):
            per_text[i] = (tok_lp[row].cpu(), top_id[row].cpu(), top_lp[row].cpu(), rest[row].cpu())
    parts = [p for p in per_text if p is not None]
    return (
        torch.cat([p[0] for p in parts]),
        TopKDist(
            torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]),
            torch.cat([p[3] for p in parts]),
        ),
    )


@torch.no_grad()
def logprobs_at(
    bundle: ModelBundle, texts: Sequence[str], ids: torch.Tensor, max_tokens: int = 128, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-likelihoods and the edited log-probs of the given top-k ids (from a base TopKDist).

    Returns (token_logprobs [positions], logprobs_of_ids [positions, k]), positions in the same
    order as `text_logprobs`."""
    seqs = encode(bundle.tokenizer, texts, max_tokens)
    offsets = [0]
    for s in seqs:
        offsets.append(offsets[-1] + len(s) - 1)
    tok_out = torch.empty(offsets[-1])
    sel_out = torch.empty(offsets[-1], ids.shape[1])
    for idx in _same_length(seqs, batch_size):
        t = torch.tensor([seqs[i] for i in idx], device=_device(bundle))
        lp = torch.log_softmax(
            bundle.hf_model(input_ids=t).logits[:, :-1].float(), dim=-1
        )  # [b, pos-1, vocab]
        tok_lp = lp.gather(-1, t[:, 1:].unsqueeze(-1)).squeeze(-1)  # [b, pos-1]
        for row, i in enumerate(idx):
            a, b = offsets[i], offsets[i + 1]
            tok_out[a:b] = tok_lp[row].cpu()
            sel_out[a:b] = lp[row].cpu().gather(-1, ids[a:b])
    return tok_out, sel_out


@torch.no_grad()
def text_logprobs_each(
    bundle: ModelBundle, texts: Sequence[str], variants: Variants, max_tokens: int = 128, batch_size: int = 8,
    top_k: int = 64, reference: TopKDist | None = None,
) -> tuple[list[torch.Tensor], TopKDist, list[torch.Tensor]]:
    """Per-token log-likelihoods under each variant, the first variant's (the reference's)
    top-k next-token distributions, and every variant's log-probs of those same top-k ids.

    With `reference` (a TopKDist measured before on the same texts), its top-k ids are used and
    returned instead, so every variant is measured against it.

    Returns (token_logprobs per variant [positions], reference dist, logprobs_at_ids per
    variant [positions, k]), positions in text order as in `text_logprobs`."""
    seqs = encode(bundle.tokenizer, texts, max_tokens)
    n = len(variants)
    offsets = [0]
    for s in seqs:
        offsets.append(offsets[-1] + len(s) - 1)
    tok_out = torch.empty(n, offsets[-1])
    ref_ids = torch.empty(offsets[-1], top_k, dtype=torch.long)
    ref_lp = torch.empty(offsets[-1], top_k)
    ref_rest = torch.empty(offsets[-1])
    if reference is not None:
        if reference.ids.shape[0] != offsets[-1]:
            raise ValueError("The reference distribution was measured on other texts.")
        top_k = int(reference.ids.shape[1])
    at_ids = torch.empty(n, offsets[-1], top_k)
    for idx in _same_length(seqs, max(1, batch_size // n)):
        ids = torch.tensor([seqs[i] for i in idx], device=_device(bundle))
        lp = torch.log_softmax(_logits_each(bundle, ids, variants)[:, :, :-1].float(), dim=-1)  # [v, b, pos-1, vocab]
        tgt = ids[:, 1:].unsqueeze(0).expand(n, -1, -1)
        tok_lp = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [v, b, pos-1]
        if reference is None:
            top_lp, top_id = lp[0].topk(top_k, dim=-1)  # [b, pos-1, k]
        else:
            top_id = torch.stack([reference.ids[offsets[i]:offsets[i + 1]] for i in idx]).to(lp.device)
            top_lp = lp[0].gather(-1, top_id)
        rest = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-7))  # [b, pos-1]
        sel = lp.gather(-1, top_id.unsqueeze(0).expand(n, -1, -1, -1))  # [v, b, pos-1, k]
        for row, i in enumerate(idx):
            a, b = offsets[i], offsets[i + 1]
            tok_out[:, a:b] = tok_lp[:, row].cpu()
            ref_ids[a:b], ref_lp[a:b], ref_rest[a:b] = top_id[row].cpu(), top_lp[row].cpu(), rest[row].cpu()
            at_ids[:, a:b] = sel[:, row].cpu()
    ref = reference if reference is not None else TopKDist(ref_ids, ref_lp, ref_rest)
    return list(tok_out), ref, list(at_ids)
