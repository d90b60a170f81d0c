"""What a new user meets first: `--help` without torch, a log line per trial when output is redirected,
the baselines beside the result, no optuna chatter, a hypervolume that says where its reference is from,
and run folders that work from any directory."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from safety_helpers import cli, env, write_config

from evomerge.exec.base import EvalResult
from evomerge.study.config import RunConfig
from evomerge.study.display import baselines_table, hypervolume_text, trial_lines
from evomerge.study.study import Progress, Study


def imported_modules(*args: str) -> set[str]:
    trace = subprocess.run([sys.executable, "-X", "importtime", "-m", "evomerge", *args], capture_output=True,
                           text=True, env=env(), timeout=120, check=True).stderr
    return {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["zoo", "--help"], ["run", "--help"]])
def test_help_does_not_import_torch(args: list[str]) -> None:
    mods = imported_modules(*args)
    assert "evomerge.cli" in mods and "torch" not in mods and "transformers" not in mods


def test_the_zoo_names_in_the_help_are_the_zoo() -> None:
    from evomerge.zoo.build import ZOO
    from evomerge.zoo.cli import ZOO_NAMES

    assert tuple(ZOO) == ZOO_NAMES


def progress(done: int, trial: int, score: float | None, best: float | None, failed: int) -> Progress:
    last = EvalResult(key=str(trial), status="ok" if score is not None else "failed")
    return Progress(done=done, budget=10, best=best, elapsed_s=6.0 * done, wall_budget_s=None, failed=failed,
                    last=last, last_trial=trial, last_score=score)


def test_a_redirected_log_gets_one_line_per_trial_at_a_bounded_rate() -> None:
    buf = io.StringIO()
    update = trial_lines(Console(file=buf, width=80), 10, every_s=3600.0)
    update(progress(1, 0, -0.0319123, -0.0319123, 0))
    update(progress(2, 1, None, -0.0319123, 1))  # within the interval: not printed
    update(progress(10, 9, -0.5, -0.0211, 1))  # the last trial is always printed
    assert buf.getvalue().splitlines() == [
        "trial 0: score -0.03191 · best -0.03191 · 0 failed · 10.0 evals/min · 1/10",
        "trial 9: score -0.5 · best -0.0211 · 1 failed · 10.0 evals/min · 10/10"]


def test_a_redirected_run_logs_trial_lines(tmp: Path) -> None:
    res = cli("run", str(write_config(tmp, "logged", evaluations=6)), "--no-test")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("trial ")]
    assert lines and lines[-1].endswith("6/6") and " evals/min · " in lines[-1]


def test_status_and_export_print_no_optuna_lines_and_a_readable_hypervolume(tmp: Path) -> None:
    cfg = write_config(tmp, "quiet", evaluations=6)
    assert cli("run", str(cfg), "--no-test").returncode == 0
    outputs = {}
    for args in (("status", str(tmp / "quiet")), ("export", str(tmp / "quiet"), str(tmp / "out"))):
        res = cli(*args)
        assert res.returncode == 0, res.stderr
        assert "Using an existing study" not in res.stdout + res.stderr
        outputs[args[0]] = res.stdout
    line = next(ln for ln in outputs["status"].splitlines() if ln.startswith("hypervolume "))
    assert line.startswith("hypervolume 0.") and ", reference 10 % beyond the worst value seen per objective: [" in line
    assert len(line.split(": [")[1].rstrip("]")) <= 6  # 4 significant digits, not 0.6197531259519168


def test_the_hypervolume_text_says_where_the_reference_comes_from(tmp: Path) -> None:
    data = {"name": "hv", "space": {"kind": "box", "dim": 2}, "objectives": [{"name": "sphere",
            "direction": "minimize"}], "budget": {"evaluations": 4}, "output": str(tmp / "hv"),
            "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"}}
    mine = Study.create(RunConfig.from_dict({**data, "reference_point": [2.0]}))
    summary = mine.run()
    assert hypervolume_text(mine, summary) == (f"hypervolume {summary.hypervolume:.4g}, reference_point from the "
                                               "config: [2]")
    table = baselines_table(mine, summary)
    assert table is None  # no baselines were configured
    summary.test_results = {"split": "test", "trials": {}, "baselines": {"base": {
        "train": {"status": "ok", "score": -0.5, "objectives": {"sphere": 0.5}},
        "test": {"status": "ok", "score": -0.6, "objectives": {"sphere": 0.6}}}}}
    buf = io.StringIO()
    Console(file=buf, width=200).print(baselines_table(mine, summary))
    text = buf.getvalue()
    assert "searched vs baselines" in text and "(searched)" in text
    row = next(ln for ln in text.splitlines() if "│ base" in ln)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["base", "-0.5", "-0.6", "0.6"]


def test_relative_paths_are_stored_resolved_so_commands_work_from_any_directory(tmp: Path) -> None:
    work = tmp / "work"
    work.mkdir()
    cfg = {"name": "rel", "space": {"kind": "box", "dim": 2}, "objectives": [{"name": "sphere",
           "direction": "minimize"}], "budget": {"evaluations": 4}, "output": "runs/rel",
           "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"},
           "baselines": [{"name": "src", "recipe": {"models": [{"model": "zoo/m"}], "merge_method": "passthrough"}}]}
    (work / "zoo" / "m").mkdir(parents=True)
    (work / "rel.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("run", "rel.yaml", "--no-test", cwd=work).returncode == 0
    stored = yaml.safe_load((work / "runs" / "rel" / "config.yaml").read_text())
    assert stored["output"] == str(work / "runs" / "rel")
    assert stored["baselines"][0]["recipe"]["models"][0]["model"] == str(work / "zoo" / "m")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    for args in (("resume", str(work / "runs" / "rel"), "--no-test"), ("status", str(work / "runs" / "rel"))):
        res = cli(*args, cwd=elsewhere)
        assert res.returncode == 0, res.stderr
    assert not (elsewhere / "runs").exists()
