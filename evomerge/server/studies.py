"""Remote-scored studies: ask/tell over a Study whose candidates are scored outside evomerge.

Each study lives in its own folder under the server's storage root (``ROOT/NAME``) holding the same
files as an ``evomerge run`` folder: ``config.yaml`` (runner ``remote``), ``study.db`` (the Optuna
storage) and ``strategy.pkl`` (the strategy checkpoint), plus ``server.json`` (how its space was
built). So ``evomerge status/export/report`` and optuna-dashboard open it like any run.

Durability of pending asks (asked, not yet told), across a server restart:

* ask: the strategy proposes → its state (which lists the genomes as pending) is checkpointed →
  each genome becomes a RUNNING Optuna trial carrying its key (the ticket), genome and recipe;
* tell: the trial is finished in the storage (state written last) → the strategy is told →
  checkpoint. A tell is acknowledged only once it is in the storage;
* open (after a restart or crash): every genome the checkpoint holds as pending is matched by key:
  a RUNNING trial → still pending; a finished trial (the crash fell between storage and
  checkpoint) → its recorded value is told now; none (the crash fell between checkpoint and the
  trial rows) → a RUNNING trial is created again, so the ask is never lost.

A client that dies after an ask would hold its trials forever (and a generational strategy with
them): with ``lease_s`` set, an ask first re-hands trials whose hand-out is older than that (same
trial, same ticket; the first tell wins, a late one gets 409). Hand-out times are kept in memory:
after a restart every pending trial gets a fresh lease.

Generational strategies (CMA-ES) update once per generation of λ genomes: ``ask`` hands out at most
the untold rest of the current generation, so asks beyond it return fewer candidates (none once
the whole generation is out) until enough tells arrive; with ``wait_s`` an ask blocks (up to that
many seconds) until a tell frees candidates. Asynchronous strategies (TPE, NSGA-II, random, GP)
hand out any number at any time.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import ConfigError, EvomergeError
from evomerge.exec.base import EvalResult
from evomerge.spaces import Sources
from evomerge.study.checkpoint import atomic_write_bytes
from evomerge.study.config import RunConfig
from evomerge.study.record import TrialRecord, genome_key
from evomerge.study.study import CONFIG_FILE, Study, build_space

SERVER_FILE = "server.json"
CREATING_FILE = ".evomerge-creating"  # written first into a folder the server makes; removed once server.json is in
# Letters, digits, '_' and '-' only: no dot, so no '..', no hidden folders, no path separators.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


class NotFoundError(EvomergeError):
    """No such study or trial (HTTP 404)."""


class ConflictError(EvomergeError):
    """The request contradicts the study's state: a study that exists, a trial already told (HTTP 409)."""


class ForbiddenError(EvomergeError):
    """The trial exists but was not handed out with this ticket (HTTP 403)."""


def study_dir(root: Path, name: str) -> Path:
    """The folder of study ``name`` under ``root``; refuses names that could leave it."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"study name {name!r}: use 1-64 letters, digits, '_' or '-' (first a letter or digit)")
    base = root.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise ConfigError(f"study name {name!r} resolves outside the storage root")
    return path


class NamedSources(Sources):
    """Sources known by name only: the server reads no checkpoint unless started with a models root."""

    def _read(self, model: str) -> None:
        raise ConfigError(f"sources: the space needs the layer count of '{model}', and this server reads no "
                          "checkpoint from a client-supplied path; give 'sources.num_layers', or start the server "
                          "with --models-root covering the models")


def build_remote_space(config: RunConfig, extras: dict[str, Any], models_root: Path | None, *, trusted: bool = False):
    """The study's space: a box, or a preset kind over sources given by name (their layer count in ``extras``).

    ``trusted``: opened by a local command (export, report), not for a client: checkpoints may be read.
    """
    if isinstance(config.space, str):
        raise ConfigError("space: give the space inline (a mapping); the server loads no preset file by path")
    if config.space.get("kind") == "box":
        return build_space(config)
    if config.sources is None:
        raise ConfigError("sources: a model space needs 'sources' (model names; paths only as names)")
    from evomerge.spaces import build_space as build

    base, models = config.sources.base, list(config.sources.models)
    num_layers = extras.get("num_layers")
    if num_layers is not None:
        sources: Sources = NamedSources(base=base, models=models,
                                        num_layers={m: int(num_layers) for m in [*models, *([base] if base else [])]})
    elif trusted:
        sources = Sources(base=base, models=models)
    elif models_root is not None:
        root = models_root.resolve()
        for m in [*models, *([base] if base else [])]:
            p = Path(m).resolve()
            if root != p and root not in p.parents:
                raise ConfigError(f"sources: '{m}' lies outside the server's models root {root}")
        sources = Sources(base=base, models=models)
    else:
        sources = NamedSources(base=base, models=models)
    try:
        return build(config.space, sources)
    except EvomergeError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"space: {exc}") from None


def new_ticket() -> str:
    """A trial's ticket: a server-side random secret (not derived from the genome, which the client sees)."""
    return secrets.token_urlsafe(24)


def ticket_of(record: TrialRecord) -> str:
    """The ticket a running trial was handed out with (stored with the trial, so it survives a restart).

    Trials asked before tickets were random carry none: their genome key was their ticket, and stays it.
    """
    return str(record.user_attrs.get("ticket", record.key))


@dataclass
class Asked:
    """One candidate handed to a client: ``ticket`` must come back with its tell."""

    trial: int
    ticket: str
    genome: list[float]
    recipe: dict | None


class RemoteStudy:
    """A Study driven by ask/tell calls; one lock (a condition) per study serialises them."""

    def __init__(self, study: Study, lease_s: float | None = None,
                 on_tell: Callable[[str], None] | None = None, racing: dict[str, Any] | None = None) -> None:
        from evomerge.server.racing import RemoteRacing

        self.study = study
        self.racing = RemoteRacing(racing, study) if racing else None  # clients report stages (server.racing)
        self.name = study.config.name
        self.lease_s = lease_s
        self.on_tell = on_tell  # called with the study's name after every tell (the server wakes waiting asks)
        self.cond = threading.Condition()
        self._running: dict[int, TrialRecord] = {r.number: r for r in study.store.running()}
        self._handed_at: dict[int, float] = dict.fromkeys(self._running, time.monotonic())
        self._finished: dict[int, TrialRecord] = {r.number: r for r in study.store.records()}
        self._reconcile()

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, data: dict[str, Any], extras: dict[str, Any], models_root: Path | None,
               database: str | None = None) -> RemoteStudy:
        """Validate ``data`` (a run config without runner/output/storage) and make the study's folder.

        Never deletes or overwrites what this server did not make: an existing name is refused (409) unless
        the folder is a creation of ours a crash interrupted, known by the marker written into it first.
        ``database``: the server's SQLAlchemy URL (e.g. PostgreSQL) holding every study's trials, set by
        whoever runs the server, never by a client; None keeps them in the study folder's sqlite file.
        """
        folder = study_dir(root, str(data.get("name")))
        if folder.is_dir() and (folder / CREATING_FILE).is_file() and not (folder / SERVER_FILE).is_file():
            shutil.rmtree(folder)  # our own interrupted creation: nothing in it was acknowledged to anyone
        if folder.exists() or folder.is_symlink():
            what = "already exists" if (folder / SERVER_FILE).is_file() else \
                "is taken by a file or folder this server did not create (it is left untouched)"
            raise ConflictError(f"study '{data['name']}' {what}; pick another name")
        cfg = RunConfig.from_dict({**data, "output": str(folder), "runner": {"type": "remote"}, "test_split": None,
                                   **({"storage": database} if database else {})}, source="study config")
        space = build_remote_space(cfg, extras, models_root)
        try:
            folder.mkdir(parents=True)
        except FileExistsError:  # made by someone else since the check above
            raise ConflictError(f"study '{data['name']}' was just created by someone else; pick another name") from None
        try:
            (folder / CREATING_FILE).write_text("evomerge serve: a study being created\n")
            study = Study(cfg, folder, space=space)
            if extras.get("racing"):  # validated against the objectives before the study is acknowledged
                from evomerge.server.racing import RemoteRacing

                RemoteRacing(extras["racing"], study)
            atomic_write_bytes(folder / CONFIG_FILE, cfg.to_yaml().encode())
            atomic_write_bytes(folder / SERVER_FILE, json.dumps({"extras": extras, "version": 1}).encode())
            (folder / CREATING_FILE).unlink()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # the folder is ours: made by the mkdir above
            raise
        return cls(study, extras.get("lease_s"), racing=extras.get("racing"))

    @classmethod
    def open(cls, folder: Path, models_root: Path | None = None) -> RemoteStudy:
        extras = json.loads((folder / SERVER_FILE).read_text()).get("extras", {})
        return cls(open_remote_study(folder, models_root), extras.get("lease_s"), racing=extras.get("racing"))

    def _reconcile(self) -> None:
        """Match the checkpoint's pending genomes with the storage after a restart (see the module doc)."""
        strategy = self.study.strategy
        running_by_key: dict[str, list[int]] = {}
        for n, r in self._running.items():
            running_by_key.setdefault(r.key, []).append(n)
        finished_by_key = {r.key: r for r in self._finished.values()}
        changed = False
        matched: set[int] = set()
        for g in strategy.pending():
            key = genome_key(g)
            free = [n for n in running_by_key.get(key, []) if n not in matched]
            if free:
                matched.add(free[0])
            elif key in finished_by_key:
                self.study._tell([g], finished_by_key[key])  # a pruned one as pruned
                changed = True
            else:
                matched.add(self._begin(g))
                changed = True
        for n in [n for n in self._running if n not in matched]:  # not pending in the strategy: cannot be learned
            self._finish(n, EvalResult(key=self._running[n].key, status="failed", worker="server",
                                       error="orphaned: the strategy no longer waits for this genome"))
        if changed:
            self.study.save_checkpoint()

    # ---- ask / tell ----------------------------------------------------------------------------
    @property
    def budget(self) -> int | None:
        return self.study.config.budget.evaluations

    def _begin(self, genome: np.ndarray) -> int:
        recipe = self.study.space.decode(genome)
        rd = recipe.to_dict() if recipe is not None else None
        key = genome_key(genome)
        ticket = new_ticket()
        extra: dict[str, Any] = {"split": "train", "asked_at": time.time(), "ticket": ticket}
        if self.racing is not None:  # raced against the fully scored trials finished now
            extra["race_references"] = self.racing.references(list(self._finished.values()))
        number = self.study.store.begin(key, genome, rd, extra)
        self._running[number] = TrialRecord(number=number, key=key, status="running", objectives={},
                                            genome=np.asarray(genome, dtype=np.float64), recipe=rd,
                                            user_attrs={k: v for k, v in extra.items() if k != "split"})
        self._handed_at[number] = time.monotonic()
        return number

    def _expired(self, n: int) -> list[Asked]:
        """Up to ``n`` pending trials whose lease ran out, handed out again."""
        if self.lease_s is None:
            return []
        now = time.monotonic()
        out = []
        for number in sorted(self._running):
            if len(out) >= n:
                break
            if now - self._handed_at.get(number, now) > self.lease_s:
                r = self._running[number]
                self._handed_at[number] = now
                out.append(Asked(trial=number, ticket=ticket_of(r), recipe=r.recipe,
                                 genome=[] if r.genome is None else [float(x) for x in r.genome]))
        return out

    def _ask_locked(self, n: int) -> list[Asked]:
        again = self._expired(n)
        n -= len(again)
        if self.budget is not None:
            n = min(n, self.budget - len(self._finished) - len(self._running))
        if n <= 0:
            return again
        strategy = self.study.strategy
        genomes = strategy.ask(n)
        if not genomes:
            return again
        finished_by_key = {r.key: r for r in self._finished.values()}
        fresh = []
        for g in genomes:
            done = finished_by_key.get(genome_key(g))
            if done is not None:  # the same genome was scored before: reuse it, as the Study does
                self.study._tell([g], done)
            else:
                fresh.append(g)
        self.study.save_checkpoint()  # the pending genomes are durable before any trial id exists
        out = again
        for g in fresh:
            number = self._begin(g)
            r = self._running[number]
            out.append(Asked(trial=number, ticket=ticket_of(r), genome=[float(x) for x in g], recipe=r.recipe))
        return out

    def ask(self, n: int, wait_s: float = 0.0) -> list[Asked]:
        """Up to ``n`` new candidates; a generational strategy may give fewer (see the module doc).

        ``wait_s`` blocks the calling thread; the server waits without one (see ``evomerge.server.app``).
        """
        deadline = time.monotonic() + max(0.0, wait_s)
        with self.cond:
            while True:
                out = self._ask_locked(n)
                left = deadline - time.monotonic()
                if out or left <= 0 or not self.may_free:
                    return out
                lease = self.next_lease_expiry_s()
                self.cond.wait(timeout=left if lease is None else min(left, lease))

    @property
    def may_free(self) -> bool:
        """Whether a tell (or an expired lease) could give an ask more later: trials are out, budget not spent."""
        return not self.complete and bool(self._running)

    def next_lease_expiry_s(self) -> float | None:
        """Seconds until the first pending trial's lease runs out (it can be handed out again then); None: no leases."""
        if self.lease_s is None or not self._handed_at:
            return None
        return max(0.0, min(self._handed_at.values()) + self.lease_s - time.monotonic())

    def _finish(self, number: int, result: EvalResult) -> TrialRecord:
        pending = self._running[number]
        self.study.store.finish(number, result, {"split": "train", "told_at": time.time()})
        ok = result.ok and all(o.name in result.objectives for o in self.study.objectives)
        status = "ok" if ok else "pruned" if result.status == "pruned" else "failed"
        attrs: dict[str, Any] = {}
        if self.racing is not None:  # later candidates are raced against these scores
            attrs = {"per_example": {k: list(map(float, v)) for k, v in result.per_example.items()},
                     "intermediate": result.racing.get("intermediate", [])}
        record = TrialRecord(number=number, key=pending.key, status=status,
                             objectives=dict(result.objectives), genome=pending.genome, recipe=pending.recipe,
                             user_attrs=attrs)
        del self._running[number]
        self._handed_at.pop(number, None)
        self._finished[number] = record
        return record

    def tell(self, number: int, ticket: str, objectives: dict[str, float] | None, *, error: str | None = None,
             per_example: dict[str, list[float]] | None = None, worker: str = "remote",
             seconds: float = 0.0) -> TrialRecord:
        """Record a client's scores (or its failure) for a trial it was handed; refuses anything else."""
        names = [o.name for o in self.study.objectives]
        with self.cond:
            pending = self._running.get(number)
            if pending is None:
                if number in self._finished:
                    raise ConflictError(f"trial {number} of study '{self.name}' was already told; a trial is "
                                        "told once")
                raise NotFoundError(f"study '{self.name}' has no trial {number} waiting for scores")
            if not hmac.compare_digest(ticket.encode(), ticket_of(pending).encode()):
                raise ForbiddenError(f"trial {number} of study '{self.name}' was not handed out with this ticket "
                                     "(a trial of another study?)")
            if error is None:
                if objectives is None:
                    raise ConfigError("give 'objectives' (one value per objective) or 'error' for a failure")
                missing = [n for n in names if n not in objectives]
                extra = [k for k in objectives if k not in names]
                if missing or extra:
                    raise ConfigError(f"objectives: expected exactly {names}; missing {missing}, unknown {extra}")
                bad = {k: v for k, v in objectives.items() if not math.isfinite(v)}
                if self.racing is not None and not bad:
                    self.racing.check_full(objectives, per_example)
                result = EvalResult(key=pending.key, status="failed" if bad else "ok", objectives=dict(objectives),
                                    per_example=per_example or {}, worker=worker, fitness_seconds=seconds,
                                    error=f"non-finite objective(s): {bad}" if bad else None)
            else:
                result = EvalResult(key=pending.key, status="failed", worker=worker, error=error,
                                    fitness_seconds=seconds)
            record = self._finish(number, result)
            self.study.strategy.tell([pending.genome], [self.study._strategy_value(record)])
            self.study.save_checkpoint()
            self.cond.notify_all()
        if self.on_tell is not None:
            self.on_tell(self.name)
        return record

    def stage(self, number: int, ticket: str, stage: int, per_example: dict[str, list[float]]) -> dict[str, Any]:
        """A client's scores for one stage of a raced trial; the reply says whether to stop (then it is recorded)."""
        if self.racing is None:
            raise ConfigError(f"study '{self.name}' was created without racing: tell the full scores instead")
        with self.cond:
            pending = self._running.get(number)
            if pending is None:
                if number in self._finished:
                    raise ConflictError(f"trial {number} of study '{self.name}' is finished "
                                        f"({self._finished[number].status}); report no more stages")
                raise NotFoundError(f"study '{self.name}' has no trial {number} waiting for scores")
            if not hmac.compare_digest(ticket.encode(), ticket_of(pending).encode()):
                raise ForbiddenError(f"trial {number} of study '{self.name}' was not handed out with this ticket")
            self.racing.stage_scores(stage, per_example)  # a malformed report first (422), then its order (409)
            expected = int(pending.user_attrs.get("race_stage", 0))
            if stage != expected:
                raise ConflictError(f"trial {number}: stage {expected} is the next to report, not {stage}")
            partial = {n: [*pending.user_attrs.get("race_partial", {}).get(n, []), *map(float, per_example[n])]
                       for n in self.racing.names}
            refs = [self._finished[n] for n in pending.user_attrs.get("race_references", []) if n in self._finished]
            reason, state = self.racing.decide(stage, partial, refs)
            if reason is None:
                store = self.study.store
                trial_id = store.storage.get_trial_id_from_study_id_trial_number(store.study._study_id, number)
                store.storage.set_trial_user_attr(trial_id, "race_partial", partial)
                store.storage.set_trial_user_attr(trial_id, "race_stage", stage + 1)  # after the scores
                pending.user_attrs.update(race_partial=partial, race_stage=stage + 1)
                return {"trial": number, "stop": False, "reason": None, "status": "running"}
            order = {n: np.argsort(state["scored"][n][0]) for n in self.racing.names}
            result = EvalResult(
                key=pending.key, status="pruned", objectives=state["objectives"], worker="remote",
                per_example={n: state["scored"][n][1][order[n]] for n in self.racing.names},
                racing={"examples_scored": state["examples_scored"], "stage": stage, "reason": reason,
                        "intermediate": state["intermediate"], "references": [r.number for r in refs],
                        "scored_indices": {n: np.sort(state["scored"][n][0]).tolist() for n in self.racing.names}})
            record = self._finish(number, result)
            self.study._tell([pending.genome], record)
            self.study.save_checkpoint()
            self.cond.notify_all()
        if self.on_tell is not None:
            self.on_tell(self.name)
        return {"trial": number, "stop": True, "reason": reason, "status": "pruned"}

    # ---- reading -------------------------------------------------------------------------------
    def shortfall(self) -> str:
        """Why an ask gave fewer candidates than requested."""
        with self.cond:
            if self.complete:
                return "budget spent: the study is complete"
            if self.budget is not None and len(self._finished) + len(self._running) >= self.budget:
                return "budget reached: every remaining evaluation is handed out; waiting for their tells"
            return "the generation is handed out; tell pending trials first"

    @property
    def complete(self) -> bool:
        return self.budget is not None and len(self._finished) >= self.budget

    def status(self) -> dict[str, Any]:
        with self.cond:
            cfg = self.study.config
            ok = [r for r in self._finished.values() if r.status == "ok"]
            best = max(ok, key=lambda r: self.study.score(r.objectives)) if ok else None
            strategy = self.study.strategy
            return {
                "name": self.name, "strategy": cfg.strategy.name, "generational": not strategy.supports_async,
                "objectives": [{"name": o.name, "direction": o.direction, "weight": o.weight}
                               for o in self.study.objectives],
                "dim": int(self.study.space.dim), "budget": self.budget, "finished": len(self._finished),
                "failed": sum(r.status == "failed" for r in self._finished.values()),
                "pruned": sum(r.status == "pruned" for r in self._finished.values()), "running": sorted(self._running),
                "complete": self.complete, "best_trial": best.number if best else None,
                "best_score": self.study.score(best.objectives) if best else None,
            }

    def front(self) -> dict[str, Any]:
        with self.cond:
            archive, ok = self.study.archive()
            by_number = {r.number: r for r in ok}
            return {
                "objectives": [o.name for o in self.study.objectives],
                "directions": [o.direction for o in self.study.objectives],
                "hypervolume": archive.hypervolume(),
                "reference_point": [float(x) for x in archive.reference_point],
                "front": [{"trial": n, "objectives": by_number[n].objectives, "recipe": by_number[n].recipe,
                           "genome": [float(x) for x in by_number[n].genome] if by_number[n].genome is not None
                           else None} for n in sorted(archive.front)],
            }

    def trial(self, number: int) -> TrialRecord:
        with self.cond:
            record = self._finished.get(number) or self._running.get(number)
        if record is None:
            raise NotFoundError(f"study '{self.name}' has no trial {number}")
        return record


def open_remote_study(folder: Path, models_root: Path | None = None, *, trusted: bool = False) -> Study:
    """A server-made study folder as a Study (its space rebuilt the way the server built it)."""
    folder = Path(folder)
    meta_path = folder / SERVER_FILE
    if not meta_path.is_file():
        raise NotFoundError(f"{folder}: not a study made by `evomerge serve` (no {SERVER_FILE})")
    extras = json.loads(meta_path.read_text()).get("extras", {})
    config = RunConfig.load(folder / CONFIG_FILE)
    return Study(config, folder, space=build_remote_space(config, extras, models_root, trusted=trusted))


class StudyRegistry:
    """The studies under one storage root, opened lazily and kept open; one instance per server process."""

    def __init__(self, root: Path, models_root: Path | None = None, max_studies: int = 1000,
                 on_tell: Callable[[str], None] | None = None, database: str | None = None) -> None:
        self.database = database
        self.root = Path(root)
        self.on_tell = on_tell
        self.root.mkdir(parents=True, exist_ok=True)
        self.models_root = models_root
        self.max_studies = max_studies
        self._open: dict[str, RemoteStudy] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / SERVER_FILE).is_file() and _NAME_RE.fullmatch(p.name))

    def create(self, data: dict[str, Any], extras: dict[str, Any]) -> RemoteStudy:
        with self._lock:
            if len(self.names()) >= self.max_studies:
                raise ConflictError(f"this server holds its maximum of {self.max_studies} studies")
            study = RemoteStudy.create(self.root, data, extras, self.models_root, self.database)
            self._claim(study_dir(self.root, study.name), study.name)
            study.on_tell = self.on_tell
            self._open[study.name] = study
            return study

    @staticmethod
    def _claim(folder: Path, name: str) -> None:
        """Hold the study folder's run lock while it is open here: an `evomerge resume` of it is refused, and
        a study another process is writing is refused here (409) instead of being written twice."""
        from evomerge import runlock

        try:
            runlock.acquire(folder, "study folder")
        except runlock.FolderLockedError as exc:
            raise ConflictError(f"study '{name}': {exc}") from None

    def get(self, name: str) -> RemoteStudy:
        folder = study_dir(self.root, name)
        with self._lock:
            if name not in self._open:
                if not (folder / SERVER_FILE).is_file():
                    raise NotFoundError(f"no study '{name}' on this server")
                self._claim(folder, name)
                self._open[name] = RemoteStudy.open(folder, self.models_root)
                self._open[name].on_tell = self.on_tell
            return self._open[name]
