"""Apply an adapter inside an nnsight trace, at the same modules as the in-process path.

    from nnsight import NNsight                      # or a hosted model on NDIF
    lm = NNsight(hf_model)
    with lm.trace(input_ids):
        wb.exports.intervene(lm, adapter)            # the edit, as interventions
        logits = lm.output.logits.save()

Each layer's delta is added to its MLP output projection's output from that module's own input
(out + h @ Delta, factored as in adapters/deltas.py), and Neuron Adjust rewrites the gate
projection's output, so a model too large for one machine (NDIF) runs the same edit remotely.
nnsight needs modules touched in execution order: layers ascending, gate before down.
"""

from __future__ import annotations

from typing import Any

from workbench.adapters import Adapter
from workbench.models import layout


def intervene(model: Any, adapter: Adapter) -> None:
    """Inside `with model.trace(...)`: add the adapter's deltas and activation hooks.

    `model` is an nnsight envoy of a Hugging Face causal LM (NNsight, LanguageModel,
    TransformersModel); its module tree mirrors the HF one, so the layout map finds the modules."""
    by_layer: dict[int, list[Any]] = {}
    for hk in adapter.hooks:
        by_layer.setdefault(hk.layer, []).append(hk)
    for layer in adapter.layers:
        for hk in by_layer.get(layer, []):
            fn = hk.make()
            gate = layout.pre_activation_proj(model, layer)
            gate.output = fn(None, (gate.input,), gate.output)
        if layer in adapter.deltas:
            down: Any = layout.out_proj(model, layer)  # nnsight's envoy: .input/.output are proxies
            down.output = adapter.deltas[layer].add_to(down.input, down.output)
