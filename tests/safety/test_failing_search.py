"""Defect 6 (b, c): a search whose every candidate failed spent its whole budget, then crashed in
`finalize` (argmax of an empty sequence); `status` said "best score None"; `export` exited 0 with an
empty front.csv.

Now the first K candidates failing with one error stop the run with that error (exit 2, the traceback
printed), the run resumes after the fix, and finalize/status/export/report say in one line that
there is no successful trial (non-zero where nothing was produced).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from safety_helpers import cli, error_line, write_config

from evomerge.exec.function import FunctionRunner
from evomerge.study.breaker import Breaker, NoSuccessError, SearchFailingError, error_signature
from evomerge.study.config import RunConfig
from evomerge.study.study import Study


def recorded(run_dir: Path) -> tuple[int, int]:
    """(trials, failed trials) in RUN/study.db."""
    con = sqlite3.connect(f"file:{run_dir / 'study.db'}?mode=ro", uri=True)
    try:
        states = [s for (s,) in con.execute("SELECT state FROM trials")]
    finally:
        con.close()
    return len(states), sum(s == "FAIL" for s in states)


def test_all_failing_search_stops_early_with_its_error_and_resumes_after_the_fix(tmp: Path) -> None:
    cfg = write_config(tmp, "broken", target="scorers:fails_until_fixed", evaluations=40)
    run_dir = tmp / "broken"
    res = cli("run", str(cfg), "--no-test", SAFETY_BROKEN="1")
    assert res.returncode == 2
    assert "Traceback" in res.stderr and 'raise RuntimeError("scorer unreachable' in res.stderr  # in the log
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("error:"))
    assert "first 5 candidates all failed with: RuntimeError: scorer unreachable: connection refused" in line
    assert f"evomerge resume {run_dir}" in line
    assert recorded(run_dir) == (5, 5)  # not the whole budget of 40

    status = cli("status", str(run_dir))
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip().splitlines() == [
        "5 trials of 40, 5 failed; no successful trial: all 5 failed (last error: RuntimeError: scorer "
        "unreachable: connection refused)"]
    for args in (("export", str(run_dir), str(tmp / "exported")), ("report", str(run_dir))):
        res = cli(*args)
        assert res.returncode == 2
        assert "no successful trial: all 5 failed" in error_line(res)
    assert not (tmp / "exported").exists() and not (run_dir / "report").exists()

    fixed = cli("resume", str(run_dir), "--no-test")  # SAFETY_BROKEN unset: the user fixed the scorer
    assert fixed.returncode == 0, fixed.stderr
    assert recorded(run_dir) == (40, 5)  # the failed five stay recorded; the budget is exact


def config(tmp: Path, name: str, **budget: object) -> RunConfig:
    return RunConfig.from_dict({
        "name": name, "space": {"kind": "box", "dim": 3}, "strategy": {"name": "cma"},
        "objectives": [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": 12, **budget}, "seed": 1, "output": str(tmp / name),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"}})


def differently(genome: np.ndarray, recipe: object) -> dict[str, float]:
    raise ValueError(f"bad candidate {float(genome[0]):.9f}")


def same_error(genome: np.ndarray, recipe: object) -> dict[str, float]:
    raise RuntimeError("scorer unreachable")


def test_failures_that_differ_do_not_stop_the_search_but_leave_nothing_to_finalize(tmp: Path) -> None:
    study = Study.create(config(tmp, "mixed"), runner=FunctionRunner(differently))
    summary = study.run()
    assert (summary.n_trials, summary.n_failed, summary.best_number) == (12, 12, None)
    with pytest.raises(NoSuccessError, match=r"no successful trial: all 12 failed \(last error: ValueError: bad"):
        study.finalize()
    assert not (tmp / "mixed" / "front.json").exists()


def test_the_breaker_can_be_switched_off(tmp: Path) -> None:
    study = Study.create(config(tmp, "off", stop_after_first_failures=None), runner=FunctionRunner(same_error))
    assert study.run().n_failed == 12


def test_the_breaker_trips_in_process_at_the_configured_count(tmp: Path) -> None:
    study = Study.create(config(tmp, "three", stop_after_first_failures=3), runner=FunctionRunner(same_error))
    with pytest.raises(SearchFailingError, match="first 3 candidates all failed with: RuntimeError: scorer"):
        study.run()
    assert len(study.store.records()) == 3


def test_once_a_trial_succeeded_the_breaker_never_trips(tmp: Path) -> None:
    breaker = Breaker(2, tmp)
    breaker.observe(True, None)
    for _ in range(5):
        breaker.observe(False, "Traceback ...\nRuntimeError: down")
    fresh = Breaker(2, tmp)
    fresh.observe(False, "x\nRuntimeError: down")
    with pytest.raises(SearchFailingError):
        fresh.observe(False, "y\nRuntimeError: down")
    assert error_signature("Traceback (most recent call last):\n  File ...\nKeyError: 'x'\n") == "KeyError: 'x'"
