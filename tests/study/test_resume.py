"""Durable resume: a run killed at any moment and resumed produces exactly the trials of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
# faults.py first, then the caller's PYTHONPATH: the tree under test, not only the installed evomerge
SUBPROCESS_PATH = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])


def write_config(tmp: Path, name: str, *, strategy: str = "cma", evaluations: int = 40, dim: int = 4,
                 target: str = "faults:slow_sphere", objectives: list | None = None,
                 options: dict | None = None) -> Path:
    cfg = {
        "name": name,
        "space": {"kind": "box", "dim": dim},
        "strategy": {"name": strategy, "options": options or {}, "batch_size": 4},
        "objectives": objectives or [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": evaluations},
        "seed": 7,
        "output": str(tmp / name),
        "runner": {"type": "function", "target": target},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PATH, **(env_extra or {})}
    return subprocess.run([sys.executable, str(HERE / "faults.py"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def crash_then_resume(cfg: Path, run_dir: Path, crashes: list[str]) -> list[tuple[str, str, tuple]]:
    """Run ``cfg`` dying at ``crashes[0]`` (an EVOMERGE_CRASH_AT spec), resume dying at each later one, then
    resume to the end; returns the recorded trials. Every injected crash must really happen (exit 9)."""
    res = cli("run", str(cfg), "--no-test", env_extra={"EVOMERGE_CRASH_AT": crashes[0]})
    assert res.returncode == 9, res.stderr
    for spec in crashes[1:]:
        res = cli("resume", str(run_dir), "--no-test", env_extra={"EVOMERGE_CRASH_AT": spec})
        assert res.returncode == 9, res.stderr
    res = cli("resume", str(run_dir), "--no-test")
    assert res.returncode == 0, res.stderr
    return trials(run_dir, run_dir.name)


def trials(run_dir: Path, name: str) -> list[tuple[str, str, tuple]]:
    """(genome key, state, values) of every recorded trial, in trial order.

    Read straight from the sqlite file, read-only: opening it through Optuna from the test
    while the run creates its tables races on CREATE TABLE.
    """
    db = run_dir / "study.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT t.trial_id, t.state, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'key' "
            "WHERE s.study_name = ? ORDER BY t.number", (name,)).fetchall()
        out = []
        for trial_id, state, key in rows:
            values = con.execute("SELECT value FROM trial_values WHERE trial_id = ? ORDER BY objective",
                                 (trial_id,)).fetchall()
            out.append((json.loads(key), state, tuple(v for (v,) in values)))
        return out
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


@pytest.mark.parametrize("strategy", ["cma", "tpe"])
def test_kill_at_checkpoint_and_record_points_then_resume_gives_the_uninterrupted_trials(tmp_path, strategy):
    ref_cfg = write_config(tmp_path, "ref", strategy=strategy, evaluations=40)
    res = cli("run", str(ref_cfg), "--no-test")
    assert res.returncode == 0, res.stderr
    reference = trials(tmp_path / "ref", "ref")
    assert len(reference) == 40

    # kill points: mid-batch right after a record, and between a tell and its checkpoint
    cfg = write_config(tmp_path, "killed", strategy=strategy, evaluations=40)
    resumed = crash_then_resume(cfg, tmp_path / "killed", ["record:3", "checkpoint:2", "record:5", "checkpoint:1",
                                                            "record:1"])
    keys = [k for k, _, _ in resumed]
    assert len(keys) == len(set(keys)), "an evaluation was recorded twice"
    assert resumed == reference


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path):
    slow = {"EVOMERGE_SLOW_S": "0.1"}
    ref_cfg = write_config(tmp_path, "ref", evaluations=30)
    assert cli("run", str(ref_cfg), "--no-test", env_extra=slow).returncode == 0
    reference = trials(tmp_path / "ref", "ref")

    cfg = write_config(tmp_path, "killed", evaluations=30)
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PATH, **slow}
    counts = []
    for i, delay in enumerate((0.45, 0.3, 0.75, 0.2, 0.55)):
        args = ["run", str(cfg)] if i == 0 else ["resume", str(tmp_path / "killed")]
        before = len(trials(tmp_path / "killed", "killed")) if i else 0
        proc = subprocess.Popen([sys.executable, str(HERE / "faults.py"), *args, "--no-test"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # wait until it is evaluating
            if (tmp_path / "killed" / "study.db").exists() and len(trials(tmp_path / "killed", "killed")) > before:
                break
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(len(trials(tmp_path / "killed", "killed")))
    assert counts[0] < 30, "the first kill should land mid-run"
    res = cli("resume", str(tmp_path / "killed"), "--no-test", env_extra=slow)
    assert res.returncode == 0, res.stderr
    resumed = trials(tmp_path / "killed", "killed")
    assert len({k for k, _, _ in resumed}) == len(resumed) == 30
    assert resumed == reference


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    cfg = write_config(tmp_path, "int", evaluations=40)
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PATH, "EVOMERGE_SLOW_S": "0.05"}
    proc = subprocess.Popen([sys.executable, str(HERE / "faults.py"), "run", str(cfg), "--no-test"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not trials(tmp_path / "int", "int"):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "evomerge resume" in err
    done = len(trials(tmp_path / "int", "int"))
    assert 0 < done < 40
    res = cli("resume", str(tmp_path / "int"), "--no-test")
    assert res.returncode == 0, res.stderr
    assert len(trials(tmp_path / "int", "int")) == 40


def test_a_changed_config_is_refused_with_a_diff(tmp_path):
    cfg = write_config(tmp_path, "run", evaluations=8)
    assert cli("run", str(cfg), "--no-test").returncode == 0
    changed = write_config(tmp_path, "run", evaluations=8, strategy="random")
    res = cli("run", str(changed), "--no-test")
    assert res.returncode == 2
    assert "another config" in res.stderr
    assert "-  name: cma" in res.stderr and "+  name: random" in res.stderr


def test_status_prints_the_front(tmp_path):
    cfg = write_config(tmp_path, "mo", strategy="nsga2", evaluations=16, target="faults:slow_zdt1",
                       objectives=[{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
                       options={"population_size": 8})
    assert cli("run", str(cfg), "--no-test").returncode == 0
    res = cli("status", str(tmp_path / "mo"))
    assert res.returncode == 0, res.stderr
    assert "Pareto front" in res.stdout and "16 trials of 16" in res.stdout
