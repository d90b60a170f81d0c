"""Two-stage Evo-Merging killed anywhere (both stages) resumes to exactly the trials of an uninterrupted run."""

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
from lora_helpers import ZOO

FAULTS = Path(__file__).resolve().parents[1] / "study" / "faults.py"  # the CLI with injected crashes
REPO = ZOO.parents[1]
STAGES = {"alpha": "stage1-alpha", "beta": "stage2-beta"}


def write_config(tmp: Path, name: str) -> Path:
    cfg = {
        "name": name, "output": str(tmp / name),
        "sources": {"base": str(ZOO / "base"), "models": [str(ZOO / f"lora_{s}") for s in ("math_a", "lang_b")]},
        "space": {"kind": "lora_evo", "alpha_evaluations": 12,
                  "fitness": {"tasks": [str(REPO / "fitness" / "tinylm" / f"{t}.yaml") for t in ("math_a", "lang_b")],
                              "examples": 16}},
        "strategy": {"name": "cma", "options": {"popsize": 4}},
        "objectives": [{"name": "loss", "direction": "minimize"}, {"name": "l1", "direction": "minimize",
                                                                   "weight": 0.05}],
        "budget": {"evaluations": 28}, "seed": 3, "runner": {"type": "local", "threads": 1}, "test_split": None,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, crash: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS.parent), os.environ.get("PYTHONPATH", "")])}
    if crash:
        env["EVOMERGE_CRASH_AT"] = crash
    return subprocess.run([sys.executable, str(FAULTS), *args, "--no-test"], capture_output=True, text=True, env=env,
                          timeout=timeout)


def trials(run_dir: Path, name: str) -> dict[str, list[tuple]]:
    """Per stage, (genome key, state, values) of every recorded trial in order, read-only from sqlite."""
    out: dict[str, list[tuple]] = {}
    for stage, folder in STAGES.items():
        db = run_dir / folder / "study.db"
        out[stage] = []
        if not db.exists():
            continue
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute(
                "SELECT t.trial_id, t.state, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'key' "
                "WHERE s.study_name = ? ORDER BY t.number", (f"{name}-{stage}",)).fetchall()
            for trial_id, state, key in rows:
                values = con.execute("SELECT value FROM trial_values WHERE trial_id = ? ORDER BY objective",
                                     (trial_id,)).fetchall()
                out[stage].append((json.loads(key), state, tuple(v for (v,) in values)))
        except sqlite3.OperationalError:  # tables not created yet
            pass
        finally:
            con.close()
    return out


def n_trials(run_dir: Path, name: str) -> int:
    return sum(len(v) for v in trials(run_dir, name).values())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    """An uninterrupted run: its trials per stage, its result.json and its config file."""
    tmp = tmp_path_factory.mktemp("lora_ref")
    cfg = write_config(tmp, "ref")
    res = cli("run", str(cfg))
    assert res.returncode == 0, res.stderr
    done = trials(tmp / "ref", "ref")
    assert (len(done["alpha"]), len(done["beta"])) == (12, 16)
    return done, json.loads((tmp / "ref" / "result.json").read_text()), cfg


def _same_result(a: dict, b: dict) -> None:
    for key in ("alpha", "beta", "stage1", "stage2", "test_loss"):
        assert a[key] == b[key], key


def test_crashes_in_both_stages_then_resume_give_the_uninterrupted_trials(tmp_path, reference):
    ref_trials, ref_result, _ = reference
    cfg = write_config(tmp_path, "killed")
    # stage 1 mid-generation after a record; stage 1 between a tell and its checkpoint; then stage 2 likewise
    assert cli("run", str(cfg), crash="record:3").returncode == 9
    for crash in ("checkpoint:2", "record:6", "checkpoint:2"):
        res = cli("resume", str(tmp_path / "killed"), crash=crash)
        assert res.returncode == 9, res.stderr
    progress = trials(tmp_path / "killed", "killed")
    assert len(progress["alpha"]) == 12 and 0 < len(progress["beta"]) < 16, "the crashes should reach stage two"
    res = cli("resume", str(tmp_path / "killed"))
    assert res.returncode == 0, res.stderr
    resumed = trials(tmp_path / "killed", "killed")
    for stage in STAGES:
        keys = [k for k, _, _ in resumed[stage]]
        assert len(keys) == len(set(keys)), f"an evaluation of stage {stage} was recorded twice"
    assert resumed == ref_trials
    _same_result(json.loads((tmp_path / "killed" / "result.json").read_text()), ref_result)
    assert (tmp_path / "killed" / "fused_adapter" / "adapter_model.safetensors").is_file()


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path, reference):
    ref_trials, ref_result, _ = reference
    cfg = write_config(tmp_path, "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS.parent), os.environ.get("PYTHONPATH", "")])}
    counts = []
    for i, delay in enumerate((0.05, 0.3, 0.15)):
        args = ["run", str(cfg)] if i == 0 else ["resume", str(tmp_path / "killed")]
        before = n_trials(tmp_path / "killed", "killed")
        proc = subprocess.Popen([sys.executable, str(FAULTS), *args, "--no-test"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and n_trials(tmp_path / "killed", "killed") <= before:
            time.sleep(0.02)  # wait until this process is evaluating
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(n_trials(tmp_path / "killed", "killed"))
    assert counts[0] < 28, "the first kill should land mid-run"
    res = cli("resume", str(tmp_path / "killed"))
    assert res.returncode == 0, res.stderr
    resumed = trials(tmp_path / "killed", "killed")
    assert resumed == ref_trials
    _same_result(json.loads((tmp_path / "killed" / "result.json").read_text()), ref_result)


def test_a_stage_folder_reports_its_status_and_a_bad_objective_is_refused(tmp_path, reference):
    cfg = reference[2]
    res = subprocess.run([sys.executable, "-m", "evomerge.cli", "status", str(cfg.parent / "ref" / "stage2-beta")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "16 trials of 16" in res.stdout
    bad = yaml.safe_load(cfg.read_text())
    bad["objectives"] = [{"name": "accuracy", "direction": "maximize"}]
    bad["output"] = str(tmp_path / "bad")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = cli("run", str(tmp_path / "bad.yaml"))
    assert res.returncode == 2 and "'loss'" in res.stderr + res.stdout
