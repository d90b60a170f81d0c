"""Racing in a Study on the digits zoo: pruned trials recorded as such (PRUNED, intermediate values, partial
scores equal to a full evaluation's on the same examples), strategies told as documented, the front only of
fully scored trials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from evomerge.exec.base import Candidate
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, strategy: str, objectives: list[str], evaluations: int, **racing) -> RunConfig:
    return RunConfig.from_dict({
        "name": f"race_{strategy}", "output": str(tmp_path / strategy),
        "sources": {"base": str(REPO / "zoo/digits/init"),
                    "models": [str(REPO / "zoo/digits/expert_0_4"), str(REPO / "zoo/digits/expert_5_9")]},
        "space": str(REPO / "search_spaces/ps_task_arithmetic.yaml"),
        "strategy": {"name": strategy},
        "objectives": [{"task": str(REPO / f"fitness/digits/{o}.yaml")} for o in objectives],
        "budget": {"evaluations": evaluations}, "seed": 3,
        "runner": {"type": "local", "threads": 1},
        "racing": {"rule": "bound", "confidence": 0.9, **racing}})


@pytest.fixture(scope="module")
def cma_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cma")
    study = Study.create(_config(tmp, "cma", ["digits_0_4", "digits_5_9"], 18))
    told: list[tuple[list, list]] = []
    original = study.strategy.tell
    study.strategy.tell = lambda g, v: (told.append((list(g), list(v))), original(g, v))[1]
    summary = study.run()
    yield study, summary, told
    study.close()


def test_pruned_trials_are_recorded_with_their_stage_partial_scores_and_intermediate_values(cma_run):
    study, summary, _ = cma_run
    trials = study.store.study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 18
    assert summary.n_pruned == len(pruned) and summary.n_failed == 0
    counts = [[91, 182, 364, 727], [89, 178, 355, 710]]  # ceil(f * n) per task for stages 1/8, 1/4, 1/2, 1
    steps = [a + b for a, b in zip(*counts, strict=True)]
    assert summary.examples_scored == sum(t.user_attrs["examples_scored"] for t in trials)
    for t in complete:
        assert t.user_attrs["examples_scored"] == 1437 and sorted(t.intermediate_values) == steps
        assert t.values[0] == pytest.approx(np.mean(t.user_attrs["per_example"]["digits_0_4"]))
    worker = study.runner.worker
    for t in pruned[:3]:
        stage = t.user_attrs["stage"]
        assert stage < 3 and t.user_attrs["examples_scored"] == steps[stage]
        assert sorted(t.intermediate_values) == steps[: stage + 1]
        assert t.user_attrs["racing"].startswith("bound (bernstein_serfling): after") and t.values is None
        # independent truth: the same candidate scored in one full pass, read at the indices recorded
        from evomerge.recipe.model import Recipe

        full = worker.evaluate(Candidate(key="x", recipe=Recipe.model_validate(t.user_attrs["recipe"])))
        for task, idx in t.user_attrs["scored_indices"].items():
            assert len(idx) == counts[0 if task == "digits_0_4" else 1][stage]
            np.testing.assert_array_equal(t.user_attrs["per_example"][task], np.asarray(full.per_example[task])[idx])
            assert t.user_attrs["objectives"][task] == pytest.approx(np.mean(t.user_attrs["per_example"][task]))
        assert t.intermediate_values[steps[stage]] == pytest.approx(study.score(t.user_attrs["objectives"]))


def test_cma_is_told_the_partial_estimate_and_the_front_holds_only_fully_scored_trials(cma_run):
    study, summary, told = cma_run
    by_key = {r.key: r for r in study.store.records()}
    from evomerge.study.record import genome_key

    n_pruned_told = 0
    for genomes, values in told:
        for g, v in zip(genomes, values, strict=True):
            rec = by_key[genome_key(np.asarray(g))]
            assert v == [pytest.approx(study.score(rec.objectives))]  # pruned: the running means' scalarisation
            n_pruned_told += rec.status == "pruned"
    assert n_pruned_told == summary.n_pruned
    ok = {r.number for r in study.store.records() if r.status == "ok"}
    assert summary.front and set(summary.front) <= ok and summary.best_number in ok


def test_tpe_is_told_pruned_trials_with_their_intermediate_values(tmp_path):
    study = Study.create(_config(tmp_path, "tpe", ["digits_0_4"], 14, stages=[0.25, 1.0]))
    try:
        summary = study.run()
        private = study.strategy.study.get_trials(deepcopy=False)
        recorded = {t.number: t for t in study.store.study.get_trials(deepcopy=False)}
        assert summary.n_pruned > 0
        states = [t.state for t in private]
        assert states.count(optuna.trial.TrialState.PRUNED) == summary.n_pruned
        for t in private:
            if t.state == optuna.trial.TrialState.PRUNED:
                assert t.intermediate_values == {182: pytest.approx(t.values[0])}  # stage 1 of 2: 182 examples
        assert sorted(s.name for s in states) == sorted(t.state.name for t in recorded.values())
    finally:
        study.close()


def test_a_pruned_trial_cannot_be_exported_as_if_it_were_scored(cma_run, tmp_path):
    from evomerge.errors import ConfigError
    from evomerge.export.run import export_run

    study, summary, _ = cma_run
    n = next(r.number for r in study.store.records() if r.status == "pruned")
    with pytest.raises(ConfigError, match=f"trial {n} was stopped by racing after"):
        export_run(study.run_dir, tmp_path / "out", trials=[n])
    assert not (tmp_path / "out").exists()
    report = export_run(study.run_dir, tmp_path / "front")  # the front: fully scored trials only
    assert {t.number for t in report.trials} == set(summary.front)


def test_a_redirected_run_logs_a_pruned_trial_as_pruned_not_failed():
    import io

    from rich.console import Console

    from evomerge.exec.base import EvalResult
    from evomerge.study.display import trial_lines
    from evomerge.study.study import Progress

    buf = io.StringIO()
    update = trial_lines(Console(file=buf, width=200), 10, every_s=0.0)
    last = EvalResult(key="k", status="pruned", objectives={"a": 0.1}, racing={"examples_scored": 91})
    update(Progress(done=3, budget=10, best=0.8, elapsed_s=3.0, wall_budget_s=None, failed=0, last=last,
                    last_trial=2, last_score=None))
    assert "trial 2: score pruned after 91 examples · best 0.8" in buf.getvalue()
