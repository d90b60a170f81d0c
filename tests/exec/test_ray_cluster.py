"""A search on a real multi-node Ray cluster on this machine (127.0.0.1 only) survives a killed worker and a lost node.

``ray.cluster_utils.Cluster`` (what Ray's own test-suite uses) starts a head
and further nodes as real raylet processes; with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set by conftest) they all bind
127.0.0.1. The run's Optuna storage is the judge: every trial recorded
exactly once, every value right.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import psutil
import pytest
import ray_targets
from ray_helpers import LOOPBACK, OBJECT_STORE, listening_addresses

from evomerge.exec.ray_runner import RayRunner
from evomerge.study.config import RunConfig
from evomerge.study.study import Progress, Study

BUDGET = 35  # five CMA generations of 7 (d = 3)


@pytest.fixture
def cluster(no_ray) -> Iterator[Any]:
    """A head and two more nodes, one logical CPU each; torn down whatever happens."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


@pytest.mark.parametrize("strategy", ["cma", "tpe"])  # generational, then streaming (results told as they come)
def test_a_search_survives_a_killed_worker_and_a_lost_node_recording_every_trial_once(cluster, tmp_path, strategy):
    import ray

    runner = RayRunner(target=ray_targets.slow_sphere, address=cluster.address, workers=3, max_worker_failures=3)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 3 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        assert listening_addresses({p.pid for p in psutil.Process().children(recursive=True)}) <= LOOPBACK
        assert len({s.node_id for s in runner.worker_states()}) == 3  # one worker per node

        driver_raylet = ray._private.worker.global_worker.node._raylet_socket_name
        events: dict[str, Any] = {}
        seen: list[Any] = []

        def chaos(p: Progress) -> None:
            if p.last is not None:
                seen.append(p.last)
            if p.done >= 8 and "killed" not in events:
                busy = next(s for s in runner.worker_states() if s.status == "busy")
                os.kill(busy.pid, signal.SIGKILL)
                events["killed"] = busy
            if p.done >= 20 and "removed" not in events:
                states = {s.node_id: s for s in runner.worker_states() if s.status == "busy"}
                node = next((n for n in cluster.worker_nodes
                             if n._raylet_socket_name != driver_raylet and n.node_id in states), None)
                if node is not None:  # else try again at the next result (e.g. a generation boundary)
                    cluster.remove_node(node)
                    events["removed"] = states[node.node_id]

        config = RunConfig.from_dict({
            "name": "chaos", "space": {"kind": "box", "dim": 3}, "strategy": {"name": strategy},
            "objectives": [{"name": "sphere", "direction": "minimize"}], "budget": {"evaluations": BUDGET},
            "seed": 3, "output": str(tmp_path / "chaos"),
            "runner": {"type": "function", "target": "evomerge.exec.synthetic:sphere"},  # the Ray runner is passed
        })
        summary = Study.create(config, runner=runner).run(on_progress=chaos)
        killed = events["killed"].name
        deadline = time.monotonic() + 60  # the run may end before the re-created worker is up: bounded wait for it
        while killed != events["removed"].name and time.monotonic() < deadline and not any(
                s.name == killed and s.restarts for s in runner.worker_states()):
            runner.wait_ready(1.0)  # pumps the runner, which notices a re-created worker as it comes up
        states = {s.name: s for s in runner.worker_states()}
    finally:
        runner.close()

    assert set(events) == {"killed", "removed"}
    assert summary.n_trials == BUDGET and summary.n_failed == 0
    stored = optuna.load_study(study_name="chaos", storage=f"sqlite:///{tmp_path / 'chaos' / 'study.db'}")
    trials = stored.get_trials(deepcopy=False)
    assert len(trials) == BUDGET
    keys = Counter(t.user_attrs["key"] for t in trials)
    assert max(keys.values()) == 1  # no trial recorded twice
    assert Counter(r.key for r in seen) == keys  # and every result handed to the Study once, all recorded
    for t in trials:
        genome = np.array(t.user_attrs["genome"])
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values[0] == pytest.approx(float(np.sum((genome - 0.3) ** 2)))
        assert t.user_attrs["worker"].startswith("ray-")
        assert ("asked" in t.user_attrs) == (strategy == "tpe")  # TPE streamed: each result told on arrival
    retried = [r for r in seen if r.details["attempts"] > 1]
    assert len(retried) >= 2  # what the killed worker and the lost node held, each re-run once elsewhere
    for r in retried:
        losses = r.details.get("worker_failures", []) + r.details.get("requeued_after", [])
        assert len(losses) == r.details["attempts"] - 1
    assert all(r.details["node_ip"] == "127.0.0.1" for r in seen)
    assert states[events["killed"].name].restarts >= 1 or events["killed"].name == events["removed"].name
    assert states[events["removed"].name].status in ("restarting", "idle", "busy")
