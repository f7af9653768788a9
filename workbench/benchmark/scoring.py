"""Pure scoring math on model outputs: accuracy, containment, perplexity, KL, harmonic mean."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch


def normalise(text: str) -> str:
    """Lower case, accents kept, runs of non-word characters collapsed to one space."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def contains_any(continuation: str, accepted: Sequence[str]) -> bool:
    """True when any accepted string occurs in the continuation (normalised, case-insensitive)."""
    cont = f" {normalise(continuation)} "
    return any(normalise(a) and normalise(a) in cont for a in accepted)


def mean(values: Sequence[float]) -> float:
    """Mean, NaN for an empty list (shown as a blank cell, never as 0)."""
    return float(sum(values) / len(values)) if values else float("nan")


def perplexity(token_logprobs: torch.Tensor) -> float:
    """exp of the mean negative log-likelihood per token.  token_logprobs: [positions]"""
    if token_logprobs.numel() == 0:
        raise ValueError("Perplexity of zero tokens is undefined.")
    nll = -float(token_logprobs.double().mean())
    return math.exp(nll) if nll < 700 else math.inf


def topk_kl(
    base_logprobs: torch.Tensor, base_rest: torch.Tensor, edited_logprobs_at_ids: torch.Tensor
) -> torch.Tensor:
    """KL(base || edited) per position from the base's top-k tokens plus one 'rest' bucket.

    base_logprobs, edited_logprobs_at_ids: [positions, k] log-probs of the same k token ids;
    base_rest: [positions] log of the base's leftover mass. Merging the tail into one bucket
    gives a lower bound of the full KL (log-sum inequality), tight when top-k holds most mass.
    Returns [positions]."""
    p = base_logprobs.double()
    q = edited_logprobs_at_ids.double()
    q_rest = torch.log1p(-q.exp().sum(-1).clamp(max=1 - 1e-12))
    head = (p.exp() * (p - q)).sum(-1)
    tail = base_rest.double().exp() * (base_rest.double() - q_rest)
    return (head + tail).clamp(min=0.0)


def harmonic_mean(values: Sequence[float]) -> float:
    """HM(x_1..x_n) = n / sum(1/x_j); any term <= 0 (or NaN) makes it 0, so a run that does not
    erase cannot win (docs/architecture.md, "Scorecard")."""
    if not values:
        raise ValueError("Harmonic mean of nothing is undefined.")
    if any(not (v > 0) for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
