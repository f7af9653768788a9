"""The registry of erasure methods: each method describes itself once, in one `register` call.

A `Method` carries everything the rest of the workbench needs to know about it: the function
that runs it (`erase()` dispatches through `METHODS`), its label and description for the Erase
page (`workbench/ui/erase.py` fills the description's `{placeholders}` from the configs with
`config_numbers`), whether it needs a local SAE, whether it runs the localized optimisation (so
the page's 'Optimisation steps' applies), and the knob the per-concept strength search raises
(`workbench/methods/strength.py`), if any, and where its settings live (`config_of`). The CLI's `--method` choices, `bench/erasure.py`
and the page's option list are the keys of `METHODS`, in registration order.

The built-in methods register themselves in `workbench/methods/erase.py`; import `METHODS`
from there (or import that module first) to be sure they are in it. A method needs no
benchmark rows to be registered: the page then says it has not been measured yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.methods.erase import EraseOptions, MethodFn


@dataclass(frozen=True)
class StrengthKnob:
    """What the strength search raises for a method: `name` says it in words (shown in the
    search's summary), `scale(options, level)` returns the options at `level` times the
    method's default strength (level 1 = unchanged strength, larger = stronger)."""

    name: str
    scale: Callable[[EraseOptions, float], EraseOptions]


@dataclass(frozen=True)
class Method:
    """One erasure method, described once.

    `what` is the page's description: what the method does and its trade-off in words, with
    `{placeholders}` for numbers that come from the configs (`ui.erase.config_numbers`); the
    measured numbers come from the results file, never from this text."""

    name: str  # the key: CLI --method, bench rows, spec notes
    run: MethodFn  # (bundle, corpus, facts, options, progress) -> MethodRun
    label: str  # the page's option label ("(default)" on the default method's only)
    what: str
    needs_sae: bool = False  # needs a local SAE at PiscesConfig's layer (erase checks it before any work)
    optimises: bool = False  # runs the localized optimisation, so 'Optimisation steps' applies
    strength: StrengthKnob | None = None  # None: the strength search refuses it
    config: str | None = None  # the EraseOptions field that holds its settings (None: it has none)
    default_config: Any = None  # its settings when that field is None (rewrite-cf's REWRITE_CF ...)

    def config_of(self, options: EraseOptions) -> Any:
        """The settings this method runs with under `options` (a frozen config dataclass), as
        its run function reads them; None for a method without settings."""
        if self.config is None:
            return None
        value = getattr(options, self.config)
        return self.default_config if value is None else value


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to `METHODS` (returned, so a registration can be kept in a name).

    Raises ValueError when another method of the same name is registered from another module;
    the same module registering it again (a reloaded module) replaces it."""
    old = METHODS.get(method.name)
    if old is not None and getattr(old.run, "__module__", None) != getattr(method.run, "__module__", None):
        raise ValueError(f"An erasure method named {method.name!r} is already registered "
                         f"(from {old.run.__module__}); choose another name.")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove a method from `METHODS` (tests that register a toy one); KeyError if absent."""
    return METHODS.pop(name)


def searchable() -> list[str]:
    """The methods the strength search can run: those with a strength knob."""
    return [name for name, m in METHODS.items() if m.strength is not None]
