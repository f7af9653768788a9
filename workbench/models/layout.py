"""The one place that knows where each model family keeps its MLP: an architecture map.

Edits must land 1:1 on HF tensors (the TransformerLens bridge shares them), so every module
that needs a parameter by layer asks here instead of spelling out `model.layers.{l}...`.
One small `Architecture` entry per family names the MLP output projection, how its weight
is stored, the projection whose output is the neuron pre-activation, and the norm that
follows the MLP, if any. In TransformerLens terms, for every family:
  W_out: [d_mlp, d_model]  rows = neurons' value vectors
    nn.Linear (down_proj, dense_4h_to_h): weight [d_model, d_mlp] = W_out.T
    GPT-2's Conv1D (c_proj):              weight [d_mlp, d_model] = W_out
  W_gate / W_in: [d_model, d_mlp]  the keys (gate of a gated MLP, else the input projection)
The bridge's hook names (`blocks.L.mlp.hook_pre`, `mlp.hook_post`, `hook_mlp_out`) are the
same for every family listed, so activation readers need nothing from here but the layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """Where one family keeps what the workbench reads and edits (paths are dotted attributes)."""

    name: str
    model_types: tuple[str, ...]  # HF `config.model_type` values
    layers: str = "model.layers"  # from the model to the ModuleList of decoder layers
    out_proj: str = "mlp.down_proj"  # from a layer to the MLP output projection (reads h)
    in_proj: str = "mlp.up_proj"  # the linear input projection
    gate_proj: str | None = "mlp.gate_proj"  # a gated MLP's gate; None when not gated
    conv1d: bool = False  # out_proj.weight stored [d_mlp, d_model] (GPT-2's Conv1D)
    post_mlp_norm: str | None = None  # the norm applied to the MLP output before the residual
    final_norm: str = "model.norm"
    norm_offset: float = 0.0  # Gemma's RMSNorm multiplies by (1 + w); others by w

    @property
    def row_direction(self) -> str:
        """How a W_out row enters the residual stream on this family, in words (the pages'
        lens captions): scaled by the post-MLP norm's gain where the family has one."""
        if self.post_mlp_norm is None:
            return "W_out[i] (this family adds the MLP output to the residual stream without a norm)"
        gain = "(1 + post-FFN norm weight)" if self.norm_offset else "post-FFN norm weight"
        return f"W_out[i] × {gain}"

    @property
    def pre_activation(self) -> str:
        """The projection whose output is the neuron pre-activation g (`mlp.hook_pre`)."""
        return self.gate_proj or self.in_proj


_GEMMA_POST = "post_feedforward_layernorm"
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("Gemma 3", ("gemma3_text",), post_mlp_norm=_GEMMA_POST, norm_offset=1.0),  # text-only checkpoints
    Architecture("Gemma 2", ("gemma2",), post_mlp_norm=_GEMMA_POST, norm_offset=1.0),
    Architecture("Gemma", ("gemma",), norm_offset=1.0),
    Architecture("Llama", ("llama",)),
    Architecture("Mistral", ("mistral",)),
    Architecture("Qwen2", ("qwen2",)),
    Architecture("Qwen3", ("qwen3",)),
    Architecture("OLMo", ("olmo",)),
    Architecture("OLMo 2", ("olmo2",), post_mlp_norm=_GEMMA_POST),
    Architecture("GPT-2", ("gpt2",), layers="transformer.h", out_proj="mlp.c_proj", in_proj="mlp.c_fc",
                 gate_proj=None, conv1d=True, final_norm="transformer.ln_f"),
    Architecture("GPT-NeoX / Pythia", ("gpt_neox",), layers="gpt_neox.layers", out_proj="mlp.dense_4h_to_h",
                 in_proj="mlp.dense_h_to_4h", gate_proj=None, final_norm="gpt_neox.final_layer_norm"),
)
_BY_MODEL_TYPE = {t: a for a in ARCHITECTURES for t in a.model_types}


class UnsupportedArchitecture(ValueError):
    """The model's family is not in the architecture map."""


def supported_families() -> str:
    return ", ".join(a.name for a in ARCHITECTURES)


def architecture_for(model_type: str) -> Architecture:
    if model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    raise UnsupportedArchitecture(
        f"The workbench does not know where a {model_type!r} model keeps its MLP. Supported "
        f"families: {supported_families()}. Add an entry to workbench/models/layout.py's "
        "ARCHITECTURES to support another."
    )


def architecture(hf_model: nn.Module) -> Architecture:
    """The map entry for a loaded HF model (by `config.model_type`)."""
    return architecture_for(str(getattr(hf_model.config, "model_type", type(hf_model).__name__)))


def hook_name(layer: int, site: str) -> str:
    """TransformerLens hook name, e.g. site='mlp.hook_pre' -> 'blocks.6.mlp.hook_pre'."""
    return f"blocks.{layer}.{site}"


def decoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    layers: nn.ModuleList = resolve_attr(hf_model, architecture(hf_model).layers)
    return layers


def n_layers(hf_model: nn.Module) -> int:
    return len(decoder_layers(hf_model))


def _layer_part(hf_model: nn.Module, layer: int, path: str) -> nn.Module:
    """The HF module itself, not the bridge's wrapper around it: the wrapper calls it, so a tap
    on it fires in the wrapped model's forward and in models/plain.py's view alike."""
    from workbench.models.plain import unwrapped

    part: nn.Module = resolve_attr(decoder_layers(hf_model)[layer], path)
    return unwrapped(part)


def out_proj(hf_model: nn.Module, layer: int) -> nn.Module:
    """The MLP output projection of a layer (down_proj, c_proj, dense_4h_to_h): reads h."""
    return _layer_part(hf_model, layer, architecture(hf_model).out_proj)


def pre_activation_proj(hf_model: nn.Module, layer: int) -> nn.Module:
    """The projection whose output is the neuron pre-activation (gate_proj, c_fc, ...)."""
    return _layer_part(hf_model, layer, architecture(hf_model).pre_activation)


def out_proj_name(hf_model: nn.Module, layer: int) -> str:
    """Canonical HF parameter name of a layer's output-projection weight."""
    arch = architecture(hf_model)
    return f"{arch.layers}.{layer}.{arch.out_proj}.weight"


def out_proj_module_name(hf_model: nn.Module, layer: int) -> str:
    """The module's name as PEFT and nnsight address it ('model.layers.6.mlp.down_proj')."""
    return out_proj_name(hf_model, layer).removesuffix(".weight")


def _flip(hf_model: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """Between HF storage and TransformerLens orientation (either way: a transpose is its own
    inverse): nn.Linear stores [out, in], GPT-2's Conv1D already [in, out]."""
    return t if architecture(hf_model).conv1d else t.T


def weight_of(module: nn.Module) -> torch.Tensor:
    """A projection module's weight tensor (nn.Module's attribute type is a Tensor-or-Module union)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor.")
    return weight


def w_out(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """Value vectors of a layer as a view: [d_mlp, d_model] (rows = neurons)."""
    return _flip(hf_model, weight_of(out_proj(hf_model, layer)))


def w_out_to_storage(hf_model: nn.Module, w_out_rows: torch.Tensor) -> torch.Tensor:
    """A [d_mlp, d_model] W_out (or a delta of it) in the orientation its weight is stored."""
    return _flip(hf_model, w_out_rows)


def w_pre(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """Keys whose dot product with the MLP input is the pre-activation: [d_model, d_mlp]."""
    return _flip(hf_model, weight_of(pre_activation_proj(hf_model, layer)))


def d_mlp(hf_model: nn.Module) -> int:
    return int(w_out(hf_model, 0).shape[0])


def d_model(hf_model: nn.Module) -> int:
    return int(w_out(hf_model, 0).shape[1])


def norm_gain(norm: nn.Module, offset: float, width: int) -> torch.Tensor:
    """The per-channel gain a norm applies: [width]. Gemma's RMSNorm multiplies by (1 + w);
    a norm without a weight (OLMo's LayerNorm) by 1. Biases are left out of a gain."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        return torch.ones(width)
    return offset + weight.detach().float()


def post_ffn_gain(hf_model: nn.Module, layer: int) -> torch.Tensor:
    """gamma_post: the gain of the norm applied to the MLP output (Gemma 2/3, OLMo 2) or ones
    where the MLP output enters the residual as it is: [d_model]."""
    arch = architecture(hf_model)
    if arch.post_mlp_norm is None:
        return torch.ones(d_model(hf_model))
    return norm_gain(_layer_part(hf_model, layer, arch.post_mlp_norm), arch.norm_offset, d_model(hf_model))


def final_gain(hf_model: nn.Module) -> torch.Tensor:
    """gamma_f: the gain of the final norm before the unembedding: [d_model]."""
    arch = architecture(hf_model)
    norm = resolve_attr(hf_model, arch.final_norm)
    return norm_gain(norm, arch.norm_offset, d_model(hf_model))


def unembed(hf_model: nn.Module) -> torch.Tensor:
    """U as a view: [d_model, vocab] (lm_head, GPT-NeoX's embed_out; tied in Gemma)."""
    return hf_model.get_output_embeddings().weight.detach().T  # type: ignore[operator]


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


def resolve_attr(root: nn.Module, path: str) -> Any:  # a module or a tensor, by the path
    """Follow a dotted attribute path ('model.layers.3.mlp.down_proj.weight') from a module.

    Works through the TransformerLens bridge's wrappers, which delegate attribute access."""
    obj: Any = root
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise KeyError(f"The model has no {path!r} (failed at {part!r}).") from err
    return obj
