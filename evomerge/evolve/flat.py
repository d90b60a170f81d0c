"""One flat float32 vector per model: the genome of M2N2 and the task vectors of CycleQD.

The layout (names, shapes, offsets) comes from the model's own parameters in their registration
order, so a split point of M2N2 can cut inside a tensor and the vector maps back without copies of
the model. Tied parameters appear once (``named_parameters`` deduplicates them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evomerge.errors import CheckpointError


@dataclass(frozen=True)
class FlatEntry:
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter lives in the flat vector."""

    entries: tuple[FlatEntry, ...]

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> FlatLayout:
        entries, offset = [], 0
        for name, p in model.named_parameters():
            if not p.dtype.is_floating_point:
                continue
            entries.append(FlatEntry(name, tuple(p.shape), offset))
            offset += p.numel()
        if not entries:
            raise CheckpointError(f"{type(model).__name__} has no floating-point parameters to evolve")
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        last = self.entries[-1]
        return last.offset + last.numel

    def matrices(self) -> list[FlatEntry]:
        """2-D entries (weight matrices): the ones CycleQD's SVD mutation touches."""
        return [e for e in self.entries if len(e.shape) == 2]

    def view(self, vector: np.ndarray, entry: FlatEntry) -> np.ndarray:
        """The slice of ``vector`` holding ``entry``, shaped like the parameter (a view, no copy)."""
        return vector[entry.offset: entry.offset + entry.numel].reshape(entry.shape)

    def flatten(self, model: torch.nn.Module) -> np.ndarray:
        params = dict(model.named_parameters())
        out = np.empty(self.size, dtype=np.float32)
        for e in self.entries:
            p = params.get(e.name)
            if p is None or tuple(p.shape) != e.shape:
                found = None if p is None else tuple(p.shape)
                raise CheckpointError(f"parameter '{e.name}': expected shape {e.shape}, model has {found}")
            out[e.offset: e.offset + e.numel] = p.detach().float().cpu().reshape(-1).numpy()
        return out

    def load_into(self, model: torch.nn.Module, vector: np.ndarray) -> None:
        """Copy ``vector`` into the model's parameters in place (any device, any float dtype)."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise CheckpointError(f"genome has shape {vector.shape}, the layout needs ({self.size},)")
        params = dict(model.named_parameters())
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        flat = torch.from_numpy(vector if vector.flags.writeable else vector.copy())
        with torch.no_grad():
            for e in self.entries:
                params[e.name].copy_(flat[e.offset: e.offset + e.numel].view(e.shape))


def flatten_checkpoint(path: str | Path, layout: FlatLayout | None = None) -> tuple[np.ndarray, FlatLayout]:
    """(flat vector, layout) of the model folder at ``path``; with ``layout``, shapes must match it."""
    from evomerge.models import load_model

    model, _ = load_model(path)
    own = FlatLayout.from_model(model)
    if layout is not None and own != layout:
        mismatch = next((f"'{a.name}' {a.shape} vs '{b.name}' {b.shape}" for a, b in zip(own.entries, layout.entries,
                         strict=False) if a != b), f"{len(own.entries)} vs {len(layout.entries)} parameters")
        raise CheckpointError(f"{path}: parameters differ from the first model's ({mismatch})")
    return own.flatten(model), own
