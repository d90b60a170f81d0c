"""The report of a raced run: trials racing stopped (Optuna PRUNED, as issue 17's interface records them) are
drawn as such, with the examples they cost, and never on the front or in the best-score curve."""

from __future__ import annotations

import re

import numpy as np
import optuna
import pytest

from evomerge.exec.base import EvalResult
from evomerge.report import collect, write_report
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

FULL = 120  # train examples of one full evaluation in this run


@pytest.fixture(scope="module")
def raced(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A run whose trials are recorded as racing records them: fully scored ones and stopped ones."""
    out = tmp_path_factory.mktemp("runs")
    study = Study.create(RunConfig.from_dict({
        "name": "raced", "space": {"kind": "box", "dim": 2}, "strategy": {"name": "random"},
        "objectives": [{"name": "sphere", "direction": "minimize"}], "budget": {"evaluations": 4}, "seed": 0,
        "output": str(out / "raced"), "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"}}))
    # trial 0: fully scored (the best); trials 1, 2: stopped; trial 3: fully scored, worse
    for number, value in ((0, 0.001), (3, 0.5)):
        study.store.add(EvalResult(key=f"k{number}", status="ok", objectives={"sphere": value},
                                   per_example={"t": np.zeros(FULL)}), np.array([0.3, 0.3]), None,
                        {"examples_scored": FULL})
        if number == 0:
            for stage, (examples, running) in enumerate(((15, -0.9), (30, -0.8))):
                study.store.study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.PRUNED, intermediate_values={examples: running},
                    user_attrs={"key": f"p{stage}", "examples_scored": examples, "stage": stage, "status": "pruned",
                                "racing": f"bound: mean difference < 0 at 95% after {examples} examples",
                                "recipe": {"merge_method": "linear", "models": [{"model": f"m{stage}"}]}}))
    return study


def test_stopped_trials_are_read_with_their_cost_and_kept_off_the_front_and_the_best_curve(raced):
    data = collect(raced.run_dir)
    assert [(s.trial, s.stage, s.examples, s.value) for s in data.stopped] == [(1, 0, 15, -0.9), (2, 1, 30, -0.8)]
    assert data.stopped[0].reason.startswith("bound: ")
    assert {p.trial for p in data.points} == {0, 3}
    assert [p.trial for p in data.front] == [0]
    assert data.failed == 0
    assert data.full_examples == FULL  # the most a fully scored trial scored
    assert data.examples_saved == (FULL - 15) + (FULL - 30)
    assert data.curve_evals == [1, 2, 3, 4]  # stopped trials are evaluations
    assert data.curve_examples == [120, 135, 165, 285]
    assert data.curve_best == pytest.approx([-0.001] * 4)  # stops and a worse trial leave the best where it was


def test_the_page_shows_the_stopped_trials_with_the_examples_they_cost(raced, tmp_path):
    page = write_report(raced.run_dir, tmp_path / "rep", png=False).html.read_text()
    assert "2 scored trials, 0 failed, 2 stopped early by racing" in page
    assert "2 of 4 evaluations were stopped early by racing; they scored 45 train examples instead of 240" in page
    assert "195 examples saved" in page
    table = page[page.index("<table class='stopped'>"):]
    table = table[:table.index("</table>")]
    assert re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", table) == [("1", "0", "15"),
                                                                                      ("2", "1", "30")]
    assert all(f'id="fig{i}"' in page for i in range(4))  # the racing figure joins the three
    assert '"name":"stopped early (running score)"' in page and '"name":"stopped early"' in page
    assert '"2":{"merge_method":"linear"' in page.replace(" ", "")  # a stopped trial's recipe opens on click


def test_a_run_without_racing_has_no_racing_section(tmp_path):
    study = Study.create(RunConfig.from_dict({
        "name": "plain", "space": {"kind": "box", "dim": 2}, "strategy": {"name": "random"},
        "objectives": [{"name": "sphere", "direction": "minimize"}], "budget": {"evaluations": 3}, "seed": 0,
        "output": str(tmp_path / "plain"), "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"}}))
    study.run()
    data = collect(study.run_dir)
    assert data.stopped == [] and data.examples_saved in (None, 0)
    page = write_report(study.run_dir, tmp_path / "rep", png=False).html.read_text()
    assert "<h2>Racing</h2>" not in page and "stopped early" not in page and 'id="fig3"' not in page


def test_a_real_raced_search_on_the_digits_zoo_is_reported_as_its_storage_holds_it(tmp_path):
    """TPE with racing (the normal test) on the committed digits zoo: the report's stopped trials are the storage's
    PRUNED trials, each with the examples it cost, and a full evaluation is the whole train split."""
    from evomerge.zoo.digits import digits_split

    zoo = "zoo/digits"
    study = Study.create(RunConfig.from_dict({
        "name": "digits-raced", "output": str(tmp_path / "run"),
        "sources": {"base": f"{zoo}/init", "models": [f"{zoo}/expert_0_4", f"{zoo}/expert_5_9"]},
        "space": {"kind": "ps", "method": "task_arithmetic", "ranges": {"weight": [0.0, 2.0]}},
        "strategy": {"name": "tpe"}, "objectives": [{"task": "fitness/digits/digits_all.yaml"}],
        "budget": {"evaluations": 16}, "seed": 0, "runner": {"type": "local", "device": "cpu", "threads": 1},
        "racing": {"rule": "bound", "test": "normal"}}))
    study.run()
    stored = optuna.load_study(study_name="digits-raced", storage=f"sqlite:///{study.run_dir / 'study.db'}").trials
    pruned = {t.number: t.user_attrs["examples_scored"] for t in stored if t.state == optuna.trial.TrialState.PRUNED}
    assert pruned, "the seeded run stops some candidates early (else this test checks nothing)"
    n_train = len(digits_split()[1])
    data = collect(study.run_dir)
    assert {s.trial: s.examples for s in data.stopped} == pruned
    assert all(0 < e < n_train for e in pruned.values())
    assert data.full_examples == n_train
    assert data.examples_saved == sum(n_train - e for e in pruned.values())
    assert data.curve_examples[-1] == sum(t.user_attrs["examples_scored"] for t in stored)
    assert not {p.trial for p in data.front} & set(pruned)
