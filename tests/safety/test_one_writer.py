"""Defect 1: two processes on one run folder both wrote it (715 trials for a budget of 400).

Now the first process holds an OS lock on RUN/.lock for its whole life; a second `run`,
`resume`, `evolve` or LoRA run on that folder exits 2 naming the folder and the holder's pid,
and after a `kill -9` of the holder the kernel has dropped the lock, so a resume just works.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safety_helpers import cli, env, error_line, start, write_config

from evomerge import runlock


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def n_trials(run_dir: Path) -> tuple[int, int]:
    """(trials, distinct genomes) recorded in RUN/study.db, read-only."""
    con = sqlite3.connect(f"file:{run_dir / 'study.db'}?mode=ro", uri=True, timeout=30)
    try:
        keys = [k for (k,) in con.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'key'")]
    finally:
        con.close()
    return len(keys), len(set(keys))


def has_trials(run_dir: Path) -> bool:
    try:
        return n_trials(run_dir)[0] > 0
    except sqlite3.Error:
        return False


def test_second_run_and_resume_on_a_running_folder_exit_2_naming_the_pid(tmp: Path) -> None:
    cfg = write_config(tmp, "shared", evaluations=40)
    run_dir = tmp / "shared"
    first = start("run", str(cfg), "--no-test", SAFETY_SLOW_S="2")  # still running when the others arrive
    try:
        wait_for(lambda: has_trials(run_dir))
        for args in (("resume", str(run_dir), "--no-test"), ("run", str(cfg), "--no-test")):
            res = cli(*args)
            assert res.returncode == 2, res.stderr
            line = error_line(res)
            assert str(run_dir) in line and f"pid {first.pid}" in line, line
        assert first.poll() is None  # the refusals did not disturb the writer
        first.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock, nothing stale is left
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    res = cli("resume", str(run_dir), "--no-test")
    assert res.returncode == 0, res.stderr
    assert n_trials(run_dir) == (40, 40)  # exactly the budget, no genome twice


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (as a running search would)."""
    code = ("import sys, time; from evomerge import runlock; runlock.acquire(sys.argv[1]); print('held', flush=True);"
            " time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def assert_refused_while_locked(folder: Path, *args: str) -> None:
    """``evomerge ARGS`` on ``folder`` while another process holds its lock: exit 2, naming that pid."""
    holder = hold_lock(folder)
    try:
        res = cli(*args)
        assert res.returncode == 2, res.stderr
        assert f"pid {holder.pid}" in error_line(res)
    finally:
        holder.kill()
        holder.wait()


def test_evolve_on_a_locked_folder_exits_2(tmp: Path) -> None:
    repo = Path(__file__).parents[2]
    data = yaml.safe_load((repo / "configs" / "m2n2_digits.yaml").read_text())
    data.update(output=str(tmp / "evo"), budget={"children": 4}, init={"models": [str(repo / "zoo/digits/random")]},
                tasks=[str(repo / "fitness/digits/digits_all.yaml")])
    cfg = tmp / "evo.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert_refused_while_locked(tmp / "evo", "evolve", str(cfg))


def test_lora_run_on_a_locked_folder_exits_2(tmp: Path) -> None:
    repo = Path(__file__).parents[2]
    data = yaml.safe_load((repo / "configs" / "lora_evo_tinylm.yaml").read_text())
    data["output"] = str(tmp / "lora")
    data["sources"] = {k: ([str(repo / m) for m in v] if isinstance(v, list) else str(repo / v))
                       for k, v in data["sources"].items()}
    data["space"]["fitness"]["tasks"] = [str(repo / t) for t in data["space"]["fitness"]["tasks"]]
    cfg = tmp / "lora.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert_refused_while_locked(tmp / "lora", "run", str(cfg), "--no-test")


def test_lock_is_reentrant_in_one_process_and_released_by_the_last_holder(tmp: Path) -> None:
    with runlock.folder_lock(tmp / "r") as key:
        with runlock.folder_lock(tmp / "r"):
            assert runlock.holds(key)
        assert runlock.holds(key)
    assert not runlock.holds(tmp / "r")
    assert (tmp / "r" / runlock.LOCK_FILE).is_file()  # never deleted (see the module docstring)
