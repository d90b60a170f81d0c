"""Asynchronous evaluation for strategies that take results out of order (TPE, NSGA-II/III, GP, random).

Every free runner slot is filled at once: after each result is told, the
strategy is asked for one genome per free slot, so no worker waits for the
stragglers of a generation. The window of candidates in flight is the
runner's ``capacity`` (Ray: every worker busy plus one queued in each
mailbox), and at least ``strategy.batch_size``.

**Exact resume without a checkpoint per result.** Each trial records
``asked``: how many genomes the strategy had handed out when that result was
told. Asks are always one genome at a time, so the order of asks and tells is
fully described by the trials in storage. A resumed run restores the last
strategy checkpoint (taken every few seconds, never costing more than ~5 % of
the run), then replays the trials recorded after it: it asks until the
recorded ``asked`` count is reached and tells the recorded result, exactly as
the original run did. Candidates that were in flight at the crash are
evaluated again; nothing recorded is evaluated twice, and the strategy sees
the same ask/tell interleaving as an uninterrupted run that received results
in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evomerge import interrupt
from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate, EvalResult
from evomerge.study.record import TrialRecord, genome_key

if TYPE_CHECKING:
    from evomerge.study.study import Study

CHECKPOINT_COST_SHARE = 0.05  # checkpoint when the last one took at most this share of the time since
POLL_S = 1.0  # longest wait for a result before the stop conditions are looked at again


@dataclass
class StreamState:
    """The part of a streaming run that the strategy checkpoint does not hold."""

    asked: int = 0  # genomes asked from the strategy so far
    told: int = 0  # trial records told so far: exactly those numbered below this
    inflight: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)  # asked, untold, in ask order
    # racing: per in-flight key, the told count when it was first asked (its references are the trials below it)
    horizons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "told": self.told,
                "inflight": [(k, [np.array(g) for g in gs]) for k, gs in self.inflight],
                "horizons": dict(self.horizons)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamState:
        return cls(int(d["asked"]), int(d["told"]), [(k, [np.asarray(g) for g in gs]) for k, gs in d["inflight"]],
                   {str(k): int(v) for k, v in d.get("horizons", {}).items()})


@dataclass
class LoopHooks:
    """What the Study gives its loops: the clock, stop conditions and the way results are recorded."""

    elapsed: Callable[[], float]
    wall_budget_s: float | None
    evaluations: int | None
    record: Callable[[EvalResult, Candidate, dict[str, Any]], TrialRecord]
    report: Callable[[EvalResult | None], None]
    count_reused: Callable[[int], None]

    def out_of_time(self) -> bool:
        return self.wall_budget_s is not None and self.elapsed() >= self.wall_budget_s


class StreamLoop:
    """One streaming pass of a Study's search; ``run`` returns True when stopped early (Ctrl-C)."""

    def __init__(self, study: Study, hooks: LoopHooks, state: StreamState | None) -> None:
        self.study = study
        self.strategy = study.strategy
        self.hooks = hooks
        self.state = state or StreamState()
        self.inflight: dict[str, list[np.ndarray]] = {k: list(gs) for k, gs in self.state.inflight}
        self.known: dict[str, TrialRecord] = {}
        self.candidates: dict[str, Candidate] = {}  # submitted to the runner, result not back yet
        self._last_save = time.monotonic()
        self._save_cost = 0.0

    # ---- strategy side ----------------------------------------------------------------------------------------
    def _ask_one(self) -> bool:
        """Ask one genome; a genome already told is told again from its record. False: the strategy has none."""
        genomes = self.strategy.ask(1)
        if not genomes:
            return False
        genome = np.asarray(genomes[0], dtype=np.float64)
        self.state.asked += 1
        key = genome_key(genome)
        if key in self.known:
            self.hooks.count_reused(1)
            self.study._tell([genome], self.known[key])
        else:
            self.inflight.setdefault(key, []).append(genome)
            self.state.horizons.setdefault(key, self.state.told)
        return True

    def _tell(self, record: TrialRecord) -> None:
        genomes = self.inflight.pop(record.key)
        self.state.horizons.pop(record.key, None)
        self.study._tell(genomes, record)
        self.known[record.key] = record
        self.state.told += 1

    def _replay(self, records: list[TrialRecord]) -> None:
        """Tell the trials recorded after the checkpoint, at the ask counts where they were first told."""
        for record in sorted(records, key=lambda r: r.number):
            if record.number < self.state.told:
                self.known[record.key] = record
                continue
            if "asked" not in record.user_attrs:
                raise ConfigError(
                    f"{self.study.run_dir}: trial {record.number} has no ask count: it was recorded by the "
                    "generational loop of an earlier evomerge, which this streamed strategy cannot replay; "
                    "finish the run with that version, or start a new run folder")
            target = int(record.user_attrs["asked"])
            while self.state.asked < target and self._ask_one():
                pass
            if record.key not in self.inflight:
                raise ConfigError(
                    f"{self.study.run_dir}: trial {record.number} was not asked by this run's strategy when "
                    f"replayed (asked {self.state.asked}, recorded {target}); the storage does not belong to "
                    "this run's checkpoint — restore the run folder as a whole")
            self._tell(record)

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        self.state.inflight = list(self.inflight.items())
        return self.state.to_dict()

    def _save(self, *, force: bool = False) -> None:
        since = time.monotonic() - self._last_save
        if not force and since * CHECKPOINT_COST_SHARE < self._save_cost:
            return
        t0 = time.monotonic()
        self.study._save_checkpoint(self.hooks.elapsed(), stream=self.snapshot())
        self._last_save = time.monotonic()
        self._save_cost = self._last_save - t0

    # ---- the loop ---------------------------------------------------------------------------------------------
    def _window(self) -> int:
        batch = self.study.config.strategy.batch_size or 1
        return max(1, batch, int(self.study.runner.capacity))

    def _may_ask(self) -> bool:
        if self.strategy.finished or interrupt.requested() or self.hooks.out_of_time():
            return False
        budget = self.hooks.evaluations
        if budget is not None and self.state.told + len(self.inflight) >= budget:
            return False
        return len(self.inflight) < self._window()

    def _submit_new(self) -> None:
        fresh = [k for k in self.inflight if k not in self.candidates]
        if not fresh:
            return
        cands = []
        for key in fresh:
            genome = self.inflight[key][0]
            race = self.study.race_request(self.state.horizons.get(key, self.state.told), self.known.values())
            cand = Candidate(key=key, recipe=self.study.space.decode(genome), genome=genome, race=race)
            self.candidates[key] = cand
            cands.append(cand)
        self.study.runner.submit(cands)

    def run(self, records: list[TrialRecord]) -> bool:
        self._replay(records)
        exhausted = False
        try:
            while True:
                while not exhausted and self._may_ask():
                    exhausted = not self._ask_one()
                self._submit_new()
                if interrupt.requested() or self.hooks.out_of_time():
                    break
                if not self.inflight:
                    break  # budget spent, or the strategy has nothing more to propose
                for result in self.study.runner.poll(timeout=POLL_S):
                    record = self.hooks.record(result, self.candidates.pop(result.key), {"asked": self.state.asked})
                    self._tell(record)
                    self._save()
                    self.hooks.report(result)
        finally:
            self.study.runner.cancel()  # candidates still in flight are re-asked (same genomes) by the next resume
        self._save(force=True)
        return interrupt.requested()
