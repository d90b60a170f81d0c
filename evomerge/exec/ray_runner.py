"""The Ray runner: one evaluation actor per slot, every slot kept busy, dead workers restarted.

``runner: {type: ray, address: auto | ray://host:port | host:port | null, workers: N,
gpus_per_worker: g, cpus_per_worker: c, max_in_flight: k}``

**Security default.** With no ``address`` evomerge starts a private Ray instance
that listens on 127.0.0.1 only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set
before Ray starts (without it Ray takes the external interface and listens on
0.0.0.0 even when told 127.0.0.1), usage statistics are off
(``RAY_USAGE_STATS_ENABLED=0``) and no dashboard is started. To use several
machines, start a cluster yourself (``ray start --head``, secured as Ray's
documentation says) and pass its address: joining is the only way to go wider.
An address where nothing answers fails within seconds, not after Ray's retries.

**Workers.** Each actor holds an ``EvalWorker``: the sources resident once
(base + task vectors, on the GPU when ``gpus_per_worker > 0``), one model
instance, and per candidate the merged weights written in place before the
fitness tasks run. CPU workers on one machine share the source tensors
read-only through the node's object store (``shared_sources``): one copy per
node, not one per worker. With ``target`` instead of sources the actors call
that function (synthetic problems, black-box scorers) through the same
machinery. Sizes are checked against the device before anything is loaded.

**Asynchrony.** Up to ``max_in_flight`` actor calls (default two per worker:
one running, one waiting in the actor's mailbox so it never idles on a round
trip) are dispatched at once, to the least loaded live worker; ``evaluate``
yields results as ``ray.wait`` reports them, and ``submit``/``poll`` let a Study
ask for more the moment a slot frees. A call carries one candidate, or, when
candidates take only milliseconds (a Ray call costs ~1 ms), a batch of them
sized to ~0.2 s of work (``batch_size``: None adapts, an int fixes it): the driver then spends
~0.1 ms per digits candidate instead of ~0.16 ms at 50 ms calls, which matters when it shares the cores.

**Fault tolerance.** When a worker dies (killed, out of memory, node lost),
its unfinished candidates are re-queued and the driver creates a new actor in
its slot at once, from the arguments it holds itself: Ray's own actor restart
is not used (it re-reads constructor arguments from the object store, which may
have freed them, and a restarted actor was seen not to come back in ~36 s). A
slot's life is a small state machine on one clock (``time.monotonic``):
``starting`` → ``idle``/``busy`` → (lost) ``restarting`` → ``idle``/``busy``
again, or ``dead`` once ``max_restarts`` re-creations are used up (default:
unlimited) or MAX_FAILED_STARTS re-created actors in a row die or stay silent
for ``startup_timeout_s``. A failure
is charged to a candidate only when it was *alone* on the dead worker; if
several were there (a batch, or a pipelined mailbox: a result computed just
before the death can be lost with the process, so the order does not tell who
was running), none is charged and each runs alone from then on (no batch, no
call queued behind it), so the next death is attributed exactly. A charged
candidate goes to a worker it has not failed on when one is alive; after
``max_worker_failures`` charged deaths it is recorded failed with every error.
An exception inside a candidate is a failed result and never touches the pool.
Each candidate's result is handed out exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from evomerge import errors
from evomerge.errors import ConfigError, EvomergeError
from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.exec.ray_actor import EvalActor, WorkerSpec
from evomerge.exec.ray_setup import check_resources, connect

log = logging.getLogger(__name__)

WorkerStatus = Literal["starting", "idle", "busy", "restarting", "dead"]
SHARE_LIMIT = 0.8  # share sources through the object store only when they take at most this share of it
MAX_FAILED_STARTS = 5  # re-created actors in a row that die or stay silent before a slot is given up
RESTART_BACKOFF_S = (0.25, 5.0)  # wait before re-creating after a failed start: doubling from the first, capped
BATCH_SECONDS = 0.2  # with adaptive batching, an actor call carries about this much work...
MAX_BATCH = 128  # ...but never more candidates than this


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
    last_error: str | None = None


@dataclass(eq=False)  # identity: tickets hold numpy genomes
class _Ticket:
    id: int
    candidate: Candidate
    stream: bool  # submitted through submit() (returned by poll) rather than evaluate()
    failures: list[str] = field(default_factory=list)  # worker deaths charged to it (it was alone there)
    requeued: list[str] = field(default_factory=list)  # worker deaths it was caught in with others (uncharged)
    failed_on: set[str] = field(default_factory=set)
    abandoned: bool = False
    solo: bool = False  # was among several on a worker that died: runs alone so a death can be charged to it

    @property
    def alone(self) -> bool:
        """Dispatched in a call of its own, to an empty mailbox, with nothing queued behind it."""
        return self.solo or bool(self.failed_on)


class _Slot:
    """A worker actor and what the runner knows of it.

    While ``restarting``: with ``probe`` set, a new actor is starting (its info() answers once it has loaded,
    ``probe_deadline`` bounds the wait); without, the next actor is created at ``create_at``.
    """

    def __init__(self, name: str, actor: Any) -> None:
        self.actor = actor
        self.state = WorkerState(name=name, status="starting")
        self.running: deque[Any] = deque()  # calls dispatched to it, in order: the head is executing
        self.probe: Any = None
        self.probe_deadline = math.inf
        self.create_at = 0.0
        self.created = 0  # actors the driver re-created in this slot
        self.failed_starts = 0  # re-created actors in a row that died or stayed silent while starting

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def live(self) -> bool:
        return self.state.status in ("idle", "busy")


def _ray_errors() -> tuple[tuple[type[BaseException], ...], type[BaseException]]:
    """(errors meaning the worker or its node is gone, error meaning the method itself raised)."""
    from ray import exceptions as rex

    lost = tuple(getattr(rex, n) for n in ("RayActorError", "WorkerCrashedError", "ObjectLostError",
                                           "NodeDiedError", "OwnerDiedError") if hasattr(rex, n))
    return lost, rex.RayTaskError


def _startup_error(name: str, info: dict[str, Any]) -> EvomergeError:
    kind, message = info["error"]
    cls = getattr(errors, kind, EvomergeError)
    if not (isinstance(cls, type) and issubclass(cls, EvomergeError)):
        cls = EvomergeError
    return cls(f"Ray worker {name} on {info.get('node_ip')}: {message}")


class RayRunner(Runner):
    """Evaluates candidates on a pool of Ray actors; see the module docstring for the guarantees."""

    def __init__(self, *, base: str | None = None, models: Sequence[str] = (), tasks: Sequence[Any] = (),
                 target: str | Callable | None = None, address: str | None = None, workers: int = 1,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_in_flight: int | None = None,
                 storage_dtype: str = "float32", threads: int | None = None, share_sources: bool = True,
                 model_dtype: str = "auto",
                 max_worker_failures: int = 3, max_restarts: int = -1, memory_budget_bytes: int | None = None,
                 object_store_memory: int | None = None, log_to_driver: bool = False,
                 startup_timeout_s: float = 600.0, connect_timeout_s: float = 5.0,
                 stall_timeout_s: float = 900.0, batch_size: int | None = None, tokenizer: Any = None) -> None:
        """``tokenizer``: the sources' TokenizerSpec when their vocabularies differ (``sources.tokenizer``): every
        worker then holds them, its model and its tokenizer in the merged vocabulary, as the local worker does."""
        if (target is None) == (not models):
            raise ConfigError("the Ray runner needs exactly one of: sources (models) or a function target")
        if workers < 1 or max_worker_failures < 1:
            raise ConfigError("runner.workers and max_worker_failures must be at least 1")
        self.workers = workers
        self.max_in_flight = max_in_flight or 2 * workers
        self.max_worker_failures = max_worker_failures
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._actor_cls: Any = None
        self._depth = max(1, math.ceil(self.max_in_flight / workers))
        self._slots: list[_Slot] = []
        self._queue: deque[_Ticket] = deque()
        self._refs: dict[Any, tuple[list[_Ticket], _Slot]] = {}  # call → its candidates and worker
        self.batch_size = batch_size
        self._eval_seconds: float | None = None  # running mean of merge + fitness per candidate
        self._open: dict[int, _Ticket] = {}
        self._done: dict[int, EvalResult] = {}
        self._stream_ids: set[int] = set()  # submitted through submit() and not yet returned by poll()
        self._ids = itertools.count()
        self._shared: list | None = None
        self._spec: list | None = None
        self._closed = False
        self._last_alive = time.monotonic()
        self._started_ray = connect(address, num_cpus=workers * cpus_per_worker,
                                    object_store_memory=object_store_memory, log_to_driver=log_to_driver,
                                    connect_timeout_s=connect_timeout_s)
        try:
            import ray

            check_resources(workers, cpus_per_worker, gpus_per_worker)
            spec = WorkerSpec(base=str(base) if base is not None else None, models=[str(m) for m in models],
                              tasks=list(tasks), target=target, storage_dtype=storage_dtype, model_dtype=model_dtype,
                              gpus=gpus_per_worker, tokenizer=tokenizer,
                              threads=threads or max(1, int(cpus_per_worker)), memory_budget_bytes=memory_budget_bytes)
            if target is None and share_sources and gpus_per_worker == 0:
                self._shared = self._share_sources(spec)
            # max_restarts=0: a lost worker is re-created by us (_restart), not restarted by Ray
            self._actor_cls = ray.remote(EvalActor).options(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0, max_task_retries=0,
                scheduling_strategy="SPREAD")
            # held by us for the runner's life, and handed to every actor we create (ray-project/ray#53727)
            self._spec = [ray.put(spec)]
            self._slots = [_Slot(f"ray-{i}", self._new_actor(f"ray-{i}")) for i in range(workers)]
            self._await_startup(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Any, tasks: Sequence[Any]) -> RayRunner:
        """From a RunConfig: sources + fitness tasks, or ``runner.target`` for a function on the actors."""
        rc = config.runner
        if rc.device != "cpu" and rc.gpus_per_worker == 0:
            raise ConfigError(f"runner.device '{rc.device}' is not used by the Ray runner; set "
                              "runner.gpus_per_worker to give each worker a GPU")
        common = {"address": rc.address, "workers": rc.workers, "gpus_per_worker": rc.gpus_per_worker,
                  "cpus_per_worker": rc.cpus_per_worker, "max_in_flight": rc.max_in_flight, "threads": rc.threads}
        if rc.target:
            return cls(target=rc.target, **common)
        if config.sources is None:
            raise ConfigError("the Ray runner needs 'sources' (or runner.target for a function)")
        from evomerge.vocab.search import worker_sources

        base, models = worker_sources(config)  # across vocabularies: the base only where the candidates use it
        return cls(base=base, models=models, tasks=list(tasks),
                   storage_dtype=rc.storage_dtype, model_dtype=rc.model_dtype, tokenizer=config.sources.tokenizer,
                   **common)

    # ---- startup ----------------------------------------------------------------------------------------------
    def _new_actor(self, name: str) -> Any:
        return self._actor_cls.remote(self._spec, name, self._shared)

    def _share_sources(self, spec: WorkerSpec) -> list | None:
        """Read the sources once into the object store (a Ray task, so Ray can rebuild them if a node is lost)."""
        import ray

        from evomerge.exec.shared_sources import load_packed, resident_sizes

        sizes = resident_sizes(spec.base, list(spec.models), spec.storage_dtype)
        stores = [n["Resources"].get("object_store_memory", 0) for n in ray.nodes() if n.get("Alive")]
        capacity = min(stores) if stores else 0
        if sizes.sources_total > SHARE_LIMIT * capacity:
            log.warning("sources take %.3g GiB, more than %d%% of the smallest object store (%.3g GiB): every "
                        "worker loads its own copy; raise object_store_memory to share them",
                        sizes.sources_total / 2**30, SHARE_LIMIT * 100, capacity / 2**30)
            return None
        loader = ray.remote(num_cpus=0, max_retries=3, max_calls=1)(load_packed)
        return [loader.remote(spec.base, list(spec.models), spec.storage_dtype, spec.tokenizer)]

    def _await_startup(self, timeout_s: float) -> None:
        """Wait until every worker has loaded; a worker's own error is raised with its type and message."""
        import ray

        lost, _ = _ray_errors()
        probes = {slot.actor.info.remote(): slot for slot in self._slots}
        deadline = time.monotonic() + timeout_s
        while probes:
            ready, _ = ray.wait(list(probes), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                names = ", ".join(s.name for s in probes.values())
                raise ConfigError(f"Ray worker(s) {names} did not start within {timeout_s:g} s; the cluster has "
                                  f"{ray.available_resources()} free. Are the requested CPUs/GPUs on one node?")
            for ref in ready:
                slot = probes.pop(ref)
                try:
                    info = ray.get(ref)
                except lost as exc:
                    raise EvomergeError(f"Ray worker {slot.name} failed to start: {exc}") from None
                if info["error"] is not None:
                    raise _startup_error(slot.name, info)
                self._mark_alive(slot, info)

    def _mark_alive(self, slot: _Slot, info: dict[str, Any]) -> None:
        st = slot.state
        if st.status == "restarting":
            st.restarts += 1
        st.status = "busy" if slot.running else "idle"
        st.node_id, st.node_ip, st.pid = info["node_id"], info["node_ip"], info["pid"]
        st.memory, st.resident_bytes, st.shared_sources = info["memory"], info["resident_bytes"], info["shared_sources"]
        slot.probe, slot.probe_deadline, slot.failed_starts = None, math.inf, 0
        self._last_alive = time.monotonic()

    # ---- streaming interface ----------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.max_in_flight * self._batch()

    def _batch(self) -> int:
        """Candidates per actor call: fixed, or enough for ~BATCH_SECONDS of work once candidates have been timed."""
        if self.batch_size is not None:
            return max(1, self.batch_size)
        if self._eval_seconds is None:
            return 1
        return int(min(MAX_BATCH, max(1, round(BATCH_SECONDS / max(self._eval_seconds, 1e-6)))))

    @property
    def pending(self) -> int:
        return len(self._stream_ids)

    def submit(self, candidates: Sequence[Candidate]) -> None:
        self._stream_ids.update(self._enqueue(candidates, stream=True))

    def poll(self, timeout: float | None = None) -> list[EvalResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = [i for i in self._done if i in self._stream_ids]
            if ready:
                self._stream_ids.difference_update(ready)
                return [self._done.pop(i) for i in ready]
            if not self._stream_ids:
                return []
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            self._pump(left)

    def cancel(self) -> None:
        for i in list(self._stream_ids):
            self._abandon(i)
        self._stream_ids.clear()

    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]:
        waiting = set(self._enqueue(candidates, stream=False))
        try:
            while waiting:
                for i in [i for i in self._done if i in waiting]:
                    waiting.discard(i)
                    yield self._done.pop(i)
                if waiting:
                    self._pump(None)
        finally:
            for i in waiting:  # the caller stopped listening (e.g. out of wall time): drop the rest
                self._abandon(i)

    # ---- observability ----------------------------------------------------------------------------------------
    def worker_states(self) -> list[WorkerState]:
        """A snapshot per worker: idle/busy/restarting/dead/starting, current candidate, node, pid, memory."""
        out = []
        for slot in self._slots:
            st = replace(slot.state, memory=dict(slot.state.memory))
            if slot.running:
                calls = [self._refs[ref][0] for ref in slot.running]
                st.candidate = calls[0][0].candidate.key
                st.queued = sum(len(c) for c in calls) - 1
            out.append(st)
        return out

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait until no worker is restarting (dead ones aside); False if some still are after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while any(s.state.status in ("restarting", "starting") for s in self._slots):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._pump(min(left, 1.0))
        return True

    def memory_report(self, timeout_s: float = 60.0) -> list[WorkerState]:
        """Measure every live worker's memory now (rss/uss/pss); call it between evaluations."""
        import ray

        live = [s for s in self._slots if s.live]
        refs = [s.actor.info.remote() for s in live]
        for slot, info in zip(live, ray.get(refs, timeout=timeout_s), strict=True):
            slot.state.memory = info["memory"]
        return self.worker_states()

    # ---- the engine -------------------------------------------------------------------------------------------
    def _enqueue(self, candidates: Sequence[Candidate], *, stream: bool) -> list[int]:
        if self._closed:
            raise EvomergeError("this RayRunner is closed")
        ids = []
        for c in candidates:
            ticket = _Ticket(next(self._ids), c, stream)
            self._open[ticket.id] = ticket
            self._queue.append(ticket)
            ids.append(ticket.id)
        self._dispatch()
        return ids

    def _abandon(self, ticket_id: int) -> None:
        ticket = self._open.pop(ticket_id, None)
        if ticket is not None:
            ticket.abandoned = True
            if ticket in self._queue:
                self._queue.remove(ticket)
        self._done.pop(ticket_id, None)

    def _dispatch(self) -> None:
        """Hand queued candidates to the least loaded live workers, up to max_in_flight in all."""
        live = [s for s in self._slots if s.live]
        if not live:
            return
        kept: deque[_Ticket] = deque()
        while self._queue and len(self._refs) < self.max_in_flight:
            ticket = self._queue.popleft()
            fresh = [s for s in live if s.name not in ticket.failed_on]
            # a worker it has not failed on, whenever one is alive or coming back (a death is charged to the
            # candidate only once it killed two different workers); the ones it killed only when none is left
            coming = any(s.name not in ticket.failed_on and s.state.status in ("starting", "restarting")
                         for s in self._slots)
            pool = fresh or ([] if coming else live)
            room = [s for s in pool if self._has_room(s, ticket.alone)]
            if not room:
                kept.append(ticket)
                if not any(self._has_room(s, False) for s in live):
                    break
                continue
            slot = min(room, key=lambda s: len(s.running))
            call = [ticket]
            if not ticket.alone:  # fill a batch with fresh candidates
                share = math.ceil((len(self._queue) + 1) / len(live))  # leave work for the other workers
                size = min(self._batch(), share)
                while len(call) < size and self._queue and not self._queue[0].alone:
                    call.append(self._queue.popleft())
            if len(call) == 1:
                ref = slot.actor.evaluate.remote(ticket.candidate)
            else:
                ref = slot.actor.evaluate_many.remote([t.candidate for t in call])
            slot.running.append(ref)
            slot.state.status = "busy"
            self._refs[ref] = (call, slot)
        self._queue.extendleft(reversed(kept))

    def _has_room(self, slot: _Slot, alone: bool) -> bool:
        """A lone ticket needs an empty mailbox; nothing is queued behind a lone ticket."""
        if alone:
            return not slot.running
        return len(slot.running) < self._depth and not any(self._refs[r][0][0].alone for r in slot.running)

    def _pump(self, timeout: float | None) -> None:
        """Dispatch, wait (at most ``timeout`` s) for a result or a restarted worker, process all that are ready."""
        import ray

        self._dispatch()
        now = time.monotonic()
        for slot in self._slots:
            if slot.state.status != "restarting":
                continue
            if slot.probe is None and now >= slot.create_at:
                self._restart(slot, now)
            elif slot.probe is not None and now >= slot.probe_deadline:
                self._start_failed(slot, now, f"no answer within startup_timeout_s={self.startup_timeout_s:g} s")
        probes = {s.probe: s for s in self._slots if s.probe is not None}
        waitables = list(self._refs) + list(probes)
        if any(s.live for s in self._slots):
            self._last_alive = now
        elif now - self._last_alive > self.stall_timeout_s:
            states = "; ".join(f"{s.name}: {s.state.status} ({s.state.last_error})" for s in self._slots)
            raise EvomergeError(f"no Ray worker has been alive for {self.stall_timeout_s:g} s; the search cannot go "
                                f"on. Workers: {states}. Free cluster resources: {ray.available_resources()}")
        # the next moment something is due without any result: a re-creation, a start timing out, the stall check
        timers = [s.create_at if s.probe is None else s.probe_deadline
                  for s in self._slots if s.state.status == "restarting"]
        if not any(s.live for s in self._slots):
            timers.append(now + 5.0)
        wait_for = min([*timers, math.inf]) - now
        if timeout is not None:
            wait_for = min(wait_for, timeout)
        wait_for = max(0.0, wait_for)
        if not waitables:
            if any(s.state.status == "restarting" for s in self._slots):
                time.sleep(wait_for)
                return
            if self._queue:
                raise EvomergeError("every Ray worker is dead: " + "; ".join(
                    f"{s.name}: {s.state.last_error}" for s in self._slots))
            return
        ready, _ = ray.wait(waitables, num_returns=1, timeout=None if math.isinf(wait_for) else wait_for)
        if not ready:
            return
        ready, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
        for ref in ready:
            if ref in probes:
                self._on_probe(probes[ref], ref)
            elif ref in self._refs:  # not yet forgotten by a worker loss handled earlier in this loop
                self._on_result(ref)
        self._dispatch()

    def _restart(self, slot: _Slot, now: float) -> None:
        """Replace a lost worker's actor by a new one made here, from the arguments this driver holds."""
        import ray

        with contextlib.suppress(Exception):  # gone already; no_restart: Ray must not bring the old one back
            ray.kill(slot.actor, no_restart=True)
        if 0 <= self.max_restarts <= slot.created:
            slot.state.status = "dead"
            log.warning("Ray worker %s is dead for good: its %d restart(s) are used up (%s)", slot.name,
                        self.max_restarts, slot.state.last_error)
            return
        slot.created += 1
        slot.actor = self._new_actor(slot.name)
        slot.probe = slot.actor.info.remote()
        slot.probe_deadline = now + self.startup_timeout_s

    def _start_failed(self, slot: _Slot, now: float, why: str) -> None:
        """A re-created actor died or stayed silent while starting: try again after a backoff, or give the slot up."""
        slot.probe, slot.probe_deadline = None, math.inf
        slot.failed_starts += 1
        slot.state.last_error = f"restart {slot.created} failed: {why}"
        if slot.failed_starts >= MAX_FAILED_STARTS:
            slot.state.status = "dead"
            log.warning("Ray worker %s is dead for good: %d restarts in a row failed; last: %s", slot.name,
                        slot.failed_starts, why)
            return
        first, cap = RESTART_BACKOFF_S
        slot.create_at = now + min(cap, first * 2 ** (slot.failed_starts - 1))

    def _on_probe(self, slot: _Slot, ref: Any) -> None:
        import ray

        lost, task_error = _ray_errors()
        try:
            info = ray.get(ref)
        except (*lost, task_error) as exc:
            self._start_failed(slot, time.monotonic(), f"{type(exc).__name__}: {exc}")
            return
        if info["error"] is not None:  # it restarted somewhere it cannot work (e.g. too little memory)
            slot.probe = None
            slot.state.status = "dead"
            slot.state.last_error = str(_startup_error(slot.name, info))
            log.warning("%s", slot.state.last_error)
            return
        self._mark_alive(slot, info)

    def _on_result(self, ref: Any) -> None:
        import ray

        lost, task_error = _ray_errors()
        call, slot = self._refs[ref]
        try:
            out = ray.get(ref)
        except lost as exc:
            self._on_worker_lost(slot, exc)
            return
        except task_error as exc:  # raised outside the worker's own try (e.g. unpicklable candidate)
            out = [EvalResult(key=t.candidate.key, status="failed", worker=slot.name,
                              error=f"{type(exc).__name__}: {exc}") for t in call]
        del self._refs[ref]
        slot.running.remove(ref)
        self._record(slot, call, out if isinstance(out, list) else [out])

    def _record(self, slot: _Slot, call: list[_Ticket], results: list[EvalResult]) -> None:
        """A finished call: its results out, the timing mean updated, the worker idle if nothing follows."""
        slot.state.evaluated += len(results)
        if slot.live:
            slot.state.status = "busy" if slot.running else "idle"
        for ticket, result in zip(call, results, strict=True):
            seconds = result.merge_seconds + result.fitness_seconds
            if result.ok and seconds > 0:
                mean = self._eval_seconds
                self._eval_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds
            self._finish(ticket, result)

    def _on_worker_lost(self, slot: _Slot, exc: BaseException) -> None:
        """Keep finished results, charge a candidate that was alone there, re-queue the rest, await the restart."""
        import ray

        error = f"worker {slot.name} (pid {slot.state.pid}, node {slot.state.node_ip} {slot.state.node_id}) was " \
                f"lost while evaluating this candidate: {type(exc).__name__}: {exc}"
        unfinished: list[_Ticket] = []
        for ref in list(slot.running):
            call, _ = self._refs.pop(ref)
            done, _ = ray.wait([ref], timeout=0)
            if done:  # a call that finished before the loss is a result
                try:
                    out = ray.get(ref)
                except Exception:
                    out = None
                if out is not None:
                    self._record(slot, call, out if isinstance(out, list) else [out])
                    continue
            unfinished += call
        slot.running.clear()
        requeue: list[_Ticket] = []
        if len(unfinished) == 1:  # it was alone there: the death is its own
            ticket = unfinished[0]
            ticket.failures.append(error)
            ticket.failed_on.add(slot.name)
            if len(ticket.failures) >= self.max_worker_failures:
                self._finish(ticket, EvalResult(
                    key=ticket.candidate.key, status="failed", worker=slot.name,
                    error=f"{len(ticket.failures)} workers were lost while evaluating this candidate:\n\n"
                          + "\n\n".join(ticket.failures),
                    details={"attempts": len(ticket.failures) + len(ticket.requeued)}))
            elif not ticket.abandoned:
                requeue.append(ticket)
        else:  # who was running is unknown: nobody is charged, each runs alone from now on
            for ticket in unfinished:
                ticket.solo = True
                ticket.requeued.append(error.replace("this candidate", f"this and {len(unfinished) - 1} other(s)"))
            requeue = [t for t in unfinished if not t.abandoned]
        self._queue.extendleft(reversed(requeue))
        slot.state.status = "restarting"
        slot.state.last_error = f"{type(exc).__name__}: {exc}"
        slot.create_at = time.monotonic()  # re-created on the next pump, without waiting for Ray
        log.warning("Ray worker %s lost (%s); %d candidate(s) re-queued; re-creating it", slot.name,
                    type(exc).__name__, len(requeue))

    def _finish(self, ticket: _Ticket, result: EvalResult) -> None:
        if ticket.abandoned or ticket.id not in self._open:
            return
        del self._open[ticket.id]
        if ticket.failures:
            result.details["worker_failures"] = list(ticket.failures)
        if ticket.requeued:
            result.details["requeued_after"] = list(ticket.requeued)
        result.details.setdefault("attempts", len(ticket.failures) + len(ticket.requeued) + 1)
        self._done[ticket.id] = result

    # ---- shutdown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill the actors and, if this runner started Ray, shut it down (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            import ray

            for slot in self._slots:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(slot.actor, no_restart=True)
            self._slots, self._refs, self._shared, self._spec = [], {}, None, None
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
