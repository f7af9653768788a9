"""PISCES closed-form rewrite of W_out rows through an SAE (docs/methods/pisces.md).

Pure functions on tensors. The SAE is anything with SAELens's interface: `W_enc [d_in, d_sae]`
(columns e_f), `W_dec [d_sae, d_in]`, `encode(z [..., d_in]) -> [..., d_sae]` and
`decode(c [..., d_sae]) -> [..., d_in]`. We always call the SAE's own encode/decode because
some variants normalise inputs or subtract b_dec.

Modes:
  'reference'  : the papers' behaviour, steps 4 and 6 on the raw value vector v_i.
  'gain_aware' : ours; steps 4 and 6 on v~_i = gamma_post * v_i (what the post-FFN RMSNorm lets
                 reach the residual stream, where the SAE lives), mapped back by / gamma_post.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

log = logging.getLogger(__name__)

Schedule = Literal["gemma26", "relative", "none"]
PiscesMode = Literal["gain_aware", "reference"]

GAIN_EPS = 1e-3  # |gamma_post| below this: that coordinate is not edited (division would explode)


class SaeLike(Protocol):
    """The part of a SAELens SAE that PISCES needs."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor: ...


def mu_for_layer(mu: float, layer: int, n_layers: int, schedule: Schedule) -> float:
    """Edit magnitude mu_l for a layer (docs/methods/pisces.md, magnitude schedule).

    'gemma26': the released code's ramp for 26-layer Gemma 2: mu*(0.1 + 0.9*l/9) for l < 10.
    'relative': the same ramp over the same relative depth, ramp_end = round(10*n_layers/26)
      (7 for 18 layers, giving mu*(0.1 + 0.9*l/6) for l < 7).
    'none': mu everywhere (the Llama setting).
    """
    if schedule == "none":
        return float(mu)
    ramp_end = 10 if schedule == "gemma26" else round(10 * n_layers / 26)
    if ramp_end <= 1 or layer >= ramp_end:
        return float(mu)
    return float(mu) * (0.1 + 0.9 * layer / (ramp_end - 1))


def feature_row_scores(
    rows: torch.Tensor,  # [m, d] value vectors (raw v, or gamma*v in gain-aware mode)
    enc_columns: torch.Tensor,  # [d, n_f] raw encoder columns e_f of the chosen features
) -> torch.Tensor:  # [m, n_f]
    """rho_{i,f} = v_i . e_f (no bias, no activation) for every row and feature (step 4)."""
    return rows.float() @ enc_columns.float()


def select_rows(rho: torch.Tensor, tau: float) -> torch.Tensor:  # rho [m, n_f] -> [m, n_f] bool
    """R_f = {i : |rho_{i,f}| > tau * max_j |rho_{j,f}|}, one column per feature (step 4)."""
    a = rho.abs()
    return a > tau * a.max(dim=0, keepdim=True).values


@dataclass
class PiscesResult:
    """Edited W_out plus what the UI and spec provenance report."""

    w_out: torch.Tensor  # [m, d] edited copy
    rows: list[int]  # rows actually changed, ascending
    rows_per_feature: dict[int, list[int]]  # feature id -> selected rows R_f
    scale: float  # M_l
    mu_layer: float  # mu_l


def pisces_rewrite(
    w_out: torch.Tensor,  # [m, d] W_out of layer l (rows = value vectors v_i)
    sae: SaeLike,
    features: list[int],
    *,
    tau: float,
    mu_layer: float,  # mu_l, already scheduled
    gamma_post: torch.Tensor | None = None,  # [d]; required for mode 'gain_aware'
    mode: PiscesMode = "gain_aware",
    feature_signs: list[int] | None = None,  # s_f per feature; default -1 (feature promotes concept)
    neuron_signs: dict[int, int] | None = None,  # eta_{l,i}; None = unsigned (eta = +1)
) -> PiscesResult:
    """Steps 4-6 of PISCES for the chosen features of one layer; returns an edited copy.

    For each selected row i with features F_i: c = enc(v), eps = v - dec(c), c'_f = s_f * eta_i *
    mu_l * M_l for f in F_i, v' = dec(c') + eps. Rows whose coefficients do not change are left
    bit-identical. Missing neuron signs (a tie or an unmeasured row) count as +1, with a warning.
    """
    if not features:
        raise ValueError("PISCES needs at least one SAE feature.")
    if feature_signs is None:
        feature_signs = [-1] * len(features)
    if len(feature_signs) != len(features):
        raise ValueError(f"Got {len(feature_signs)} feature signs for {len(features)} features.")
    base = w_out.detach().float()  # [m, d]
    space, gamma = _edit_space(base, mode, gamma_post)  # v~ [m, d]
    enc_cols = sae.W_enc.detach()[:, features].float().to(base.device)  # [d, n_f]
    rho = feature_row_scores(space, enc_cols)  # [m, n_f]
    chosen = select_rows(rho, tau)  # [m, n_f]
    scale = float(rho.abs().max())  # M_l = max over features and rows
    rows_per_feature = {f: torch.nonzero(chosen[:, j]).flatten().tolist() for j, f in enumerate(features)}
    rows = sorted({i for rs in rows_per_feature.values() for i in rs})
    out = base.clone()
    if not rows:
        return PiscesResult(out, [], rows_per_feature, scale, mu_layer)

    idx = torch.tensor(rows, dtype=torch.long, device=base.device)
    targets = [[float(feature_signs[j]) * mu_layer * scale if chosen[i, j] else None for j in range(len(features))]
               for i in rows]
    v = space[idx]  # [r, d]
    v_new, changed = _set_coefficients(sae, v, features, targets, _row_signs(rows, neuron_signs))
    new_rows = _from_edit_space(base[idx], v, v_new, gamma)
    for r, i in enumerate(rows):
        if changed[r]:
            out[i] = new_rows[r]
    kept = [i for i, ch in zip(rows, changed, strict=True) if ch]
    return PiscesResult(out.to(w_out.dtype), kept, rows_per_feature, scale, mu_layer)


def _edit_space(base: torch.Tensor, mode: PiscesMode, gamma_post: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows as the SAE sees them ([m, d]) and the gain they were scaled by (None: unscaled)."""
    if mode == "gain_aware":
        if gamma_post is None:
            raise ValueError("gain_aware mode needs gamma_post (the post-FFN RMSNorm gain).")
        gamma = gamma_post.detach().float().to(base.device)  # [d]
        return base * gamma, gamma
    if mode == "reference":
        return base, None
    raise ValueError(f"Unknown PISCES mode {mode!r}; use 'gain_aware' or 'reference'.")


def _row_signs(rows: list[int], neuron_signs: dict[int, int] | None) -> list[int]:
    """eta_i per row (+1 where unsigned); a row without a measured sign counts +1, with a warning."""
    if neuron_signs is None:
        return [1] * len(rows)
    missing = [i for i in rows if int(neuron_signs.get(i, 0)) == 0]
    if missing:
        log.warning("No neuron sign for rows %s (tie or not measured); using +1.", missing[:10])
    return [int(neuron_signs.get(i, 0)) or 1 for i in rows]


@torch.no_grad()
def _set_coefficients(sae: SaeLike, v: torch.Tensor, features: list[int], targets: list[list[float | None]],
                      etas: list[int]) -> tuple[torch.Tensor, list[bool]]:
    """v' = dec(c') + (v - dec(c)) with c = enc(v) and c'_f = eta_i * targets[r][f] where a target
    is given: the rows with their features' coefficients set ([r, d]), and which rows changed."""
    dtype, device = sae.W_dec.dtype, sae.W_dec.device
    c = sae.encode(v.to(device, dtype)).float()  # [r, d_sae]
    rec = sae.decode(c.to(dtype)).float().to(v.device)  # [r, d]
    c_new = c.clone()
    for r, (row_targets, eta) in enumerate(zip(targets, etas, strict=True)):
        for f, target in zip(features, row_targets, strict=True):
            if target is not None:
                c_new[r, f] = eta * target
    rec_new = sae.decode(c_new.to(dtype)).float().to(v.device)  # [r, d]
    return rec_new + (v - rec), (c_new != c).any(dim=1).tolist()


def _from_edit_space(base_rows: torch.Tensor, v: torch.Tensor, v_new: torch.Tensor, gamma: torch.Tensor | None
                     ) -> torch.Tensor:
    """The edited W_out rows ([r, d]): the edit-space change divided by the gain, where the gain
    is large enough to divide by (the other coordinates are left as they were)."""
    if gamma is None:
        return v_new
    ok = gamma.abs() >= GAIN_EPS  # [d]
    if not bool(ok.all()):
        log.warning("%d coordinates have |gamma_post| < %g and are left unedited.", int((~ok).sum()), GAIN_EPS)
    return base_rows + torch.where(ok, (v_new - v) / torch.where(ok, gamma, torch.ones_like(gamma)), 0.0)


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm ([n, d] -> [n, d], float32): a transcoder's decoder directions."""
    w = w.detach().float()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def transcoder_rewrite(
    w_out: torch.Tensor,  # [m, d] W_out of layer l (rows = value vectors v_i)
    directions: torch.Tensor,  # [n_f, d] unit decoder directions d_f of the chosen features
    features: list[int],
    *,
    tau: float,
    mu_layer: float,
    gamma_post: torch.Tensor,  # [d]; ones where the decoder writes before the post-FFN norm
    feature_signs: list[int] | None = None,
    neuron_signs: dict[int, int] | None = None,
) -> PiscesResult:
    """PISCES on a transcoder's decoder directions.

    A transcoder's encoder reads the MLP input, so re-encoding a value vector (PISCES step 5)
    means nothing. Its decoder directions d_f live in the MLP-output space, where the value
    vectors write (v~_i = gamma_post * v_i). So: rho_{i,f} = v~_i . d_f selects rows as in step 4
    (|rho| > tau * max), and each selected row's coefficient along d_f is set to
    s_f * eta_i * mu_l * M_l (step 6 with the decoder basis instead of the SAE's code), leaving
    the rest of the row as it was; mapped back by / gamma_post."""
    if not features:
        raise ValueError("PISCES needs at least one feature.")
    signs = feature_signs or [-1] * len(features)
    base = w_out.detach().float()
    gamma = gamma_post.detach().float().to(base.device)
    space = base * gamma  # [m, d]
    dirs = directions.detach().float().to(base.device)  # [n_f, d]
    rho = feature_row_scores(space, dirs.T)  # [m, n_f]
    chosen = select_rows(rho, tau)
    scale = float(rho.abs().max())
    rows_per_feature = {f: torch.nonzero(chosen[:, j]).flatten().tolist() for j, f in enumerate(features)}
    rows = sorted({i for rs in rows_per_feature.values() for i in rs})
    out = base.clone()
    ok = gamma.abs() >= GAIN_EPS
    for i in rows:
        eta = 1 if neuron_signs is None else (int(neuron_signs.get(i, 0)) or 1)
        v = space[i].clone()
        for j in range(len(features)):
            if chosen[i, j]:
                v += (signs[j] * eta * mu_layer * scale - float(v @ dirs[j])) * dirs[j]
        delta = torch.where(ok, (v - space[i]) / torch.where(ok, gamma, torch.ones_like(gamma)), 0.0)
        out[i] = base[i] + delta
    return PiscesResult(out.to(w_out.dtype), rows, rows_per_feature, scale, mu_layer)
