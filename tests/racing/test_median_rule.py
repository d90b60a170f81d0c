"""The median rule: thresholds computed with Optuna's MedianPruner equal the median of the completed trials'
running scores (hand-computed) and reproduce Optuna's own should_prune decisions; end to end in a Study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest

from evomerge.racing.pruners import median_thresholds


@dataclass
class _Rec:
    number: int
    status: str
    user_attrs: dict = field(default_factory=dict)


def _pool() -> list[_Rec]:
    vals = [[0.1, 0.15], [0.4, 0.3], [0.2, 0.25], [0.5, 0.55], [0.3, 0.2], [0.9, 0.8]]
    pool = [_Rec(i, "ok", {"intermediate": [[10, a], [20, b], [40, b]]}) for i, (a, b) in enumerate(vals)]
    pool.append(_Rec(6, "pruned", {"intermediate": [[10, 0.95]]}))  # a stopped trial is not a competitor
    return pool


def test_thresholds_are_the_median_of_completed_trials_and_match_optunas_decisions():
    th = median_thresholds(_pool(), [10, 20, 40], lambda v: v)
    # step 10: completed values 0.1 0.4 0.2 0.5 0.3 0.9 -> median (0.3 + 0.4) / 2 = 0.35; step 20: 0.2..0.8 -> 0.275
    assert th[0] == pytest.approx(0.35, abs=1e-9) and th[1] == pytest.approx(0.275, abs=1e-9) and 2 not in th
    # Optuna itself, on a real study holding the same completed trials
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for v, expect in [(0.349, True), (0.351, False)]:
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner())
        for r in _pool()[:6]:
            inter = {int(s): x for s, x in r.user_attrs["intermediate"]}
            study.add_trial(optuna.trial.create_trial(value=inter[40], intermediate_values=inter))
        trial = study.ask()
        trial.report(v, 10)
        assert bool(trial.should_prune()) is expect
        assert (v < th[0]) is expect
    assert median_thresholds(_pool()[:4], [10, 20, 40], lambda v: v) == {}  # under Optuna's 5 startup trials


def test_a_median_raced_study_prunes_below_the_median(tmp_path):
    from evomerge.study.config import RunConfig
    from evomerge.study.study import Study

    repo = Path(__file__).resolve().parents[2]
    cfg = RunConfig.from_dict({
        "name": "median", "output": str(tmp_path / "median"),
        "sources": {"base": str(repo / "zoo/digits/init"),
                    "models": [str(repo / "zoo/digits/expert_0_4"), str(repo / "zoo/digits/expert_5_9")]},
        "space": str(repo / "search_spaces/ps_task_arithmetic.yaml"), "strategy": {"name": "tpe"},
        "objectives": [{"task": str(repo / "fitness/digits/digits_all.yaml")}], "budget": {"evaluations": 16},
        "seed": 1, "runner": {"type": "local", "threads": 1}, "racing": {"rule": "median"}})
    study = Study.create(cfg)
    try:
        summary = study.run()
        pruned = [r for r in study.store.records() if r.status == "pruned"]
        assert summary.n_pruned == len(pruned) > 0
        first = min(r.number for r in pruned)
        assert sum(r.status == "ok" for r in study.store.records() if r.number < first) >= 5  # startup trials
        assert all(r.user_attrs["racing"].startswith("median: best running score") for r in pruned)
    finally:
        study.close()
