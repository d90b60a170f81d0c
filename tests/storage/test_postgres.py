"""The Optuna storage in a real PostgreSQL server: a run killed with SIGKILL and resumed loses and repeats nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from postgres_server import create_database, trials

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "tests" / "study" / "faults.py"
BUDGET = 16


def _config(tmp: Path, name: str, storage: str | None) -> Path:
    cfg = {"name": name, "space": {"kind": "box", "dim": 3}, "strategy": {"name": "tpe", "batch_size": 4},
           "objectives": [{"name": "sphere", "direction": "minimize"}], "budget": {"evaluations": BUDGET},
           "seed": 3, "output": str(tmp / name), "runner": {"type": "function", "target": "faults:slow_sphere"}}
    if storage:
        cfg["storage"] = storage
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS.parent), str(ROOT)]), "EVOMERGE_SLOW_S": "0.1"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAULTS), *args, "--no-test"], env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_a_run_on_postgres_killed_and_resumed_records_every_trial_once(postgres, tmp_path):
    ref = _cli("run", str(_config(tmp_path, "ref", None)))
    assert ref.returncode == 0, ref.stderr
    reference = optuna.load_study(study_name="ref", storage=f"sqlite:///{tmp_path / 'ref' / 'study.db'}")
    expected = [(t.user_attrs["key"], t.values) for t in reference.trials]
    assert len(expected) == BUDGET

    url = create_database(postgres, "killed")
    cfg = _config(tmp_path, "killed", url)
    counts = []
    for i, delay in enumerate((0.4, 0.3)):
        args = ["run", str(cfg)] if i == 0 else ["resume", str(tmp_path / "killed")]
        before = len(trials(postgres, "killed", "killed"))
        proc = subprocess.Popen([sys.executable, str(FAULTS), *args, "--no-test"], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # wait until it is recording
            if len(trials(postgres, "killed", "killed")) > before:
                break
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(len(trials(postgres, "killed", "killed")))
    assert counts[0] < BUDGET, "the first kill should land mid-run"
    res = _cli("resume", str(tmp_path / "killed"))
    assert res.returncode == 0, res.stderr
    got = trials(postgres, "killed", "killed")
    keys = [k for k, _, _ in got]
    assert len(keys) == len(set(keys)) == BUDGET, "a trial was lost or recorded twice"
    assert {s for _, s, _ in got} == {"COMPLETE"}
    assert [(k, list(v)) for k, _, v in got] == [(k, list(v)) for k, v in expected]  # the uninterrupted run's


def _serve(root: Path, port: int, database: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVOMERGE_DATABASE": database, "PYTHONUNBUFFERED": "1"}
    env.pop("EVOMERGE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "serve", "--storage", str(root), "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    from evomerge.client import EvomergeClient

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if EvomergeClient(f"http://127.0.0.1:{port}", timeout=2).health():
                return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("evomerge serve did not answer")


def test_the_http_api_keeps_its_trials_in_postgres_across_a_killed_server(postgres, tmp_path):
    import numpy as np
    from postgres_server import _free_port

    from evomerge.client import EvomergeClient

    url = create_database(postgres, "served")
    port = _free_port()
    client = EvomergeClient(f"http://127.0.0.1:{port}")
    server = _serve(tmp_path / "studies", port, url)
    try:
        client.create_study({"name": "api", "space": {"kind": "box", "dim": 3}, "strategy": {"name": "random"},
                             "objectives": [{"name": "sphere", "direction": "minimize"}],
                             "budget": {"evaluations": 10}})

        def score(c: dict) -> dict[str, float]:
            return {"sphere": float(np.sum((np.asarray(c["genome"]) - 0.3) ** 2))}

        first = client.ask("api", 6)
        for c in first[:4]:
            client.tell("api", c, score(c))
        server.send_signal(signal.SIGKILL)  # two asks are out, four tells acknowledged
        server.wait()
        assert [s for _, s, _ in trials(postgres, "served", "api")].count("COMPLETE") == 4
        server = _serve(tmp_path / "studies", port, url)
        assert client.status("api")["running"] == [c["trial"] for c in first[4:]]
        for c in first[4:]:
            client.tell("api", c, score(c))
        while not client.status("api")["complete"]:
            for c in client.ask("api", 4):
                client.tell("api", c, score(c))
    finally:
        server.kill()
        server.wait()
    got = trials(postgres, "served", "api")
    keys = [k for k, _, _ in got]
    assert len(keys) == len(set(keys)) == 10 and {s for _, s, _ in got} == {"COMPLETE"}
    assert not (tmp_path / "studies" / "api" / "study.db").exists()  # the trials are in PostgreSQL only
