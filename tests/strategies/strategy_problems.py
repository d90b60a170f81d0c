"""Benchmark functions with known optima, and front-quality measures, as independent truth for the strategies."""

from __future__ import annotations

import numpy as np

SHIFT_10D = np.array([1.3, -2.1, 0.7, 3.2, -0.4, 2.5, -3.3, 0.1, 1.9, -1.2])
"""Optimum of the shifted sphere, off-centre in the box [-5, 5]^10."""


def sphere(x: np.ndarray, shift: np.ndarray = SHIFT_10D) -> float:
    """Shifted sphere Σ (x − shift)²; minimum 0 at ``shift``."""
    return float(np.sum((np.asarray(x) - shift[: len(x)]) ** 2))


def rastrigin(x: np.ndarray) -> float:
    """Rastrigin 10d + Σ (x² − 10 cos 2πx) on [-5.12, 5.12]^d; minimum 0 at the origin, ~10^d local minima."""
    x = np.asarray(x)
    return float(10 * x.size + np.sum(x**2 - 10 * np.cos(2 * np.pi * x)))


def zdt1(x: np.ndarray) -> list[float]:
    """ZDT1 (Zitzler, Deb & Thiele 2000) on [0, 1]^d: convex front f2 = 1 − √f1 where x[1:] = 0."""
    g = 1 + 9 * np.mean(x[1:])
    return [float(x[0]), float(g * (1 - np.sqrt(x[0] / g)))]


def zdt2(x: np.ndarray) -> list[float]:
    """ZDT2 on [0, 1]^d: non-convex front f2 = 1 − f1² where x[1:] = 0."""
    g = 1 + 9 * np.mean(x[1:])
    return [float(x[0]), float(g * (1 - (x[0] / g) ** 2))]


def true_front(problem: str, n: int = 2001) -> np.ndarray:
    """The analytic Pareto front of ZDT1/ZDT2, sampled densely and uniformly in f1."""
    f1 = np.linspace(0.0, 1.0, n)
    f2 = 1 - np.sqrt(f1) if problem == "zdt1" else 1 - f1**2
    return np.stack([f1, f2], axis=1)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (minimisation) that no other row dominates."""
    points = np.asarray(points, dtype=np.float64)
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        dominated_by = np.all(points <= p, axis=1) & np.any(points < p, axis=1)
        keep[i] = not dominated_by.any()
    return points[keep]


def igd(front: np.ndarray, reference: np.ndarray) -> float:
    """Inverted generational distance: mean over the reference front of the distance to the nearest found point."""
    d = np.sqrt(((reference[:, None, :] - np.asarray(front)[None, :, :]) ** 2).sum(-1))
    return float(d.min(axis=1).mean())


BRANIN_MIN = 0.397887357729738


def branin(x: np.ndarray) -> float:
    """Branin-Hoo on [-5, 10] × [0, 15]: smooth, three global minima of value 0.397887 (a standard BO benchmark)."""
    a, b, c, r, s, t = 1.0, 5.1 / (4 * np.pi**2), 5 / np.pi, 6.0, 10.0, 1 / (8 * np.pi)
    return float(a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * np.cos(x[0]) + s)
