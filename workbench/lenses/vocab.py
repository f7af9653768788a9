"""Vocabulary projection (logit lens) of value vectors and other residual-space directions.

P(z) = (gamma_f * z) @ U for z in residual coordinates (docs/architecture.md, "Lenses"). For a value vector the
'gain_aware' lens uses z = gamma_post * v (what actually reaches the residual stream through
Gemma's post-FFN RMSNorm, up to a per-token scale); the 'reference' lens uses the raw v (what
the papers did).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from workbench.models import layout

Lens = Literal["gain_aware", "reference"]


@dataclass
class VocabProjection:
    """Top/bottom-k tokens of each of n vectors, plus the mean/std of its logits over the
    clean vocabulary (for standardised scores)."""

    top_ids: torch.Tensor  # [n, k] int64
    top_logits: torch.Tensor  # [n, k]
    bottom_ids: torch.Tensor  # [n, k] int64
    bottom_logits: torch.Tensor  # [n, k]
    mean: torch.Tensor  # [n]
    std: torch.Tensor  # [n]


@dataclass
class VocabStats:
    """The eligible token ids and the two moments of their unembedding columns, computed once
    per (unembedding, mask) and shared by every projection."""

    ids: torch.Tensor  # [count] eligible token ids
    col_sum: torch.Tensor  # [d_model] float64: sum of eligible columns
    gram: torch.Tensor  # [d_model, d_model] float64: U_e U_e^T


def vocab_stats(unembed: torch.Tensor, mask: torch.Tensor | None = None, chunk: int = 16384) -> VocabStats:
    ids = torch.arange(unembed.shape[1]) if mask is None else mask.nonzero().flatten()
    if len(ids) == 0:
        raise ValueError("The token mask excludes the whole vocabulary.")
    col_sum = torch.zeros(unembed.shape[0], dtype=torch.float64)
    gram = torch.zeros(unembed.shape[0], unembed.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            cols = unembed[:, ids[start : start + chunk]].float()  # [d_model, c]
            col_sum += cols.sum(1, dtype=torch.float64)
            gram += (cols @ cols.T).double()
    return VocabStats(ids, col_sum, gram)


def project_topk(
    vectors: torch.Tensor,  # [n, d_model], already multiplied by every gain
    unembed: torch.Tensor,  # [d_model, vocab]
    k: int = 30,
    mask: torch.Tensor | None = None,  # [vocab] bool, True = eligible token
    chunk: int = 16384,
    stats: VocabStats | None = None,
    max_block: int = 1 << 25,
) -> VocabProjection:
    """Running top/bottom-k over chunks of the eligible tokens, for blocks of rows: memory
    O(max_block) floats per step (128 MB), not O(n * vocab), so a 262k-feature SAE projects in
    the same memory as a 4k one. Mean and std over the eligible tokens come from the column
    moments (sum_t z.u_t = z.(sum_t u_t); sum_t (z.u_t)^2 = z G z with G = U U^T)."""
    stats = stats or vocab_stats(unembed, mask, chunk)
    n = vectors.shape[0]
    vectors = vectors.float()
    rows = max(1, max_block // chunk)
    parts = [_project_block(vectors[r : r + rows], unembed, k, stats, chunk) for r in range(0, n, rows)]
    top_i, top_v, bot_i, bot_v = (torch.cat([p[j] for p in parts]) if parts else torch.zeros(0, k)
                                  for j in range(4))
    with torch.no_grad():
        z = vectors.double()
        count = len(stats.ids)
        mean = (z @ stats.col_sum) / count
        sq = ((z @ stats.gram) * z).sum(1) / count
    std = (sq - mean**2).clamp_min(0).sqrt()
    return VocabProjection(top_i.long(), top_v, bot_i.long(), bot_v, mean.float(), std.float())


def _project_block(
    vectors: torch.Tensor, unembed: torch.Tensor, k: int, stats: VocabStats, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top ids, top logits, bottom ids, bottom logits) of one block of rows: [n, k] each."""
    n = vectors.shape[0]
    top_v = torch.full((n, k), -torch.inf)
    top_i = torch.zeros((n, k), dtype=torch.long)
    bot_v = torch.full((n, k), torch.inf)
    bot_i = torch.zeros((n, k), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(stats.ids), chunk):
            ids = stats.ids[start : start + chunk]
            logits = vectors @ unembed[:, ids].float()  # [n, c]
            kk = min(k, logits.shape[1])
            cv, ci = logits.topk(kk, dim=1)
            top_v, top_i = _merge(top_v, top_i, cv, ids[ci], k, largest=True)
            cv, ci = logits.topk(kk, dim=1, largest=False)
            bot_v, bot_i = _merge(bot_v, bot_i, cv, ids[ci], k, largest=False)
    return top_i, top_v, bot_i, bot_v


def _merge(
    vals: torch.Tensor, ids: torch.Tensor, new_vals: torch.Tensor, new_ids: torch.Tensor, k: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    all_v = torch.cat([vals, new_vals], dim=1)
    all_i = torch.cat([ids, new_ids], dim=1)
    v, pos = all_v.topk(k, dim=1, largest=largest)
    return v, all_i.gather(1, pos)


def value_vector_directions(hf_model: torch.nn.Module, layer: int, lens: Lens) -> torch.Tensor:
    """The layer's value vectors as residual directions with the final gain folded in:
    [d_mlp, d_model] = v_i * (gamma_post if gain_aware) * gamma_f."""
    rows = layout.w_out(hf_model, layer).detach().float()
    if lens == "gain_aware":
        rows = rows * layout.post_ffn_gain(hf_model, layer)
    return rows * layout.final_gain(hf_model)


def residual_directions(hf_model: torch.nn.Module, vectors: torch.Tensor) -> torch.Tensor:
    """Residual-space vectors [n, d_model] with the final gain folded in, ready for project_topk."""
    return vectors.float() * layout.final_gain(hf_model)


def iter_layer_projections(
    hf_model: torch.nn.Module,
    layers: list[int],
    mask: torch.Tensor | None,
    k: int = 30,
    lens: Lens = "gain_aware",
    chunk: int = 16384,
    on_layer: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, torch.Tensor, VocabProjection]]:
    """Yield (layer, value-vector norms [d_mlp], projection) one layer at a time."""
    unembed = layout.unembed(hf_model)
    stats = vocab_stats(unembed, mask, chunk) if layers else None
    for layer in layers:
        rows = value_vector_directions(hf_model, layer, lens)
        norms = layout.w_out(hf_model, layer).detach().float().norm(dim=1)
        yield layer, norms, project_topk(rows, unembed, k=k, mask=mask, chunk=chunk, stats=stats)
        if on_layer is not None:
            on_layer(layer)
