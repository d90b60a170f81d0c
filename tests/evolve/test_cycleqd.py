"""CycleQD as specified by arXiv 2410.14735: experts seed every archive and fix the bins, archives switch
cyclically, children are crossover + SVD mutation of two sampled elites, insertion is strict and deduplicated,
the answer is the softmax merge of the archives' best elites, and a resumed run equals a straight one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib puts no test folder on sys.path

import cycleqd_synthetic as syn

from evomerge.errors import ConfigError
from evomerge.evolve.base import Child, EvolutionError
from evomerge.evolve.cycleqd import CycleQD
from evomerge.evolve.cycleqd_archive import CycleArchives
from evomerge.evolve.cycleqd_ops import elite_probabilities, elite_probabilities_code, pick_two
from evomerge.evolve.driver import evolve

EXPERT_SCORES = [np.array([0.9, 0.1, 0.0]), np.array([0.2, 0.7, 0.1]), np.array([0.1, 0.0, 1.0])]


def seeded(**options) -> CycleQD:
    """A CycleQD whose three experts have been asked and told the hand-chosen EXPERT_SCORES."""
    algo = CycleQD(syn.LAYOUT, syn.experts(), seed=7, **options)
    for s in EXPERT_SCORES:
        algo.tell(algo.ask(), s)
    return algo


# -- archives -------------------------------------------------------------------------------------
def archives() -> CycleArchives:
    a = CycleArchives(3, 15)
    a.set_ranges(np.zeros(3), np.full(3, 1.5))  # bins of width 0.1
    return a


def g(value: float) -> np.ndarray:
    return np.full(4, value, dtype=np.float32)


def test_a_new_child_lands_in_the_hand_computed_cell_of_every_archive() -> None:
    a = archives()
    assert a.insert(1, g(1), np.array([0.55, 0.25, 1.25])) == [0, 1, 2]
    assert a.grids == [{(2, 12): 1}, {(5, 12): 1}, {(5, 2): 1}]


def test_insertion_replaces_an_elite_only_when_its_own_quality_strictly_improves() -> None:
    a = archives()
    a.insert(1, g(1), np.array([0.55, 0.25, 1.25]))
    # the same cells everywhere; worse on task 0, better on tasks 1 and 2
    assert a.insert(2, g(2), np.array([0.51, 0.29, 1.27])) == [1, 2]
    assert a.grids == [{(2, 12): 1}, {(5, 12): 2}, {(5, 2): 2}]
    # ties (tasks 0 and 2) and a worse score (task 1) replace nothing
    assert a.insert(3, g(3), np.array([0.55, 0.22, 1.27])) == []
    assert a.grids == [{(2, 12): 1}, {(5, 12): 2}, {(5, 2): 2}]
    # empty cells are always filled
    assert a.insert(4, g(4), np.array([0.35, 0.25, 0.15])) == [0, 1, 2]
    assert a.grids[0][(2, 1)] == 4 and a.grids[1][(3, 1)] == 4 and a.grids[2][(3, 2)] == 4


def test_an_elite_shared_by_archives_is_stored_once_and_dropped_when_replaced_everywhere() -> None:
    a = archives()
    a.insert(1, g(1), np.array([0.55, 0.25, 1.25]))
    a.insert(2, g(2), np.array([0.51, 0.29, 1.27]))  # replaces elite 1 in archives 1 and 2
    assert sorted(a.genomes) == [1, 2] and sorted(a.scores) == [1, 2]
    a.insert(5, g(5), np.array([0.56, 0.25, 1.25]))  # ... and 5 replaces it in archive 0: 1 is gone
    assert sorted(a.genomes) == [2, 5]
    a.insert(7, g(7), np.array([0.56, 0.25, 1.25]))  # ties everywhere: not stored
    assert sorted(a.genomes) == [2, 5]


def test_best_is_the_highest_quality_elite_of_each_archive() -> None:
    a = archives()
    a.insert(1, g(1), np.array([0.55, 0.25, 1.25]))
    a.insert(2, g(2), np.array([0.9, 0.9, 0.15]))
    assert (a.best(0), a.best(1), a.best(2)) == (2, 2, 1)


# -- seeding --------------------------------------------------------------------------------------
def test_experts_are_asked_first_then_fix_the_bins_and_seed_every_archive() -> None:
    algo = CycleQD(syn.LAYOUT, syn.experts(), seed=0)
    for k, s in enumerate(EXPERT_SCORES):
        child = algo.ask()
        assert child.index == k and child.info == {"expert": k}
        assert np.array_equal(child.genome, syn.experts()[k])
        assert not algo.archives.ready
        algo.tell(child, s)
    np.testing.assert_allclose(algo.archives.lo, [0.085, 0.0, 0.0])
    np.testing.assert_allclose(algo.archives.hi, [1.035, 0.805, 1.15])
    # e.g. expert 0 in archive 0: task 1's 0.1 in 15 bins of [0, 0.805) -> 1, task 2's 0.0 -> 0
    assert algo.archives.grids == [{(1, 0): 0, (13, 1): 1, (0, 13): 2},
                                   {(12, 0): 0, (1, 1): 1, (0, 13): 2},
                                   {(12, 1): 0, (1, 13): 1, (0, 0): 2}]


def test_a_failed_expert_is_left_out_of_the_ranges() -> None:
    algo = CycleQD(syn.LAYOUT, syn.experts(), seed=0)
    algo.tell(algo.ask(), EXPERT_SCORES[0])
    algo.tell(algo.ask(), None)
    algo.tell(algo.ask(), EXPERT_SCORES[2])
    np.testing.assert_allclose(algo.archives.hi, [1.035, 0.115, 1.15])
    assert sorted(algo.archives.genomes) == [0, 2]
    assert algo.ask().info["archive"] == 0


def test_a_failed_last_expert_still_seeds_at_the_next_ask() -> None:
    algo = CycleQD(syn.LAYOUT, syn.experts(), seed=0)
    algo.tell(algo.ask(), EXPERT_SCORES[0])
    algo.tell(algo.ask(), EXPERT_SCORES[1])
    algo.tell(algo.ask(), None)
    assert algo.ask().info["archive"] == 0 and sorted(algo.archives.genomes) == [0, 1]


def test_no_successful_expert_is_a_clear_error() -> None:
    algo = CycleQD(syn.LAYOUT, syn.experts(), seed=0)
    for _ in range(3):
        algo.tell(algo.ask(), None)
    with pytest.raises(EvolutionError, match="no expert was evaluated successfully"):
        algo.ask()
    assert not np.any(algo.best_genome())


# -- children -------------------------------------------------------------------------------------
def test_the_active_archive_cycles_with_the_generation() -> None:
    algo = seeded()
    seen = []
    for _ in range(7):
        child = algo.ask()
        seen.append(child.info["archive"])
        algo.tell(child, syn.scores(child.genome))
    assert seen == [0, 1, 2, 0, 1, 2, 0]


def test_child_is_the_crossover_of_elite_sampled_parents_with_the_rngs_draws() -> None:
    algo = seeded(mutation="none")
    rng = np.random.default_rng(7)
    u1, u2 = rng.random(), rng.random()
    omega = rng.normal(1.0, 0.03, size=2)
    elites = algo.archives.elites(0)
    ids = [i for _, i in elites]
    p = elite_probabilities(np.array([EXPERT_SCORES[i] for i in ids]))
    first, second = pick_two(p, u1, u2)
    child = algo.ask()
    assert child.info["parents"] == (ids[first], ids[second]) and child.info["omega"] == omega.tolist()
    e = syn.experts()
    w1, w2 = omega
    hand = (w1 * e[ids[first]].astype(np.float64) + w2 * e[ids[second]]) / (w1 + w2)
    np.testing.assert_allclose(child.genome, hand, rtol=1e-6, atol=1e-7)


def test_svd_mutation_touches_matrices_only_by_the_drawn_singular_value_factors() -> None:
    algo = seeded()
    plain = seeded(mutation="none")
    rng = np.random.default_rng(7)
    rng.random(), rng.random(), rng.normal(size=2)
    w1, w2 = rng.uniform(0, 0.3, size=4), rng.uniform(0, 0.3, size=3)  # w1: (6, 4), then w2: (3, 5)
    child, base = algo.ask(), plain.ask()
    lay = syn.LAYOUT
    for name, w in (("w1", w1), ("w2", w2)):
        entry = next(e for e in lay.entries if e.name == name)
        u, s, vt = np.linalg.svd(lay.view(base.genome, entry).astype(np.float64), full_matrices=False)
        np.testing.assert_allclose(lay.view(child.genome, entry), (u * (s * (1 + w))) @ vt, rtol=1e-5, atol=1e-6)
    for name in ("norm.weight", "odd_norm.scale"):  # 1-D tensors and norms: untouched
        entry = next(e for e in lay.entries if e.name == name)
        assert np.array_equal(lay.view(child.genome, entry), lay.view(base.genome, entry))


def test_code_variant_mutates_along_the_active_quality_experts_svd() -> None:
    algo = seeded(mutation="svd_expert", svd_scale=0.1)
    plain = seeded(mutation="none")
    rng = np.random.default_rng(7)
    rng.random(), rng.random(), rng.normal(size=2)
    w = rng.uniform(0, 0.1, size=4)
    child, base = algo.ask(), plain.ask()
    entry = syn.LAYOUT.entries[0]
    u, s, vt = np.linalg.svd(syn.LAYOUT.view(syn.experts()[0], entry).astype(np.float64), full_matrices=False)
    expected = syn.LAYOUT.view(base.genome, entry) + (u * (s * w)) @ vt
    np.testing.assert_allclose(syn.LAYOUT.view(child.genome, entry), expected, rtol=1e-5, atol=1e-6)


def test_code_default_gaussian_mutation_adds_noise_to_every_parameter() -> None:
    algo = seeded(mutation="gaussian", gaussian_std=0.01)
    plain = seeded(mutation="none")
    rng = np.random.default_rng(7)
    rng.random(), rng.random(), rng.normal(size=2)
    noise = np.concatenate([rng.standard_normal(e.shape, dtype=np.float32).ravel() for e in syn.LAYOUT.entries])
    np.testing.assert_allclose(algo.ask().genome - plain.ask().genome, np.float32(0.01) * noise, atol=1e-6)


@pytest.mark.parametrize("sampling", ["elite_code", "uniform"])
def test_the_code_samplers_pick_parents_by_their_own_probabilities(sampling: str) -> None:
    algo = seeded(sampling=sampling, mutation="none")
    rng = np.random.default_rng(7)
    u1, u2 = rng.random(), rng.random()
    elites = algo.archives.elites(0)
    if sampling == "uniform":
        p = np.full(3, 1 / 3)
    else:
        p = elite_probabilities_code(np.array([EXPERT_SCORES[i][0] for _, i in elites]),
                                     np.array([c for c, _ in elites]))
    first, second = pick_two(p, u1, u2)
    assert algo.ask().info["parents"] == (elites[first][1], elites[second][1])


# -- the answer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_best_genome_is_the_softmax_merge_of_each_archives_best_elite(temperature: float) -> None:
    algo = seeded(temperature=temperature)
    ids, weights = algo.aggregation()
    assert ids == [0, 1, 2]
    e = np.exp(np.array([0.9, 0.7, 1.0]) / temperature)
    np.testing.assert_allclose(weights, e / e.sum())
    hand = sum(w * x.astype(np.float64) for w, x in zip(e / e.sum(), syn.experts(), strict=True))
    np.testing.assert_allclose(algo.best_genome(), hand, rtol=1e-6, atol=1e-7)


def test_best_mean_answer_is_the_elite_with_the_best_mean_score() -> None:
    algo = seeded(answer="best_mean")  # means 0.333, 0.333, 0.367: expert 2
    assert algo.best_mean_elite() == 2
    assert np.array_equal(algo.best_genome(), syn.experts()[2])


def test_best_genome_before_any_elite_is_the_base() -> None:
    assert not np.any(CycleQD(syn.LAYOUT, syn.experts(), seed=0).best_genome())


def test_bad_options_and_expert_arrays_are_refused() -> None:
    with pytest.raises(ConfigError, match="mutation must be one of"):
        CycleQD(syn.LAYOUT, syn.experts(), mutation="dare")
    with pytest.raises(ConfigError, match="float32"):
        CycleQD(syn.LAYOUT, [np.zeros(syn.LAYOUT.size)] * 3)
    with pytest.raises(ConfigError, match="bin_ranges"):
        CycleQD(syn.LAYOUT, syn.experts(), bin_ranges=[(0, 1)])


# -- resume ---------------------------------------------------------------------------------------
class Crash(BaseException):
    """Stands in for kill -9: nothing after it runs."""


def counting(calls: list[int], crash_at: int | None = None, fail: frozenset[int] = frozenset()):
    def evaluate(child: Child) -> np.ndarray:
        if child.index == crash_at:
            raise Crash
        calls.append(child.index)
        if child.index in fail:
            raise RuntimeError("evaluation failed")
        return syn.scores(child.genome)

    return evaluate


def assert_same_state(a: CycleQD, b: CycleQD) -> None:
    sa, sb = a.state_dict()["algorithm"], b.state_dict()["algorithm"]
    assert sa["rng"] == sb["rng"] and sa["expert_scores"].keys() == sb["expert_scores"].keys()
    ra, rb = sa["archives"], sb["archives"]
    assert ra["grids"] == rb["grids"] and ra["genomes"].keys() == rb["genomes"].keys()
    for i in ra["genomes"]:
        assert ra["genomes"][i].tobytes() == rb["genomes"][i].tobytes()
        assert ra["scores"][i].tobytes() == rb["scores"][i].tobytes()
    assert a.best_genome().tobytes() == b.best_genome().tobytes()


@pytest.mark.parametrize("snapshot_every_s", [0.0, 1e9])
@pytest.mark.parametrize("crash_at", [1, 3, 4, 20, 39])
def test_interrupted_and_resumed_run_equals_a_straight_run(tmp_path: Path, crash_at: int,
                                                           snapshot_every_s: float) -> None:
    fail = frozenset({2, 11})  # an expert and a child fail
    ref = CycleQD(syn.LAYOUT, syn.experts(), seed=5)
    evolve(ref, counting([], fail=fail), tmp_path / "ref", children=40)
    assert sum(len(grid) for grid in ref.archives.grids) > 6, "the run should insert children"

    calls: list[int] = []
    with pytest.raises(Crash):
        evolve(CycleQD(syn.LAYOUT, syn.experts(), seed=5), counting(calls, crash_at, fail), tmp_path / "run",
               children=40, snapshot_every_s=snapshot_every_s)
    resumed = CycleQD(syn.LAYOUT, syn.experts(), seed=5)
    evolve(resumed, counting(calls, fail=fail), tmp_path / "run", children=40, snapshot_every_s=snapshot_every_s)
    assert calls == list(range(40)), "a child was evaluated twice or skipped"
    assert_same_state(resumed, ref)
