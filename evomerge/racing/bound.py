"""The racing test: an empirical Bernstein–Serfling bound on a finite population's mean.

A candidate's staged scores are a simple random sample *without replacement* of the split's examples
(the seeded order). For the paired differences ``d_i = candidate_i − reference_i`` on the examples seen,
Bardenet & Maillard (2015, "Concentration inequalities for sampling without replacement", Bernoulli 21(3),
Theorem 3, the empirical Bernstein–Serfling inequality) give, for a population of ``N`` points of range
``b − a`` and a sample of ``n < N`` of them, with probability at least ``1 − 5δ``::

    mean_n − mean_N  ≤  σ̂_n · sqrt(2 ρ_n log(1/δ) / n)  +  κ (b − a) log(1/δ) / n

with ``σ̂_n`` the sample standard deviation (normalised by ``n``), ``κ = 7/3 + 3/√2`` and the finite-population
factor ``ρ_n = 1 − (n − 1)/N`` for ``n ≤ N/2``, else ``(1 − n/N)(1 + 1/n)``. Applied to ``−d`` it bounds the
full-split mean difference from above; at ``n = N`` the mean is known exactly (radius 0).

``normal_radius`` is the asymptotic alternative (``racing.test: normal``): the paired normal approximation
with the finite-population correction, ``z_{1−δ} · s · sqrt((1 − n/N) / n)`` (``s``: the sample standard
deviation, n − 1 normalised). It needs no range, but holds only approximately (central limit theorem for
sampling without replacement); below ``MIN_NORMAL_N`` examples it never lets a candidate stop.
"""

from __future__ import annotations

import math

import numpy as np

KAPPA = 7.0 / 3.0 + 3.0 / math.sqrt(2.0)
MIN_NORMAL_N = 20


def normal_variance(sample: np.ndarray, N: int) -> float:
    """Variance of the sample mean as an estimate of the population mean (finite-population corrected)."""
    x = np.asarray(sample, dtype=np.float64).reshape(-1)
    n = x.size
    if n >= N:
        return 0.0
    if n < MIN_NORMAL_N:
        return math.inf
    return float(x.var(ddof=1)) * (1.0 - n / N) / n


def z_quantile(delta: float) -> float:
    """The standard normal's ``1 − delta`` quantile."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - delta)


def rho(n: int, N: int) -> float:
    """Bardenet & Maillard's finite-population factor ρ_n."""
    return 1.0 - (n - 1) / N if n <= N / 2 else (1.0 - n / N) * (1.0 + 1.0 / n)


def radius(sample: np.ndarray, N: int, value_range: float, delta: float) -> float:
    """Half-width of the one-sided bound that holds with probability ``1 − delta`` (so the theorem's δ is delta/5)."""
    x = np.asarray(sample, dtype=np.float64).reshape(-1)
    n = x.size
    if n == 0:
        return math.inf
    if n >= N:
        return 0.0
    log_term = math.log(5.0 / delta)
    sigma = float(x.std())  # normalised by n, as in the theorem
    return sigma * math.sqrt(2.0 * rho(n, N) * log_term / n) + KAPPA * value_range * log_term / n


def mean_upper_bound(sample: np.ndarray, N: int, value_range: float, delta: float) -> float:
    """Upper bound on the mean of all ``N`` population values, from ``sample`` drawn without replacement."""
    x = np.asarray(sample, dtype=np.float64).reshape(-1)
    return float(x.mean()) + radius(x, N, value_range, delta) if x.size else math.inf


def mean_lower_bound(sample: np.ndarray, N: int, value_range: float, delta: float) -> float:
    """Lower bound on the mean of all ``N`` population values."""
    return -mean_upper_bound(-np.asarray(sample, dtype=np.float64), N, value_range, delta)
