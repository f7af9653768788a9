"""Edits: EditSpec (JSON), compile spec -> Adapter, and the edit methods."""

from workbench.adapters import Adapter, AdapterError, RowChange
from workbench.edits.compile import compile_spec
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
    "Adapter",
    "AdapterError",
    "EditSpec",
    "ModelRef",
    "RowChange",
    "SaeRef",
    "SpecError",
    "compile_spec",
    "load_spec",
    "sae_sha256",
    "save_spec",
    "write_schema",
]
