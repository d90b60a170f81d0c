"""CycleQD's K MAP-Elites archives over one shared, deduplicated store of elite task vectors.

Archive k keeps, per cell (the bins of the other K−1 task scores), the child with the best task-k
score. A child that wins cells in several archives is stored once: archives hold child ids, the
store holds one float32 vector (and the K scores) per distinct elite, and a vector is dropped as soon
as no archive refers to it — the memory bound that makes 7B task vectors workable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.evolve.cycleqd_ops import cell_of

Cell = tuple[int, ...]


class CycleArchives:
    """K grids of ``n_bins``^(K−1) cells; ``set_ranges`` must come before the first ``insert``."""

    def __init__(self, n_tasks: int, n_bins: int) -> None:
        if n_tasks < 2:
            raise ValueError(f"CycleQD needs at least 2 tasks (one quality, one behaviour), got {n_tasks}")
        self.n_tasks, self.n_bins = int(n_tasks), int(n_bins)
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.grids: list[dict[Cell, int]] = [{} for _ in range(self.n_tasks)]  # cell -> elite id
        self.genomes: dict[int, np.ndarray] = {}
        self.scores: dict[int, np.ndarray] = {}

    def set_ranges(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo, self.hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)

    @property
    def ready(self) -> bool:
        return self.lo is not None

    def cell(self, scores: np.ndarray, k: int) -> Cell:
        if self.lo is None or self.hi is None:
            raise RuntimeError("CycleArchives: bin ranges are not set yet")
        return cell_of(scores, k, self.lo, self.hi, self.n_bins)

    def insert(self, elite_id: int, genome: np.ndarray, scores: np.ndarray) -> list[int]:
        """Put the child in every archive whose cell it fills or improves (strictly); returns those archives."""
        scores = np.asarray(scores, dtype=np.float64)
        improved = []
        for k in range(self.n_tasks):
            cell = self.cell(scores, k)
            incumbent = self.grids[k].get(cell)
            if incumbent is None or scores[k] > self.scores[incumbent][k]:
                self.grids[k][cell] = elite_id
                improved.append(k)
        if improved:
            self.genomes[elite_id] = genome
            self.scores[elite_id] = scores
            self._drop_unreferenced()
        return improved

    def elites(self, k: int) -> list[tuple[Cell, int]]:
        """(cell, elite id) of archive k in cell order: a fixed order, whatever the insertion history."""
        return sorted(self.grids[k].items())

    def best(self, k: int) -> int | None:
        """The elite with archive k's highest quality (the first in cell order on ties)."""
        elites = self.elites(k)
        if not elites:
            return None
        qualities = [self.scores[i][k] for _, i in elites]
        return elites[int(np.argmax(qualities))][1]

    def _drop_unreferenced(self) -> None:
        alive = {i for grid in self.grids for i in grid.values()}
        for i in [i for i in self.genomes if i not in alive]:
            del self.genomes[i], self.scores[i]

    def state(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "grids": [dict(g) for g in self.grids],
                "genomes": dict(self.genomes), "scores": dict(self.scores)}

    def load(self, state: dict[str, Any]) -> None:
        self.lo, self.hi = state["lo"], state["hi"]
        self.grids = [dict(g) for g in state["grids"]]
        self.genomes = dict(state["genomes"])
        self.scores = dict(state["scores"])
