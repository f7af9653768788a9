"""Row selection by activation contrast: which value vectors (W_out rows) fire on the concept.

z_i = |mean_c(h_i) - mean_n(h_i)| / sd_n(h_i) of each MLP's down_proj input h, concept text vs
retain text (or the name's last token vs made-up names in the same frames); the highest z
across layers are the rows an edit touches. Used by the localized optimisation (`select_rows`)
and by 'ablate' (the rows it zeroes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.corpus import Document
from workbench.corpus.nonce import nonce_names
from workbench.methods.facts import FactSet
from workbench.methods.frames import FrameBatch, last_name_position, name_frames
from workbench.models import ModelBundle
from workbench.models.hooks import mlp_hidden, text_positions


def mlp_hidden_means(bundle: ModelBundle, texts: Sequence[str], layers: Sequence[int], max_len: int,
                     positions: Sequence[int] | None = None) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Mean and std of h (down_proj input) per layer over real tokens (BOS excluded), or only at
    the given position of each text when `positions` is set."""
    tok = bundle.tokenizer
    sums: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad():
        for start in range(0, len(texts), 8):
            chunk = list(texts[start:start + 8])
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                      padding_side="right")
            hidden = mlp_hidden(bundle.bridge, enc["input_ids"], layers, attention_mask=enc["attention_mask"])
            keep = text_positions(enc["attention_mask"])
            if positions is not None:
                keep = torch.zeros_like(keep)
                for i, p in enumerate(positions[start:start + 8]):
                    keep[i, p] = True
            for layer in layers:
                sums[layer].append(hidden[layer][keep])
    means = {layer: torch.cat(v).mean(0) for layer, v in sums.items()}
    stds = {layer: torch.cat(v).std(0) for layer, v in sums.items()}
    return means, stds


def contrast_rows(
    concept_mean: dict[int, torch.Tensor], neutral_mean: dict[int, torch.Tensor], neutral_std: dict[int, torch.Tensor],
    guard_sigma: float = 10.0,
) -> dict[int, torch.Tensor]:
    """z_i = |mean_c(h_i) - mean_n(h_i)| / sd_n(h_i) for every neuron of every layer ({layer:
    [d_mlp]}; `top_rows` picks from them); always-on neurons whose neutral mean |h| is an extreme
    outlier (> median + guard_sigma * MAD) get z = 0 (guard list)."""
    scores = {}
    for layer, mc in concept_mean.items():
        z = (mc - neutral_mean[layer]).abs() / neutral_std[layer].clamp_min(1e-6)
        mag = neutral_mean[layer].abs()
        med = mag.median()
        mad = (mag - med).abs().median().clamp_min(1e-8)
        z = torch.where(mag > med + guard_sigma * 1.4826 * mad, torch.zeros_like(z), z)
        scores[layer] = z
    return scores


def top_rows(scores: dict[int, torch.Tensor], n_rows: int) -> dict[int, list[int]]:
    """The n_rows highest-scoring (layer, neuron) pairs across layers."""
    flat = [(float(s), layer, i) for layer, z in scores.items() for i, s in enumerate(z.tolist())]
    flat.sort(reverse=True)
    rows: dict[int, list[int]] = {}
    for _, layer, i in flat[:n_rows]:
        rows.setdefault(layer, []).append(i)
    return {layer: sorted(v) for layer, v in sorted(rows.items())}


def select_rows(
    bundle: ModelBundle, facts: FactSet, retain: Sequence[Document], frames: FrameBatch | None, *,
    target: str, layers: Sequence[int], n_rows: int, max_len: int,
) -> dict[int, list[int]]:
    """The `n_rows` rows of `layers` by activation contrast: on concept text vs retain text (fact
    target), at the name's last token vs made-up names (representation target), or the larger of
    the two ('both'). The counterfactual target uses the concept-text contrast."""
    layers = list(layers)
    neutral_texts = [d.text for d in retain]
    n_mean, n_std = mlp_hidden_means(bundle, neutral_texts, layers, max_len)
    scores: dict[int, torch.Tensor] = {}
    if target in ("facts", "both", "counterfactual"):  # concept text vs neutral text
        c_mean, _ = mlp_hidden_means(bundle, facts.texts(), layers, max_len)
        scores = contrast_rows(c_mean, n_mean, n_std)
    if target in ("representation", "both") and frames is not None:
        name_scores = _name_contrast(bundle, facts, frames, layers, max_len)
        if scores:
            # Rank-normalise each score so neither family dominates, then take the larger.
            scores = {layer: torch.maximum(_rank01(scores[layer]), _rank01(name_scores[layer])) for layer in layers}
        else:
            scores = name_scores
    return top_rows(scores, n_rows)


def _name_contrast(bundle: ModelBundle, facts: FactSet, frames: FrameBatch, layers: list[int],
                   max_len: int) -> dict[int, torch.Tensor]:
    """contrast_rows at the name's last token in the frames vs 4 made-up names in the same frames."""
    tok = bundle.tokenizer
    frame_texts = [tok.decode(row[: int(last) + 1], skip_special_tokens=True) for row, last in
                   zip(frames.input_ids, frames.last, strict=True)]
    nonce_texts, nonce_pos = [], []
    for frame in name_frames(facts):
        for nonce in nonce_names(facts.kind)[:4]:
            ids, last = last_name_position(tok, frame, nonce, max_len)
            nonce_texts.append(tok.decode(ids[: last + 1], skip_special_tokens=True))
            nonce_pos.append(last)
    c_pos = [int(x) for x in frames.last]
    c_mean, _ = mlp_hidden_means(bundle, frame_texts, layers, max_len, positions=c_pos)
    r_mean, r_std = mlp_hidden_means(bundle, nonce_texts, layers, max_len, positions=nonce_pos)
    return contrast_rows(c_mean, r_mean, r_std)


def _rank01(z: torch.Tensor) -> torch.Tensor:
    return z.argsort().argsort().float() / max(len(z) - 1, 1)
