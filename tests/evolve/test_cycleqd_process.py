"""CycleQD in real processes and on the real zoo: a run killed with SIGKILL and resumed ends in the same state as
an uninterrupted run, and a few children on the tinylm zoo go through ModelTasksProblem end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evomerge.evolve.driver import load_snapshot

HERE = Path(__file__).parent
ZOO = Path("zoo/tinylm")
SKILLS = ("math_a", "lang_b", "list_a")

SCRIPT = """
import sys, time
sys.path.insert(0, {here!r})
import cycleqd_synthetic as syn
from evomerge.evolve.cycleqd import CycleQD
from evomerge.evolve.driver import evolve

run_dir, log, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

def evaluate(child):
    with open(log, "a") as fh:
        fh.write(f"{{child.index}}\\n")
    time.sleep(delay)
    return syn.scores(child.genome)

evolve(CycleQD(syn.LAYOUT, syn.experts(), seed=3), evaluate, run_dir, children=80, snapshot_every_s=0.05)
"""


def run_script(script: Path, run_dir: Path, log: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(run_dir), str(log), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def logged(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert_equal_states(x, y)
        elif isinstance(x, list):
            assert len(x) == len(y), key
            for u, v in zip(x, y, strict=True):
                assert_equal_states({key: u}, {key: v})
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key
        else:
            assert x == y, key


def test_sigkill_then_resume_equals_a_straight_run(tmp_path: Path) -> None:
    script = tmp_path / "evolve_cycleqd.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    straight = run_script(script, tmp_path / "straight", tmp_path / "straight.log", 0.0)
    assert straight.wait(timeout=300) == 0, straight.stdout.read().decode()

    run, log = tmp_path / "run", tmp_path / "run.log"
    proc = run_script(script, run, log, 0.02)
    deadline = time.monotonic() + 240
    while len(logged(log)) < 30 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(logged(log)) < 80
    resumed = run_script(script, run, log, 0.0)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()

    counts = Counter(logged(log))
    assert sorted(counts) == list(range(80))
    assert sum(c - 1 for c in counts.values()) <= 1, "only the child in flight at the kill may be evaluated again"
    assert_equal_states(load_snapshot(run)["algorithm"], load_snapshot(tmp_path / "straight")["algorithm"])


@pytest.mark.skipif(not (ZOO / "base" / "model.safetensors").exists(), reason="tinylm zoo not built")
def test_a_few_tinylm_children_go_through_model_tasks_problem(tmp_path: Path) -> None:
    from evomerge.evolve.cycleqd import build_cycleqd
    from evomerge.evolve.driver import evolve
    from evomerge.evolve.problem import ModelTasksProblem

    problem = ModelTasksProblem(ZOO / "base", [f"fitness/tinylm/{s}.yaml" for s in SKILLS])
    base = problem.genome_of(ZOO / "base")
    experts = [problem.genome_of(ZOO / s) for s in SKILLS]
    algo, evaluate, to_weights = build_cycleqd(problem, base, experts, seed=0)
    progress = evolve(algo, evaluate, tmp_path, children=6)
    assert progress.children == 6 and progress.failed == 0
    for k, expert in enumerate(experts):  # the experts' scores came through ask/tell: each leads its archive
        own = problem.score(expert).per_task
        assert np.array_equal(algo.expert_scores[k], own) and own[k] == own.max() and own[k] > 0.5
    ids, weights = algo.aggregation()
    assert len(ids) == 3 and np.isclose(weights.sum(), 1.0)
    merged = problem.score(to_weights(algo.best_genome()), split="test").per_task
    assert merged.shape == (3,) and np.all((merged >= 0) & (merged <= 1))
