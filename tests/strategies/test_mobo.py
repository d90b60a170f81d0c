"""MM-MO (arXiv 2407.00487): its pieces against hand computations, its search against random search,
and the exact-resume contract.

The acquisition optimiser runs with small settings here (2 restarts, 32 raw samples, 20 L-BFGS-B
iterations) so the suite stays fast on a shared CPU; the algorithm is the same.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from strategy_driver import build, flaky, run_script
from strategy_problems import zdt1

from evomerge.errors import ConfigError
from evomerge.strategies import Problem, StrategyError, make_strategy
from evomerge.strategies.mobo_elite import de_rand_1, de_rand_1_mix, elite, hypervolume, nondominated_ranks

FAST = {"num_restarts": 2, "raw_samples": 32, "maxiter": 20}
MO = Problem.box(4, 0.0, 1.0, ("minimize", "minimize"))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# -- weak-to-strong: elite and DE/rand/1 -------------------------------------------------------------

def test_de_mutant_is_a_plus_f_times_b_minus_c_clipped_then_crossed_gene_by_gene() -> None:
    pool = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # a = pool[2] = (0, 1), b = pool[0] = (0, 0), c = pool[1] = (1, 0): v = (0 - 0.5, 1 + 0) = (-0.5, 1) -> (0, 1)
    out = de_rand_1_mix(np.array([0.3, 0.7]), pool, np.array([2, 0, 1]), np.array([True, False]), f=0.5,
                        lower=np.zeros(2), upper=np.ones(2))
    assert np.array_equal(out, [0.0, 0.7])
    out = de_rand_1_mix(np.array([0.3, 0.7]), pool, np.array([1, 2, 0]), np.array([True, True]), f=0.5,
                        lower=np.zeros(2), upper=np.ones(2))
    assert np.array_equal(out, [1.0, 0.5])  # (1, 0) + 0.5 * ((0, 1) - (0, 0))


def test_de_rand_1_draws_picks_then_mask_from_the_generator_in_the_documented_order() -> None:
    pool = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [0.5, 0.5, 0.5], [0.0, 1.0, 0.0], [0.2, 0.2, 0.9]])
    cands = np.array([[0.4, 0.4, 0.4], [0.6, 0.1, 0.8]])
    lo, hi = np.zeros(3), np.ones(3)
    got = de_rand_1(cands, pool, np.random.default_rng(11), f=0.5, cr=0.5, lower=lo, upper=hi)
    replay = np.random.default_rng(11)
    for x, row in zip(cands, got, strict=True):
        i, j, k = replay.choice(5, 3, replace=False)
        mask = replay.random(3) < 0.5
        if not mask.any():
            mask[replay.integers(3)] = True
        expected = [min(max(pool[i][g] + 0.5 * (pool[j][g] - pool[k][g]), 0.0), 1.0) if mask[g] else x[g]
                    for g in range(3)]
        assert row.tolist() == expected


def test_de_with_cr_zero_still_takes_exactly_one_gene_from_the_mutant() -> None:
    pool = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    cands = np.full((20, 3), 0.25)
    got = de_rand_1(cands, pool, np.random.default_rng(0), f=0.5, cr=0.0, lower=np.zeros(3), upper=np.ones(3))
    assert np.all((got != 0.25).sum(axis=1) <= 1)
    assert np.any(got != 0.25)


def test_fewer_than_three_elite_points_leave_candidates_unchanged() -> None:
    cands = np.array([[0.3, 0.3]])
    got = de_rand_1(cands, np.array([[0.0, 0.0], [1.0, 1.0]]), np.random.default_rng(0), f=0.5, cr=1.0,
                    lower=np.zeros(2), upper=np.ones(2))
    assert np.array_equal(got, cands)


def test_hypervolume_of_hand_drawn_fronts() -> None:
    assert hypervolume(np.array([[0.5, 0.5]]), np.array([1.0, 1.0])) == pytest.approx(0.25)
    # two squares of 0.5 overlapping in 0.25
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0]]), np.array([1.0, 1.0])) == pytest.approx(0.75)
    assert hypervolume(np.array([[2.0, 0.0]]), np.array([1.0, 1.0])) == 0.0


def test_elite_takes_whole_fronts_then_cuts_the_next_by_hypervolume_contribution() -> None:
    # front 0: A (0, 1), B (0.5, 0.5), C (1, 0); D (0.6, 0.6) is front 1; E (1, 1) front 2.
    f = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.6, 0.6], [1.0, 1.0]])
    assert nondominated_ranks(f).tolist() == [0, 0, 0, 1, 2]
    # normalised box is [0, 1]^2, reference 1.1: B adds 0.5 x 0.5 = 0.25, A and C 0.5 x 0.1 = 0.05 each
    assert elite(f, 2).tolist() == [1, 0]
    assert elite(f, 4).tolist() == [0, 1, 2, 3]
    assert elite(f, 10).tolist() == [0, 1, 2, 3, 4]


# -- Fisher screening ----------------------------------------------------------------------------

def test_fisher_screening_keeps_the_points_far_from_the_data() -> None:
    from evomerge.strategies.mobo_gp import fisher_information, fit_gps, most_uncertain, standardize

    rng = np.random.default_rng(0)
    x = 0.4 + 0.2 * rng.random((12, 2))  # data in the middle square [0.4, 0.6]^2
    y = standardize(np.stack([np.sin(5 * x[:, 0]) + x[:, 1], np.cos(4 * x[:, 1]) - x[:, 0]], axis=1))
    model = fit_gps(x, y)
    near = [[0.5, 0.5], [0.45, 0.55], [0.55, 0.45]]
    far = [[0.0, 1.0], [1.0, 0.0]]
    cands = np.array([near[0], far[0], near[1], near[2], far[1]])
    info = fisher_information(model, cands)
    assert info[[1, 4]].max() < info[[0, 2, 3]].min()
    assert sorted(most_uncertain(model, cands, 2).tolist()) == [1, 4]


# -- the search -----------------------------------------------------------------------------------

def zdt1_front_hypervolume(name: str, seed: int, budget: int, options: dict) -> float:
    s = make_strategy(name, MO, seed=seed, **options)
    values: list[list[float]] = []
    while len(values) < budget:
        batch = s.ask(None if name == "mm-mo" else 5)
        scored = [zdt1(g) for g in batch]
        s.tell(batch, scored)
        values += scored
    return hypervolume(np.array(values[:budget]), np.array([1.1, 1.1]))


def test_mm_mo_beats_random_search_on_zdt1_with_the_papers_budget() -> None:
    """10 random + 4 x 5 on 4-D ZDT1; the true front's hypervolume against (1.1, 1.1) is about 0.88."""
    seeds = range(3)
    mm = [zdt1_front_hypervolume("mm-mo", s, 30, FAST) for s in seeds]
    rnd = [zdt1_front_hypervolume("random", s, 30, {}) for s in seeds]
    # measured: mm-mo 0.60-0.75, random 0.00-0.11
    assert min(mm) > max(rnd) + 0.2, (mm, rnd)
    assert np.mean(mm) > 0.45


# -- protocol, failures, resume ---------------------------------------------------------------------

def test_batches_follow_the_papers_schedule_and_are_generation_locked() -> None:
    s = make_strategy("mm-mo", MO, seed=0, **FAST)
    first = s.ask(None)
    assert len(first) == 10 and s.ask(3) == []  # nothing more until the initial design is told
    s.tell(first[:4], [zdt1(g) for g in first[:4]])
    assert s.ask(None) == [] and len(s.pending()) == 6
    s.tell(first[4:], [zdt1(g) for g in first[4:]])
    second = s.ask(2) + s.ask(None)
    assert len(second) == 5 and all(np.all((g >= 0) & (g <= 1)) for g in second)
    with pytest.raises(StrategyError, match="not pending"):
        s.tell([np.full(4, 0.123)], [[0.0, 0.0]])


def test_failed_evaluations_are_skipped_and_never_stop_the_search() -> None:
    s = make_strategy("mm-mo", MO, seed=1, **FAST)
    batch = s.ask(None)
    s.tell(batch, [None] * len(batch))  # every initial point failed: no GP yet, a random batch follows
    batch = s.ask(None)
    assert len(batch) == 5
    s.tell(batch, [[float("nan"), 1.0], None, *[zdt1(g) for g in batch[2:]]])
    batch = s.ask(None)  # three successes: a GP batch
    assert len(batch) == 5
    assert len(s.best()) >= 1 and all(np.all(np.isfinite(e.values)) for e in s.best())


@pytest.mark.parametrize("acquisition", ["qehvi", "qlogehvi"])
def test_the_papers_joint_q_acquisitions_propose_batches_in_the_box(acquisition: str) -> None:
    options = {**FAST, "n_initial": 5, "n_candidates": 3, "batch_size": 2, "mc_samples": 16}
    s = make_strategy("mm-mo", MO, seed=0, acquisition=acquisition, **options)
    first = s.ask(None)
    s.tell(first, [zdt1(g) for g in first])
    batch = s.ask(None)
    assert len(batch) == 2 and all(np.all((g >= 0) & (g <= 1)) for g in batch)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="acquisition"):
        make_strategy("mm-mo", MO, seed=0, acquisition="ei")
    with pytest.raises(ConfigError, match="batch_size"):
        make_strategy("mm-mo", MO, seed=0, batch_size=11)
    with pytest.raises(ConfigError, match="n_elite"):
        make_strategy("mm-mo", MO, seed=0, n_elite=2)
    with pytest.raises(ConfigError, match="screening"):
        make_strategy("mm-mo", MO, seed=0, screening="random")
    with pytest.raises(ConfigError, match="at least two objectives"):
        make_strategy("mm-mo", Problem.box(3), seed=0)


SMALL = {"num_restarts": 1, "raw_samples": 16, "maxiter": 10, "n_initial": 5, "n_candidates": 4, "batch_size": 3}
SCRIPT = [("ask", 2), ("tell", 1), ("ask", None), ("tell", None), ("ask", 1), ("tell", None), ("ask", None),
          ("tell", 1), ("tell", None), ("ask", None), ("tell", 2), ("ask", None), ("tell", None), ("ask", 2),
          ("tell", None)]


def test_a_state_round_trip_before_every_operation_continues_bit_identically() -> None:
    objective = flaky(zdt1)
    reference, asked = run_script(build("mm-mo", MO, 7, SMALL), SCRIPT, objective)
    assert len(asked) == 5 + 3 + 3 + 2  # initial design, two GP batches, two of a third (one ask is locked out)
    # before *every* op, the state pickled and loaded into a fresh strategy (another seed each time)
    seeds = itertools.count(1000)
    restored, again = run_script(build("mm-mo", MO, 7, SMALL), SCRIPT, objective, interrupt_at=range(len(SCRIPT)),
                                 rebuild=lambda: build("mm-mo", MO, next(seeds), SMALL))
    best = [e.values for e in restored.best()]
    assert same(asked, again)
    assert best == [e.values for e in reference.best()]
    # single interrupts through the shared driver: a batch just told, a GP batch half told
    for cut in (4, 9):
        restored, again = run_script(build("mm-mo", MO, 7, SMALL), SCRIPT, objective, interrupt_at=cut,
                                     rebuild=lambda: build("mm-mo", MO, 4242, SMALL))
        assert same(asked, again), f"asks differ after a restore before op {cut}"
        assert [e.values for e in restored.best()] == best


def test_genomes_asked_after_the_last_checkpoint_come_back_identical_after_a_crash() -> None:
    s = make_strategy("mm-mo", MO, seed=3, **SMALL)
    first = s.ask(None)
    s.tell(first, [zdt1(g) for g in first])
    checkpoint = pickle.dumps(s.state_dict())  # the Study checkpoints after each tell
    lost = s.ask(None)  # a GP batch, asked and then the process dies
    r = make_strategy("mm-mo", MO, seed=99, **SMALL)
    r.load_state_dict(pickle.loads(checkpoint))
    assert same(r.ask(None), lost)


_CHILD = """
import json, pickle, sys
import torch
torch.set_num_threads(2)
from evomerge.strategies import make_strategy
problem, options, state = pickle.load(open(sys.argv[1], "rb"))
s = make_strategy("mm-mo", problem, seed=0, **options)
s.load_state_dict(state)
json.dump([g.tolist() for g in s.ask(None)], open(sys.argv[2], "w"))
"""


def test_a_resume_in_another_process_computes_the_same_gp_batch(tmp_path: Path) -> None:
    """A real resume re-computes the next batch in a new process (other hash salt, other thread count)."""
    s = make_strategy("mm-mo", MO, seed=5, **SMALL)
    first = s.ask(None)
    s.tell(first, [zdt1(g) for g in first])
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((MO, SMALL, s.state_dict())))
    expected = [g.tolist() for g in s.ask(None)]
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "in.pkl"), str(tmp_path / "out.json")],
                   check=True, env=env, cwd=Path(__file__).parents[2], timeout=300)
    assert json.loads((tmp_path / "out.json").read_text()) == expected
