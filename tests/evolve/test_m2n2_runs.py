"""M2N2 end to end: a real SIGKILL mid-run on digits resumes to the uninterrupted run's archive bit for
bit, with no child evaluated twice; and a few children on tinylm through ModelTasksProblem."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.evolve.driver import JOURNAL, SNAPSHOT, evolve, load_snapshot
from evomerge.evolve.m2n2 import M2N2
from evomerge.evolve.problem import ModelTasksProblem

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).with_name("m2n2_digits_job.py")
CHILDREN = 1500


def load_job():
    spec = importlib.util.spec_from_file_location("m2n2_digits_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(run_dir: Path, calls: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(JOB), str(run_dir), str(CHILDREN), str(calls)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_sigkill_mid_run_resumes_to_the_uninterrupted_archive(tmp_path: Path) -> None:
    run_dir, calls_file = tmp_path / "run", tmp_path / "calls.txt"
    proc = start(run_dir, calls_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        journal = run_dir / JOURNAL
        if (run_dir / SNAPSHOT).exists() and journal.exists() and journal.stat().st_size > 0 \
                and len(read_calls(calls_file)) >= 300:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the digits run made no snapshot within 120 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_calls(calls_file)
    assert len(before) < CHILDREN, "the run finished before the kill; raise CHILDREN"

    resumed = start(run_dir, calls_file)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()

    job = load_job()
    reference, evaluate = job.build()
    evolve(reference, evaluate, tmp_path / "reference", children=CHILDREN, snapshot_every_s=1e9)
    state = load_snapshot(run_dir)["algorithm"]
    ref_state = reference.state_dict()
    assert state["n_told"] == ref_state["n_told"] == CHILDREN
    for key in ("genomes", "scores"):
        assert state["algorithm"][key].tobytes() == ref_state["algorithm"][key].tobytes()
    assert state["algorithm"]["rng"] == ref_state["algorithm"]["rng"]

    calls = read_calls(calls_file)
    assert sorted(set(calls)) == list(range(CHILDREN)), "a child was never evaluated"
    # only the child whose evaluation the kill cut short (never journaled) may have been evaluated twice
    repeated = [i for i in set(calls) if calls.count(i) > 1]
    assert len(calls) == CHILDREN + len(repeated) and repeated in ([], [before[-1]])


def test_m2n2_merges_tinylm_experts_through_model_tasks(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    zoo, tasks = ROOT / "zoo" / "tinylm", ROOT / "fitness" / "tinylm"
    problem = ModelTasksProblem(zoo / "math_a", [tasks / f"{t}.yaml" for t in ("math_a", "lang_b", "list_a")])
    experts = [problem.genome_of(zoo / name) for name in ("math_a", "lang_b", "list_a")]
    n = problem.score(experts[0]).per_example.size
    algo = M2N2(experts, n, seed=0, archive_size=3)
    evaluated: list[dict] = []

    def evaluate(child):
        evaluated.append(child.info)
        return problem.score(child.genome).per_example

    progress = evolve(algo, evaluate, tmp_path / "run", children=5)
    assert progress.children == 5 and [i.get("initial") for i in evaluated[:3]] == [0, 1, 2]
    for info in evaluated[3:]:
        p1, p2 = info["parents"]
        assert p1 != p2 and 0 <= info["split"] < problem.layout.size and 0 <= info["w"] < 1
    assert algo.size == 3 and algo.scores.shape == (3, n)
    best = algo.best_index()
    np.testing.assert_array_equal(problem.score(algo.best_genome()).per_example, algo.scores[best])
    resumed = M2N2(experts, n, seed=0, archive_size=3)
    resumed.load_state_dict(load_snapshot(tmp_path / "run")["algorithm"])
    assert np.array_equal(resumed.genomes, algo.genomes)
