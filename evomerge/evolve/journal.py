"""An append-only score journal: the children evaluated since the last snapshot, replayed on resume.

Each record is a fixed header (magic, child index, children asked when it was told, ok flag, payload
length, CRC32) followed by the child's scores as float64 (exact, so a replayed tell equals the
original bit for bit). The ask count lets an asynchronous run replay its ask/tell interleaving. A
record cut short by a kill is detected by its length or CRC and dropped with everything after it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HEADER = struct.Struct("<4sqqBII")
_MAGIC = b"EVJ2"


@dataclass(frozen=True)
class Record:
    index: int  # the child
    asked: int  # children asked when it was told
    scores: np.ndarray | None  # None: the evaluation failed


def read_journal(path: Path) -> tuple[list[Record], int]:
    """(records, byte length of the valid prefix)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records, pos = [], 0
    for record, end in _records(data):
        records.append(record)
        pos = end
    return records, pos


def _records(data: bytes) -> Iterator[tuple[Record, int]]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, index, asked, ok, length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if magic != _MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        scores = np.frombuffer(data[start:end], dtype=np.float64).copy() if ok else None
        yield Record(index, asked, scores), end
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

    def append(self, index: int, scores: np.ndarray | None, asked: int) -> None:
        payload = b"" if scores is None else np.ascontiguousarray(scores, dtype=np.float64).tobytes()
        header = _HEADER.pack(_MAGIC, index, asked, scores is not None, len(payload), zlib.crc32(payload))
        self._fh.write(header + payload)
        self._fh.flush()

    def reset(self) -> None:
        """Empty the journal (after a snapshot that covers every record in it)."""
        self._fh.truncate(0)
        self._fh.seek(0)

    def close(self) -> None:
        self._fh.close()
