"""Project a residual direction out of W_out (docs/methods/ablate_and_project.md).

To stop a layer writing along a residual direction u through Gemma's post-FFN norm, project its
value vectors onto the complement of w = gamma_post * u:  W' = W - alpha (W w) w^T / ||w||^2.
alpha = 1 removes, 0 < alpha < 1 attenuates, alpha > 1 reverses.
"""

from __future__ import annotations

import torch


def project_out(
    w_out: torch.Tensor,  # [m, d]
    direction: torch.Tensor,  # [d] u in residual coordinates
    *,
    alpha: float = 1.0,
    gamma_post: torch.Tensor | None = None,  # [d]; None = project u itself (no gain)
    tau: float | None = None,
) -> tuple[torch.Tensor, list[int]]:  # edited copy [m, d], rows changed
    """W' = W - alpha (W w) w^T / ||w||^2 with w = gamma_post * u.

    With `tau`, only rows with |cos(v~_i, u)| >= tau * max_j |cos(v~_j, u)| are edited (ours,
    mirroring PISCES' tau), where v~ = gamma_post * v.
    """
    base = w_out.detach().float()  # [m, d]
    u = direction.detach().float().to(base.device)  # [d]
    if u.shape != (base.shape[1],):
        raise ValueError(f"Direction has shape {tuple(u.shape)}; expected ({base.shape[1]},).")
    gamma = None if gamma_post is None else gamma_post.detach().float().to(base.device)
    w = u if gamma is None else gamma * u  # [d]
    norm2 = float(w @ w)
    if norm2 == 0.0:
        raise ValueError("The direction (times gamma_post) is zero; nothing to project out.")
    coef = base @ w / norm2  # [m]
    if tau is None:
        rows = list(range(base.shape[0]))
        mask = torch.ones(base.shape[0], dtype=torch.bool, device=base.device)
    else:
        vt = base if gamma is None else base * gamma  # [m, d]
        cos = (vt @ u).abs() / (vt.norm(dim=1) * u.norm()).clamp_min(1e-12)  # [m]
        mask = cos >= tau * cos.max()
        rows = torch.nonzero(mask).flatten().tolist()
    out = base - alpha * torch.where(mask, coef, 0.0)[:, None] * w[None, :]
    # rows outside the mask stay bit-identical
    out = torch.where(mask[:, None], out, base)
    return out.to(w_out.dtype), rows
