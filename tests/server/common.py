"""Study configs and a resilient scoring loop shared by the API tests."""

from __future__ import annotations

import http.client
import time
import urllib.error
from collections.abc import Iterator
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


def aim_at_the_fuzz_study(case: Any, real: bool, number: int, names: Iterator[int], keep: tuple[str, ...]) -> None:
    """Shape one generated request: when ``real``, aim it at the existing study ``fuzz`` and its trial
    ``number``, and make a ``POST /studies`` a valid config (a fresh name from ``names``) around the fuzzed
    keys in ``keep``; an ask never waits (a blocking ask is correct but would only slow the fuzz down)."""
    if real:  # half the requests go deep: the existing study, its trials, a valid config around fuzz
        if "name" in (case.path_parameters or {}):
            case.path_parameters["name"] = "fuzz"
        if "number" in (case.path_parameters or {}):
            case.path_parameters["number"] = number
        if case.path == "/studies" and case.method == "POST" and isinstance(case.body, dict):
            fuzzed = {k: v for k, v in case.body.items() if k in keep}
            case.body = {**zdt1_study(f"f{next(names)}", "random"), **fuzzed}
    if case.path.endswith("/ask") and isinstance(case.body, dict):
        case.body["wait_s"] = 0


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
