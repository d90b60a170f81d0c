"""The Study loop in process: failures don't stop a search, values reach the record, the archive is right."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from evomerge.errors import ConfigError
from evomerge.exec.function import FunctionRunner
from evomerge.study.archive import Archive, hypervolume, non_dominated
from evomerge.study.config import RunConfig
from evomerge.study.study import Study


def config(tmp_path, name="s", **over) -> RunConfig:
    data = {
        "name": name, "space": {"kind": "box", "dim": 3},
        "strategy": {"name": "cma"}, "objectives": [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": 14}, "seed": 1, "output": str(tmp_path / name),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"},
    }
    data.update(over)
    return RunConfig.from_dict(data)


def flaky(genome, recipe):
    if genome[0] > 0.55:
        raise RuntimeError("this candidate breaks the merge")
    if genome[1] > 0.6:
        return {"sphere": float("nan")}
    return {"sphere": float(np.sum((genome - 0.3) ** 2))}


def test_a_failing_or_nan_candidate_is_recorded_failed_and_the_search_goes_on(tmp_path):
    study = Study.create(config(tmp_path), runner=FunctionRunner(flaky))
    summary = study.run()
    assert summary.n_trials == 14
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    failed = [t for t in stored.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed, "the test problem should produce some failures"
    for t in failed:
        assert "this candidate breaks the merge" in t.user_attrs["error"] or "non-finite" in t.user_attrs["error"]
    assert summary.n_failed == len(failed) < 14


def test_every_trial_records_genome_objectives_and_timings(tmp_path):
    study = Study.create(config(tmp_path))
    study.run()
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    for t in stored.trials:
        genome = np.array(t.user_attrs["genome"])
        assert t.values[0] == pytest.approx(np.sum((genome - 0.3) ** 2))
        assert t.params == {f"x{i}": genome[i] for i in range(3)}
        assert {"fitness_seconds", "worker", "key"} <= set(t.user_attrs)


def test_the_budget_is_exact_even_mid_generation(tmp_path):
    study = Study.create(config(tmp_path, budget={"evaluations": 9}))  # cma's popsize for d=3 is 7
    assert study.run().n_trials == 9


def test_finalize_writes_front_and_best_recipe_files(tmp_path):
    study = Study.create(config(tmp_path))
    study.run()
    study.finalize()
    front = json.loads((tmp_path / "s" / "front.json").read_text())
    assert len(front["front"]) == 1  # one objective: the front is the best trial
    assert front["front"][0]["objectives"]["sphere"] == pytest.approx(min(
        t.values[0] for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
        .trials))


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="budget"):
        RunConfig.from_dict({"name": "x", "space": {"kind": "box", "dim": 2},
                             "objectives": [{"name": "a", "direction": "minimize"}],
                             "runner": {"type": "function", "target": "m:f"}})
    with pytest.raises(ConfigError, match=r"objectives\.0"):
        RunConfig.from_dict({"name": "x", "space": {"kind": "box", "dim": 2}, "budget": {"evaluations": 3},
                             "objectives": [{"name": "a"}], "runner": {"type": "function", "target": "m:f"}})
    with pytest.raises(ConfigError, match="sources"):
        RunConfig.from_dict({"name": "x", "space": "ps.yaml", "budget": {"evaluations": 3},
                             "objectives": [{"task": "t.yaml"}]})


def test_pareto_front_and_hypervolume_match_hand_computation():
    values = np.array([[1.0, 4.0], [2.0, 2.0], [3.0, 3.0], [4.0, 1.0], [2.0, 2.0]])
    directions = ["minimize", "minimize"]
    assert list(non_dominated(values, directions)) == [0, 1, 3, 4]
    # front {(1,4),(2,2),(4,1)} vs reference (5,5): 1x1 + 1x3 + 2x2... by slabs: [1,2)x(5-4) + [2,4)x(5-2) + [4,5)x(5-1)
    assert hypervolume(values, directions, [5.0, 5.0]) == pytest.approx(1 * 1 + 2 * 3 + 1 * 4)
    maxed = Archive.of([0, 1, 2], -values[:3], ["a", "b"], ["maximize", "maximize"], [-5.0, -5.0])
    assert maxed.front == [0, 1]
    assert maxed.hypervolume() == pytest.approx(1 * 1 + 3 * 3)
    assert maxed.best_per_objective() == {"a": 0, "b": 1}


def test_a_journal_file_storage_records_and_resumes_like_sqlite(tmp_path):
    cfg = config(tmp_path, name="j", storage=f"journal:{tmp_path / 'journal.log'}", budget={"evaluations": 8})
    Study.create(cfg).run()
    assert (tmp_path / "journal.log").is_file() and not (tmp_path / "j" / "study.db").exists()
    more = config(tmp_path, name="j2", storage=f"journal:{tmp_path / 'journal2.log'}", budget={"evaluations": 8})
    study = Study.create(more)
    study.run()
    reopened = Study.open(tmp_path / "j2")
    assert [r.key for r in reopened.store.records()] == [r.key for r in study.store.records()]
    assert reopened.run().n_trials == 8  # nothing left to do, nothing repeated


def test_progress_reports_the_runners_workers_and_the_display_summarises_them(tmp_path):
    from evomerge.exec.ray_runner import WorkerState
    from evomerge.study.display import worker_summary

    class WorkerRunner(FunctionRunner):
        def worker_states(self) -> list[WorkerState]:
            return [WorkerState("w0", "busy", evaluated=3), WorkerState("w1", "restarting", restarts=1)]

    config = RunConfig.from_dict({
        "name": "workers", "space": {"kind": "box", "dim": 2}, "strategy": {"name": "random", "batch_size": 2},
        "objectives": [{"name": "sphere", "direction": "minimize"}], "budget": {"evaluations": 4},
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"}, "output": str(tmp_path / "w")})
    seen = []
    study = Study.create(config.resolved(), runner=WorkerRunner("evomerge.exec.synthetic:sphere"))
    try:
        study.run(on_progress=seen.append)
    finally:
        study.close()
    assert seen[-1].done == 4 and [w.name for w in seen[-1].workers] == ["w0", "w1"]
    assert worker_summary(seen[-1].workers) == "w0:busy/3 w1:restarting/0 (1 restarts)"
    many = [WorkerState(f"w{i}", "busy" if i % 3 else "idle") for i in range(6)]
    assert worker_summary(many) == "workers 4 busy, 2 idle"
