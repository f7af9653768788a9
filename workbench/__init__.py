"""Concept-erasure workbench: find, inspect and surgically remove knowledge stored in MLP weights.

The notebook API (workbench/notebook.py), loaded on first use so that `python -m workbench`
and light imports stay fast:

    import workbench as wb

    model = wb.load()                                          # embedded Gemma 3 270M
    edit = wb.erase(model, "Harry Potter", method="ablate")    # or wb.edit(model, [wb.AblateValueVectors(...)])
    base, edited = wb.preview(model, "Harry Potter is a", edit, max_new_tokens=100)
    card = wb.score(model, "Harry Potter", edit)
    edit.save("hp.json")
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# MKL frees its matrix-product buffers instead of keeping ~14 MB for the process's life; it reads
# this once, at its first product, so it is set before torch does any (models/memory.py)
os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")

__version__ = "0.1.0"

_NOTEBOOK = ("Edit", "load", "erase", "edit", "preview", "score")
_OPERATIONS = ("AblateValueVectors", "ProjectOutDirection", "PruneNeurons", "RemoveSaeFeatures", "NeuronAdjust",
               "NeuronAdjustLayer", "OptimiseValueVectors", "ValueVectorDelta", "EditSpec", "SaeRef")
__all__ = [*_NOTEBOOK, *_OPERATIONS]


def __getattr__(name: str) -> Any:
    if name in _NOTEBOOK:
        return getattr(importlib.import_module("workbench.notebook"), name)
    if name in _OPERATIONS:
        return getattr(importlib.import_module("workbench.edits.spec"), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
