"""Study configs and a resilient scoring loop shared by the API tests."""

from __future__ import annotations

import http.client
import time
import urllib.error
from typing import Any

import numpy as np

from evomerge.client import APIError, EvomergeClient
from evomerge.exec.synthetic import zdt1

DOWN = (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError, OSError)


def zdt1_study(name: str, strategy: str = "cma", evaluations: int = 24, **extra: Any) -> dict[str, Any]:
    options = {"popsize": 6} if strategy == "cma" else {"population_size": 6} if strategy == "nsga2" else {}
    return {"name": name, "space": {"kind": "box", "dim": 4}, "strategy": {"name": strategy, "options": options},
            "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
            "budget": {"evaluations": evaluations}, "seed": 3, **extra}


def score(candidate: dict[str, Any]) -> dict[str, float]:
    return zdt1(np.asarray(candidate["genome"], dtype=np.float64))


def drive(client: EvomergeClient, study: str, handed: list[int], told: dict[int, dict[str, float]],
          *, patience_s: float = 120.0) -> None:
    """Ask, score, tell until the study is complete; rides out a server that is down or restarting.

    A tell whose answer was lost is retried: 409 (already told) means the first one landed.
    """
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            reply = client.ask_raw(study, 2, wait_s=1.0)
        except DOWN:
            time.sleep(0.2)
            continue
        for cand in reply["candidates"]:
            handed.append(cand["trial"])
            values = score(cand)
            while True:
                try:
                    client.tell(study, cand, values)
                    told[cand["trial"]] = values
                    break
                except APIError as exc:
                    if exc.status == 409:  # told already (our own lost answer, or a re-handed duplicate)
                        break
                    raise
                except DOWN:
                    time.sleep(0.2)
        if reply["complete"]:
            return
        if not reply["candidates"]:
            time.sleep(0.1)
    raise TimeoutError(f"study {study} did not complete")
