"""Edits: EditSpec (JSON), compile spec -> Overlay, apply/revert, and the edit methods."""

from workbench.edits.overlay import (
    Overlay,
    OverlayError,
    RowChange,
    RuntimeHook,
    apply_overlay,
    compile_spec,
    maybe_overlay,
)
from workbench.edits.spec import (
    EditSpec,
    ModelRef,
    SaeRef,
    SpecError,
    load_spec,
    sae_sha256,
    save_spec,
    write_schema,
)

__all__ = [
    "EditSpec",
    "ModelRef",
    "Overlay",
    "OverlayError",
    "RowChange",
    "RuntimeHook",
    "SaeRef",
    "SpecError",
    "apply_overlay",
    "compile_spec",
    "load_spec",
    "maybe_overlay",
    "sae_sha256",
    "save_spec",
    "write_schema",
]
