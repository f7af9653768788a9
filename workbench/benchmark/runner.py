"""Batched model calls used by the benchmark and the scorecard.

Prompts are grouped by token length and run without padding, so a batched result equals the
one-prompt result (no position-id or mask subtleties with Gemma 3's sliding attention).
Every function here only reads the model; callers hold `bundle.lock` around an edit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.models import ModelBundle


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


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of the answer as it continues a prompt: a leading space is added."""
    text = answer if answer[:1].isspace() else " " + answer
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids with BOS, optionally truncated to max_tokens (BOS included)."""
    out = []
    for t in texts:
        ids = list(tokenizer(t).input_ids)
        out.append(ids[:max_tokens] if max_tokens else ids)
    return out


def _by_length(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    batches = []
    for _, idx in sorted(groups.items()):
        for j in range(0, len(idx), batch_size):
            batches.append(idx[j : j + batch_size])
    return batches


def _device(bundle: ModelBundle) -> torch.device:
    return next(bundle.hf_model.parameters()).device


@torch.no_grad()
def last_logprobs(bundle: ModelBundle, prompts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Log-probs of the next token after each prompt.  # [n_prompts, vocab]"""
    seqs = encode(bundle.tokenizer, prompts)
    out = torch.empty(len(seqs), bundle.hf_model.config.vocab_size)
    for idx in _by_length(seqs, batch_size):
        ids = torch.tensor([seqs[i] for i in idx], device=_device(bundle))
        logits = bundle.hf_model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()  # [b, vocab]
        out[idx] = torch.log_softmax(logits, dim=-1).cpu()
    return out


def next_tokens(
    bundle: ModelBundle, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 32
) -> list[NextToken]:
    """Greedy next token and the probability of each answer's first token."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    if not prompts:
        return []
    lp = last_logprobs(bundle, prompts, batch_size)  # [n, vocab]
    tok = bundle.tokenizer
    out = []
    for i, ans in enumerate(answers):
        aid = answer_token_ids(tok, ans)[0]
        top = int(lp[i].argmax())
        informative = bool(tok.decode([aid]).strip())
        out.append(NextToken(top, tok.decode([top]), aid, math.exp(float(lp[i, aid])), informative))
    return out


@torch.no_grad()
def greedy_continuations(
    bundle: ModelBundle, prompts: Sequence[str], max_new_tokens: int = 8, batch_size: int = 16
) -> list[str]:
    """Greedy continuation text of each prompt (no padding: batches of equal length)."""
    seqs = encode(bundle.tokenizer, prompts)
    out = [""] * len(seqs)
    model = bundle.hf_model
    for idx in _by_length(seqs, batch_size):
        ids = torch.tensor([seqs[i] for i in idx], device=_device(bundle))
        gen = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            top_p=None,
            top_k=None,
            temperature=None,
            pad_token_id=bundle.tokenizer.pad_token_id,
        )
        for row, i in enumerate(idx):
            out[i] = bundle.tokenizer.decode(gen[row, ids.shape[1] :], skip_special_tokens=True)
    return out


@torch.no_grad()
def text_logprobs(
    bundle: ModelBundle, texts: Sequence[str], max_tokens: int = 128, batch_size: int = 8, top_k: int = 64
) -> tuple[torch.Tensor, TopKDist]:
    """Per-token log-likelihood of each text and its next-token distributions (top-k form).

    Returns (token_logprobs [positions], dist) over all predicted positions of all texts in
    text order (position 1..len-1 of each text)."""
    seqs = encode(bundle.tokenizer, texts, max_tokens)
    per_text: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(seqs)
    for idx in _by_length(seqs, batch_size):
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
    for idx in _by_length(seqs, batch_size):
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
