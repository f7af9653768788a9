"""The one place that maps TransformerLens names onto Gemma 3 HF parameters.

Edits must land 1:1 on HF tensors (the bridge shares them), so every module that needs a
parameter by layer asks here instead of spelling out `model.layers.{l}...` itself.
HF stores transposes of the TransformerLens matrices:
  W_gate: [d_model, d_mlp] = gate_proj.weight.T   (gate_proj.weight: [d_mlp, d_model])
  W_in:   [d_model, d_mlp] = up_proj.weight.T     (up_proj.weight:   [d_mlp, d_model])
  W_out:  [d_mlp, d_model] = down_proj.weight.T   (down_proj.weight: [d_model, d_mlp])
"""

from __future__ import annotations

import torch
from torch import nn


def down_proj_name(layer: int) -> str:
    return f"model.layers.{layer}.mlp.down_proj.weight"


def up_proj_name(layer: int) -> str:
    return f"model.layers.{layer}.mlp.up_proj.weight"


def gate_proj_name(layer: int) -> str:
    return f"model.layers.{layer}.mlp.gate_proj.weight"


def post_ffn_norm_name(layer: int) -> str:
    return f"model.layers.{layer}.post_feedforward_layernorm.weight"


def hook_name(layer: int, site: str) -> str:
    """TransformerLens hook name, e.g. site='mlp.hook_pre' -> 'blocks.6.mlp.hook_pre'."""
    return f"blocks.{layer}.{site}"


def decoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    return hf_model.model.layers  # type: ignore[no-any-return]


def mlp_module(hf_model: nn.Module, layer: int) -> nn.Module:
    return decoder_layers(hf_model)[layer].mlp  # type: ignore[no-any-return]


def w_out(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """Value vectors of a layer as a view: [d_mlp, d_model] (rows = neurons)."""
    return mlp_module(hf_model, layer).down_proj.weight.T


def w_gate(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """Gate keys as a view: [d_model, d_mlp]."""
    return mlp_module(hf_model, layer).gate_proj.weight.T


def w_in(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """Linear keys as a view: [d_model, d_mlp]."""
    return mlp_module(hf_model, layer).up_proj.weight.T


def rms_gain(norm_weight: torch.Tensor) -> torch.Tensor:
    """Effective gain of a Gemma RMSNorm, which multiplies by (1 + w): [d_model]."""
    return 1.0 + norm_weight.float()


def post_ffn_gain(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """gamma_post: the gain the post-feedforward RMSNorm applies to the MLP output: [d_model]."""
    return rms_gain(decoder_layers(hf_model)[layer].post_feedforward_layernorm.weight.detach())


def final_gain(hf_model: nn.Module) -> torch.Tensor:
    """gamma_f: the gain of the final RMSNorm before the unembedding: [d_model]."""
    return rms_gain(hf_model.model.norm.weight.detach())


def unembed(hf_model: nn.Module) -> torch.Tensor:
    """U as a view: [d_model, vocab] (tied to the input embedding in Gemma 3)."""
    return hf_model.lm_head.weight.detach().T


def n_layers(hf_model: nn.Module) -> int:
    return len(decoder_layers(hf_model))


WRAPPER = "._original_component"


def canonical_name(name: str) -> str:
    """HF parameter name without the TransformerLens bridge's wrapper segments.

    Booting the bridge wraps the HF modules in place, so `named_parameters()` reports e.g.
    'model.layers.0._original_component.mlp...'; specs, hashes and exported checkpoints use
    the plain HF names ('model.layers.0.mlp.down_proj.weight').
    """
    return name.replace(WRAPPER, "")


def named_parameters(hf_model: nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters by canonical HF name (tied weights once)."""
    return {canonical_name(n): p for n, p in hf_model.named_parameters()}


def parameter(hf_model: nn.Module, name: str) -> torch.nn.Parameter:
    params = named_parameters(hf_model)
    if name not in params:
        raise KeyError(f"The model has no parameter {name!r}.")
    return params[name]


def canonical_state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with canonical names, for saving a checkpoint plain transformers can load."""
    return {canonical_name(n): t for n, t in hf_model.state_dict().items()}


def resolve_attr(root: nn.Module, path: str) -> torch.Tensor:
    """Follow a dotted attribute path ('model.layers.3.mlp.down_proj.weight') from a module.

    Works through the TransformerLens bridge's wrappers, which delegate attribute access."""
    obj: object = root
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise KeyError(f"The model has no {path!r} (failed at {part!r}).") from err
    return obj  # type: ignore[return-value]
