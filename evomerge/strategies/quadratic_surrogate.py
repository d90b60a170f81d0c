"""MAP's per-task surrogate: a warped quadratic in the task-arithmetic coefficients (Li et al., arXiv 2406.07529).

A second-order Taylor expansion of a task metric around the pre-trained model, restricted to the span
of the task vectors, is a quadratic in the coefficients ``c``: ``½cᵀAc + bᵀc + e``. Metrics are bounded
(accuracy in [0, 1]) or positive (a loss), so MAP warps the quadratic by a sigmoid or a softplus:
``M̃(c) = warp(½cᵀAc + bᵀc + e)``, ``(d+1)(d+2)/2`` free parameters.

Fitting. The paper minimises the squared error of the *warped* model against the measured metric
(its code: ``scipy.optimize.curve_fit`` from an all-ones start). That problem is non-linear; we start
it from the closed-form least-squares fit of the *un-warped* targets (logit / inverse softplus of the
clipped metric on the quadratic features), which already recovers the exact parameters from noiseless
data, then refine in the warped space (``fit="warped"``, the paper's criterion) — deterministic, and
never worse than the start. ``fit="linear"`` keeps the closed-form fit only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import least_squares

from evomerge.errors import ConfigError

Warp = Literal["sigmoid", "softplus", "identity"]
WARPS: tuple[str, ...] = ("sigmoid", "softplus", "identity")
FITS: tuple[str, ...] = ("warped", "linear")
CLIP_EPS = 1e-3
"""Targets are clipped to [eps, 1 − eps] (sigmoid) or [eps, ∞) (softplus) before the inverse warp:
an accuracy of exactly 0 or 1 has no finite logit."""


def n_params(dim: int) -> int:
    """(d+1)(d+2)/2: d(d+1)/2 for the symmetric A, d for b, 1 for e."""
    return (dim + 1) * (dim + 2) // 2


def features(c: np.ndarray) -> np.ndarray:
    """Rows ``[½c_i² (i), c_i·c_j (i<j), c_i (i), 1]`` so that ``features(c) @ θ = ½cᵀAc + bᵀc + e``."""
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    n, d = c.shape
    iu, ju = np.triu_indices(d, k=1)
    return np.concatenate([0.5 * c**2, c[:, iu] * c[:, ju], c, np.ones((n, 1))], axis=1)


def warp(z: np.ndarray, kind: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
    if kind == "softplus":
        return np.logaddexp(0.0, z)
    return z


def warp_derivative(z: np.ndarray, kind: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if kind == "sigmoid":
        s = warp(z, "sigmoid")
        return s * (1.0 - s)
    if kind == "softplus":
        return warp(z, "sigmoid")
    return np.ones_like(z)


def unwarp(y: np.ndarray, kind: str) -> np.ndarray:
    """The inverse warp of clipped targets (logit, inverse softplus ``y + log(1 − e^−y)``)."""
    y = np.asarray(y, dtype=np.float64)
    if kind == "sigmoid":
        p = np.clip(y, CLIP_EPS, 1.0 - CLIP_EPS)
        return np.log(p) - np.log1p(-p)
    if kind == "softplus":
        v = np.maximum(y, CLIP_EPS)
        return v + np.log(-np.expm1(-v))
    return y


@dataclass(frozen=True)
class QuadraticSurrogate:
    """``warp(features(c) @ theta)``; ``A``, ``b``, ``e`` are the paper's symbols."""

    theta: np.ndarray
    kind: str

    @property
    def dim(self) -> int:
        # (d+1)(d+2)/2 = len(theta)  =>  d = (sqrt(8·len + 1) − 3) / 2
        return round((np.sqrt(8 * self.theta.size + 1) - 3) / 2)

    @property
    def A(self) -> np.ndarray:  # the paper's symbol
        d = self.dim
        a = np.diag(self.theta[:d]).astype(np.float64)
        iu, ju = np.triu_indices(d, k=1)
        a[iu, ju] = a[ju, iu] = self.theta[d : d + iu.size]
        return a

    @property
    def b(self) -> np.ndarray:
        d = self.dim
        return self.theta[-d - 1 : -1].copy()

    @property
    def e(self) -> float:
        return float(self.theta[-1])

    def raw(self, c: np.ndarray) -> np.ndarray:
        """The quadratic before the warp."""
        return features(c) @ self.theta

    def __call__(self, c: np.ndarray) -> np.ndarray:
        return warp(self.raw(c), self.kind)

    @classmethod
    def from_parts(cls, A: np.ndarray, b: np.ndarray, e: float, kind: str = "identity") -> QuadraticSurrogate:
        a = np.asarray(A, dtype=np.float64)
        d = a.shape[0]
        iu, ju = np.triu_indices(d, k=1)
        theta = np.concatenate([np.diag(a), a[iu, ju], np.asarray(b, dtype=np.float64).reshape(d), [float(e)]])
        return cls(theta, kind)


def fit_quadratic(c: np.ndarray, y: np.ndarray, kind: str = "identity", *, fit: str = "warped") -> QuadraticSurrogate:
    """Least-squares fit of ``warp(½cᵀAc + bᵀc + e)`` to the metric values ``y`` measured at coefficients ``c``.

    With fewer points than parameters the closed-form step takes the minimum-norm solution.
    """
    if kind not in WARPS:
        raise ConfigError(f"warp '{kind}' is unknown; choose one of {list(WARPS)}")
    if fit not in FITS:
        raise ConfigError(f"fit '{fit}' is unknown; choose one of {list(FITS)}")
    phi = features(c)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if phi.shape[0] != y.size or y.size == 0:
        raise ValueError(f"fit_quadratic: {phi.shape[0]} points but {y.size} values")
    theta, *_ = np.linalg.lstsq(phi, unwarp(y, kind), rcond=None)
    if kind == "identity" or fit == "linear":
        return QuadraticSurrogate(theta, kind)

    def residual(t: np.ndarray) -> np.ndarray:
        return warp(phi @ t, kind) - y

    def jacobian(t: np.ndarray) -> np.ndarray:
        return warp_derivative(phi @ t, kind)[:, None] * phi

    start_cost = float(np.sum(residual(theta) ** 2))
    if start_cost == 0.0:
        return QuadraticSurrogate(theta, kind)
    res = least_squares(residual, theta, jac=jacobian, method="trf", max_nfev=200 * theta.size)
    refined = np.asarray(res.x, dtype=np.float64)
    if np.all(np.isfinite(refined)) and float(np.sum(residual(refined) ** 2)) < start_cost:
        theta = refined
    return QuadraticSurrogate(theta, kind)


def auto_warp(direction: str, values: np.ndarray) -> str:
    """The paper's choice — sigmoid for accuracies (maximised, in [0, 1]), softplus for losses (minimised, ≥ 0) —
    falling back to no warp when the observed values leave that range (the warp could not reach them)."""
    v = np.asarray(values, dtype=np.float64)
    if direction == "maximize" and v.size and np.all((v >= 0.0) & (v <= 1.0)):
        return "sigmoid"
    if direction == "minimize" and v.size and np.all(v >= 0.0):
        return "softplus"
    return "identity"
