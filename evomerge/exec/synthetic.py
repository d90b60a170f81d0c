"""Known test problems as FunctionRunner targets: sphere, Rastrigin, ZDT1/2 (optima known exactly).

Genomes live in [0, 1]^d; each function maps the box to its usual domain.
"""

from __future__ import annotations

import numpy as np


def sphere(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Minimum 0 at x = 0.3 (shifted away from the box centre)."""
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def rastrigin(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Minimum 0 at x = 0.5 (the box maps to [-5.12, 5.12])."""
    x = (genome - 0.5) * 10.24
    return {"rastrigin": float(10 * x.size + np.sum(x**2 - 10 * np.cos(2 * np.pi * x)))}


def zdt1(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Pareto front f2 = 1 - sqrt(f1) at x[1:] = 0."""
    f1 = float(genome[0])
    g = 1 + 9 * float(np.mean(genome[1:])) if genome.size > 1 else 1.0
    return {"f1": f1, "f2": g * (1 - np.sqrt(f1 / g))}


def zdt2(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    """Pareto front f2 = 1 - f1^2 at x[1:] = 0."""
    f1 = float(genome[0])
    g = 1 + 9 * float(np.mean(genome[1:])) if genome.size > 1 else 1.0
    return {"f1": f1, "f2": g * (1 - (f1 / g) ** 2)}
