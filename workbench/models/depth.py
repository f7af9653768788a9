"""Layer defaults at the same relative depth on any model.

Every default layer in the workbench (the layers the localized optimisation edits, the key
rewrite's MLPs, the SAE layer, the projection layer) was chosen and measured on the embedded
Gemma 3 270M, which has `REFERENCE_LAYERS` = 18 layers. The configs state them on that model,
and `fitted(n_layers)` moves them to the same relative depth of the model in hand: layer 6 of 18
is layer 10 of a 30-layer model and layer 1 of a 4-layer one. On a model twice as deep, the
default edit still spans the same share of the network, not its first third.
"""

from __future__ import annotations

from collections.abc import Iterable

REFERENCE_LAYERS = 18  # Gemma 3 270M: the model every default layer was measured on
DEFAULT_SAE_LAYER = 6  # the SAE (and PISCES) layer on that model


def at_depth(layer: int, n_layers: int, reference: int = REFERENCE_LAYERS) -> int:
    """The layer of an `n_layers` model at the relative depth of `layer` on the reference model
    (the same layer when the depths agree)."""
    if n_layers == reference:
        return layer
    if n_layers <= 1:
        return 0
    return min(n_layers - 1, max(0, round(layer * (n_layers - 1) / (reference - 1))))


def layers_at_depth(layers: Iterable[int], n_layers: int, reference: int = REFERENCE_LAYERS) -> tuple[int, ...]:
    """`at_depth` of each layer, in order, without repeats (a shallow model merges neighbours)."""
    return tuple(dict.fromkeys(at_depth(layer, n_layers, reference) for layer in layers))


def fit_layers(given: Iterable[int] | None, default: Iterable[int], n_layers: int, *,
               clip: bool = False) -> tuple[int, ...]:
    """A config's layers on an `n_layers` model: `default` (stated on the reference model) at
    the same depth when nothing was given; given layers as they are, less those past the last
    layer (the last layer when none is left), or with `clip` moved down to the last layer (a
    target layer past the end means 'the last one')."""
    if given is None:
        return layers_at_depth(default, n_layers)
    if clip:
        return tuple(dict.fromkeys(min(max(layer, 0), n_layers - 1) for layer in given))
    return tuple(dict.fromkeys(layer for layer in given if 0 <= layer < n_layers)) or (n_layers - 1,)


def default_sae_layer(n_layers: int) -> int:
    """The default SAE layer of an `n_layers` model."""
    return at_depth(DEFAULT_SAE_LAYER, n_layers)


def describe_layers(layers: Iterable[int]) -> str:
    """'1-8' for a contiguous run, '2, 5, 9' otherwise (UI text)."""
    got = sorted(set(layers))
    if not got:
        return "none"
    if len(got) > 2 and got == list(range(got[0], got[-1] + 1)):
        return f"{got[0]}-{got[-1]}"
    return ", ".join(str(layer) for layer in got)
