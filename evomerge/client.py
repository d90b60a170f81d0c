"""A small Python client of `evomerge serve`: create a study, ask candidates, tell scores, read the front.

Standard library only (urllib), so a scoring harness can drive a study without installing evomerge's
server dependencies; it speaks the same JSON the OpenAPI schema (``/openapi.json``) documents.

    client = EvomergeClient("http://127.0.0.1:8765")
    client.create_study({"name": "demo", "space": {"kind": "box", "dim": 4}, ...})
    for cand in client.ask("demo", n=4):
        client.tell("demo", cand, {"f1": ..., "f2": ...})
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from evomerge.errors import EvomergeError


class APIError(EvomergeError):
    """The server refused a request; ``status`` is the HTTP code, ``detail`` its explanation."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {detail}")


class EvomergeClient:
    def __init__(self, url: str = "http://127.0.0.1:8765", *, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise APIError(exc.code, detail) from None

    # ---- studies ---------------------------------------------------------------------------
    def health(self) -> bool:
        return self._request("GET", "/health") == {"status": "ok"}

    def create_study(self, config: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/studies", config)

    def studies(self) -> list[str]:
        return self._request("GET", "/studies")

    def status(self, study: str) -> dict[str, Any]:
        return self._request("GET", f"/studies/{study}")

    def front(self, study: str) -> dict[str, Any]:
        return self._request("GET", f"/studies/{study}/front")

    # ---- ask / tell ------------------------------------------------------------------------
    def ask_raw(self, study: str, n: int = 1, wait_s: float = 0.0) -> dict[str, Any]:
        """The whole reply: candidates, ``complete``, ``retry_after_s``, ``reason``."""
        return self._request("POST", f"/studies/{study}/ask", {"n": n, "wait_s": wait_s})

    def ask(self, study: str, n: int = 1, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Up to ``n`` candidates, each ``{trial, ticket, genome, recipe}`` (fewer mid-generation for CMA-ES)."""
        return self.ask_raw(study, n, wait_s)["candidates"]

    def tell(self, study: str, candidate: dict[str, Any], objectives: dict[str, float] | None = None, *,
             error: str | None = None, per_example: dict[str, list[float]] | None = None,
             worker: str = "remote", seconds: float = 0.0) -> dict[str, Any]:
        """Scores (or ``error``: the candidate failed) for a candidate ``ask`` returned."""
        body: dict[str, Any] = {"ticket": candidate["ticket"], "worker": worker, "seconds": seconds}
        if objectives is not None:
            body["objectives"] = objectives
        if error is not None:
            body["error"] = error
        if per_example is not None:
            body["per_example"] = per_example
        return self._request("POST", f"/studies/{study}/trials/{int(candidate['trial'])}/tell", body)

    def racing(self, study: str) -> dict[str, Any]:
        """A raced study's layout: ``stages``, per objective the example ``order`` and cumulative ``counts``."""
        return self._request("GET", f"/studies/{study}/racing")

    def stage(self, study: str, candidate: dict[str, Any], stage: int,
              per_example: dict[str, list[float]]) -> dict[str, Any]:
        """Report the scores one stage adds; the reply's ``stop`` says the candidate was recorded pruned."""
        return self._request("POST", f"/studies/{study}/trials/{int(candidate['trial'])}/stage",
                             {"ticket": candidate["ticket"], "stage": stage, "per_example": per_example})

    def trial(self, study: str, number: int) -> dict[str, Any]:
        return self._request("GET", f"/studies/{study}/trials/{int(number)}")

    def recipe(self, study: str, number: int) -> dict[str, Any]:
        return self._request("GET", f"/studies/{study}/trials/{int(number)}/recipe")

    def mergekit_yaml(self, study: str, number: int) -> str:
        return self._request("GET", f"/studies/{study}/trials/{int(number)}/mergekit")["yaml"]

    # ---- a whole loop ----------------------------------------------------------------------
    def optimize(self, study: str, score: Callable[[dict[str, Any]], dict[str, float]], *, n: int = 4,
                 wait_s: float = 5.0, worker: str = "remote") -> dict[str, Any]:
        """Ask, score with ``score(candidate)`` and tell until the budget is spent; returns the final status.

        An exception in ``score`` is told as that candidate's failure, never the end of the loop.
        Safe to run from several processes at once on the same study.
        """
        while True:
            reply = self.ask_raw(study, n, wait_s)
            for cand in reply["candidates"]:
                started = time.perf_counter()
                try:
                    values = score(cand)
                except Exception as exc:
                    self.tell(study, cand, error=f"{type(exc).__name__}: {exc}", worker=worker)
                    continue
                self.tell(study, cand, values, worker=worker, seconds=time.perf_counter() - started)
            if reply["complete"]:
                return self.status(study)
            if not reply["candidates"]:
                status = self.status(study)
                if status["complete"] or (not status["running"] and status["finished"] >= (status["budget"] or 0)):
                    return status
                time.sleep(reply.get("retry_after_s") or 0.5)
