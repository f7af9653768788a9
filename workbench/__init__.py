"""Concept-erasure workbench: find, inspect and surgically remove knowledge stored in MLP weights.

The notebook API (workbench/notebook.py), loaded on first use so that `python -m workbench`
and light imports stay fast:

    import workbench as wb

    model = wb.load()                                          # embedded Gemma 3 270M
    edit = wb.erase(model, "Harry Potter", method="ablate")    # or wb.edit(model, [wb.AblateValueVectors(...)])
    base, edited = wb.preview(model, "Harry Potter is a", edit, max_new_tokens=100)
    card = wb.score(model, "Harry Potter", edit)
    edit.save("hp.json")
    acts = wb.capture(model, ["Harry Potter is a"], ["blocks.6.mlp.hook_post"], edit=edit)
    with model.edited(edit):                                   # HF and TransformerLens forwards, this thread
        logits, cache = model.bridge.run_with_cache(ids)
    logits = model.edited(edit)(input_ids=ids).logits          # or as a handle over the untouched base

`wb.use(model, adapter)` and `wb.route(model, [None, adapter])` are the thread-scoped adapter
contexts underneath (workbench.adapters); subpackages load on first access too (`wb.exports`).

Importing the package changes nothing in the process (no environment variable, no allocator
setting); `wb.load(..., tune_process=True)` opts into the app's process-wide speed and memory
settings (workbench/models/process.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

_NOTEBOOK = ("Edit", "load", "erase", "edit", "preview", "score", "capture")
_ADAPTERS = ("use", "route")
_MODELS = {"Model": "ModelBundle", "EditedModel": "EditedModel"}  # wb.Model: what wb.load returns
_OPERATIONS = ("AblateValueVectors", "ProjectOutDirection", "PruneNeurons", "RemoveSaeFeatures", "NeuronAdjust",
               "NeuronAdjustLayer", "OptimiseValueVectors", "ValueVectorDelta", "EditSpec", "SaeRef")
__all__ = [*_NOTEBOOK, *_ADAPTERS, *_MODELS, *_OPERATIONS]


def __getattr__(name: str) -> Any:
    """The API names above, and the subpackages (`wb.exports.intervene`), imported on first use."""
    if name in _NOTEBOOK:
        return getattr(importlib.import_module("workbench.notebook"), name)
    if name in _ADAPTERS:
        return getattr(importlib.import_module("workbench.adapters"), name)
    if name in _MODELS:
        return getattr(importlib.import_module("workbench.models.bundle"), _MODELS[name])
    if name in _OPERATIONS:
        return getattr(importlib.import_module("workbench.edits.spec"), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: binds itself on the package
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
