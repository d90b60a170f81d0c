"""The hand-written safetensors header: what the writer plans is what the library reads."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
import torch

from evomerge.errors import CheckpointError
from evomerge.io.safetensors_format import plan_header, read_header

MIXED = [
    ("a", (3,), torch.bfloat16),
    ("b", (5, 1), torch.float32),
    ("c", (7,), torch.uint8),
    ("d", (2, 3), torch.float64),
    ("e", (0, 4), torch.float16),
    ("f", (), torch.int16),
]


def test_planned_header_is_space_padded_to_8_bytes_and_every_tensor_is_aligned_to_its_element_size() -> None:
    header, offsets = plan_header(MIXED)
    (n,) = struct.unpack("<Q", header[:8])
    assert len(header) == 8 + n
    assert (8 + n) % 8 == 0
    assert json.loads(header[8:])["__metadata__"] == {"format": "pt"}
    text = header[8:].decode("utf-8")
    assert text.rstrip(" ").endswith("}") and set(text[len(text.rstrip(" ")) :]) <= {" "}
    for name, _shape, dtype in MIXED:
        begin, _ = offsets[name]
        assert begin % dtype.itemsize == 0, name


def test_planned_offsets_cover_the_data_contiguously() -> None:
    header, offsets = plan_header(MIXED)
    spans = sorted(offsets.values())
    assert spans[0][0] == len(header)
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert begin == end


def test_safetensors_library_reads_a_file_built_from_a_planned_header(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tensors = {
        name: (torch.arange(torch.Size(shape).numel()) % 7).to(dtype).reshape(shape) for name, shape, dtype in MIXED
    }
    header, offsets = plan_header(MIXED)
    end = max(e for _, e in offsets.values())
    buf = bytearray(end)
    buf[: len(header)] = header
    for name, (begin, stop) in offsets.items():
        buf[begin:stop] = tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes()
    (tmp_path / "x.safetensors").write_bytes(bytes(buf))
    loaded = load_file(tmp_path / "x.safetensors")
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)
    parsed = read_header(tmp_path / "x.safetensors")
    assert {e.name for e in parsed.entries} == set(tensors)
    assert parsed.file_size == end


def _file(tmp_path: Path, header: dict, data: bytes = b"", n: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "n", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "truncated"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", 10**6, "header length"),
        ({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unsupported dtype"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12 bytes"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16, None, "expected 0"),
        ({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8, None, "invalid shape"),
        ([1, 2], b"", None, "not a JSON object"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, None, "4 unexpected bytes"),
    ],
)
def test_read_header_reports_corruption_naming_file_and_tensor(
    tmp_path: Path, header: dict, data: bytes, n: int | None, message: str
) -> None:
    path = _file(tmp_path, header, data, n)
    with pytest.raises(CheckpointError, match=message) as err:
        read_header(path)
    assert str(path) in str(err.value)
    if isinstance(header, dict) and message not in ("header length", "4 unexpected bytes"):
        assert "'w'" in str(err.value)


def test_read_header_reports_garbage_instead_of_json(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 8) + b"\xff\xfe{not js" + b"\0" * 8)
    with pytest.raises(CheckpointError, match="not UTF-8 JSON") as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_read_header_reports_a_file_shorter_than_the_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="shorter than the 8-byte header length") as err:
        read_header(path)
    assert str(path) in str(err.value)
