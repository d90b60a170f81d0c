"""Defect 7: tracebacks instead of messages. Each case below printed a FileExistsError,
PermissionError, UnpicklingError or (a resume jumping to finalize) ValueError traceback; now each
is one `error:` line naming the path and what to do, with exit 2."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safety_helpers import cli, env, error_line, write_config


def unwritable_folder(tmp: Path) -> Path:
    """A folder this process may not create entries in (root ignores modes: sysfs refuses it as well)."""
    if os.geteuid() == 0:
        return Path("/sys/evomerge-safety-test")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "run"


def test_output_that_is_an_existing_file(tmp: Path) -> None:
    (tmp / "taken").write_text("a user's file\n")
    cfg = write_config(tmp, "x", evaluations=4)
    data = yaml.safe_load(cfg.read_text())
    data["output"] = str(tmp / "taken")
    cfg.write_text(yaml.safe_dump(data))
    res = cli("run", str(cfg), "--no-test")
    assert res.returncode == 2
    assert f"{tmp / 'taken'}: the run folder is an existing file" in error_line(res)
    assert (tmp / "taken").read_text() == "a user's file\n"


def test_unwritable_output_folder(tmp: Path) -> None:
    target = unwritable_folder(tmp)
    cfg = write_config(tmp, "x", evaluations=4)
    data = yaml.safe_load(cfg.read_text())
    data["output"] = str(target)
    cfg.write_text(yaml.safe_dump(data))
    res = cli("run", str(cfg), "--no-test")
    assert res.returncode == 2
    line = error_line(res)
    assert "cannot write the run folder here" in line and "permissions" in line


@pytest.fixture
def finished_run(tmp: Path) -> Path:
    res = cli("run", str(write_config(tmp, "done", evaluations=12)), "--no-test")
    assert res.returncode == 0, res.stderr
    return tmp / "done"


def test_export_into_an_existing_file_or_an_unwritable_folder(finished_run: Path, tmp: Path) -> None:
    (tmp / "file.txt").write_text("x")
    res = cli("export", str(finished_run), str(tmp / "file.txt"))
    assert res.returncode == 2
    assert f"{tmp / 'file.txt'}: the export folder is an existing file" in error_line(res)
    res = cli("export", str(finished_run), str(unwritable_folder(tmp)))
    assert res.returncode == 2
    assert "cannot write the export folder here" in error_line(res)


def n_trials(run_dir: Path) -> tuple[int, int]:
    """(trials, distinct genomes) in RUN/study.db."""
    con = sqlite3.connect(f"file:{run_dir / 'study.db'}?mode=ro", uri=True)
    try:
        keys = [k for (k,) in con.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'key'")]
    finally:
        con.close()
    return len(keys), len(set(keys))


def test_truncated_strategy_checkpoint_on_resume(tmp: Path) -> None:
    cfg = write_config(tmp, "cut", evaluations=24, target="faults:slow_sphere")
    run_dir = tmp / "cut"
    faults = Path(__file__).parents[1] / "study" / "faults.py"  # the kill-and-resume tests' fault injector
    crashed = subprocess.run([sys.executable, str(faults), "run", str(cfg), "--no-test"], capture_output=True,
                             text=True, env=env(EVOMERGE_CRASH_AT="record:10", PYTHONPATH=str(faults.parent)),
                             timeout=120)
    assert crashed.returncode == 9, crashed.stderr  # died right after recording trial 10
    pkl = run_dir / "strategy.pkl"
    pkl.write_bytes(pkl.read_bytes()[:40])  # a damaged checkpoint (a copy cut short, a full disk)
    res = cli("resume", str(run_dir), "--no-test", PYTHONPATH=str(faults.parent))
    assert res.returncode == 2
    line = error_line(res)
    assert f"{pkl}: unreadable strategy checkpoint" in line and f"mv {pkl} {pkl}.bad" in line
    pkl.rename(pkl.with_name("strategy.pkl.bad"))  # what the message says to do
    res = cli("resume", str(run_dir), "--no-test", PYTHONPATH=str(faults.parent))
    assert res.returncode == 0, res.stderr
    assert n_trials(run_dir) == (24, 24)  # the strategy was rebuilt from the records: exact budget, no repeat


def test_study_db_deleted_under_a_checkpoint(finished_run: Path) -> None:
    (finished_run / "study.db").unlink()
    res = cli("resume", str(finished_run), "--no-test")
    assert res.returncode == 2
    line = error_line(res)
    assert f"{finished_run / 'study.db'}: missing, but {finished_run / 'strategy.pkl'}" in line
    assert "restore study.db" in line
    assert not (finished_run / "study.db").exists()  # no empty storage was made in its place
