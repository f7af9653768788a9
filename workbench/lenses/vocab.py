"""Vocabulary projection (logit lens) of value vectors and other residual-space directions.

P(z) = (gamma_f * z) @ U for z in residual coordinates (METHODS 1.2). For a value vector the
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


def project_topk(
    vectors: torch.Tensor,  # [n, d_model], already multiplied by every gain
    unembed: torch.Tensor,  # [d_model, vocab]
    k: int = 30,
    mask: torch.Tensor | None = None,  # [vocab] bool, True = eligible token
    chunk: int = 16384,
) -> VocabProjection:
    """Running top/bottom-k over vocabulary chunks: memory O(n * (chunk + k)), not O(n * vocab)."""
    n = vectors.shape[0]
    vocab = unembed.shape[1]
    vectors = vectors.float()
    top_v = torch.full((n, k), -torch.inf)
    top_i = torch.zeros((n, k), dtype=torch.long)
    bot_v = torch.full((n, k), torch.inf)
    bot_i = torch.zeros((n, k), dtype=torch.long)
    total = torch.zeros(n, dtype=torch.float64)
    total_sq = torch.zeros(n, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for start in range(0, vocab, chunk):
            stop = min(start + chunk, vocab)
            logits = vectors @ unembed[:, start:stop].float()  # [n, c]
            ids = torch.arange(start, stop)
            if mask is not None:
                keep = mask[start:stop]
                if not keep.any():
                    continue
                logits = logits[:, keep]
                ids = ids[keep]
            total += logits.sum(1, dtype=torch.float64)
            total_sq += (logits.double() ** 2).sum(1)
            count += logits.shape[1]
            kk = min(k, logits.shape[1])
            cv, ci = logits.topk(kk, dim=1)
            top_v, top_i = _merge(top_v, top_i, cv, ids[ci], k, largest=True)
            cv, ci = logits.topk(kk, dim=1, largest=False)
            bot_v, bot_i = _merge(bot_v, bot_i, cv, ids[ci], k, largest=False)
    if count == 0:
        raise ValueError("The token mask excludes the whole vocabulary.")
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return VocabProjection(top_i, top_v, bot_i, bot_v, mean.float(), std.float())


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
    for layer in layers:
        rows = value_vector_directions(hf_model, layer, lens)
        norms = layout.w_out(hf_model, layer).detach().float().norm(dim=1)
        yield layer, norms, project_topk(rows, unembed, k=k, mask=mask, chunk=chunk)
        if on_layer is not None:
            on_layer(layer)
