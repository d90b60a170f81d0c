"""The HTTP scorer: let any outside service (a judge model, a lab's harness, human raters) score a candidate.

It POSTs JSON to a URL, either the prompts plus the candidate's greedy
generations (made locally first) or the path of the candidate's checkpoint,
and reads back ``{"objectives": {...}, "per_example": [...]}``. A scorer that is
down, slow, or answers garbage makes *this candidate* fail with a FitnessError
(the search marks it failed and goes on), never the search.

Uses the standard library's ``urllib`` (``httpx`` is not a dependency of evomerge).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_split
from evomerge.fitness.config import HttpSpec
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.generation import PromptGenerator

log = logging.getLogger(__name__)


class ScorerResponse(BaseModel):
    """What a scorer must answer; extra keys are kept in ``details`` but not checked."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    objectives: dict[str, float]
    per_example: list[float]


class _Retryable(Exception):
    """A failure worth another try: connection refused/reset, timeout, 5xx or 429."""


def post_json(url: str, payload: dict[str, Any], *, timeout_s: float, retries: int, backoff_s: float,
              headers: dict[str, str] | None = None, what: str = "scorer") -> Any:
    """POST ``payload`` and return the decoded JSON answer, retrying transient failures with backoff.

    Waits ``backoff_s * 2**k`` before retry ``k+1``. Raises FitnessError naming
    the URL and the last failure once the retries are spent, or at once for an
    answer that is not JSON or a 4xx status (retrying would not change them).
    """
    body = json.dumps(payload).encode("utf-8")
    hdrs = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
        try:
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace")
                if exc.code >= 500 or exc.code == 429:
                    raise _Retryable(f"HTTP {exc.code} {exc.reason}: {detail}") from None
                raise FitnessError(f"{what} at {url} answered HTTP {exc.code} {exc.reason}: {detail}") from None
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError):
                    raise _Retryable(f"no answer within {timeout_s:g} s") from None
                raise _Retryable(f"cannot connect ({reason})") from None
            except TimeoutError:
                raise _Retryable(f"no answer within {timeout_s:g} s") from None
            except (ConnectionError, OSError) as exc:
                raise _Retryable(f"connection failed ({exc})") from None
        except _Retryable as exc:
            last = str(exc)
            log.warning("%s at %s: %s (attempt %d of %d)", what, url, last, attempt + 1, retries + 1)
            continue
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = raw[:80].decode("utf-8", "replace")
            raise FitnessError(f"{what} at {url} answered something that is not JSON: {snippet!r}") from None
    raise FitnessError(f"{what} at {url} failed after {retries + 1} attempt(s): {last}")


class HttpTask:
    """Scores from a remote service; generations or a checkpoint path go out, scores come back."""

    kind = "http"
    race_refusal: str | None = ("its objective is the scorer's own number, not necessarily the mean of the "
                                "per-example scores it returns")

    def __init__(self, spec: HttpSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        self.examples: dict[str, list[dict[str, Any]]] = {}
        if spec.data is not None:
            self.examples = {split: read_jsonl(resolve(base_dir, rel), required={"prompt": str})
                             for split, rel in spec.data.splits().items()}
        self.generator = PromptGenerator(
            {s: [r["prompt"] for r in recs] for s, recs in self.examples.items()},
            max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
            add_special_tokens=spec.add_special_tokens,
        )
        self.checkpoint_dir = resolve(base_dir, spec.checkpoint_dir) if spec.checkpoint_dir else None

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult:
        """Send the candidate (its generations or its saved checkpoint) and validate the scores."""
        if self.spec.send == "generations" or self.examples:
            check_split(self.name, split, list(self.examples))
        t0 = time.perf_counter()
        details: dict[str, Any] = {}
        payload: dict[str, Any] = {"task": self.name, "split": split}
        expected_n: int | None = len(self.examples[split]) if self.examples else None
        ckpt: Path | None = None
        try:
            if self.spec.send == "generations":
                gen = self.generator.run(model, tokenizer, split)
                recs = self.examples[split]
                payload["prompts"] = [r["prompt"] for r in recs]
                payload["generations"] = gen.texts
                if all("answer" in r for r in recs):
                    payload["answers"] = [r["answer"] for r in recs]
                details.update(generations=gen.texts, generated_tokens=gen.generated_tokens,
                               seconds_generate=gen.seconds_generate)
            else:
                ckpt = self._save(model, tokenizer)
                payload["checkpoint"] = str(ckpt)
            t1 = time.perf_counter()
            answer = post_json(self.spec.url, payload, timeout_s=self.spec.timeout_s, retries=self.spec.retries,
                               backoff_s=self.spec.backoff_s, headers=self.spec.headers,
                               what=f"task '{self.name}': scorer")
            details["seconds_http"] = time.perf_counter() - t1
        finally:
            if ckpt is not None:
                shutil.rmtree(ckpt, ignore_errors=True)
        return self._result(answer, split, expected_n, time.perf_counter() - t0, details)

    def _save(self, model: Any, tokenizer: Any) -> Path:
        if not hasattr(model, "save_pretrained"):
            raise FitnessError(f"task '{self.name}': send: checkpoint needs a model with save_pretrained()")
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.checkpoint_dir))
        model.save_pretrained(out)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(out)
        return out

    def _result(self, answer: Any, split: str, expected_n: int | None, seconds: float,
                details: dict[str, Any]) -> TaskResult:
        where = f"task '{self.name}': scorer at {self.spec.url}"
        try:
            resp = ScorerResponse.model_validate(answer)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise FitnessError(f"{where} answered an invalid body: '{loc}': {first['msg']} "
                               '(expected {"objectives": {name: number}, "per_example": [number, ...]})') from None
        if self.objective_name not in resp.objectives:
            raise FitnessError(f"{where} answered objectives {sorted(resp.objectives)} without "
                               f"'{self.objective_name}'")
        if expected_n is not None and len(resp.per_example) != expected_n:
            raise FitnessError(f"{where} answered {len(resp.per_example)} per-example scores for "
                               f"{expected_n} examples of split '{split}'")
        if not resp.per_example:
            raise FitnessError(f"{where} answered an empty per_example list")
        objectives = {k: float(v) for k, v in resp.objectives.items()}
        details.update(resp.model_extra or {})
        return TaskResult(task=self.name, split=split, objectives=objectives,
                          per_example=np.asarray(resp.per_example, dtype=np.float64), n=len(resp.per_example),
                          seconds=seconds, details=details)
