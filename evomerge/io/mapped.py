"""Safetensors files kept memory-mapped for the life of a search: tensors as zero-copy read-only views.

A worker whose sources do not fit its memory reads some of them from the files
for every candidate. ``Checkpoint.get`` maps the file afresh per call (so no
caller can see another's in-place writes), which costs a page fault per 4 KiB
on every read; a mapping kept open faults each page in once, and afterwards a
read is a plain copy out of the page cache, which the kernel may still evict
under memory pressure (clean file pages, not the process's own memory).
"""

from __future__ import annotations

import mmap
import warnings
from pathlib import Path

import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.io.safetensors_format import read_header


class MappedFiles:
    """Read-only views of checkpoint tensors over one long-lived mapping per file; callers must copy to modify."""

    def __init__(self) -> None:
        self._maps: dict[Path, tuple[mmap.mmap, torch.Tensor, dict[str, tuple[int, int]]]] = {}

    def _file(self, path: Path) -> tuple[torch.Tensor, dict[str, tuple[int, int]]]:
        if path not in self._maps:
            header = read_header(path)
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            with warnings.catch_warnings():  # read-only on purpose: nothing writes through these views
                warnings.filterwarnings("ignore", message="The given buffer is not writable")
                data = torch.frombuffer(mapped, dtype=torch.uint8)
            spans = {e.name: (header.data_start + e.begin, header.data_start + e.end) for e in header.entries}
            self._maps[path] = (mapped, data, spans)
        _, data, spans = self._maps[path]
        return data, spans

    def view(self, ckpt: Checkpoint, name: str) -> torch.Tensor:
        """Tensor ``name`` of ``ckpt`` as a view of the mapped file (a ``get`` copy for .bin checkpoints)."""
        info = ckpt.info(name)
        if info.file.suffix != ".safetensors":
            return ckpt.get(name)
        data, spans = self._file(info.file)
        begin, end = spans[name]
        return data[begin:end].view(info.dtype).view(info.shape)
