"""M2N2 (arXiv 2508.16204) against hand computations: split-point SLERP, resource competition,
attraction, who leaves the archive; plus the invariants that hold for any input (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evomerge.evolve.base import EvolutionError
from evomerge.evolve.flat import FlatLayout
from evomerge.evolve.m2n2 import M2N2, attraction_scores, competition_fitness, slerp_split, worst_of

# three models x four examples; capacities c = (2, 1, 3, 1)
S = np.array([[1, 1, 1, 0],
              [1, 0, 1, 0],
              [0, 0, 1, 1]], dtype=np.float64)


# -- crossover ---------------------------------------------------------------------------------------

def test_split_slerp_of_orthogonal_parents_by_hand() -> None:
    # Ω = π/2, sin Ω = 1; w = 0.25, split 1: t = (0.25, 0.75, 0.75, 0.75)
    x = np.array([1, 0, 1, 0], dtype=np.float32)
    y = np.array([0, 1, 0, 1], dtype=np.float32)
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)  # sin(3π/8), sin(π/8)
    # entry 0: x·sin(0.75·π/2); 1: y·sin(0.75·π/2); 2: x·sin(0.25·π/2); 3: y·sin(0.75·π/2)
    np.testing.assert_allclose(slerp_split(x, y, 0.25, 1), [c, c, s, c], rtol=1e-6)


def test_split_slerp_general_angle_by_hand() -> None:
    x = np.array([3.0, -1.0, 2.0, 0.5, 1.0], dtype=np.float32)
    y = np.array([1.0, 2.0, -1.0, 1.5, 0.0], dtype=np.float32)
    omega = math.acos(float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    w, split = 0.3, 2
    expected = []
    for i in range(5):
        t = w if i < split else 1 - w
        expected.append((math.sin((1 - t) * omega) * x[i] + math.sin(t * omega) * y[i]) / math.sin(omega))
    np.testing.assert_allclose(slerp_split(x, y, w, split), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("y_of_x", [lambda x: 2 * x, lambda x: -x, lambda x: x + 1e-9])
def test_split_slerp_falls_back_to_linear_when_sin_omega_vanishes(y_of_x) -> None:
    x = np.array([1.0, 2.0, -3.0], dtype=np.float32)
    y = y_of_x(x).astype(np.float32)
    t = np.array([0.3, 0.3, 0.7])
    np.testing.assert_allclose(slerp_split(x, y, 0.3, 2), (1 - t) * x + t * y, rtol=1e-6)


def test_split_slerp_with_a_zero_parent_is_linear() -> None:
    x = np.zeros(3, dtype=np.float32)
    y = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(slerp_split(x, y, 0.4, 1), [0.4, 1.2, 1.8], rtol=1e-6)


def test_split_point_cuts_inside_a_tensor_of_the_layout() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)), torch.nn.Sequential(
        torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    layout = FlatLayout.from_model(a)
    x, y = layout.flatten(a), layout.flatten(b)
    w, split = 0.2, 4  # entry 4 is 0.weight[1, 1]: row 1 is cut in two
    child = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    layout.load_into(child, slerp_split(x, y, w, split))
    omega = math.acos(float(x.astype(np.float64) @ y) / (np.linalg.norm(x.astype(np.float64)) * np.linalg.norm(y)))

    def expect(xv: float, yv: float, t: float) -> float:
        return (math.sin((1 - t) * omega) * xv + math.sin(t * omega) * yv) / math.sin(omega)

    wa, wb, wc = a[0].weight.detach(), b[0].weight.detach(), child[0].weight.detach()
    for (r, col), t in {(0, 0): w, (0, 2): w, (1, 0): w, (1, 1): 1 - w, (1, 2): 1 - w}.items():
        assert float(wc[r, col]) == pytest.approx(expect(float(wa[r, col]), float(wb[r, col]), t), rel=1e-5)
    bias = [float(m[1].bias.detach()[0]) for m in (a, b, child)]
    assert bias[2] == pytest.approx(expect(bias[0], bias[1], 1 - w), rel=1e-5)


def test_split_out_of_range_and_mismatched_parents_are_errors() -> None:
    with pytest.raises(EvolutionError, match="split point"):
        slerp_split(np.ones(3), np.ones(3), 0.5, 4)
    with pytest.raises(EvolutionError, match="share a layout"):
        slerp_split(np.ones(3), np.ones(4), 0.5, 1)


vectors = arrays(np.float32, st.integers(2, 12), elements=st.floats(-10, 10, width=32))


@settings(max_examples=60, deadline=None)
@given(x=vectors, w=st.floats(0, 1), frac=st.floats(0, 1))
def test_crossover_of_a_vector_with_itself_returns_it(x: np.ndarray, w: float, frac: float) -> None:
    np.testing.assert_allclose(slerp_split(x, x, w, round(frac * x.size)), x, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), w=st.floats(0, 1), frac=st.floats(0, 1))
def test_crossover_is_symmetric_under_swapping_parents_and_w(data, w: float, frac: float) -> None:
    x = data.draw(vectors)
    y = data.draw(arrays(np.float32, x.size, elements=st.floats(-10, 10, width=32)))
    split = round(frac * x.size)
    np.testing.assert_allclose(slerp_split(x, y, w, split), slerp_split(y, x, 1 - w, split), rtol=1e-4, atol=1e-4)


# -- resource competition and attraction -----------------------------------------------------------

def test_competition_fitness_by_hand() -> None:
    np.testing.assert_allclose(competition_fitness(S, alpha=1.0), [1 / 2 + 1 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3 + 1])
    np.testing.assert_array_equal(competition_fitness(S, alpha=0.0), [3, 2, 2])  # plain GA: total score
    eps = 0.5
    np.testing.assert_allclose(competition_fitness(S, alpha=1.0, epsilon=eps),
                               [1 / 2.5 + 1 / 1.5 + 1 / 3.5, 1 / 2.5 + 1 / 3.5, 1 / 3.5 + 1 / 1.5])


def test_examples_nobody_solves_add_nothing() -> None:
    padded = np.hstack([S, np.zeros((3, 2))])
    np.testing.assert_allclose(competition_fitness(padded, 1.0), competition_fitness(S, 1.0))


def test_attraction_by_hand() -> None:
    # to parent 0: only model 2 solves something it misses (example 3, capacity 1)
    np.testing.assert_allclose(attraction_scores(S, 0, alpha=1.0), [0, 0, 1])
    np.testing.assert_allclose(attraction_scores(S, 1, alpha=1.0), [1, 0, 1])  # example 1 / example 3
    np.testing.assert_allclose(attraction_scores(S, 2, alpha=1.0), [1 / 2 + 1, 1 / 2, 0])
    np.testing.assert_allclose(attraction_scores(S, 2, alpha=0.0), [2, 1, 0])


def test_worst_of_archive_and_child_by_hand() -> None:
    # child (0,1,0,1): capacities (2,2,3,2); fitness 4/3, 5/6, 5/6, 1 -> the tie goes to slot 1
    assert worst_of(S, np.array([0, 1, 0, 1.0]), alpha=1.0) == 1
    # child (0,0,1,0): capacities (2,1,4,1); fitness 7/4, 3/4, 5/4, 1/4 -> the child itself
    assert worst_of(S, np.array([0, 0, 1, 0.0]), alpha=1.0) == 3
    # GA: totals 3, 2, 2, 2 -> slot 1 (first of the tied)
    assert worst_of(S, np.array([0, 1, 0, 1.0]), alpha=0.0) == 1


score_matrices = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)),
                        elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]))


@settings(max_examples=80, deadline=None)
@given(scores=score_matrices)
def test_alpha_one_shares_each_solved_example_exactly_once(scores: np.ndarray) -> None:
    solved = int((scores.sum(axis=0) > 0).sum())
    assert competition_fitness(scores, 1.0).sum() == pytest.approx(solved)


@settings(max_examples=80, deadline=None)
@given(scores=score_matrices, seed=st.integers(0, 2**16), k=st.floats(0.1, 10))
def test_fitness_follows_models_ignores_example_order_and_scale(scores: np.ndarray, seed: int, k: float) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = rng.permutation(scores.shape[0]), rng.permutation(scores.shape[1])
    f = competition_fitness(scores, 1.0)
    np.testing.assert_allclose(competition_fitness(scores[rows][:, cols], 1.0), f[rows], rtol=1e-12)
    np.testing.assert_allclose(competition_fitness(k * scores, 1.0), f, rtol=1e-9)  # α = 1: shares, not amounts


@settings(max_examples=80, deadline=None)
@given(scores=score_matrices, data=st.data())
def test_attraction_is_nonnegative_and_zero_to_oneself(scores: np.ndarray, data) -> None:
    p = data.draw(st.integers(0, scores.shape[0] - 1))
    pull = attraction_scores(scores, p, 1.0)
    assert pull[p] == 0 and np.all(pull >= 0)
    dominated = np.all(scores <= scores[p], axis=1)
    assert np.all(pull[dominated] == 0)


# -- the algorithm -----------------------------------------------------------------------------------

def told(algo: M2N2, scores: np.ndarray | None):
    child = algo.ask()
    algo.tell(child, scores)
    return child


def archive_of(rows: np.ndarray, dim: int = 6, **options) -> M2N2:
    """An M2N2 whose archive holds one initial genome per row of ``rows`` (told those scores)."""
    rng = np.random.default_rng(0)
    genomes = [rng.standard_normal(dim).astype(np.float32) for _ in rows]
    algo = M2N2(genomes, rows.shape[1], seed=1, **{"archive_size": len(rows), **options})
    for r in rows:
        told(algo, r)
    return algo


def test_initial_genomes_are_asked_first_in_order() -> None:
    genomes = [np.full(4, i, dtype=np.float32) for i in range(3)]
    algo = M2N2(genomes, 2, seed=0)
    for i in range(3):
        child = told(algo, np.array([1.0, 0.0]))
        assert child.info == {"initial": i} and np.array_equal(child.genome, genomes[i])
    assert algo.size == 3 and "parents" in algo.ask().info


def test_child_replaces_the_worst_slot_or_is_dropped() -> None:
    algo = archive_of(S)
    before = algo.genomes.copy()
    child = told(algo, np.array([0, 1, 0, 1.0]))
    assert np.array_equal(algo.genomes[1], child.genome) and np.array_equal(algo.scores[1], [0, 1, 0, 1])
    assert np.array_equal(algo.genomes[[0, 2]], before[[0, 2]])
    snapshot = algo.genomes.copy(), algo.scores.copy()
    told(algo, np.array([0, 0, 0, 0.0]))  # solves nothing: it is the worst, the archive is unchanged
    assert np.array_equal(algo.genomes, snapshot[0]) and np.array_equal(algo.scores, snapshot[1])


def test_archive_fills_then_stays_at_its_size() -> None:
    algo = M2N2([np.ones(5, np.float32), -np.ones(5, np.float32)], 4, seed=0, archive_size=4, mutation_std=0.1)
    rng = np.random.default_rng(0)
    sizes = [(told(algo, rng.integers(0, 2, 4).astype(float)), algo.size)[1] for _ in range(12)]
    assert sizes == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4]


def test_attraction_never_picks_a_mate_that_adds_nothing() -> None:
    # A dominates B; C is disjoint from A: with parent 1 = A the mate must be C
    rows = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=float)
    algo = archive_of(rows)
    pairs = set()
    for _ in range(300):
        child = algo.ask()
        pairs.add(tuple(child.info["parents"]))
        algo.tell(child, None)  # a failed child leaves the archive as it is
    assert pairs and all(p2 == 2 for p1, p2 in pairs if p1 == 0)
    assert all(p1 != p2 for p1, p2 in pairs)
    assert {p1 for p1, _ in pairs} == {0, 1, 2}


def test_models_with_zero_fitness_are_never_parents() -> None:
    rows = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=float)
    for attraction in (True, False):
        algo = archive_of(rows, attraction=attraction)
        for _ in range(200):
            child = algo.ask()
            assert 1 not in child.info["parents"]
            algo.tell(child, None)


def test_without_crossover_the_child_is_a_mutated_copy_of_parent_one() -> None:
    algo = archive_of(S, dim=20000, crossover=False, mutation_std=0.01)
    child = algo.ask()
    (p1,) = child.info["parents"]
    noise = child.genome - algo.genomes[p1]
    assert abs(noise.std() - 0.01) < 0.0005 and abs(noise.mean()) < 0.0005
    algo.tell(child, None)
    exact = archive_of(S, crossover=False)
    child = exact.ask()
    assert np.array_equal(child.genome, exact.genomes[child.info["parents"][0]])


def test_best_genome_has_the_best_mean_score() -> None:
    algo = archive_of(np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=float))
    assert np.array_equal(algo.best_genome(), algo.genomes[1])


def test_failed_initial_genomes_are_skipped_and_an_empty_archive_is_an_error() -> None:
    algo = M2N2([np.ones(3, np.float32), np.zeros(3, np.float32)], 2, seed=0)
    told(algo, None)
    told(algo, None)
    with pytest.raises(EvolutionError, match="archive is empty"):
        algo.ask()


def test_negative_scores_are_refused() -> None:
    algo = M2N2([np.ones(3, np.float32)], 2, seed=0)
    with pytest.raises(EvolutionError, match="negative per-example scores"):
        told(algo, np.array([1.0, -0.5]))


def test_state_round_trip_asks_the_same_children() -> None:
    rng = np.random.default_rng(3)
    initial = [rng.standard_normal(50).astype(np.float32) for _ in range(3)]
    options = {"archive_size": 4, "mutation_std": 0.01}
    a = M2N2(initial, 8, seed=7, **options)
    for _ in range(10):
        told(a, rng.integers(0, 2, 8).astype(float))
    b = M2N2(initial, 8, seed=7, **options)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        ca, cb = a.ask(), b.ask()
        assert ca.info == cb.info and np.array_equal(ca.genome, cb.genome)
        scores = rng.integers(0, 2, 8).astype(float)
        a.tell(ca, scores)
        b.tell(cb, scores)
    assert np.array_equal(a.genomes, b.genomes) and np.array_equal(a.scores, b.scores)
    other = M2N2(initial, 8, seed=7, archive_size=4, mutation_std=0.02)
    with pytest.raises(EvolutionError, match="other options"):
        other.load_state_dict(a.state_dict())


def test_resume_with_other_initial_genomes_is_refused() -> None:
    a = M2N2([np.ones(4, np.float32)], 2, seed=0)
    told(a, np.array([1.0, 0.0]))
    b = M2N2([np.full(4, 2.0, np.float32)], 2, seed=0)
    with pytest.raises(EvolutionError, match="initial_sha256"):
        b.load_state_dict(a.state_dict())
