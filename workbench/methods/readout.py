"""Reading the model at chosen positions, differentiably: the last hidden state, logits of a
few rows, the residual stream after given layers.

Logits are only computed at the positions a loss needs: the 262k-token unembedding dominates a
forward pass, so the decoder runs to the last hidden state and the LM head sees a few rows.
Readers that need no gradient use `workbench.models.hooks.capture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from workbench.models import ModelBundle, layout
from workbench.models.hooks import StopForward, taps


def final_hidden(bundle: ModelBundle, input_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm: [batch, pos, d_model]."""
    return bundle.hf_model.base_model(input_ids=input_ids).last_hidden_state  # the decoder without the head


def logits_at(bundle: ModelBundle, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on selected hidden states [n, d_model] -> [n, vocab]."""
    return bundle.hf_model.get_output_embeddings()(hidden).float()


def selected_logits(bundle: ModelBundle, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the positions where `mask` ([batch, pos] bool) is set: [n, vocab], row-major.
    The decoder runs only up to the last set position: in a causal model nothing after it reaches
    a selected position's logits, and the rows come out in the same order."""
    end = int(mask.any(0).nonzero().max()) + 1 if mask.any() else mask.shape[1]
    hidden = final_hidden(bundle, ids[:, :end])
    return logits_at(bundle, hidden[mask[:, :end]])


def residuals_after(bundle: ModelBundle, input_ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual stream after each decoder layer in `layers` ({layer: [batch, pos, d_model]});
    layers after the last one are skipped. Differentiable: the representation loss trains
    through it. Readers that need no gradient use `workbench.models.hooks.capture`."""
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook(_mod: torch.nn.Module, _inp: object, out: Any, layer: int) -> None:
        captured[layer] = out[0] if isinstance(out, tuple) else out
        if layer == last:
            raise StopForward

    blocks = layout.decoder_layers(bundle.hf_model)
    with taps({blocks[layer]: partial(hook, layer=layer) for layer in set(layers)}):
        try:
            bundle.hf_model.base_model(input_ids=input_ids)
        except StopForward:
            pass
    return captured
