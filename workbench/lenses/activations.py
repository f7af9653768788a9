"""Neuron activation statistics over a corpus: streaming mean/std, fixed-bin histograms,
quantiles, and concept-vs-neutral contrast (difference of means, effect size).

Collected with TransformerLens hooks on the bridge (`blocks.L.mlp.hook_pre` = gate
pre-activation g by default) and `stop_at_layer`, so layers after the last one asked for are
never computed. Right padding plus causal attention means padded positions cannot change real
tokens' activations; they are dropped with the attention mask. Position 0 (BOS, huge norms) is
dropped too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from workbench.corpus.batches import token_batches
from workbench.models.hooks import capture, text_positions

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class RunningStats:
    """Streaming per-neuron statistics of one layer: counts, sums and a fixed-bin histogram.

    Values outside [edges[0], edges[-1]] are counted in the first/last bin, so the counts of a
    neuron always sum to the number of tokens seen.
    """

    width: int  # number of neurons
    edges: torch.Tensor | None = None  # [bins + 1], fixed after the first batch
    bins: int = 64
    n: int = 0
    total: torch.Tensor = field(init=False)  # [width] float64
    total_sq: torch.Tensor = field(init=False)  # [width] float64
    counts: torch.Tensor = field(init=False)  # [width, bins] int64

    def __post_init__(self) -> None:
        self.total = torch.zeros(self.width, dtype=torch.float64)
        self.total_sq = torch.zeros(self.width, dtype=torch.float64)
        if self.edges is not None:
            self.bins = len(self.edges) - 1
        self.counts = torch.zeros((self.width, self.bins), dtype=torch.int64)

    def update(self, values: torch.Tensor) -> None:
        """values: [tokens, width]."""
        values = values.detach().double()
        if values.numel() == 0:
            return
        if self.edges is None:
            self.edges = default_edges(values, self.bins)
        self.n += values.shape[0]
        self.total += values.sum(0)
        self.total_sq += (values**2).sum(0)
        self.counts += histogram_counts(values, self.edges)

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.n, 1)

    @property
    def std(self) -> torch.Tensor:
        var = self.total_sq / max(self.n, 1) - self.mean**2
        return var.clamp_min(0).sqrt()

    def quantiles(self, qs: Sequence[float] = QUANTILES) -> torch.Tensor:
        """[width, len(qs)] quantiles interpolated from the histogram (tails beyond the edges
        are clamped to the outer edges)."""
        assert self.edges is not None
        return histogram_quantiles(self.counts, self.edges, qs)


def default_edges(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Layer-wide bin edges from the first batch: the 0.05%-99.95% range widened by half."""
    flat = values.flatten().float()
    if flat.numel() > 2_000_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
    lo, hi = torch.quantile(flat, torch.tensor([0.0005, 0.9995])).double().tolist()
    span = max(hi - lo, 1e-6)
    return torch.linspace(lo - span / 2, hi + span / 2, bins + 1, dtype=torch.float64)


def histogram_counts(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """values [tokens, width] -> counts [width, bins], out-of-range values in the edge bins."""
    bins = len(edges) - 1
    width = values.shape[1]
    lo, hi = float(edges[0]), float(edges[-1])
    idx = ((values - lo) / (hi - lo) * bins).floor().long().clamp_(0, bins - 1)  # [tokens, width]
    flat = idx + torch.arange(width).unsqueeze(0) * bins
    return torch.bincount(flat.flatten(), minlength=width * bins).view(width, bins)


def histogram_quantiles(counts: torch.Tensor, edges: torch.Tensor, qs: Sequence[float]) -> torch.Tensor:
    cdf = counts.double().cumsum(1)  # [width, bins]
    total = cdf[:, -1:].clamp_min(1)
    cdf = cdf / total
    out = torch.empty((counts.shape[0], len(qs)), dtype=torch.float64)
    edges = edges.double()
    for j, q in enumerate(qs):
        b = torch.searchsorted(cdf, torch.full((counts.shape[0], 1), q, dtype=torch.float64)).clamp_(
            max=counts.shape[1] - 1
        )
        prev = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0)), torch.zeros_like(b, dtype=torch.float64))
        cur = cdf.gather(1, b)
        frac = ((q - prev) / (cur - prev).clamp_min(1e-12)).clamp(0, 1)
        out[:, j] = (edges[b] + frac * (edges[b + 1] - edges[b])).squeeze(1)
    return out


def effect_size(
    mean_pos: torch.Tensor, std_pos: torch.Tensor, n_pos: int,
    mean_neg: torch.Tensor, std_neg: torch.Tensor, n_neg: int,
) -> torch.Tensor:
    """Cohen's d with pooled standard deviation: (mean_pos - mean_neg) / s_pooled."""
    pooled = ((n_pos - 1) * std_pos**2 + (n_neg - 1) * std_neg**2) / max(n_pos + n_neg - 2, 1)
    return (mean_pos - mean_neg) / pooled.sqrt().clamp_min(1e-8)


@dataclass(frozen=True)
class CollectConfig:
    site: str = "mlp.hook_pre"  # gate pre-activation g; 'mlp.hook_post' = h (down_proj input)
    max_tokens: int = 20_000
    max_len: int = 128
    batch_size: int = 8
    bins: int = 64


class Collector(Protocol):
    """Consumes the cached activations of each batch of a pass (see run_pass)."""

    hook_names: set[str]
    max_layer: int

    def update(self, cache: Mapping[str, torch.Tensor], keep: torch.Tensor) -> None: ...


class StatsCollector:
    """RunningStats of one hook site for each layer."""

    def __init__(self, layers: Sequence[int], site: str, bins: int = 64,
                 edges: dict[int, torch.Tensor] | None = None) -> None:
        self.names = {f"blocks.{layer}.{site}": layer for layer in sorted(set(layers))}
        self.hook_names = set(self.names)
        self.max_layer = max(self.names.values())
        self.bins = bins
        self.edges = edges or {}
        self.stats: dict[int, RunningStats] = {}

    def update(self, cache: Mapping[str, torch.Tensor], keep: torch.Tensor) -> None:
        for name, layer in self.names.items():
            acts = cache[name][keep]  # [tokens, width]
            if layer not in self.stats:
                self.stats[layer] = RunningStats(width=acts.shape[1], bins=self.bins, edges=self.edges.get(layer))
            self.stats[layer].update(acts)


def run_pass(
    bridge: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    collectors: Sequence[Collector],
    max_len: int = 128,
    batch_size: int = 8,
    max_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """One forward pass over texts feeding every collector; stops after the last layer any
    collector needs. Returns the number of real tokens seen."""
    names = set().union(*(c.hook_names for c in collectors))
    seen = 0
    with torch.no_grad():
        for batch in token_batches(tokenizer, texts, max_len, batch_size, max_tokens):
            cache = capture(bridge, batch.input_ids, sorted(names))
            keep = text_positions(batch.attention_mask)
            for c in collectors:
                c.update(cache, keep)
            seen += int(keep.sum())
            if on_batch is not None:
                on_batch(int(keep.sum()))
    if seen == 0:
        raise ValueError("No tokens were collected: the texts are empty after tokenisation.")
    return seen


def collect_stats(
    bridge: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    layers: Sequence[int],
    cfg: CollectConfig = CollectConfig(),
    edges: dict[int, torch.Tensor] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, RunningStats]:
    """One pass over texts; per layer, RunningStats of cfg.site over real tokens."""
    collector = StatsCollector(layers, cfg.site, cfg.bins, edges)
    run_pass(bridge, tokenizer, texts, [collector], cfg.max_len, cfg.batch_size, cfg.max_tokens, on_batch)
    return collector.stats


def stats_table(stats: RunningStats) -> dict[str, np.ndarray]:
    """Column arrays for the store: n, mean, std, q01..q99, counts."""
    q = stats.quantiles().numpy()
    cols: dict[str, np.ndarray] = {
        "neuron": np.arange(stats.width),
        "n": np.full(stats.width, stats.n),
        "mean": stats.mean.numpy(),
        "std": stats.std.numpy(),
    }
    for j, name in enumerate(("q01", "q05", "q25", "q50", "q75", "q95", "q99")):
        cols[name] = q[:, j]
    cols["counts"] = stats.counts.numpy()
    return cols
