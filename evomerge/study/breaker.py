"""Stop a search whose first candidates all fail the same way, instead of spending the budget on that error.

One bad candidate never stops a search (a NaN merge, a scorer hiccup). But when
nothing has succeeded yet and the first K results of this process all failed
with one identical error (a task name with a typo, a scorer that is down), every
later candidate will fail too: the run stops with that error and its traceback.
The failed trials stay recorded like any others (the strategy saw them as
failures), so after the fix ``evomerge resume RUN`` continues exactly where
the run stopped. Once any trial has succeeded the breaker never trips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evomerge.errors import EvomergeError


class SearchFailingError(EvomergeError):
    """Every candidate so far failed with the same error; ``detail`` holds its full traceback."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def error_signature(error: str | None) -> str:
    """The last non-empty line of an error text (``Type: message``): what identical failures share."""
    lines = [ln.strip() for ln in (error or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "failed without an error message"


@dataclass
class Breaker:
    """Counts this process's results; ``observe`` raises ``SearchFailingError`` when the first ``limit`` fail alike."""

    limit: int | None
    run_dir: Path
    succeeded: bool = False  # any trial of the run (before a resume included) succeeded
    signatures: list[str] = field(default_factory=list)

    def observe(self, ok: bool, error: str | None) -> None:
        if ok:
            self.succeeded = True
        if self.succeeded or self.limit is None:
            return
        self.signatures.append(error_signature(error))
        first = self.signatures[0]
        if len(self.signatures) >= self.limit and all(s == first for s in self.signatures):
            raise SearchFailingError(
                f"{self.run_dir}: the first {len(self.signatures)} candidates all failed with: {first} — "
                f"stopped before spending the budget; fix the cause, then `evomerge resume {self.run_dir}` "
                "(the failed trials stay recorded; set budget.stop_after_first_failures to change this)",
                detail=error or "")


class NoSuccessError(EvomergeError):
    """A run has no successful trial, so there is no result to finalize, export or report."""


def no_success_reason(run_dir: Path, records: list) -> str | None:
    """One line saying why a run has no result (no trial yet, or all failed with the last error), else None."""
    if any(r.status == "ok" for r in records):
        return None
    if not records:
        return f"{run_dir}: no trial recorded yet"
    last = max(records, key=lambda r: r.number)
    return (f"{run_dir}: no successful trial: all {len(records)} failed (last error: "
            f"{error_signature(last.user_attrs.get('error'))})")
