"""An append-only score journal: the children evaluated since the last snapshot, replayed on resume.

Each record is a fixed header (magic, child index, ok flag, payload length, CRC32) followed by the
child's scores as float64 (exact, so a replayed tell equals the original bit for bit). A record cut
short by a kill is detected by its length or CRC and dropped with everything after it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("<4sqBII")
_MAGIC = b"EVJ1"


def read_journal(path: Path) -> tuple[list[tuple[int, np.ndarray | None]], int]:
    """(records as (index, scores or None for a failed child), byte length of the valid prefix)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records, pos = [], 0
    for index, scores, end in _records(data):
        records.append((index, scores))
        pos = end
    return records, pos


def _records(data: bytes) -> Iterator[tuple[int, np.ndarray | None, int]]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, index, ok, length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if magic != _MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        yield index, (np.frombuffer(data[start:end], dtype=np.float64).copy() if ok else None), end
        pos = end


class Journal:
    """Appends records; ``flush`` after each so a killed process loses at most the record being written."""

    def __init__(self, path: Path, valid_length: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if valid_length is not None and path.exists():
            with open(path, "r+b") as fh:
                fh.truncate(valid_length)
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the run's lifetime

    def append(self, index: int, scores: np.ndarray | None) -> None:
        payload = b"" if scores is None else np.ascontiguousarray(scores, dtype=np.float64).tobytes()
        self._fh.write(_HEADER.pack(_MAGIC, index, scores is not None, len(payload), zlib.crc32(payload)) + payload)
        self._fh.flush()

    def reset(self) -> None:
        """Empty the journal (after a snapshot that covers every record in it)."""
        self._fh.truncate(0)
        self._fh.seek(0)

    def close(self) -> None:
        self._fh.close()
