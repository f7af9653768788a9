"""Per-thread call state for TransformerLens bridge components.

The bridge keeps a few flags on each wrapper module for the length of one forward call: an MLP
tells its input projection to skip its next `hook_in` (`_suppress_next_hook_in`), the output
projection records that its `hook_out` fired (`_fired_hook_out`), and a block hands its
attention the residual it captured (`_captured_pre_ln_residual`). They are plain attributes, so
on a server where two threads run the one shared model at once (a scorecard job beside the first
start's activation collection), one thread consumes or resets the other's flag: a capture tap
fires twice or not at all, and a job fails far from the cause (an IndexError in a scorecard).

`make_call_state_thread_local()` replaces those attributes on the component class with data
descriptors that keep one value per thread. The bridge sets them with `object.__setattr__` or
`nn.Module.__setattr__`, and both honour a data descriptor on the class, so the library's code
runs unchanged and each thread sees only its own call's state.
"""

from __future__ import annotations

import threading
from typing import Any

CALL_STATE = {"_fired_hook_out": False, "_suppress_next_hook_in": False, "_captured_pre_ln_residual": None}
_installed = threading.Lock()


class ThreadLocalAttr:
    """A class attribute whose value is per (instance, thread), `default` until set."""

    def __init__(self, default: Any) -> None:
        self.default = default
        self.local = threading.local()

    def _values(self) -> dict[int, Any]:
        values = getattr(self.local, "values", None)
        if values is None:
            values = self.local.values = {}
        return values

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        return self._values().get(id(obj), self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        values = self._values()
        if value is self.default:  # the defaults are False and None: singletons
            values.pop(id(obj), None)  # back to the default: nothing kept for this thread
        else:
            values[id(obj)] = value

    def __delete__(self, obj: Any) -> None:
        self._values().pop(id(obj), None)


def make_call_state_thread_local() -> None:
    """Give the bridge's component classes per-thread call state (idempotent; call before or
    after a bridge is built: the descriptor wins over values already in instance dicts)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    with _installed:
        for name, default in CALL_STATE.items():
            if not isinstance(GeneralizedComponent.__dict__.get(name), ThreadLocalAttr):
                setattr(GeneralizedComponent, name, ThreadLocalAttr(default))
