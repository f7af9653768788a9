"""Thread-scoped forward hooks on the one shared model.

PyTorch's `register_forward_hook` is global to a module: a hook that one request registers
runs on every other thread's forward pass through that module too. On a shared server that
would leak one user's edit (or a capture, or a `StopForward`) into another user's batch. So
the workbench never registers a per-request hook. Instead each tapped module carries one
permanent *dispatcher* hook, installed the first time anybody taps it, and the dispatcher runs
only the taps that the *current thread* has pushed, inside a `taps(...)` block:

    with taps({module: fn}):          # fn(module, inputs, output) -> new output or None
        model(input_ids)              # fn runs here, in this thread only

A thread without taps pays one dictionary lookup per tapped module. The dispatcher never
touches weights, so reading the model needs no lock.

`capture(...)` is the one way to read activations by TransformerLens hook name (the bridge
wraps the HF modules in place, so its HookPoints sit on the HF forward path too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from workbench.models import layout

TapFn = Callable[[nn.Module, tuple[Any, ...], Any], Any]  # (module, inputs, output) -> output | None

_local = threading.local()
_install_lock = threading.Lock()  # serialises only the one-time installation of a dispatcher
_ATTR = "_workbench_dispatch"


class StopForward(Exception):
    """Raised by a tap to end a forward pass once everything it needs has been computed."""


def _active() -> dict[int, list[TapFn]]:
    stack = getattr(_local, "taps", None)
    if stack is None:
        stack = _local.taps = {}
    return stack


def _dispatch(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    fns = getattr(_local, "taps", None)
    if not fns:
        return None
    chain = fns.get(id(module))
    if not chain:
        return None
    changed = False
    for fn in chain:
        new = fn(module, inputs, output)
        if new is not None:
            output, changed = new, True
    return output if changed else None


def install(module: nn.Module) -> None:
    """Give a module its permanent dispatcher hook (idempotent, thread-safe)."""
    if getattr(module, _ATTR, False):
        return
    with _install_lock:
        if not getattr(module, _ATTR, False):
            module.register_forward_hook(_dispatch)
            setattr(module, _ATTR, True)


def tap_list(fn: TapFn | Sequence[TapFn]) -> list[TapFn]:
    """One tap or several, as a list."""
    return [fn] if callable(fn) else list(fn)


@contextmanager
def taps(fns: Mapping[nn.Module, TapFn | Sequence[TapFn]]) -> Iterator[None]:
    """Run `fns` on their modules' outputs during this thread's forward passes in the block.

    Taps nest: an inner block's taps run after the outer ones on the same module."""
    active = _active()
    pushed: list[tuple[int, int]] = []
    for module, fn in fns.items():
        install(module)
        chain = active.setdefault(id(module), [])
        items = tap_list(fn)
        chain.extend(items)
        pushed.append((id(module), len(items)))
    try:
        yield
    finally:
        for key, n in reversed(pushed):
            chain = active[key]
            del chain[len(chain) - n:]
            if not chain:
                del active[key]


def has_taps() -> bool:
    """True when the current thread has taps pushed (tests and assertions)."""
    return bool(getattr(_local, "taps", None))


def save_inputs(store: dict[Any, torch.Tensor], modules: Mapping[Any, nn.Module]) -> dict[nn.Module, TapFn]:
    """Taps that keep each module's first input (detached) in store[key] on every forward."""
    def keep(key: Any) -> TapFn:
        def tap(_m: nn.Module, inputs: tuple[Any, ...], _o: Any) -> None:
            store[key] = inputs[0].detach()

        return tap

    return {mod: keep(key) for key, mod in modules.items()}


def hook_point(bridge: Any, name: str) -> nn.Module:
    """The bridge module behind a TransformerLens hook name ('blocks.6.hook_mlp_out'),
    aliases resolved. Raises KeyError with the name when the bridge has no such hook."""
    hook_dict = bridge.hook_dict
    if name in hook_dict:
        point: nn.Module = hook_dict[name]
        return point
    raise KeyError(f"The model has no hook {name!r}.")


def _layer_of_hook(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def capture(
    bridge: Any,
    input_ids: torch.Tensor,  # [batch, pos]
    names: Sequence[str],
    *,
    attention_mask: torch.Tensor | None = None,
    extra: Mapping[nn.Module, TapFn | Sequence[TapFn]] | None = None,
    stop: bool = True,
) -> dict[str, torch.Tensor]:
    """Activations at TransformerLens hook names (`bundle.bridge`'s) for one batch, this thread only.

    The forward pass stops after the last decoder layer any name needs (no unembedding) when
    `stop` is set. `extra` taps (an edit, an SAE splice) run in the same pass. Returns
    {name: tensor detached, as the hook saw it, in float32 whatever the weights' dtype: statistics
    and the methods' math run in fp32}. Gradients flow if the caller enables them and
    uses the returned tensors before detaching: pass stop=False to get logits too."""
    got: dict[str, torch.Tensor] = {}
    model = bridge.original_model  # the HF model the bridge wraps in place (one copy of the weights)
    points = {n: hook_point(bridge, n) for n in names}
    layers = [_layer_of_hook(n) for n in names]
    last_layer = max((x for x in layers if x is not None), default=None)
    blocks = layout.decoder_layers(model)
    fns: dict[nn.Module, list[TapFn]] = {}
    for module, fn in (extra or {}).items():
        fns.setdefault(module, []).extend(tap_list(fn))

    def keep(name: str) -> TapFn:
        def tap(_m: nn.Module, _i: tuple[Any, ...], out: Any) -> None:
            got[name] = _as_float32(out.detach())

        return tap

    for n, point in points.items():
        fns.setdefault(point, []).append(keep(n))
    if stop and last_layer is not None and last_layer < len(blocks) - 1:
        def halt(_m: nn.Module, _i: tuple[Any, ...], _o: Any) -> None:
            if len(got) == len(points):
                raise StopForward
        fns.setdefault(blocks[last_layer], []).append(halt)
    with taps(fns):
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
        except StopForward:
            pass
    missing = [n for n in names if n not in got]
    if missing:
        raise RuntimeError(f"The forward pass never reached the hooks {missing}.")
    return got


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


def text_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, pos] bool: the real tokens of a right-padded batch except position 0 (BOS, whose
    activations are outliers, not text). The one place every reader drops BOS."""
    keep = attention_mask.bool().clone()
    keep[:, 0] = False
    return keep


def mlp_hidden(
    bridge: Any, input_ids: torch.Tensor, layers: Sequence[int], *, attention_mask: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """h, the hidden activations W_out reads (down_proj's input, hook `mlp.hook_post`), per layer:
    {layer: [batch, pos, d_mlp]}, through `capture` (this thread only, stops after the last layer)."""
    names = {layer: f"blocks.{layer}.mlp.hook_post" for layer in layers}
    got = capture(bridge, input_ids, list(names.values()), attention_mask=attention_mask)
    return {layer: got[name] for layer, name in names.items()}
