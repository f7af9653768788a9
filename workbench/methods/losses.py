"""The localized optimisation's fact and representation losses (the counterfactual one is in
`workbench.methods.counterfactual`, the retain KL in the training step of
`workbench.methods.optimise`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.methods.facts import FactTargets
from workbench.methods.frames import FrameBatch
from workbench.methods.readout import residuals_after, selected_logits
from workbench.models import ModelBundle


def unlikelihood(bundle: ModelBundle, targets: FactTargets, pick: Sequence[int]) -> torch.Tensor:
    """-log(1 - p) of the concept-specific next tokens of the picked facts, averaged."""
    ids = targets.input_ids[list(pick)]
    tgt = targets.targets[list(pick)]
    width = int(targets.attention_mask[list(pick)].sum(1).max())
    ids, tgt = ids[:, :width], tgt[:, :width]
    mask = tgt >= 0
    logp = selected_logits(bundle, ids, mask).log_softmax(-1)
    p = logp.gather(-1, tgt[mask].unsqueeze(-1)).squeeze(-1).exp()
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


def target_prob(bundle: ModelBundle, targets: FactTargets, pick: Sequence[int]) -> torch.Tensor:
    """Mean probability of the picked facts' target tokens (the held-out check)."""
    ids = targets.input_ids[list(pick)]
    tgt = targets.targets[list(pick)]
    mask = tgt >= 0
    probs = selected_logits(bundle, ids, mask).softmax(-1)
    return probs.gather(-1, tgt[mask].unsqueeze(-1)).mean()


def repr_loss(bundle: ModelBundle, frames: FrameBatch, pick: Sequence[int]) -> torch.Tensor:
    """||h - t||^2 / ||t||^2 at the name's last token, averaged over frames and repr layers."""
    idx = list(pick)
    ids = frames.input_ids[idx]
    width = int(frames.last[idx].max()) + 1
    resid = residuals_after(bundle, ids[:, :width], list(frames.target))
    losses = []
    for layer, target in frames.target.items():
        h = resid[layer][torch.arange(len(idx)), frames.last[idx]]
        t = target[idx]
        losses.append(((h - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp_min(1e-6)).mean())
    return torch.stack(losses).mean()
