"""The Ray runner on a local loopback Ray: streaming, failures, restarts, bad input, observability."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray_targets
from ray_helpers import LOOPBACK, listening_addresses

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate
from evomerge.exec.ray_runner import RayRunner


def cands(rows) -> list[Candidate]:
    return [Candidate(key=f"c{i}", recipe=None, genome=np.asarray(g, dtype=np.float64)) for i, g in enumerate(rows)]


def test_a_ray_instance_evomerge_starts_listens_on_loopback_only(local_ray):
    import ray

    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    addresses = listening_addresses(ray_pids)
    assert addresses, "expected the Ray processes to listen somewhere"
    assert addresses <= LOOPBACK, addresses


@pytest.mark.parametrize("import_ray_first", [False, True])
def test_a_fresh_process_starting_ray_through_evomerge_listens_on_loopback_only(no_ray, import_ray_first):
    """As the CLI runs: no RAY_* variable set beforehand (Ray reads it at import) and, in the second case,
    Ray imported before evomerge. Every socket of the instance must be on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    probe = [sys.executable, str(Path(__file__).parent / "ray_loopback_probe.py")]
    out = subprocess.run(probe + (["--import-ray-first"] if import_ray_first else []), env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    addresses = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert addresses, "expected the Ray processes to listen somewhere"
    assert addresses <= LOOPBACK, addresses


def test_results_are_yielded_as_they_complete_each_exactly_once(local_ray):
    with RayRunner(target=ray_targets.timed_sphere, workers=2, max_in_flight=2) as runner:
        # c0 is long; c1..c3 are short and finish on the other worker first
        results = list(runner.evaluate(cands([[0.8, 0.1], [0.05, 0.2], [0.05, 0.3], [0.05, 0.4]])))
    keys = [r.key for r in results]
    assert sorted(keys) == ["c0", "c1", "c2", "c3"]
    assert keys[0] != "c0" and keys.index("c0") > 0  # out of order: the slow one is not first
    assert all(r.ok for r in results)
    assert {r.worker for r in results} == {"ray-0", "ray-1"}
    for r in results:
        assert r.details["node_ip"] == "127.0.0.1" and r.details["node_id"]
        assert r.objectives["pid"] == r.details["pid"]
        assert r.fitness_seconds > 0


def test_an_exception_inside_a_candidate_fails_that_candidate_only(local_ray):
    with RayRunner(target=ray_targets.flaky_sphere, workers=2) as runner:
        results = {r.key: r for r in runner.evaluate(cands([[0.1, 0.1], [0.9, 0.1], [0.2, 0.3], [0.7, 0.0]]))}
        assert {k for k, r in results.items() if not r.ok} == {"c1", "c3"}
        assert "this candidate breaks the merge" in results["c1"].error
        assert results["c0"].objectives["sphere"] == pytest.approx(0.04 + 0.04)
        assert all(s.status == "idle" and s.restarts == 0 for s in runner.worker_states())


def test_a_killed_worker_restarts_and_its_candidates_are_resubmitted(local_ray):
    rng = np.random.default_rng(0)
    genomes = rng.uniform(0, 0.5, size=(12, 3))
    with RayRunner(target=ray_targets.slow_sphere, workers=2) as runner:
        seen = []
        for result in runner.evaluate(cands(genomes)):
            seen.append(result)
            if len(seen) == 2:
                busy = [s for s in runner.worker_states() if s.status == "busy"]
                os.kill(busy[0].pid, signal.SIGKILL)
                victim = busy[0].name
        assert runner.wait_ready(60)
        states = {s.name: s for s in runner.worker_states()}
    assert sorted(r.key for r in seen) == sorted(f"c{i}" for i in range(12))  # none lost, none twice
    assert all(r.ok for r in seen)
    for r in seen:
        assert r.objectives["sphere"] == pytest.approx(float(np.sum((genomes[int(r.key[1:])] - 0.3) ** 2)))
    # what the victim held came back once each, re-run elsewhere (charged only if it was alone there)
    retried = [r for r in seen if r.details["attempts"] > 1]
    assert 1 <= len(retried) <= 2
    for r in retried:
        losses = r.details.get("worker_failures", []) + r.details.get("requeued_after", [])
        assert len(losses) == 1 and victim in losses[0] and r.worker != victim
    assert states[victim].restarts == 1 and states[victim].status == "idle"


def test_a_candidate_that_kills_every_worker_is_failed_after_n_losses_with_all_errors(local_ray):
    genomes = [[0.1, 0.1], [0.95, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.1]]
    with RayRunner(target=ray_targets.lethal_sphere, workers=2, max_worker_failures=2) as runner:
        results = {r.key: r for r in runner.evaluate(cands(genomes))}
        assert runner.wait_ready(60)
        states = runner.worker_states()
    assert sorted(results) == [f"c{i}" for i in range(5)]
    bad = results["c1"]
    assert bad.status == "failed" and len(bad.details["worker_failures"]) == 2
    assert bad.details["attempts"] == 2 + len(bad.details.get("requeued_after", []))
    assert bad.error.count("was lost while evaluating this candidate") == 2
    assert "ray-0" in bad.error and "ray-1" in bad.error  # charged on two different workers
    assert all(results[k].ok and "worker_failures" not in results[k].details for k in results if k != "c1")
    assert 2 <= sum(s.restarts for s in states) <= 3  # one more if it first died beside a pipelined neighbour


def test_submit_and_poll_keep_the_pool_full_and_return_each_result_once(local_ray):
    rng = np.random.default_rng(1)
    with RayRunner(target=ray_targets.slow_sphere, workers=2, max_in_flight=3) as runner:
        assert runner.capacity == 3
        submitted, got, n = 0, [], 10
        while len(got) < n:
            free = min(runner.capacity - runner.pending, n - submitted)
            if free > 0:
                runner.submit([Candidate(key=f"s{submitted + i}", recipe=None, genome=rng.uniform(size=2))
                               for i in range(free)])
                submitted += free
            assert runner.pending <= runner.capacity
            got += runner.poll(timeout=10)
        assert runner.poll(timeout=0.1) == [] and runner.pending == 0
    assert sorted(r.key for r in got) == sorted(f"s{i}" for i in range(n))


def test_results_of_an_abandoned_evaluate_are_never_yielded_later(local_ray):
    with RayRunner(target=ray_targets.slow_sphere, workers=1, max_in_flight=2) as runner:
        gen = runner.evaluate(cands(np.full((4, 2), 0.2)))
        first = next(gen)
        gen.close()  # the Study stops listening when its wall time is up
        later = list(runner.evaluate([Candidate(key="after", recipe=None, genome=np.zeros(2))]))
    assert first.key == "c0" and [r.key for r in later] == ["after"]


def test_an_unreachable_cluster_address_fails_within_seconds():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at 127.0.0.1:{port}"):
        RayRunner(target=ray_targets.slow_sphere, address=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        RayRunner(target=ray_targets.slow_sphere, address=f"ray://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 15


def test_asking_for_more_gpus_than_the_cluster_has_names_what_is_available(local_ray):
    with pytest.raises(ConfigError, match=r"2 worker\(s\) x 1 GPU = 2 GPU\(s\), but the Ray cluster has 0 GPU"):
        RayRunner(target=ray_targets.slow_sphere, workers=2, gpus_per_worker=1)
    with pytest.raises(ConfigError, match=r"3 worker\(s\) x 1 CPU.*has 2 CPU"):
        RayRunner(target=ray_targets.slow_sphere, workers=3)


def test_batched_calls_keep_exact_accounting_when_a_candidate_in_a_batch_kills_its_worker(local_ray):
    genomes = np.full((12, 2), 0.2)
    genomes[5, 0] = 0.95  # lethal, inside the first batches
    with RayRunner(target=ray_targets.lethal_sphere, workers=2, batch_size=4, max_worker_failures=1) as runner:
        assert runner.capacity == 4 * 4
        results = {}
        for r in runner.evaluate(cands(genomes)):
            assert r.key not in results
            results[r.key] = r
    assert sorted(results) == sorted(f"c{i}" for i in range(12))
    assert results["c5"].status == "failed" and len(results["c5"].details["worker_failures"]) == 1
    assert results["c5"].details["requeued_after"]  # first lost with its batch, uncharged; then alone, charged
    # its batch mates were re-queued uncharged and ran alone
    assert all(r.ok and "worker_failures" not in r.details for k, r in results.items() if k != "c5")


def test_adaptive_batching_packs_millisecond_candidates_into_fewer_calls(local_ray):
    with RayRunner(target=ray_targets.flaky_sphere, workers=1) as runner:
        assert runner._batch() == 1  # nothing timed yet
        results = list(runner.evaluate(cands(np.full((40, 2), 0.2))))
        assert runner._batch() > 1 and runner.capacity > runner.max_in_flight
    assert sorted(r.key for r in results) == sorted(f"c{i}" for i in range(40)) and all(r.ok for r in results)


def test_from_config_runs_an_importable_function_target_on_the_actors(local_ray):
    from evomerge.study.config import RunConfig

    config = RunConfig.from_dict({
        "name": "cfg", "space": {"kind": "box", "dim": 2}, "objectives": [{"name": "sphere", "direction": "minimize"}],
        "budget": {"evaluations": 4}, "sources": {"models": ["unused-with-a-target"]},
        "runner": {"type": "ray", "target": "evomerge.exec.synthetic:sphere", "workers": 2, "max_in_flight": 3}})
    with RayRunner.from_config(config, []) as runner:
        assert runner.workers == 2 and runner.max_in_flight == 3
        results = list(runner.evaluate(cands([[0.3, 0.3], [0.5, 0.1]])))
    values = {r.key: r.objectives["sphere"] for r in results}
    assert values == {"c0": pytest.approx(0.0), "c1": pytest.approx(0.08)}
