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
An actor with k > 1 GPUs (``gpus_per_worker: k``, or ``devices: [cuda:0, ...]``)
splits its model over its own cuda:0..k-1 (Ray sets its CUDA_VISIBLE_DEVICES)
as the local worker does (``device_split``), reading its own sources beside
each layer (no node-shared sources); the split refuses what does not fit.

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
slot's life is a small state machine on one clock (``ray_slots.Slot``: loading
→ live → waiting → loading again, or dead once ``max_restarts`` re-creations
are used up (default: unlimited) or MAX_FAILED_STARTS re-created actors in a
row die or stay silent for ``startup_timeout_s``). A failure
is charged to a candidate only when it was *alone* on the dead worker; if
several were there (a batch, or a pipelined mailbox: a result computed just
before the death can be lost with the process, so the order does not tell who
was running), none is charged and each runs alone from then on (no batch, no
call queued behind it), so the next death is attributed exactly. A charged
candidate goes to a worker it has not failed on when one is alive; after
``max_worker_failures`` charged deaths it is recorded failed with every error.
An exception inside a candidate is a failed result and never touches the pool.
Each candidate's result is handed out exactly once.

How it is built, for a reader: ``_pump`` is the one loop every public call
turns. Each turn it (1) acts on the slots whose ``due`` time has passed
(``_tick``), (2) hands queued candidates to live workers (``_dispatch``), (3)
waits, at most until the next due time, for one Ray reference (a call's result
or a loading actor's ``info()``) and (4) handles every reference that is ready
(``_on_result``, ``_on_probe``, ``_on_worker_lost``). What a worker reserves on
its node is decided in one place, ``_actor_options``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from evomerge import errors
from evomerge.errors import ConfigError, EvomergeError
from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.exec.ray_actor import EvalActor, WorkerSpec
from evomerge.exec.ray_setup import check_resources, connect
from evomerge.exec.ray_slots import MAX_FAILED_STARTS, RESTART_BACKOFF_S, Slot, WorkerState, WorkerStatus

__all__ = ["MAX_FAILED_STARTS", "RESTART_BACKOFF_S", "RayRunner", "WorkerState", "WorkerStatus"]

log = logging.getLogger(__name__)

SHARE_LIMIT = 0.8  # share sources through the object store only when they take at most this share of it
BATCH_SECONDS = 0.2  # with adaptive batching, an actor call carries about this much work...
MAX_BATCH = 128  # ...but never more candidates than this


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


@dataclass(eq=False)
class _Call:
    """One actor call in flight: its candidates, in order, and the slot it was sent to."""

    tickets: list[_Ticket]
    slot: Slot


def _ray_errors() -> tuple[tuple[type[BaseException], ...], type[BaseException]]:
    """(errors meaning the worker or its node is gone, error meaning the method itself raised)."""
    from ray import exceptions as rex

    lost = tuple(getattr(rex, n) for n in ("RayActorError", "WorkerCrashedError", "ObjectLostError",
                                           "NodeDiedError", "OwnerDiedError") if hasattr(rex, n))
    return lost, rex.RayTaskError


def _startup_error(name: str, info: dict[str, Any]) -> EvomergeError:
    """A worker's own start-up error (kept by the actor), raised here with its type and message."""
    kind, message = info["error"]
    cls = getattr(errors, kind, EvomergeError)
    if not (isinstance(cls, type) and issubclass(cls, EvomergeError)):
        cls = EvomergeError
    return cls(f"Ray worker {name} on {info.get('node_ip')}: {message}")


def _as_list(out: Any) -> list[EvalResult]:
    """An actor call's return: ``evaluate_many`` gives a list, ``evaluate`` one result."""
    return out if isinstance(out, list) else [out]


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
                 stall_timeout_s: float = 900.0, batch_size: int | None = None, tokenizer: Any = None,
                 devices: Sequence[str] | None = None, source_memory: str | None = "auto",
                 host_memory: str | None = "auto") -> None:
        """``tokenizer``: the sources' TokenizerSpec when their vocabularies differ (``sources.tokenizer``): every
        worker then holds them, its model and its tokenizer in the merged vocabulary, as the local worker does.
        ``devices``: each actor's devices, numbered as the actor sees them (Ray gives it its own cuda:0..); several
        split its model over them, as the local worker does, each actor reading its own sources. None: ``cuda``
        when ``gpus_per_worker`` > 0 (cuda:0..k-1 for k > 1), else ``cpu``. ``source_memory``, ``host_memory``:
        what each actor's sources may hold on its device(s) and in pinned host memory (``runner.source_memory``,
        ``runner.host_memory``)."""
        if (target is None) == (not models):
            raise ConfigError("the Ray runner needs exactly one of: sources (models) or a function target")
        if workers < 1 or max_worker_failures < 1:
            raise ConfigError("runner.workers and max_worker_failures must be at least 1")
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.max_in_flight = max_in_flight or 2 * workers
        self.max_worker_failures = max_worker_failures
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.batch_size = batch_size
        if devices is None and gpus_per_worker > 1 and target is None:  # k whole GPUs: the model split over them
            devices = [f"cuda:{i}" for i in range(int(gpus_per_worker))]
        devices = list(devices) if devices is not None else None
        if devices is not None and target is not None:
            raise ConfigError(f"devices {devices}: a function target holds no model to place on devices")
        wanted = sum(str(d).startswith("cuda") for d in devices or [])
        if wanted and (gpus_per_worker == 0 or (gpus_per_worker >= 1 and wanted > gpus_per_worker)):
            raise ConfigError(f"devices {devices} name {wanted} GPU(s) but each Ray worker is given "
                              f"{gpus_per_worker:g} (runner.gpus_per_worker)")
        self._depth = max(1, math.ceil(self.max_in_flight / workers))  # calls a worker's mailbox may hold
        self._slots: list[Slot] = []
        self._queue: deque[_Ticket] = deque()
        self._calls: dict[Any, _Call] = {}  # ObjectRef of an actor call -> what it carries
        self._eval_seconds: float | None = None  # running mean of merge + fitness per candidate
        self._open: dict[int, _Ticket] = {}
        self._done: dict[int, EvalResult] = {}
        self._stream_ids: set[int] = set()  # submitted through submit() and not yet returned by poll()
        self._ids = itertools.count()
        self._actor_cls: Any = None
        self._shared: list | None = None
        self._spec: list | None = None
        self._closed = False
        self._last_alive = time.monotonic()
        self._started_ray = connect(address, num_cpus=workers * cpus_per_worker,
                                    object_store_memory=object_store_memory, log_to_driver=log_to_driver,
                                    connect_timeout_s=connect_timeout_s)
        try:
            spec = WorkerSpec(base=str(base) if base is not None else None, models=[str(m) for m in models],
                              tasks=list(tasks), target=target, storage_dtype=storage_dtype, model_dtype=model_dtype,
                              gpus=gpus_per_worker, tokenizer=tokenizer, devices=devices,
                              source_memory=source_memory, host_memory=host_memory,
                              threads=threads or max(1, int(cpus_per_worker)), memory_budget_bytes=memory_budget_bytes)
            split = devices is not None and len(devices) > 1  # a split worker reads its own sources, per device
            capped = source_memory not in ("auto", None)  # the object store would hold them all regardless
            self._start_pool(spec, share=target is None and share_sources and gpus_per_worker == 0 and not split
                             and not capped)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Any, tasks: Sequence[Any]) -> RayRunner:
        """From a RunConfig: sources + fitness tasks, or ``runner.target`` for a function on the actors."""
        rc = config.runner
        if rc.device != "cpu" and rc.gpus() == 0:
            raise ConfigError(f"runner.device '{rc.device}' is not used by the Ray runner; set "
                              "runner.gpus_per_worker to give each worker a GPU")
        common = {"address": rc.address, "workers": rc.workers, "gpus_per_worker": rc.gpus(),
                  "cpus_per_worker": rc.cpus_per_worker, "max_in_flight": rc.max_in_flight, "threads": rc.threads}
        if rc.target:
            if rc.devices is not None:
                raise ConfigError(f"runner.devices: {rc.devices}: a function target (runner.target) holds no model "
                                  "to place on devices")
            return cls(target=rc.target, **common)
        if config.sources is None:
            raise ConfigError("the Ray runner needs 'sources' (or runner.target for a function)")
        from evomerge.vocab.search import worker_sources

        base, models = worker_sources(config)  # across vocabularies: the base only where the candidates use it
        return cls(base=base, models=models, tasks=list(tasks),
                   storage_dtype=rc.storage_dtype, model_dtype=rc.model_dtype, tokenizer=config.sources.tokenizer,
                   devices=rc.worker_devices() or ([rc.devices[0]] if rc.devices else None),
                   source_memory=rc.source_memory, host_memory=rc.host_memory, **common)

    # ---- startup ----------------------------------------------------------------------------------------------
    def _actor_options(self) -> dict[str, Any]:
        """What Ray reserves for each worker actor: the one place a worker's resource request is decided.

        ``max_restarts=0``: a lost worker is re-created by this driver (``_recreate``), not restarted by Ray.
        """
        return {"num_cpus": self.cpus_per_worker, "num_gpus": self.gpus_per_worker, "max_restarts": 0,
                "max_task_retries": 0, "scheduling_strategy": "SPREAD"}

    def _start_pool(self, spec: WorkerSpec, *, share: bool) -> None:
        """Check the cluster can place the pool, share the sources, create every actor and wait until all loaded."""
        import ray

        check_resources(self.workers, self.cpus_per_worker, self.gpus_per_worker)
        if share:
            self._shared = self._share_sources(spec)
        self._actor_cls = ray.remote(EvalActor).options(**self._actor_options())
        # held by us for the runner's life, and handed to every actor we create (ray-project/ray#53727)
        self._spec = [ray.put(spec)]
        now = time.monotonic()
        for i in range(self.workers):
            actor = self._new_actor(f"ray-{i}")
            self._slots.append(Slot(f"ray-{i}", actor, actor.info.remote(), now, self.startup_timeout_s))
        self._await_startup()

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

    def _await_startup(self) -> None:
        """Wait until every worker has loaded; a worker's own error is raised with its type and message."""
        import ray

        lost, _ = _ray_errors()
        probes = {slot.probe: slot for slot in self._slots}
        deadline = max(slot.due for slot in self._slots)
        while probes:
            ready, _ = ray.wait(list(probes), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                names = ", ".join(s.name for s in probes.values())
                raise ConfigError(f"Ray worker(s) {names} did not start within {self.startup_timeout_s:g} s; the "
                                  f"cluster has {ray.available_resources()} free. Are the requested CPUs/GPUs on "
                                  "one node?")
            for ref in ready:
                slot = probes.pop(ref)
                try:
                    info = ray.get(ref)
                except lost as exc:
                    raise EvomergeError(f"Ray worker {slot.name} failed to start: {exc}") from None
                if info["error"] is not None:
                    raise _startup_error(slot.name, info)
                slot.loaded(info)
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
            st = slot.snapshot()
            if slot.running:
                calls = [self._calls[ref].tickets for ref in slot.running]
                st.candidate = calls[0][0].candidate.key
                st.queued = sum(len(c) for c in calls) - 1
            out.append(st)
        return out

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait until no worker is loading or waiting to be re-created (dead ones aside); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while any(s.coming for s in self._slots):
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

    # ---- the queue --------------------------------------------------------------------------------------------
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
        """Forget a candidate nobody waits for: out of the queue now, its result dropped if it still comes."""
        ticket = self._open.pop(ticket_id, None)
        if ticket is not None:
            ticket.abandoned = True
            if ticket in self._queue:
                self._queue.remove(ticket)
        self._done.pop(ticket_id, None)

    def _finish(self, ticket: _Ticket, result: EvalResult) -> None:
        """Hand a result out once, with the worker losses it went through."""
        if ticket.abandoned or ticket.id not in self._open:
            return
        del self._open[ticket.id]
        if ticket.failures:
            result.details["worker_failures"] = list(ticket.failures)
        if ticket.requeued:
            result.details["requeued_after"] = list(ticket.requeued)
        result.details.setdefault("attempts", len(ticket.failures) + len(ticket.requeued) + 1)
        self._done[ticket.id] = result

    # ---- dispatch ---------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued candidates to live workers, up to max_in_flight calls in all; the rest stay queued, in order."""
        live = [s for s in self._slots if s.live]
        if not live:
            return
        kept: deque[_Ticket] = deque()
        while self._queue and len(self._calls) < self.max_in_flight:
            ticket = self._queue.popleft()
            slot = self._slot_for(ticket, live)
            if slot is None:
                kept.append(ticket)
                if not any(self._has_room(s, False) for s in live):
                    break
                continue
            self._send(slot, self._fill_call(ticket, len(live)))
        self._queue.extendleft(reversed(kept))

    def _slot_for(self, ticket: _Ticket, live: list[Slot]) -> Slot | None:
        """The least loaded live worker with room that ``ticket`` may go to, or None for now.

        A worker it has not failed on, whenever one is alive or coming back (a death is charged to the
        candidate only once it killed two different workers); the ones it killed only when none is left.
        """
        fresh = [s for s in live if s.name not in ticket.failed_on]
        coming = any(s.coming and s.name not in ticket.failed_on for s in self._slots)
        pool = fresh or ([] if coming else live)
        room = [s for s in pool if self._has_room(s, ticket.alone)]
        return min(room, key=lambda s: len(s.running)) if room else None

    def _has_room(self, slot: Slot, alone: bool) -> bool:
        """A lone ticket needs an empty mailbox; nothing is queued behind a lone ticket."""
        if alone:
            return not slot.running
        return len(slot.running) < self._depth and not any(self._calls[r].tickets[0].alone for r in slot.running)

    def _fill_call(self, ticket: _Ticket, live: int) -> list[_Ticket]:
        """``ticket`` and, unless it must run alone, the next fresh ones: a batch, leaving work for other workers."""
        call = [ticket]
        if ticket.alone:
            return call
        share = math.ceil((len(self._queue) + 1) / live)
        size = min(self._batch(), share)
        while len(call) < size and self._queue and not self._queue[0].alone:
            call.append(self._queue.popleft())
        return call

    def _send(self, slot: Slot, call: list[_Ticket]) -> None:
        """One actor call: ``evaluate`` for one candidate, ``evaluate_many`` for a batch."""
        if len(call) == 1:
            ref = slot.actor.evaluate.remote(call[0].candidate)
        else:
            ref = slot.actor.evaluate_many.remote([t.candidate for t in call])
        slot.running.append(ref)
        self._calls[ref] = _Call(call, slot)

    # ---- the engine -------------------------------------------------------------------------------------------
    def _pump(self, timeout: float | None) -> None:
        """One turn: act on what is due, dispatch, wait (at most ``timeout`` s) for a reference, handle all ready."""
        import ray

        now = time.monotonic()
        self._tick(now)
        self._dispatch()
        probes = {s.probe: s for s in self._slots if s.probe is not None}
        waitables = [*self._calls, *probes]
        wait_for = max(0.0, min(self._next_due(), now + (math.inf if timeout is None else timeout)) - now)
        if not waitables:
            if any(s.phase == "waiting" for s in self._slots):
                time.sleep(wait_for)
            elif self._queue:
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
            elif ref in self._calls:  # not yet forgotten by a worker loss handled earlier in this loop
                self._on_result(ref)
        self._dispatch()

    def _tick(self, now: float) -> None:
        """Slots whose due time has passed: re-create a waiting one, fail a silent start; then the stall check."""
        for slot in self._slots:
            if slot.due > now:
                continue
            if slot.phase == "waiting":
                self._recreate(slot, now)
            elif slot.phase == "loading":
                slot.start_failed(f"no answer within startup_timeout_s={self.startup_timeout_s:g} s", now)
        if any(s.live for s in self._slots):
            self._last_alive = now
        elif now - self._last_alive > self.stall_timeout_s:
            import ray

            states = "; ".join(f"{s.name}: {s.status} ({s.state.last_error})" for s in self._slots)
            raise EvomergeError(f"no Ray worker has been alive for {self.stall_timeout_s:g} s; the search cannot go "
                                f"on. Workers: {states}. Free cluster resources: {ray.available_resources()}")

    def _next_due(self) -> float:
        """The next moment something happens without any reference being ready: a slot's due time, the stall."""
        due = min((s.due for s in self._slots), default=math.inf)
        if not any(s.live for s in self._slots):
            due = min(due, self._last_alive + self.stall_timeout_s + 1e-3)
        return due

    def _recreate(self, slot: Slot, now: float) -> None:
        """Replace a lost worker's actor by a new one made here, from the arguments this driver holds."""
        import ray

        with contextlib.suppress(Exception):  # gone already; no_restart: Ray must not bring the old one back
            ray.kill(slot.actor, no_restart=True)
        if 0 <= self.max_restarts <= slot.created:
            slot.give_up(f"its {self.max_restarts} restart(s) are used up ({slot.state.last_error})")
            return
        actor = self._new_actor(slot.name)
        slot.recreated(actor, actor.info.remote(), now, self.startup_timeout_s)

    def _on_probe(self, slot: Slot, ref: Any) -> None:
        """A loading actor's ``info()`` is ready: it is live, failed to start, or came up unable to work."""
        import ray

        lost, task_error = _ray_errors()
        try:
            info = ray.get(ref)
        except (*lost, task_error) as exc:
            slot.start_failed(f"{type(exc).__name__}: {exc}", time.monotonic())
            return
        if info["error"] is not None:  # it restarted somewhere it cannot work (e.g. too little memory)
            error = str(_startup_error(slot.name, info))
            slot.give_up(error, error=error)
            return
        slot.loaded(info)
        self._last_alive = time.monotonic()

    def _on_result(self, ref: Any) -> None:
        """An actor call is ready: its results, or the news that its worker is gone."""
        import ray

        lost, task_error = _ray_errors()
        call = self._calls[ref]
        try:
            out = ray.get(ref)
        except lost as exc:
            self._on_worker_lost(call.slot, exc)
            return
        except task_error as exc:  # raised outside the worker's own try (e.g. unpicklable candidate)
            out = [EvalResult(key=t.candidate.key, status="failed", worker=call.slot.name,
                              error=f"{type(exc).__name__}: {exc}") for t in call.tickets]
        del self._calls[ref]
        call.slot.running.remove(ref)
        self._record(call, _as_list(out))

    def _record(self, call: _Call, results: list[EvalResult]) -> None:
        """A finished call: its results out, the timing mean updated."""
        call.slot.state.evaluated += len(results)
        for ticket, result in zip(call.tickets, results, strict=True):
            seconds = result.merge_seconds + result.fitness_seconds
            if result.ok and seconds > 0:
                mean = self._eval_seconds
                self._eval_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds
            self._finish(ticket, result)

    # ---- a lost worker ----------------------------------------------------------------------------------------
    def _on_worker_lost(self, slot: Slot, exc: BaseException) -> None:
        """Keep finished results, charge a candidate that was alone there, re-queue the rest, re-create it."""
        error = f"worker {slot.name} (pid {slot.state.pid}, node {slot.state.node_ip} {slot.state.node_id}) was " \
                f"lost while evaluating this candidate: {type(exc).__name__}: {exc}"
        unfinished = self._salvage(slot)
        if len(unfinished) == 1:  # it was alone there: the death is its own
            requeue = self._charge(unfinished[0], slot, error)
        else:  # who was running is unknown: nobody is charged, each runs alone from now on
            for ticket in unfinished:
                ticket.solo = True
                ticket.requeued.append(error.replace("this candidate", f"this and {len(unfinished) - 1} other(s)"))
            requeue = [t for t in unfinished if not t.abandoned]
        self._queue.extendleft(reversed(requeue))
        slot.lost(f"{type(exc).__name__}: {exc}", time.monotonic())
        log.warning("Ray worker %s lost (%s); %d candidate(s) re-queued; re-creating it", slot.name,
                    type(exc).__name__, len(requeue))

    def _salvage(self, slot: Slot) -> list[_Ticket]:
        """Record the calls a lost worker finished before it died; the candidates of the others, in order."""
        import ray

        unfinished: list[_Ticket] = []
        for ref in list(slot.running):
            call = self._calls.pop(ref)
            done, _ = ray.wait([ref], timeout=0)
            out = None
            if done:  # a call that finished before the loss is a result
                with contextlib.suppress(Exception):
                    out = ray.get(ref)
            if out is not None:
                self._record(call, _as_list(out))
            else:
                unfinished += call.tickets
        slot.running.clear()
        return unfinished

    def _charge(self, ticket: _Ticket, slot: Slot, error: str) -> list[_Ticket]:
        """A death charged to the candidate alone on the worker: failed after ``max_worker_failures``, else retried."""
        ticket.failures.append(error)
        ticket.failed_on.add(slot.name)
        if len(ticket.failures) >= self.max_worker_failures:
            self._finish(ticket, EvalResult(
                key=ticket.candidate.key, status="failed", worker=slot.name,
                error=f"{len(ticket.failures)} workers were lost while evaluating this candidate:\n\n"
                      + "\n\n".join(ticket.failures),
                details={"attempts": len(ticket.failures) + len(ticket.requeued)}))
            return []
        return [] if ticket.abandoned else [ticket]

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
            self._slots, self._calls, self._shared, self._spec = [], {}, None, None
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
