"""The successive-halving and Hyperband rules: per-rung thresholds computed by the driver with Optuna's
SuccessiveHalvingPruner on a mirror of the recorded trials (their rung attributes rebuilt from their
intermediate values) take exactly
the decisions Optuna's own pruner takes on a live study fed the same trials in the same order; end to end in a
Study, and a Ctrl-C mid-stage then resume gives the uninterrupted trials. Hyperband: the same per bracket,
with Optuna's own bracket assignment (the candidate's key in place of the trial number; here the key is the
number, so the live study assigns the same brackets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pytest

from evomerge.racing.pruners import bracket_of, hyperband_thresholds, promotion_steps, rung_attrs, sh_thresholds
from evomerge.racing.request import RaceRequest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class _Rec:
    number: int
    status: str
    user_attrs: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.number)


def _replay(steps: list[int], values: np.ndarray, hyperband: bool = False, **opts: int) -> list[tuple[str, int]]:
    """Each trial's (state, stages reached) under Optuna's live pruner vs under the worker-side thresholds."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = "hb-study"
    pruner = (optuna.pruners.HyperbandPruner(max_resource=steps[-1], **opts) if hyperband
              else optuna.pruners.SuccessiveHalvingPruner(**opts))
    live = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    pool: list[_Rec] = []
    out = []
    for i, row in enumerate(values):
        trial = live.ask()
        live_stop = None
        for s, step in enumerate(steps):
            trial.report(float(row[s]), step)
            if s < len(steps) - 1 and trial.should_prune():
                live_stop = s
                break
        live.tell(trial, state=optuna.trial.TrialState.PRUNED) if live_stop is not None else live.tell(trial, row[-1])

        rate = opts.get("min_early_stopping_rate", 0)
        if hyperband:
            budgets, brackets = hyperband_thresholds(pool, steps, lambda v: v, name, opts["min_resource"],
                                                     opts["reduction_factor"], opts.get("bootstrap_count", 0))
            req = RaceRequest(rule="hyperband", stages=[0.5] * len(steps), confidence=0.9, order_seed=0, terms=[],
                              scalar=True, bracket_rungs=brackets, budgets=budgets, run_name=name).for_key(str(i))
            rate = bracket_of(name, str(i), budgets)
            assert rate == pruner._get_bracket_id(live, live.trials[-1])  # Optuna's own assignment
        else:
            rungs = sh_thresholds(pool, steps, lambda v: v, opts["min_resource"], opts["reduction_factor"],
                                  rate, opts.get("bootstrap_count", 0))
            req = RaceRequest(rule="successive_halving", stages=[0.5] * len(steps), confidence=0.9, order_seed=0,
                              terms=[], scalar=True, rungs=rungs)
        ours, failed = None, None
        for s in range(len(steps) - 1):
            if req.decide(s, {}, {}, {}, [float(v) for v in row[: s + 1]]) is not None:
                ours, failed = s, req.failed_rung(s, float(row[s]))[0]
                break
        assert ours == live_stop, f"trial {i}: Optuna stops at stage {live_stop}, the thresholds at {ours}"
        reached = len(steps) if ours is None else ours + 1
        attrs = {"intermediate": [[st, float(v)] for st, v in zip(steps[:reached], row[:reached], strict=True)]}
        if failed is not None:
            attrs["race_rung"] = failed
        pool.append(_Rec(i, "ok" if ours is None else "pruned", attrs))
        # the mirror's rebuilt rung attributes are what Optuna wrote during the live trial's life
        frozen = live.trials[-1]
        rebuilt = rung_attrs([(st, v) for st, v in attrs["intermediate"]], pool[-1].status, failed,
                             promotion_steps(steps, opts["min_resource"], opts["reduction_factor"], rate))
        assert rebuilt == {k: v for k, v in frozen.system_attrs.items() if k.startswith("completed_rung_")}
        out.append((pool[-1].status, reached))
    return out


@pytest.mark.parametrize("steps,opts", [
    ([10, 20, 40, 80], {"min_resource": 10, "reduction_factor": 2}),  # one rung per decision stage
    ([10, 40, 80], {"min_resource": 10, "reduction_factor": 2}),  # rungs 1 and 2 both reached at step 40
    ([25, 50, 100, 200], {"min_resource": 25, "reduction_factor": 4}),  # the default: Optuna's factor 4
    ([10, 20, 40, 80], {"min_resource": 5, "reduction_factor": 3, "min_early_stopping_rate": 1,
                        "bootstrap_count": 2}),
])
def test_thresholds_take_exactly_optunas_decisions_on_a_live_study(steps, opts):
    rng = np.random.default_rng(7)
    # values rounded to a tenth: many ties, where "value ≥ the promotable value" must hold exactly
    values = np.round(rng.uniform(0, 1, size=(40, len(steps))), 1)
    decisions = _replay(steps, values, **opts)
    assert sum(state == "pruned" for state, _ in decisions) >= 5  # the rule really stops candidates
    assert sum(state == "ok" for state, _ in decisions) >= 2


@pytest.mark.parametrize("steps,opts", [
    ([10, 20, 40, 80], {"min_resource": 10, "reduction_factor": 2}),  # 4 brackets
    ([25, 50, 100, 200], {"min_resource": 25, "reduction_factor": 3}),  # the default: Optuna's factor 3, 2 brackets
    ([5, 10, 20, 40, 80], {"min_resource": 5, "reduction_factor": 2, "bootstrap_count": 1}),
])
def test_hyperband_thresholds_take_exactly_optunas_decisions_on_a_live_study(steps, opts):
    rng = np.random.default_rng(11)
    values = np.round(rng.uniform(0, 1, size=(60, len(steps))), 1)
    decisions = _replay(steps, values, hyperband=True, **opts)
    assert sum(state == "pruned" for state, _ in decisions) >= 5
    assert sum(state == "ok" for state, _ in decisions) >= 2


def test_hand_computed_thresholds():
    # rung 0 at step 10 (stage 0), factor 2: promoted iff among the top len(competing) // 2 values
    pool = [_Rec(i, "ok", {"intermediate": [[10, v], [20, v]]}) for i, v in enumerate([0.1, 0.4, 0.2, 0.5, 0.3])]
    rungs = sh_thresholds(pool, [10, 20], lambda v: v, 10, 2)
    # 5 competing + the candidate = 6: the top 3 go on, so the candidate must reach the 3rd largest, 0.3
    assert rungs == {0: [(0, 0.3)]}
    assert sh_thresholds([], [10, 20], lambda v: v, 10, 2) == {}  # the first trial is always promoted


def _config(tmp_path: Path, name: str, rule: str):
    from evomerge.study.config import RunConfig

    return RunConfig.from_dict({
        "name": "race", "output": str(tmp_path / name),  # one name: hyperband's brackets hash it with the key
        "sources": {"base": str(REPO / "zoo/digits/init"),
                    "models": [str(REPO / "zoo/digits/expert_0_4"), str(REPO / "zoo/digits/expert_5_9")]},
        "space": str(REPO / "search_spaces/ps_task_arithmetic.yaml"), "strategy": {"name": "tpe", "batch_size": 3},
        "objectives": [{"task": str(REPO / "fitness/digits/digits_all.yaml")}], "budget": {"evaluations": 14},
        "seed": 3, "runner": {"type": "local", "threads": 1},
        "racing": {"rule": rule, "reduction_factor": 2}})


def _trials(run_dir: Path) -> list[tuple]:
    study = optuna.load_study(study_name="race", storage=f"sqlite:///{run_dir / 'study.db'}")
    return [(t.user_attrs["key"], t.state.name, t.values, t.user_attrs.get("examples_scored"),
             dict(t.intermediate_values), t.user_attrs.get("race_rung"))
            for t in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("rule", ["successive_halving", "hyperband"])
def test_a_raced_study_runs_and_resumes_exactly(tmp_path, monkeypatch, rule):
    from evomerge.racing import request
    from evomerge.study.study import Study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = Study.create(_config(tmp_path, "ref", rule))
    try:
        summary = study.run()
        pruned = [r for r in study.store.records() if r.status == "pruned"]
        assert summary.n_pruned == len(pruned) > 0
        assert all(r.user_attrs["racing"].startswith(f"{rule}: running score") for r in pruned)
        assert all(isinstance(r.user_attrs["race_rung"], int) for r in pruned)
    finally:
        study.close()

    original, calls = request.RaceRequest.decide, {"n": 0}

    def decide(self, *a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(request.RaceRequest, "decide", decide)
    study = Study.create(_config(tmp_path, "cut", rule))
    try:
        assert study.run().stopped_early
    finally:
        study.close()
    monkeypatch.setattr(request.RaceRequest, "decide", original)
    study = Study.open(tmp_path / "cut")
    try:
        study.run()
    finally:
        study.close()
    assert _trials(tmp_path / "cut") == _trials(tmp_path / "ref")


def test_default_min_resource_puts_the_rungs_on_their_stages():
    from evomerge.racing.driver import _first_resource

    steps = [180, 360, 719, 1437]  # digits: 1,437 train images, stages 1/8, 1/4, 1/2, 1 (each count rounded up)
    first = _first_resource(steps, [0.125, 0.25, 0.5, 1.0])
    assert first == 179
    assert promotion_steps(steps, first, 4, 0) == {0: 0, 1: 2}  # factor 4: rungs at 1/8 and 1/2
    assert promotion_steps(steps, first, 2, 0) == {0: 0, 1: 1, 2: 2}  # factor 2: every stage
    assert promotion_steps(steps, 180, 4, 0) == {0: 0}  # the first stage's own count: 720 > 719, one rung only
