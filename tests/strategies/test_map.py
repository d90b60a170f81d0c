"""MAP, Bayesian MAP and nested MAP (arXiv 2406.07529) against independent truth.

Truth here is analytic: quadratics with known A, b, e; two isotropic bowls whose Pareto set is the
segment between their optima (a monotone warp leaves the Pareto set unchanged); angles of
hand-placed points; coefficients composed by hand.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from strategy_driver import build, flaky, run_script
from strategy_problems import igd

from evomerge.errors import ConfigError
from evomerge.exec.function import FunctionRunner
from evomerge.strategies import Problem, make_strategy, select_by_preference
from evomerge.strategies.bayes_map import angle_bin, bin_scores, cartesian, hyperspherical, sample_points
from evomerge.strategies.map_design import initial_design
from evomerge.strategies.nested_map import compose, scale_interval
from evomerge.strategies.nsga3 import das_dennis, non_dominated_ranks, nsga3
from evomerge.strategies.quadratic_surrogate import QuadraticSurrogate, fit_quadratic, n_params
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

FAST = {"population": 24, "generations": 30}
P_OPT, Q_OPT = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def bowl(opt: np.ndarray, kind: str = "sigmoid", depth: float = 2.0, top: float = 2.5) -> QuadraticSurrogate:
    """warp(top − depth·‖c − opt‖²) written as ½cᵀAc + bᵀc + e."""
    d = opt.size
    return QuadraticSurrogate.from_parts(-2 * depth * np.eye(d), 2 * depth * opt, top - depth * opt @ opt, kind)


def two_bowls(x: np.ndarray) -> list[float]:
    return [float(bowl(P_OPT)(x)[0]), float(bowl(Q_OPT)(x)[0])]


def true_front(n: int = 401) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    seg = (1 - t) * P_OPT + t * Q_OPT
    return np.stack([bowl(P_OPT)(seg), bowl(Q_OPT)(seg)], axis=1)


def drive(strategy, objective) -> int:
    """Ask/tell to the end as the Study does (whole batches); returns the number of evaluations."""
    n = 0
    while not strategy.finished:
        batch = strategy.ask()
        if not batch:
            break
        n += len(batch)
        strategy.tell(batch, [objective(g) for g in batch])
    return n


# -- the quadratic surrogate ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["identity", "sigmoid", "softplus"])
def test_the_quadratic_fit_recovers_known_A_b_e_exactly_from_noiseless_values(kind: str) -> None:
    rng = np.random.default_rng(3)
    d = 3
    m = rng.normal(size=(d, d))
    a, b, e = (m + m.T) / 2, rng.normal(size=d), 0.4
    truth = QuadraticSurrogate.from_parts(a, b, e, kind)
    c = initial_design(d, (d + 1) * (d + 2), rng) * 0.8  # keeps sigmoid values away from the clip at 0/1
    fitted = fit_quadratic(c, truth(c), kind)
    np.testing.assert_allclose(fitted.A, a, atol=1e-9)
    np.testing.assert_allclose(fitted.b, b, atol=1e-9)
    assert fitted.e == pytest.approx(e, abs=1e-9)
    assert fitted.theta.size == n_params(d) == 10


def test_the_warped_fit_beats_the_linearised_one_when_targets_hit_the_clip() -> None:
    """Accuracies of exactly 0 have no logit: the paper's warped least squares still fits them closely."""
    rng = np.random.default_rng(0)
    truth = bowl(np.array([0.6, 0.2]), depth=8.0, top=3.0)
    c = rng.random((30, 2)) * 2
    y = np.round(truth(c), 2)  # rounded like an accuracy on 100 examples: many exact zeros
    lin, warped = fit_quadratic(c, y, "sigmoid", fit="linear"), fit_quadratic(c, y, "sigmoid", fit="warped")
    assert np.sum((warped(c) - y) ** 2) < np.sum((lin(c) - y) ** 2)
    assert np.max(np.abs(warped(c) - y)) < 0.02


# -- NSGA-III -----------------------------------------------------------------------------------------
def test_das_dennis_points_lie_on_the_simplex_and_count_right() -> None:
    refs = das_dennis(3, 12)
    assert refs.shape == (91, 3) and np.allclose(refs.sum(axis=1), 1.0) and refs.min() >= 0


def test_non_dominated_ranks_of_hand_placed_points() -> None:
    f = np.array([[0, 2], [1, 1], [2, 0], [1, 2], [2, 2], [3, 3]], dtype=float)
    assert non_dominated_ranks(f).tolist() == [0, 0, 0, 1, 2, 3]


@pytest.mark.parametrize(("p", "q", "tol"), [([-1.0, 0.5], [2.0, -0.5], 0.15),
                                             ([-1.0, 0.5, 0.0], [2.0, 0.5, 1.0], 0.3)])
def test_nsga3_on_two_bowls_lands_on_the_segment_between_their_optima(p, q, tol) -> None:
    """The Pareto set of ‖x − p‖², ‖x − q‖² is the segment [p, q]; the front is (t²L², (1−t)²L²).

    NSGA-III's SBX/polynomial operators converge slowly across a rotated valley (a point δ off the
    segment is only δ² worse in both objectives), so the check is tight in objective space.
    """
    p, q = np.array(p), np.array(q)

    def f(x: np.ndarray) -> np.ndarray:
        return np.stack([((x - p) ** 2).sum(1), ((x - q) ** 2).sum(1)], axis=1)

    d = p.size
    x, fx = nsga3(f, np.full(d, -3.0), np.full(d, 3.0), rng=np.random.default_rng(0), population=100, generations=150)
    t = np.clip((x - p) @ (q - p) / ((q - p) @ (q - p)), 0, 1)
    on_segment = p + t[:, None] * (q - p)
    assert np.linalg.norm(x - on_segment, axis=1).max() < tol
    span = (q - p) @ (q - p)  # each objective's range over the front
    assert np.max(fx - f(on_segment)) / span < 0.01
    assert t.min() < 0.02 and t.max() > 0.98 and len(x) > 50  # the whole front, spread out


# -- MAP -------------------------------------------------------------------------------------------------
def test_map_design_holds_the_one_hot_points_then_grid_points_off_the_simplex() -> None:
    design = initial_design(2, 12, np.random.default_rng(0))
    assert design.shape == (12, 2) and np.array_equal(design[:2], np.eye(2))
    rest = design[2:]
    assert len({tuple(r) for r in rest}) == 10
    assert not np.any(np.isclose(rest.sum(1), 1.0)) and not np.any(np.isclose(rest[:, 0], rest[:, 1]))


@pytest.mark.parametrize("name", ["map", "bayes-map"])
def test_map_recovers_the_true_front_when_the_objectives_are_sigmoid_quadratics(name: str) -> None:
    problem = Problem(np.full(2, -1.0), np.full(2, 3.0), ("maximize", "maximize"))
    s = make_strategy(name, problem, seed=1, front_size=20)
    n = drive(s, two_bowls)
    assert s.finished and s.ask() == []
    found = np.array([e.values for e in s.best()])
    truth = true_front()
    scale = truth.max(0) - truth.min(0)
    assert igd(truth / scale, found / scale) < 0.005  # every re-evaluated point lies on the true front
    assert igd(found / scale, truth / scale) < 0.05  # and 20 of them cover it (0.02 = perfectly even spacing)
    assert n <= (12 if name == "map" else 14) + 20
    # the surrogates are exact: the predicted front equals the re-evaluated one
    pred_x, pred_y = s.predicted
    np.testing.assert_allclose(pred_y, np.array([two_bowls(x) for x in pred_x]), atol=1e-6)


def test_map_handles_a_loss_to_minimise_with_the_softplus_warp() -> None:
    problem = Problem(np.full(2, -1.0), np.full(2, 3.0), ("maximize", "minimize"))
    loss = QuadraticSurrogate.from_parts(4 * np.eye(2), -4 * Q_OPT, 2 * Q_OPT @ Q_OPT - 1.0, "softplus")

    def objective(x: np.ndarray) -> list[float]:
        return [float(bowl(P_OPT)(x)[0]), float(loss(x)[0])]

    s = make_strategy("map", problem, seed=0)
    drive(s, objective)
    assert [sur.kind for sur in s.surrogates] == ["sigmoid", "softplus"]
    pred_x, pred_y = s.predicted
    np.testing.assert_allclose(pred_y, np.array([objective(x) for x in pred_x]), atol=1e-6)  # exact surrogates
    for x in pred_x:  # the Pareto set is still the segment between the optima (to NSGA-III's precision)
        t = np.clip((x - P_OPT) @ (Q_OPT - P_OPT) / 2, 0, 1)
        assert np.linalg.norm(x - (P_OPT + t * (Q_OPT - P_OPT))) < 0.1


def test_select_by_preference_takes_the_argmax_of_the_normalised_weighted_sum() -> None:
    v = np.array([[0.9, 0.1], [0.6, 0.6], [0.1, 0.9]])
    assert select_by_preference(v, ("maximize", "maximize"), [1, 0]) == 0
    assert select_by_preference(v, ("maximize", "maximize"), [0, 1]) == 2
    assert select_by_preference(v, ("maximize", "maximize"), None) == 1
    assert select_by_preference(v, ("minimize", "minimize"), [3, 1]) == 2
    with pytest.raises(ConfigError, match="non-negative"):
        select_by_preference(v, ("maximize", "maximize"), [1, -1])


def test_map_preferred_follows_the_preference_along_the_front() -> None:
    problem = Problem(np.full(2, -1.0), np.full(2, 3.0), ("maximize", "maximize"))
    picks = {}
    for pref in ([1, 0], [1, 1], [0, 1]):
        s = make_strategy("map", problem, seed=0, preference=pref, **FAST)
        drive(s, two_bowls)
        picks[tuple(pref)] = s.preferred().genome
    assert picks[(1, 0)][0] > 0.9 and picks[(0, 1)][1] > 0.9
    assert abs(picks[(1, 1)][0] - picks[(1, 1)][1]) < 0.15


@pytest.mark.parametrize(("option", "value", "message"), [
    ("n_initial", 3, "n_initial must be"), ("front_size", 0, "front_size"), ("warp", "tanh", "warp must be"),
    ("coef_range", [5, 6], "does not overlap"), ("fit", "exact", "fit must be"), ("preference", [1], "preference"),
])
def test_bad_map_options_are_refused_with_the_option_named(option: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_strategy("map", Problem.box(2, 0, 1, ("maximize", "maximize")), seed=0, **{option: value})


# -- Bayesian MAP --------------------------------------------------------------------------------------
def test_hand_placed_points_fall_into_the_expected_angle_bins() -> None:
    deg = np.pi / 180
    pts2 = np.array([[1, 0], [np.cos(30 * deg), np.sin(30 * deg)], [1, 1], [0.2, 0.9], [0, 1], [-1, 1]])
    # 4 bins of 22.5°: 0°, 30°, 45°, 77°, 90° (closed last bin), 135° (outside the quadrant)
    assert angle_bin(hyperspherical(pts2)[0], 4).tolist() == [0, 1, 2, 3, 3, -1]
    pts3 = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0], [1, 1, 1]])
    # φ1 = atan2(√(y²+z²), x), φ2 = atan2(z, y): (45°, 0°), (90°, 90°), (0°, 0°), (54.7°, 45°)
    assert angle_bin(hyperspherical(pts3)[0], 4).tolist() == [2 * 4 + 0, 3 * 4 + 3, 0, 2 * 4 + 2]


def test_hyperspherical_coordinates_round_trip() -> None:
    x = np.random.default_rng(0).random((20, 4))
    phi, r = hyperspherical(x)
    np.testing.assert_allclose(cartesian(phi, r), x, atol=1e-12)
    assert np.all((phi >= 0) & (phi <= np.pi / 2))


def test_bin_scores_are_mean_plus_half_std_and_empty_bins_never_sampled() -> None:
    bins = np.array([0, 0, 2, 2, 2])
    errors = np.array([1.0, 3.0, 0.0, 0.0, 0.3])
    scores = bin_scores(bins, errors, 4)
    assert scores[0] == pytest.approx(2.0 + 0.5 * 1.0)
    assert scores[2] == pytest.approx(0.1 + 0.5 * np.std([0, 0, 0.3]))
    assert np.isneginf(scores[1]) and np.isneginf(scores[3])
    pts = sample_points(scores, 4, 1, 200, 0.07, (0.2, 0.8), np.random.default_rng(0))
    got = angle_bin(hyperspherical(pts)[0], 4)
    assert set(got.tolist()) == {0}  # bin 0's score is 2.4 ahead: softmax at T = 0.07 leaves ~1e-15 to bin 2
    assert np.all((np.linalg.norm(pts, axis=1) >= 0.2) & (np.linalg.norm(pts, axis=1) <= 0.8))


# -- nested MAP ---------------------------------------------------------------------------------------
def test_compose_gives_the_task_arithmetic_coefficients_of_a_merge_of_merges() -> None:
    g, h = np.array([0.8, 0.0, 0.0]), np.array([0.0, 1.2, 0.5])
    np.testing.assert_allclose(compose(g, h, [1.5, -0.5]), [[1.2, -0.6, -0.25]])
    # θ0 + a(θ_G − θ0) + b(θ_H − θ0) with θ_G = θ0 + 0.8τ1, θ_H = θ0 + 1.2τ2 + 0.5τ3, on random task vectors
    rng = np.random.default_rng(0)
    theta0, tau = rng.normal(size=5), rng.normal(size=(3, 5))
    merged = theta0 + 1.5 * (0.8 * tau[0]) - 0.5 * (1.2 * tau[1] + 0.5 * tau[2])
    np.testing.assert_allclose(theta0 + compose(g, h, [1.5, -0.5])[0] @ tau, merged)
    assert scale_interval(np.array([2.0, -1.0, 0.0]), np.full(3, -1.0), np.full(3, 3.0)) == (-0.5, 1.0)


def three_tasks(x: np.ndarray) -> list[float]:
    opts = np.eye(3)
    return [float(bowl(o)(x)[0]) for o in opts]


def test_nested_map_stages_are_compositions_of_the_previous_choice() -> None:
    problem = Problem(np.full(3, -1.0), np.full(3, 3.0), ("maximize",) * 3)
    s = make_strategy("nested-map", problem, seed=0, **FAST)
    asked: list[np.ndarray] = []
    while not s.finished:
        batch = s.ask()
        if not batch:
            break
        asked += batch
        s.tell(batch, [three_tasks(g) for g in batch])
    # singles, 20-point design less the 2 one-hot points, the choice; then the next pair likewise
    assert len(asked) == 3 + 18 + 1 + 18 + 1
    np.testing.assert_array_equal(np.array(asked[:3]), np.eye(3))
    first, second = s.merges
    (ta, tb), (a, b) = first["tasks"], first["ab"]
    chosen1 = np.zeros(3)
    chosen1[ta[0]], chosen1[tb[0]] = a, b  # a·e_i + b·e_j, by hand
    np.testing.assert_allclose(asked[3 + 18], chosen1, atol=1e-12)
    (ga, gb), (a2, b2) = second["tasks"], second["ab"]
    coef = {tuple(ta + tb): chosen1}
    rest = next(k for k in range(3) if k not in ta + tb)
    g = coef[tuple(ga)] if len(ga) == 2 else np.eye(3)[rest]
    h = coef[tuple(gb)] if len(gb) == 2 else np.eye(3)[rest]
    np.testing.assert_allclose(asked[-1], a2 * g + b2 * h, atol=1e-12)
    for x in asked[22:-1]:  # every stage-2 design genome lies in span{g, h}
        sol, *_ = np.linalg.lstsq(np.stack([g, h], axis=1), x, rcond=None)
        np.testing.assert_allclose(np.stack([g, h], axis=1) @ sol, x, atol=1e-12)
    assert s.preferred().genome.tolist() == asked[-1].tolist()


def test_nested_map_clips_compositions_the_box_cannot_hold() -> None:
    problem = Problem(np.full(3, 0.1), np.full(3, 1.0), ("maximize",) * 3)
    s = make_strategy("nested-map", problem, seed=0, **FAST)
    first = s.ask()
    np.testing.assert_allclose(first, [[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])  # e_i clipped
    s.tell(first, [three_tasks(g) for g in first])
    design = s.ask()
    assert all(np.all((g >= 0.1) & (g <= 1.0)) for g in design)


def test_nested_map_needs_one_objective_per_coefficient() -> None:
    with pytest.raises(ConfigError, match="one objective per task vector"):
        make_strategy("nested-map", Problem.box(3, 0, 1, ("maximize", "maximize")), seed=0)


# -- exact resume ----------------------------------------------------------------------------------------
MO2 = Problem(np.full(2, -1.0), np.full(2, 3.0), ("maximize", "maximize"))
MO3 = Problem(np.full(3, -1.0), np.full(3, 3.0), ("maximize",) * 3)
RESUME_CASES = {
    "map": (MO2, {**FAST, "front_size": 6}, flaky(two_bowls)),
    "bayes-map": (MO2, {**FAST, "front_size": 6, "rounds": 2, "points_per_round": 2}, flaky(two_bowls)),
    "nested-map": (MO3, {**FAST, "n_design": 8}, flaky(three_tasks)),
}
SCRIPT = [("ask", 3), ("tell", 2), ("ask", None), ("tell", 1), ("tell", None)] * 8


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_restored_map_strategies_ask_the_same_genomes_as_an_uninterrupted_run(name: str) -> None:
    problem, options, objective = RESUME_CASES[name]
    reference, asked = run_script(build(name, problem, 7, options), SCRIPT, objective)
    assert reference.finished, "the script should reach the end of the search"
    for cut in range(0, len(SCRIPT), 2):
        restored, again = run_script(build(name, problem, 7, options), SCRIPT, objective, interrupt_at=cut,
                                     rebuild=lambda: build(name, problem, 999, options))
        assert same(asked, again), f"{name}: asks differ after a restore before op {cut}"
        assert [e.values for e in restored.best()] == [e.values for e in reference.best()]
        assert restored.finished
        assert restored.preferred().values == reference.preferred().values


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_asks_lost_after_the_checkpoint_come_back_identical(name: str) -> None:
    problem, options, objective = RESUME_CASES[name]
    s = build(name, problem, 3, options)
    first = s.ask()
    s.tell(first, [objective(g) for g in first])
    checkpoint = pickle.dumps(s.state_dict())
    lost = s.ask()  # asked (the front, or the next stage), then the process dies
    r = build(name, problem, 4, options)
    r.load_state_dict(pickle.loads(checkpoint))
    assert same(r.ask(), lost) and len(lost) > 0


def test_a_map_state_cannot_be_loaded_into_another_strategy() -> None:
    from evomerge.strategies import StrategyError

    with pytest.raises(StrategyError, match="strategy 'map'"):
        make_strategy("bayes-map", MO2, seed=0).load_state_dict(make_strategy("map", MO2, seed=0).state_dict())


# -- the Study stops when the strategy is done -------------------------------------------------------------
def study_config(tmp_path, strategy: str, evaluations: int = 500, options: dict | None = None) -> RunConfig:
    return RunConfig.from_dict({
        "name": "m", "space": {"kind": "box", "dim": 2, "lower": -1.0, "upper": 3.0},
        "strategy": {"name": strategy, "options": options or {}},
        "objectives": [{"name": "f1", "direction": "maximize"}, {"name": "f2", "direction": "maximize"}],
        "budget": {"evaluations": evaluations}, "seed": 0, "output": str(tmp_path / "m"),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:zdt1"},
    })


def bowls_target(genome: np.ndarray, recipe: object = None) -> dict[str, float]:
    f1, f2 = two_bowls(genome)
    return {"f1": f1, "f2": f2}


def test_the_study_stops_when_map_is_finished_well_inside_the_budget(tmp_path) -> None:
    study = Study.create(study_config(tmp_path, "map", options=FAST), runner=FunctionRunner(bowls_target))
    summary = study.run()
    assert study.strategy.finished and 12 < summary.n_trials <= 12 + 20 and not summary.stopped_early
    again = Study.open(tmp_path / "m", runner=FunctionRunner(bowls_target))
    assert again.strategy.finished and again.run().n_trials == summary.n_trials  # resuming a finished run adds none


def test_the_study_stops_when_a_strategy_asks_nothing(tmp_path) -> None:
    study = Study.create(study_config(tmp_path, "random"), runner=FunctionRunner(bowls_target))

    class Silent(type(study.strategy)):
        def ask(self, n=None):
            return []

    study.strategy = Silent(study.problem, seed=0)
    assert study.run().n_trials == 0  # returns instead of spinning
