"""The racing bound (empirical Bernstein–Serfling) against hand-computed values and simulated populations
whose true mean difference is known: stops are rarely wrong, and clearly worse candidates stop early."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evomerge.racing.bound import KAPPA, mean_lower_bound, mean_upper_bound, normal_variance, radius, rho, z_quantile
from evomerge.racing.order import example_order, stage_counts
from evomerge.racing.request import RaceRequest, Reference, Term


def test_the_bound_matches_a_hand_computation():
    # sample 1, 0, 1, 1 of a population of N = 10 points in a range of width 1, delta 0.05:
    # mean 0.75, sigma (1/n) = sqrt(3/16) = 0.4330127, rho = 1 - 3/10 = 0.7 (n <= N/2), log(5/0.05) = log 100
    # radius = 0.4330127 * sqrt(2 * 0.7 * 4.6051702 / 4) + (7/3 + 3/sqrt 2) * 4.6051702 / 4
    #        = 0.4330127 * 1.2695706 + 4.4546537 * 1.1512925 = 0.5497402 + 5.1286097 = 5.6783499
    assert abs(KAPPA - 4.4546537) < 1e-7
    assert radius(np.array([1.0, 0, 1, 1]), 10, 1.0, 0.05) == pytest.approx(5.6783499, abs=1e-6)
    assert mean_upper_bound(np.array([1.0, 0, 1, 1]), 10, 1.0, 0.05) == pytest.approx(0.75 + 5.6783499, abs=1e-6)
    assert mean_lower_bound(np.array([1.0, 0, 1, 1]), 10, 1.0, 0.05) == pytest.approx(0.75 - 5.6783499, abs=1e-6)
    # n > N/2: rho = (1 - n/N)(1 + 1/n); n = N: the mean is known exactly
    assert rho(8, 10) == pytest.approx(0.2 * 1.125)
    assert rho(5, 10) == pytest.approx(1 - 4 / 10)
    assert radius(np.ones(10), 10, 1.0, 0.05) == 0.0
    assert radius(np.array([]), 10, 1.0, 0.05) == math.inf


def test_order_and_stage_counts():
    a, b = example_order(100, 3, "math"), example_order(100, 3, "math")
    np.testing.assert_array_equal(a, b)  # reproducible: the same order for every candidate and a resume
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, example_order(100, 3, "lang")) and not np.array_equal(a, example_order(100, 4, "math"))
    assert stage_counts(100, [0.125, 0.25, 0.5, 1.0]) == [13, 25, 50, 100]
    assert stage_counts(1, [0.125, 0.5, 1.0]) == [1, 1, 1]


def _race(cand: np.ndarray, ref: np.ndarray, seed: int, confidence: float = 0.9,
          stages=(0.125, 0.25, 0.5, 1.0), test: str = "bernstein_serfling") -> int | None:
    """The stage (index) at which the bound rule stops ``cand`` against ``ref`` (0/1 scores), None: never."""
    n = cand.size
    req = RaceRequest(rule="bound", stages=list(stages), confidence=confidence, order_seed=seed,
                      terms=[Term("t", "t", 1.0, 1.0, 1.0, 1.0)], scalar=True, references=[Reference(0, {"t": ref})],
                      test=test)
    order = example_order(n, seed, "t")
    for s, count in enumerate(stage_counts(n, stages)[:-1]):
        idx = order[:count]
        if req.decide(s, {"t": (idx, cand[idx])}, {"t": n}, {"t": float(cand[idx].mean())}) is not None:
            return s
    return None


def _population(n: int, p_cand: float, p_ref: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two 0/1 score vectors with exactly round(p * n) ones each (the true means are known)."""
    cand = np.zeros(n)
    cand[rng.choice(n, round(p_cand * n), replace=False)] = 1.0
    ref = np.zeros(n)
    ref[rng.choice(n, round(p_ref * n), replace=False)] = 1.0
    return cand, ref


def test_a_candidate_as_good_as_the_reference_is_almost_never_stopped():
    # true mean difference >= 0: every stop is a false stop; allowed rate 1 - confidence = 0.1
    rng = np.random.default_rng(0)
    stops = 0
    trials = 300
    for seed in range(trials):
        cand, ref = _population(400, 0.5, 0.5 - 0.01 * (seed % 3), rng)
        stops += _race(cand, ref, seed) is not None
    assert stops / trials <= 0.1
    # the same at a lower confidence, where the test is far less conservative
    stops = sum(_race(*_population(400, 0.6, 0.6, rng), seed, confidence=0.5) is not None for seed in range(trials))
    assert stops / trials <= 0.5


def test_a_clearly_worse_candidate_is_stopped_early():
    rng = np.random.default_rng(1)
    stages = [_race(*_population(2000, 0.2, 0.9, rng), seed) for seed in range(50)]
    assert all(s is not None and s <= 1 for s in stages)  # after 1/8 or 1/4 of the examples
    # a small gap is not enough evidence early: never stopped at the first stage
    stages = [_race(*_population(2000, 0.85, 0.9, rng), seed) for seed in range(20)]
    assert all(s is None or s >= 1 for s in stages)


def test_multi_objective_stops_only_when_one_member_dominates_on_every_objective():
    n = 800
    rng = np.random.default_rng(2)
    worse = rng.random(n) < 0.1
    better = rng.random(n) < 0.95
    terms = [Term("a", "a", 1.0, 1.0, 0.5, 1.0), Term("b", "b", 1.0, 1.0, 0.5, 1.0)]
    idx = example_order(n, 0, "a")[:200]
    scored = {"a": (idx, worse[idx].astype(float)), "b": (idx, worse[idx].astype(float))}
    sizes = {"a": n, "b": n}
    dominating = Reference(5, {"a": better.astype(float), "b": better.astype(float)})
    mixed = Reference(6, {"a": better.astype(float), "b": np.zeros(n)})  # better on a only: no dominance
    req = RaceRequest("bound", [0.25, 1.0], 0.95, 0, terms, scalar=False, references=[mixed])
    assert req.decide(0, scored, sizes, {}) is None
    req.references = [mixed, dominating]
    assert "trial 5 dominates it" in req.decide(0, scored, sizes, {})


def test_the_normal_test_matches_a_hand_computation():
    # 20 differences: ten -1 and ten 0 -> mean -0.5, s^2 (n-1) = 5 / 19 = 0.2631579; N = 100:
    # variance of the mean = 0.2631579 * (1 - 0.2) / 20 = 0.01052632; z_0.95 = 1.6448536
    d = np.array([-1.0] * 10 + [0.0] * 10)
    assert normal_variance(d, 100) == pytest.approx(0.01052632, abs=1e-8)
    assert z_quantile(0.05) == pytest.approx(1.6448536, abs=1e-7)
    assert normal_variance(d[:19], 100) == math.inf and normal_variance(d, 20) == 0.0  # too few; all seen
    req = RaceRequest("bound", [0.2, 1.0], 0.95, 0, [Term("t", "t", 1.0, 1.0, 1.0, None)], scalar=True,
                      references=[Reference(3, {"t": np.ones(100)})], test="normal")
    idx = np.arange(20)
    reason = req.decide(0, {"t": (idx, 1.0 + d)}, {"t": 100}, {"t": 0.5})
    # upper bound = -0.5 + 1.6448536 * sqrt(0.01052632) = -0.5 + 0.1687585 = -0.3312415 (no range needed)
    assert reason is not None and "is -0.3312 < 0" in reason


@pytest.mark.parametrize("n", [120, 1000])
def test_the_normal_test_keeps_its_false_stop_rate_and_stops_worse_candidates_sooner(n):
    rng = np.random.default_rng(3)
    trials = 400
    stops = sum(_race(*_population(n, 0.5, 0.5, rng), seed, test="normal") is not None for seed in range(trials))
    assert stops / trials <= 0.1 + 0.045  # 1 - confidence, plus three binomial standard errors
    worse = [_population(n, 0.45, 0.75, rng) for _ in range(30)]
    normal = [_race(c, r, seed, test="normal") for seed, (c, r) in enumerate(worse)]
    exact = [_race(c, r, seed) for seed, (c, r) in enumerate(worse)]
    assert sum(s is not None for s in normal) >= 25
    assert np.mean([3 if s is None else s for s in normal]) < np.mean([3 if s is None else s for s in exact])
