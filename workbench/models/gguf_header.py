"""Read a GGUF file's header (metadata and tensor table) without touching its tensors.

`gguf.GGUFReader` builds a numpy view of every element of every metadata array before it returns:
23 s for the embedded Gemma 3's 262k-token vocabulary on 2 busy cores (3.5 s for SmolLM2's 49k),
on top of the three passes transformers' own loader makes. The workbench needs a handful of
scalars and the tensor table, so this walks the header once, keeps scalars and strings, keeps an
array as its length, and takes value types, tensor types and block sizes from the gguf package's
own tables. It reads the versions GGUFReader reads (2 and 3) in either byte order;
tests/unit/test_gguf_source.py checks it against GGUFReader.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    READER_SUPPORTED_VERSIONS,
    GGMLQuantizationType,
    GGUFValueType,
)

GGUF_MAGIC = b"GGUF"
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class GGUFError(ValueError):
    """A GGUF file the workbench cannot read or convert (no GGUF, truncated, damaged, a tensor
    type it cannot dequantise), said in one sentence."""


@dataclass(frozen=True)
class TensorInfo:
    """One row of a GGUF's tensor table."""

    name: str
    tensor_type: str  # the GGML type's name: 'F32', 'Q4_1', 'Q4_K', ...
    offset: int  # of its data, from the start of the file
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF's metadata (an array as its length) and its tensor table."""

    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


class _Cursor:
    """Reads a header's fields in order from the mapped file, in byte order `order` ('<', '>');
    anything that would run past the end of the file is a GGUFError naming the file."""

    def __init__(self, data: Any, order: str, name: str) -> None:
        self.data, self.order, self.name, self.pos = data, order, name, 0

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise GGUFError(f"{self.name} is a truncated GGUF file: its header runs past the end of the file.")
        self.pos += n

    def scalar(self, fmt: str) -> Any:
        start = self.pos
        self.skip(struct.calcsize(fmt))
        return struct.unpack_from(self.order + fmt, self.data, start)[0]

    def string(self) -> str:
        n = self.scalar("Q")
        start = self.pos
        self.skip(n)
        return self.data[start:start + n].decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        """One metadata value of GGUFValueType `kind`; an array is kept as its length."""
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item, count = self.scalar("I"), self.scalar("Q")
            if item in (GGUFValueType.STRING, GGUFValueType.ARRAY):
                for _ in range(count):
                    self.value(item)
            else:
                self.skip(count * struct.calcsize(self._format(item)))
            return count
        return self.scalar(self._format(kind))

    def _format(self, kind: int) -> str:
        if kind not in _SCALAR_FORMATS:
            raise GGUFError(f"{self.name} is damaged: its header has a value of unknown type {kind}.")
        return _SCALAR_FORMATS[GGUFValueType(kind)]


def read_header(path: Path) -> GGUFHeader:
    """The header of the GGUF file at `path`, or GGUFError with one sentence: not a GGUF, a
    version the gguf package cannot read, a header or tensor data cut short, a damaged table."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file: it does not start with the GGUF magic bytes.")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(data, path.name)


def _parse(data: Any, name: str) -> GGUFHeader:
    """The header fields in file order: version, counts, metadata, tensor table, then the check
    that every tensor's data lies inside the file."""
    if len(data) < 24:  # magic, version and the two counts
        raise GGUFError(f"{name} is a truncated GGUF file: it ends inside its first 24 bytes.")
    order = "<" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF else ">"  # GGUFReader's byte-order test
    cursor = _Cursor(data, order, name)
    cursor.skip(4)
    version = cursor.scalar("I")
    if version not in READER_SUPPORTED_VERSIONS:
        raise GGUFError(f"{name} is a GGUF file of version {version}, which the gguf package cannot read.")
    n_tensors, n_kv = cursor.scalar("Q"), cursor.scalar("Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.scalar("I"))
    table = [_tensor_row(cursor) for _ in range(n_tensors)]
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"{name} is damaged: its general.alignment {alignment!r} is not a power of two.")
    start = -(-cursor.pos // alignment) * alignment  # tensor data begins at the next aligned offset
    tensors = tuple(TensorInfo(n, t, start + offset, size) for n, t, offset, size in table)
    end = max((t.offset + t.n_bytes for t in tensors), default=start)
    if end > len(data):
        raise GGUFError(f"{name} is a truncated GGUF file: its tensors need {end:,} bytes and the file has "
                        f"{len(data):,}.")
    return GGUFHeader(version, metadata, tensors)


def _tensor_row(cursor: _Cursor) -> tuple[str, str, int, int]:
    """(name, GGML type name, data offset after the header, bytes) of the next tensor-table row."""
    name = cursor.string()
    n_dims = cursor.scalar("I")
    if n_dims > 4:  # GGML_MAX_DIMS
        raise GGUFError(f"{cursor.name} is damaged: tensor {name!r} has {n_dims} dimensions.")
    n_elements = 1
    for _ in range(n_dims):
        n_elements *= cursor.scalar("Q")
    kind, offset = cursor.scalar("I"), cursor.scalar("Q")
    try:
        qtype = GGMLQuantizationType(kind)
    except ValueError:
        raise GGUFError(f"{cursor.name} is damaged: tensor {name!r} has unknown type {kind}.") from None
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    return name, qtype.name, offset, n_elements // block * block_bytes
