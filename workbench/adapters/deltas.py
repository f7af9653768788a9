"""Factored weight deltas on one MLP output projection (pure tensor math).

An edit of layer l's value vectors W_out: [d_mlp, d_model] (rows = neurons) is a delta
Delta: [d_mlp, d_model], and the edited MLP output is out + h @ Delta for the projection's
input h: [..., d_mlp]. Three factored forms, whichever stores fewer numbers exactly:

  RowDelta      indices [r] + delta rows [r, d_model]         out + h[..., rows] @ delta
                (ablate, prune, PISCES, optimise: a few hundred rows)
  LowRankDelta  a: [d_mlp, k], b: [k, d_model], Delta = a @ b   out + (h @ a) @ b
                (project-out is rank 1 on its rows; a key rewrite has rank <= its keys)
  DenseDelta    delta: [d_mlp, d_model]                         out + h @ delta

Every form also gives LoRA factors (lora_a: [k, d_mlp], lora_b: [d_model, k], so that
lora_b @ lora_a = Delta^T, the nn.Linear weight's delta), which is what the PEFT export writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _nbytes(*tensors: torch.Tensor) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


# a factorisation is accepted when it reproduces the delta to this relative Frobenius error
LOW_RANK_RTOL = 1e-6


@dataclass(frozen=True)
class RowDelta:
    """Delta on a few rows (neurons) of W_out."""

    rows: torch.Tensor  # [r] long, sorted, unique
    delta: torch.Tensor  # [r, d_model]

    @property
    def rank(self) -> int:
        return int(self.rows.numel())

    def numel(self) -> int:
        return int(self.delta.numel() + self.rows.numel())

    def nbytes(self) -> int:
        return _nbytes(self.delta, self.rows)

    def add_to(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out + h @ Delta for h: [..., d_mlp], out: [..., d_model]."""
        return out + h[..., self.rows.to(h.device)] @ self.delta.to(h.device, h.dtype)

    def dense(self, d_mlp: int) -> torch.Tensor:  # [d_mlp, d_model]
        full = torch.zeros(d_mlp, self.delta.shape[1], dtype=self.delta.dtype)
        full[self.rows] = self.delta
        return full

    def lora(self, d_mlp: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.zeros(self.rank, d_mlp, dtype=self.delta.dtype)  # one-hot row selectors
        a[torch.arange(self.rank), self.rows] = 1.0
        return a, self.delta.T.contiguous()


@dataclass(frozen=True)
class LowRankDelta:
    """Delta = a @ b."""

    a: torch.Tensor  # [d_mlp, k]
    b: torch.Tensor  # [k, d_model]

    @property
    def rank(self) -> int:
        return int(self.b.shape[0])

    def numel(self) -> int:
        return int(self.a.numel() + self.b.numel())

    def nbytes(self) -> int:
        return _nbytes(self.a, self.b)

    def add_to(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + (h @ self.a.to(h.device, h.dtype)) @ self.b.to(h.device, h.dtype)

    def dense(self, d_mlp: int) -> torch.Tensor:
        return self.a @ self.b

    def lora(self, d_mlp: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a.T.contiguous(), self.b.T.contiguous()


@dataclass(frozen=True)
class DenseDelta:
    """A full [d_mlp, d_model] delta, only where no factored form is smaller."""

    delta: torch.Tensor  # [d_mlp, d_model]

    @property
    def rank(self) -> int:
        return int(min(self.delta.shape))

    def numel(self) -> int:
        return int(self.delta.numel())

    def nbytes(self) -> int:
        return _nbytes(self.delta)

    def add_to(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + h @ self.delta.to(h.device, h.dtype)

    def dense(self, d_mlp: int) -> torch.Tensor:
        return self.delta

    def lora(self, d_mlp: int) -> tuple[torch.Tensor, torch.Tensor]:
        # rank d_model: lora_a = Delta^T [d_model, d_mlp], lora_b = identity [d_model, d_model]
        d_model = self.delta.shape[1]
        return self.delta.T.contiguous(), torch.eye(d_model, dtype=self.delta.dtype)


LayerDelta = RowDelta | LowRankDelta | DenseDelta


def _low_rank(diff: torch.Tensor, max_rank: int) -> LowRankDelta | None:
    """Exact low-rank factors of diff [m, d] (SVD, rank cut at LOW_RANK_RTOL), or None."""
    if max_rank < 1:
        return None
    d64 = diff.double()
    u, s, vh = torch.linalg.svd(d64, full_matrices=False)
    total = float(s.pow(2).sum())
    if total == 0.0:
        return None
    tail = torch.flip(torch.cumsum(torch.flip(s.pow(2), [0]), 0), [0])  # tail[k] = sum_{j>=k} s_j^2
    ok = torch.nonzero(tail <= (LOW_RANK_RTOL**2) * total).flatten()
    k = int(ok[0]) if ok.numel() else int(s.numel())
    if k < 1 or k > max_rank:
        return None
    a = (u[:, :k] * s[:k]).to(diff.dtype)
    b = vh[:k].to(diff.dtype)
    err = float((a.double() @ b.double() - d64).norm() / d64.norm())
    return LowRankDelta(a, b) if err <= 10 * LOW_RANK_RTOL else None


def factor_delta(diff: torch.Tensor) -> LayerDelta | None:
    """The smallest exact factored form of a W_out delta diff: [d_mlp, d_model]; None when zero.

    Row-sparse keeps the changed rows bit-exactly; low rank is tried when it would store fewer
    numbers than the changed rows (it reproduces them to LOW_RANK_RTOL)."""
    m, d = diff.shape
    changed = torch.nonzero((diff != 0).any(dim=1)).flatten()
    r = int(changed.numel())
    if r == 0:
        return None
    row_cost = r * (d + 1)
    # low rank on the changed rows only, scattered back: cost k * (m + d)
    max_k = (min(row_cost, m * d) - 1) // (m + d)
    lr = _low_rank(diff[changed], min(max_k, r, d))
    if lr is not None:
        a = torch.zeros(m, lr.rank, dtype=diff.dtype)
        a[changed] = lr.a
        return LowRankDelta(a, lr.b)
    if row_cost < m * d:
        return RowDelta(changed, diff[changed].clone())
    return DenseDelta(diff.clone())
