"""A plain box space for runners that score genomes directly (synthetic problems, custom black boxes)."""

from __future__ import annotations

import numpy as np


class BoxSpace:
    kind = "box"

    def __init__(self, dim: int, lower: float = 0.0, upper: float = 1.0, x0: float | None = None) -> None:
        self.dim = dim
        self.lower = np.full(dim, float(lower))
        self.upper = np.full(dim, float(upper))
        self.names = [f"x{i}" for i in range(dim)]
        self._x0 = (lower + upper) / 2 if x0 is None else x0

    def x0(self) -> np.ndarray:
        return np.full(self.dim, float(self._x0))

    def decode(self, genome: np.ndarray) -> None:
        return None

    def describe(self) -> dict:
        return {"kind": "box", "dim": self.dim, "lower": float(self.lower[0]), "upper": float(self.upper[0])}
