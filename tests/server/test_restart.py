"""End to end: `evomerge serve` on 127.0.0.1, two concurrent clients, the server killed (-9) mid-run and
started again, the study finished: no acknowledged tell lost, the front equals the storage's."""

from __future__ import annotations

import threading
import time

import numpy as np
import optuna
import pytest

from evomerge.client import EvomergeClient
from evomerge.study.archive import non_dominated

from .common import drive, zdt1_study
from .conftest import ProcessServer, free_port


def storage_front(db) -> set[int]:
    stored = optuna.load_study(study_name="e2e", storage=f"sqlite:///{db}")
    done = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    values = np.array([t.values for t in done])
    return {done[i].number for i in non_dominated(values, ["minimize", "minimize"])}


@pytest.mark.parametrize("strategy", ["cma", "nsga2"])
def test_a_study_survives_a_server_crash_mid_run_with_two_concurrent_clients(tmp_path, strategy):
    root = tmp_path / "studies"
    server = ProcessServer(root, free_port())
    server.start()
    try:
        client = EvomergeClient(server.url, timeout=10)
        budget = 36
        client.create_study(zdt1_study("e2e", strategy, evaluations=budget, lease_s=2.0))
        handed: list[int] = []
        told: dict[int, dict[str, float]] = {}
        errors: list[BaseException] = []

        def run() -> None:
            try:
                drive(EvomergeClient(server.url, timeout=10), "e2e", handed, told, patience_s=240)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(told) < budget // 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(told) < budget, "the run should still be going when the server dies"
        server.kill()
        time.sleep(0.5)
        server.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        status = client.status("e2e")
        assert status["complete"] and status["finished"] == budget and status["running"] == []
        db = root / "e2e" / "study.db"
        stored = {t.number: t for t in optuna.load_study(study_name="e2e", storage=f"sqlite:///{db}").trials}
        for number, values in told.items():  # every acknowledged tell is in the storage, as told
            assert stored[number].values == [values["f1"], values["f2"]]
        assert {t["trial"] for t in client.front("e2e")["front"]} == storage_front(db)
        # a fresh server (a second restart) reads the same finished study
        server.kill()
        server.start()
        assert EvomergeClient(server.url).status("e2e")["finished"] == budget
    finally:
        server.kill()
