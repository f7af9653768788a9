"""Difference-of-means concept directions per layer, in the residual stream and in the MLP
hidden space, with held-out separation (AUROC) of concept vs neutral documents (docs/methods/concept_vectors.md).

Residual activations are RMS-normalised first (r / rms(r), what the next norm sees). Means are
taken per document over real tokens (BOS excluded), then over documents, so one long article
does not dominate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from workbench.lenses.activations import run_pass

SITES = {"resid": "hook_resid_post", "mlp_hidden": "mlp.hook_post"}


@dataclass
class ConceptVectors:
    site: str  # 'resid' | 'mlp_hidden'
    layers: list[int]
    vectors: torch.Tensor  # [n_layers, width]: mean(pos) - mean(neg)
    auroc: torch.Tensor  # [n_layers]: held-out AUROC of the projection onto the direction


class DocMeansCollector:
    """Per-document mean activation at each site and layer (see lenses.activations.run_pass)."""

    def __init__(self, layers: Sequence[int], sites: Sequence[str] = ("resid", "mlp_hidden")) -> None:
        self.layers = sorted(set(layers))
        self.sites = list(sites)
        self.wanted = {f"blocks.{layer}.{SITES[s]}": (s, i) for s in sites for i, layer in enumerate(self.layers)}
        self.hook_names = set(self.wanted)
        self.max_layer = max(self.layers)
        self._parts: dict[str, list[torch.Tensor]] = {s: [] for s in sites}

    def update(self, cache: Mapping[str, torch.Tensor], keep: torch.Tensor) -> None:
        weights = keep.float()  # [b, p]
        denom = weights.sum(1).clamp_min(1)[:, None]  # [b, 1]
        per_site: dict[str, list[torch.Tensor | None]] = {s: [None] * len(self.layers) for s in self.sites}
        for name, (site, i) in self.wanted.items():
            acts = cache[name].float()  # [b, p, width]
            if site == "resid":
                acts = acts / acts.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
            per_site[site][i] = (acts * weights[..., None]).sum(1) / denom  # [b, width]
        for site in self.sites:
            self._parts[site].append(torch.stack(per_site[site], dim=1))  # type: ignore[arg-type]

    def result(self) -> dict[str, torch.Tensor]:
        """{site: [n_docs, n_layers, width]}."""
        return {s: torch.cat(v) for s, v in self._parts.items()}


def doc_means(
    bridge: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    layers: Sequence[int],
    sites: Sequence[str] = ("resid", "mlp_hidden"),
    max_len: int = 128,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-document mean activation: {site: [n_docs, n_layers, width]}."""
    collector = DocMeansCollector(layers, sites)
    run_pass(bridge, tokenizer, texts, [collector], max_len, batch_size, on_batch=on_batch)
    return collector.result()


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score_pos > score_neg) with ties counted half (Mann-Whitney U / (n_pos n_neg))."""
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    diff = pos.double()[:, None] - neg.double()[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def concept_vectors(
    pos: torch.Tensor,  # [n_pos, L, width] per-document means
    neg: torch.Tensor,  # [n_neg, L, width]
    layers: Sequence[int],
    site: str,
    seed: int = 0,
) -> ConceptVectors:
    """Directions from all documents; AUROC from a half split (direction on one half, scored
    on the other) so separation is not measured on the data that defined it."""
    vectors = pos.mean(0) - neg.mean(0)  # [L, width]
    g = torch.Generator().manual_seed(seed)
    pp, nn_ = torch.randperm(len(pos), generator=g), torch.randperm(len(neg), generator=g)
    p_tr, p_te = pos[pp[: len(pos) // 2]], pos[pp[len(pos) // 2 :]]
    n_tr, n_te = neg[nn_[: len(neg) // 2]], neg[nn_[len(neg) // 2 :]]
    scores = []
    for i in range(len(layers)):
        if len(p_tr) == 0 or len(n_tr) == 0:
            scores.append(float("nan"))
            continue
        direction = p_tr[:, i].mean(0) - n_tr[:, i].mean(0)
        scores.append(auroc(p_te[:, i] @ direction, n_te[:, i] @ direction))
    return ConceptVectors(site=site, layers=list(layers), vectors=vectors, auroc=torch.tensor(scores))


def mlp_hidden_to_residual(delta: torch.Tensor, w_out: torch.Tensor, gamma_post: torch.Tensor) -> torch.Tensor:
    """Residual image of an MLP-hidden direction: gamma_post * (delta @ W_out).
    delta: [d_mlp], w_out: [d_mlp, d_model], gamma_post: [d_model] -> [d_model]."""
    return gamma_post * (delta @ w_out)


def nearest_by_cosine(rows: torch.Tensor, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k rows most aligned with u in either sign: (indices [k], signed cosines [k]).
    rows: [n, d], u: [d]."""
    cos = (rows @ u) / (rows.norm(dim=1) * u.norm()).clamp_min(1e-12)  # [n]
    top = cos.abs().topk(min(k, len(cos))).indices
    return top, cos[top]


def nearest_value_vectors(hf_model: torch.nn.Module, u: torch.Tensor, layers: Sequence[int], k: int = 20) -> pd.DataFrame:
    """W_out rows (as written into the residual stream: row x post-FFN gain) nearest to a
    residual-coordinate direction u [d_model], over the given layers: layer, neuron, cosine."""
    from workbench.models import layout

    frames = []
    for layer in layers:
        rows = layout.w_out(hf_model, layer).detach().float() * layout.post_ffn_gain(hf_model, layer)  # [m, d]
        idx, cos = nearest_by_cosine(rows, u.float(), k)
        frames.append(pd.DataFrame({"layer": layer, "neuron": idx.numpy(), "cosine": cos.numpy()}))
    out = pd.concat(frames, ignore_index=True)
    return out.reindex(out["cosine"].abs().sort_values(ascending=False).index).head(k).reset_index(drop=True)


def nearest_sae_features(w_dec: torch.Tensor, u: torch.Tensor, k: int = 20) -> pd.DataFrame:
    """SAE decoder directions (w_dec: [d_sae, d_model], an SAE of an MLP-output site, which is
    residual-stream coordinates) nearest to u [d_model]: feature, cosine."""
    idx, cos = nearest_by_cosine(w_dec.detach().float(), u.float(), k)
    return pd.DataFrame({"feature": idx.numpy(), "cosine": cos.numpy()})
