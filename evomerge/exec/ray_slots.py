"""One Ray worker slot's life: a small state machine on one clock, with no Ray call in it.

The runner does the Ray work (create an actor, ask its ``info()``, kill it) and
tells the slot what happened; the slot decides what that means and when it is
next due. Its phases::

    loading ──info() answers──▶ live (idle ⇄ busy) ──lost──▶ waiting ──due──▶ loading ...
       │                                                        ▲
       └──dies, or silent past its due time─────(backoff)───────┘
    waiting/loading ──▶ dead: max_restarts re-creations used up, MAX_FAILED_STARTS failed starts in a row,
                              or an actor that came up unable to work (its own error)

One timer per slot, ``due`` (``time.monotonic`` seconds): while ``loading`` the
moment its start counts as failed, while ``waiting`` the moment to re-create
the actor; ``math.inf`` otherwise. A progress display sees the phases as the
statuses ``starting`` (first load), ``restarting`` (loading again or waiting),
``idle``/``busy`` and ``dead``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

WorkerStatus = Literal["starting", "idle", "busy", "restarting", "dead"]
Phase = Literal["loading", "live", "waiting", "dead"]
MAX_FAILED_STARTS = 5  # re-created actors in a row that die or stay silent before a slot is given up
RESTART_BACKOFF_S = (0.25, 5.0)  # wait before re-creating after a failed start: doubling from the first, capped


@dataclass
class WorkerState:
    """One slot as a progress display sees it."""

    name: str
    status: WorkerStatus
    candidate: str | None = None  # key of the candidate it is running
    queued: int = 0  # further candidates waiting in its mailbox
    node_id: str | None = None
    node_ip: str | None = None
    pid: int | None = None
    restarts: int = 0
    evaluated: int = 0
    memory: dict[str, int] = field(default_factory=dict)  # rss/uss/pss bytes at the last report
    resident_bytes: int = 0
    shared_sources: bool = False
    split: list[list[str]] | None = None  # a worker split over several devices: its modules per device
    last_error: str | None = None


class Slot:
    """A worker actor, the calls it holds, and where it is in its life (see the module docstring)."""

    def __init__(self, name: str, actor: Any, probe: Any, now: float, startup_timeout_s: float) -> None:
        self.state = WorkerState(name=name, status="starting")
        self.actor = actor
        self.probe: Any = probe  # the pending info() of a loading actor
        self.phase: Phase = "loading"
        self.due = now + startup_timeout_s
        self.running: deque[Any] = deque()  # calls dispatched to it, in order: the head is executing
        self.created = 0  # actors the driver re-created in this slot
        self.failed_starts = 0  # re-created actors in a row that died or stayed silent while loading

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def live(self) -> bool:
        return self.phase == "live"

    @property
    def coming(self) -> bool:
        """Not live yet, but will be unless its start fails: loading, or waiting to be re-created."""
        return self.phase in ("loading", "waiting")

    @property
    def status(self) -> WorkerStatus:
        if self.phase == "live":
            return "busy" if self.running else "idle"
        if self.phase == "dead":
            return "dead"
        return "starting" if self.phase == "loading" and self.created == 0 else "restarting"

    def snapshot(self) -> WorkerState:
        """A copy of its state with the current status."""
        from dataclasses import replace

        return replace(self.state, status=self.status, memory=dict(self.state.memory))

    # ---- transitions ------------------------------------------------------------------------------------------
    def loaded(self, info: dict[str, Any]) -> None:
        """loading → live: the actor answered ``info()``; where it runs and what it holds are recorded."""
        st = self.state
        if self.created:
            st.restarts += 1
        st.node_id, st.node_ip, st.pid = info["node_id"], info["node_ip"], info["pid"]
        st.memory, st.resident_bytes, st.shared_sources = info["memory"], info["resident_bytes"], info["shared_sources"]
        st.split = info.get("split")
        self.phase, self.probe, self.due, self.failed_starts = "live", None, math.inf, 0

    def lost(self, error: str, now: float) -> None:
        """live → waiting: the actor died; it is re-created at once (no backoff after a working actor)."""
        self.phase, self.due = "waiting", now
        self.running.clear()
        self.state.last_error = error

    def recreated(self, actor: Any, probe: Any, now: float, startup_timeout_s: float) -> None:
        """waiting → loading: a new actor is starting in this slot."""
        self.created += 1
        self.actor, self.probe = actor, probe
        self.phase, self.due = "loading", now + startup_timeout_s

    def start_failed(self, why: str, now: float) -> None:
        """loading → waiting (after a doubling backoff), or dead after MAX_FAILED_STARTS failures in a row."""
        self.probe = None
        self.failed_starts += 1
        self.state.last_error = f"restart {self.created} failed: {why}"
        if self.failed_starts >= MAX_FAILED_STARTS:
            self.give_up(f"{self.failed_starts} restarts in a row failed; last: {why}")
            return
        first, cap = RESTART_BACKOFF_S
        self.phase, self.due = "waiting", now + min(cap, first * 2 ** (self.failed_starts - 1))

    def give_up(self, why: str, error: str | None = None) -> None:
        """→ dead for good (``error``: its last error, when it is not the one already recorded)."""
        self.phase, self.probe, self.due = "dead", None, math.inf
        if error is not None:
            self.state.last_error = error
        log.warning("Ray worker %s is dead for good: %s", self.name, why)
