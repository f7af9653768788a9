"""The Hugging Face model without the TransformerLens bridge's wrappers, for decoding.

Booting the bridge (models/bundle.py) wraps the HF modules in place: every block, attention,
MLP, norm and projection becomes a bridge component whose `_original_component` is the HF
module, and whose forward runs hook points (and, for the norms, a Python re-implementation)
around it. That is what makes activations hookable by TransformerLens names; a preview never
uses those hooks, and on the embedded model (2 CPU cores, bf16) the wrappers cost about a
fifth of the decode's time (bench/preview_bench.py measures it against plain `generate`).

`plain_view(hf_model)` is the same model as the HF code alone runs it: a shallow copy of each
module on the path to a wrapper, with the wrapper replaced by its original. It shares every
parameter, buffer and forward hook with the wrapped model (no weight is copied), so an edit to
the weights, or a tap on a projection (models/hooks.py; layout.out_proj and
layout.pre_activation_proj name the original module, which the wrapper calls too), acts on both.
"""

from __future__ import annotations

import copy

from torch import nn

WRAPPED = "_original_component"  # the bridge component's child that is the HF module
_VIEW = "_workbench_plain_view"  # kept in the wrapped model's __dict__: not a registered submodule


def is_wrapper(module: nn.Module) -> bool:
    """True for a TransformerLens bridge component that wraps an HF module."""
    return module._modules.get(WRAPPED) is not None


def unwrapped(module: nn.Module) -> nn.Module:
    """The HF module a bridge component wraps (through nested wrappers); any other module as is."""
    while is_wrapper(module):
        inner = module._modules[WRAPPED]
        assert inner is not None
        module = inner
    return module


def _strip(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    if id(module) in memo:  # a module reached twice (tied or shared) stays one module
        return memo[id(module)]
    if is_wrapper(module):
        out = _strip(unwrapped(module), memo)
    else:
        children = {name: None if child is None else _strip(child, memo) for name, child in module._modules.items()}
        if all(children[name] is child for name, child in module._modules.items()):
            out = module  # nothing wrapped below: the module itself
        else:
            out = copy.copy(module)  # shares __dict__'s values: parameters, buffers, hooks, config
            out.__dict__["_modules"] = children
    memo[id(module)] = out
    return out


def plain_view(hf_model: nn.Module) -> nn.Module:
    """`hf_model` without the bridge's wrappers (built once per model, then reused). For a model
    the bridge never wrapped it is the model itself."""
    view = hf_model.__dict__.get(_VIEW)
    if view is None:
        view = _strip(hf_model, {})
        hf_model.__dict__[_VIEW] = view
    return view
