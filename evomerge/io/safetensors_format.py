"""The safetensors file layout, parsed and built by hand.

Reading the header ourselves lets `Checkpoint.open` index a 7B model without
touching tensor data and report a truncated or corrupted file by path before a
search starts; building it ourselves lets `ShardedWriter` fix every tensor's
offset before the first tensor exists, so tensors can be streamed to disk.

Format (huggingface/safetensors): 8-byte little-endian header length N, N
bytes of UTF-8 JSON (padded with spaces), then the data buffer. The JSON maps
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
offsets relative to the buffer start; the optional "__metadata__" maps str to
str. Tensors cover the buffer contiguously, without holes or overlap.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.errors import CheckpointError
from evomerge.io.dtype_table import CODES, torch_dtype

if TYPE_CHECKING:
    import torch

HEADER_ALIGNMENT = 8
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor as a safetensors header declares it (the dtype by name: parsing a header needs no torch)."""

    name: str
    dtype_name: str  # torch's name of the dtype: "bfloat16"
    shape: tuple[int, ...]
    begin: int  # offset of the first byte, relative to the data buffer
    end: int

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype (imports torch)."""
        return torch_dtype(self.dtype_name)


@dataclass(frozen=True)
class Header:
    """A parsed header: entries in the header's own order and where the data starts."""

    entries: list[HeaderEntry]
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data buffer (8 + N)

    @property
    def file_size(self) -> int:
        """The size the file must have to hold every tensor the header declares."""
        return self.data_start + max((e.end for e in self.entries), default=0)


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a valid safetensors file ({why}); the file is corrupt or was only partly "
        "downloaded or copied — fetch it again"
    )


def read_header(path: Path) -> Header:
    """Parse and check the header of ``path`` against the file's size; reads no tensor data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"file is {size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise _corrupt(path, f"header length field says {n} bytes, over the 100 MB limit")
            if 8 + n > size:
                raise _corrupt(path, f"header length field says {n} bytes but the file is only {size} bytes")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _corrupt(path, "__metadata__ is not an object")
    entries = [_entry(path, name, spec) for name, spec in header.items()]
    expected = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != expected:
            raise _corrupt(path, f"tensor {e.name!r} starts at byte {e.begin}, expected {expected}")
        expected = e.end
    parsed = Header(entries=entries, metadata=dict(metadata), data_start=8 + n)
    if parsed.file_size > size:
        last = max(entries, key=lambda e: e.end).name
        raise _corrupt(
            path,
            f"truncated: the header declares {parsed.file_size} bytes (up to tensor {last!r}) "
            f"but the file has {size}",
        )
    if parsed.file_size < size:  # the safetensors library refuses these too, but only at read time
        raise _corrupt(
            path, f"{size - parsed.file_size} unexpected bytes after the last tensor (header declares "
            f"{parsed.file_size} bytes, file has {size})"
        )
    return parsed


def _entry(path: Path, name: str, spec: object) -> HeaderEntry:
    if not isinstance(spec, dict):
        raise _corrupt(path, f"entry for tensor {name!r} is not an object")
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if code not in CODES:
        raise _corrupt(path, f"tensor {name!r} has unsupported dtype {code!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _corrupt(path, f"tensor {name!r} has invalid shape {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and o >= 0 for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    name_of_dtype, itemsize = CODES[code]
    nbytes = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise _corrupt(
            path,
            f"tensor {name!r} of shape {shape} {code} needs {nbytes} bytes, header gives "
            f"{offsets[1] - offsets[0]}",
        )
    return HeaderEntry(name=name, dtype_name=name_of_dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def plan_header(
    tensors: list[tuple[str, tuple[int, ...], torch.dtype]], metadata: dict[str, str] | None = None
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The exact header bytes for ``tensors`` and each tensor's absolute (begin, end) in the file.

    Tensors are laid out by decreasing element size (as the safetensors library
    does) and the header is space-padded to 8 bytes, so every tensor starts at
    a multiple of its element size and can be memory-mapped without a copy.
    """
    from evomerge.io.dtypes import DTYPE_TO_CODE  # the writer's side: its tensors are torch's already

    ordered = sorted(tensors, key=lambda t: -t[2].itemsize)  # stable: keeps layout order within a size
    relative: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, shape, dtype in ordered:
        nbytes = math.prod(shape) * dtype.itemsize
        relative[name] = (offset, offset + nbytes)
        offset += nbytes
    body: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    for name, shape, dtype in tensors:  # JSON keys in layout order, so readers list names as written
        body[name] = {"dtype": DTYPE_TO_CODE[dtype], "shape": list(shape), "data_offsets": list(relative[name])}
    text = json.dumps(body, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % HEADER_ALIGNMENT)
    data_start = 8 + len(text)
    absolute = {name: (data_start + b, data_start + e) for name, (b, e) in relative.items()}
    return struct.pack("<Q", len(text)) + text, absolute
