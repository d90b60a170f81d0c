"""Where MAP measures before it fits: the one-hot points plus a grid in [0, 1]^d (Li et al., arXiv 2406.07529).

The paper's sampler (``Sampling.generate_adjusted_nd_points`` in its code) takes the d one-hot
coefficient vectors — each expert alone — and fills the rest from a regular grid of about twice
the needed size over [0, 1]^d, without the one-hot points, the points on the simplex Σc = 1 and
the diagonal c_1 = … = c_d (those are the linear-interpolation and isotropic merges), drawn at
random. When the grid holds too few such points it is refined until it does.

Coefficients live in "c-space"; the genome box of a Problem may differ. ``unit_to_box`` keeps
c unchanged when the box contains [0, 1]^d (then c is the task-arithmetic weight itself, and the
one-hot points are the experts) and otherwise maps the unit cube affinely onto the box.
"""

from __future__ import annotations

import numpy as np


def one_hot(dim: int) -> np.ndarray:
    return np.eye(dim, dtype=np.float64)


def grid_candidates(dim: int, size: int) -> np.ndarray:
    """The regular grid with ``size`` levels per axis, less one-hot, simplex (Σc = 1) and diagonal points."""
    axes = np.linspace(0.0, 1.0, size)
    grid = np.stack(np.meshgrid(*([axes] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    on_simplex = np.isclose(grid.sum(axis=1), 1.0)  # includes the one-hot points
    diagonal = np.all(np.isclose(grid, grid[:, :1]), axis=1)
    return grid[~on_simplex & ~diagonal]


def initial_design(dim: int, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """``n_points`` coefficient vectors in [0, 1]^d: the d one-hot points first, then random grid points."""
    if n_points < dim:
        raise ValueError(f"initial_design: {n_points} points cannot hold the {dim} one-hot points")
    rest = n_points - dim
    size = max(3, int(np.ceil((2 * max(rest, 1)) ** (1.0 / dim))))
    candidates = grid_candidates(dim, size)
    while candidates.shape[0] < rest:
        size += 1
        candidates = grid_candidates(dim, size)
    picked = candidates[np.sort(rng.choice(candidates.shape[0], size=rest, replace=False))]
    return np.concatenate([one_hot(dim), picked])


def contains_unit_cube(lower: np.ndarray, upper: np.ndarray) -> bool:
    return bool(np.all(lower <= 0.0) and np.all(upper >= 1.0))


def unit_to_box(c: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """c itself when the box contains [0, 1]^d, else the affine image of the unit cube; clipped into the box."""
    c = np.asarray(c, dtype=np.float64)
    if not contains_unit_cube(lower, upper):
        c = lower + c * (upper - lower)
    return np.minimum(np.maximum(c, lower), upper)
