"""The Study: ask → evaluate → tell under a budget, every trial recorded, resumable at any moment.

Durability rests on three facts:

1. every finished evaluation is written to the Optuna storage in one call,
   keyed by the hash of its genome;
2. the strategy's full state (RNG included) is checkpointed atomically after
   every tell;
3. strategies are deterministic given their state.

After a crash (even ``kill -9``) the run reloads the last checkpoint, so the
strategy asks the very genomes it asked before; those already in storage are
not evaluated again, their recorded results are told instead. Hence no
finished evaluation is lost or repeated, and a resumed run produces exactly
the trials of an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomerge import interrupt
from evomerge.errors import CheckpointError, ConfigError
from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.study.archive import Archive
from evomerge.study.box import BoxSpace
from evomerge.study.breaker import Breaker, NoSuccessError, no_success_reason
from evomerge.study.checkpoint import atomic_write_bytes, claim_folder, load_pickle, save_pickle
from evomerge.study.config import RunConfig
from evomerge.study.objectives import load_objectives, scalarize
from evomerge.study.record import TrialRecord, TrialStore, genome_key
from evomerge.study.stream import LoopHooks, StreamLoop, StreamState

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "strategy.pkl"
STORAGE_FILE = "study.db"


@dataclass
class Progress:
    """What a progress display needs after each recorded evaluation."""

    done: int
    budget: int | None
    best: float | None
    elapsed_s: float
    wall_budget_s: float | None
    failed: int
    last: EvalResult | None = None
    reused: int = 0
    workers: list[Any] = field(default_factory=list)  # per-worker snapshots, for runners that have workers (Ray)
    last_trial: int | None = None  # trial number of ``last``
    last_score: float | None = None  # its scalarised score (None: it failed)

    @property
    def evals_per_min(self) -> float:
        return 60 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class StudySummary:
    run_dir: Path
    n_trials: int
    n_failed: int
    best_number: int | None
    best_score: float | None
    front: list[int]
    hypervolume: float
    reference_point: list[float]
    test_results: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    n_pruned: int = 0  # stopped by racing (recorded PRUNED)
    examples_scored: int = 0  # summed over the trials that record it


def build_space(config: RunConfig):
    """The run's search space: a plain box for function runners, else a preset or inline space config."""
    space_cfg = config.space
    if isinstance(space_cfg, dict) and space_cfg.get("kind") == "box":
        extra = {k: v for k, v in space_cfg.items() if k != "kind"}
        try:
            return BoxSpace(**extra)
        except TypeError as exc:
            raise ConfigError(f"space: {exc}") from None
    from evomerge.spaces import Sources, load_space
    from evomerge.spaces import build_space as build

    assert config.sources is not None
    cfg = load_space(space_cfg) if isinstance(space_cfg, str) else space_cfg
    space = build(cfg, Sources(base=config.sources.base, models=list(config.sources.models)))
    if config.sources.tokenizer is not None:
        from evomerge.vocab.search import carry_tokenizer, worker_sources

        carry_tokenizer(space, config.sources.tokenizer)
        worker_sources(config, space)  # a space whose candidates need two vocabularies fails here, by name
    return space


def build_runner(config: RunConfig, tasks: list) -> Runner:
    rc = config.runner
    if rc.type == "function":
        from evomerge.exec.function import FunctionRunner

        assert rc.target is not None
        return FunctionRunner(rc.target)
    if rc.type == "remote":
        raise ConfigError(f"study '{config.name}' is scored by clients of `evomerge serve` (runner: remote); "
                          "it has no runner to evaluate candidates here")
    if rc.type == "ray":
        from evomerge.exec.ray_runner import RayRunner

        return RayRunner.from_config(config, tasks)
    import torch

    from evomerge.exec.local import LocalRunner
    from evomerge.exec.worker import EvalWorker
    from evomerge.vocab.search import worker_sources

    assert config.sources is not None
    dtype = torch.float32 if rc.storage_dtype == "float32" else torch.bfloat16
    base, models = worker_sources(config)  # across vocabularies: the base only where the candidates use it
    return LocalRunner(EvalWorker(base, models, tasks, device=rc.worker_device(),
                                  storage_dtype=dtype, threads=rc.threads, tokenizer=config.sources.tokenizer,
                                  model_dtype=rc.model_dtype, source_memory=rc.source_memory,
                                  host_memory=rc.host_memory, devices=rc.worker_devices()))


def claim_run_dir(config: RunConfig) -> Path:
    """The run folder of a resolved ``config``, holding that config; a folder with another config is refused."""
    run_dir = config.run_dir()
    text = config.to_yaml()
    stored = run_dir / CONFIG_FILE
    if stored.is_file() and stored.read_text() != text and _reads_as(stored, text):
        text = stored.read_text()  # stored by an earlier evomerge (a key added since, a path not resolved then)
    return claim_folder(run_dir, CONFIG_FILE, text, f"evomerge resume {run_dir}")


def _reads_as(stored: Path, text: str) -> bool:
    """Whether the config in ``stored``, read and resolved by this version, is exactly the one in ``text``."""
    try:
        return RunConfig.load(stored).resolved().to_yaml() == text
    except Exception:  # an unreadable stored config is a different one: claim_folder shows the diff
        return False


class Study:
    """One search run in its folder. ``Study.create`` starts (or continues an identical) run; ``Study.open`` resumes."""

    def __init__(self, config: RunConfig, run_dir: Path, *, runner: Runner | None = None, space=None,
                 claim: Callable[[], None] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.objectives, self.tasks = load_objectives(config)
        # ``space``: a prebuilt space (the HTTP server builds PS spaces over model *names*, reading no checkpoint)
        self.space = space if space is not None else build_space(config)
        from evomerge.strategies import Problem, make_strategy

        self.scalarized = len(self.objectives) == 1 or not _is_multi_objective(config.strategy.name)
        directions = ("maximize",) if self.scalarized else tuple(o.direction for o in self.objectives)
        self.problem = Problem(lower=self.space.lower, upper=self.space.upper, directions=directions,
                               x0=self.space.x0(), names=tuple(self.space.names))
        self.strategy = make_strategy(config.strategy.name, self.problem, seed=config.seed,
                                      **config.strategy.options)
        from evomerge.racing.driver import check_racing

        check_racing(config, self.objectives, self.tasks, self.scalarized)
        if claim is not None:  # a new run: everything above validated, and preflight, before the folder is written
            from evomerge.study.preflight import preflight

            preflight(config, self.space, self.tasks)
            claim()
        if config.storage is None and (run_dir / CHECKPOINT_FILE).is_file() and not (run_dir / STORAGE_FILE).exists():
            raise CheckpointError(
                f"{run_dir / STORAGE_FILE}: missing, but {run_dir / CHECKPOINT_FILE} holds a run's strategy state; "
                "restore study.db from a backup (a new empty one would lose every trial), or start a new run folder")
        url = config.storage or f"sqlite:///{run_dir / STORAGE_FILE}"
        self.store = TrialStore(url, config.name, [o.name for o in self.objectives],
                                [o.direction for o in self.objectives], list(self.space.names),
                                self.space.lower, self.space.upper)
        self._runner = runner
        self._elapsed_before = 0.0
        self._stream_state: StreamState | None = None
        self._horizon = 0  # generational loop: trials recorded when the current generation was asked (racing)
        self._load_checkpoint()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, *, runner: Runner | None = None, parent: RunConfig | None = None) -> Study:
        """Start a run in ``config.run_dir()``; an existing run there continues only if its config is identical.

        Nothing is written (no folder, no storage) until the config, its sources and tasks have been
        validated and preflighted. ``parent``: the resolved config of a two-stage run whose folder
        holds this stage's; it is claimed first, under the same rule.
        """
        config = config.resolved()

        def claim() -> None:
            if parent is not None:
                claim_run_dir(parent)
            claim_run_dir(config)

        return cls(config, config.run_dir(), runner=runner, claim=claim)

    @classmethod
    def open(cls, run_dir: str | Path, *, runner: Runner | None = None, space=None) -> Study:
        run_dir = Path(run_dir)
        stored = run_dir / CONFIG_FILE
        if not stored.is_file():
            raise ConfigError(f"{run_dir}: not a run folder (no {CONFIG_FILE}); start one with `evomerge run CONFIG`")
        return cls(RunConfig.load(stored), run_dir, runner=runner, space=space)

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = build_runner(self.config, self.tasks)
        return self._runner

    # ---- checkpoint -----------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        if path.is_file():
            try:
                state = load_pickle(path)
                if not isinstance(state, dict) or "strategy" not in state:
                    raise ValueError("not a strategy checkpoint")
            except Exception as exc:  # truncated, corrupt, or written by something else
                raise CheckpointError(
                    f"{path}: unreadable strategy checkpoint ({type(exc).__name__}: {exc}); restore it from a "
                    f"backup, or move it aside (mv {path} {path}.bad) and resume: the strategy is then rebuilt "
                    "by replaying the recorded trials") from None
            self.strategy.load_state_dict(state["strategy"])
            self._elapsed_before = float(state.get("elapsed_s", 0.0))
            self._horizon = int(state.get("horizon", 0))
            if state.get("stream") is not None:
                self._stream_state = StreamState.from_dict(state["stream"])

    def save_checkpoint(self, elapsed: float | None = None) -> None:
        """Public form for other drivers of the same strategy (the HTTP server checkpoints after each ask/tell)."""
        self._save_checkpoint(self._elapsed_before if elapsed is None else elapsed)

    def _save_checkpoint(self, elapsed: float, stream: dict[str, Any] | None = None) -> None:
        save_pickle(self.run_dir / CHECKPOINT_FILE, {"strategy": self.strategy.state_dict(), "elapsed_s": elapsed,
                                                    "stream": stream, "horizon": self._horizon, "version": 1})

    # ---- values -----------------------------------------------------------------------------------
    def score(self, objectives: dict[str, float]) -> float:
        return scalarize(objectives, self.objectives)

    def _strategy_value(self, record: TrialRecord) -> list[float] | None:
        """What the strategy is told: the objectives (or their scalarisation); a pruned trial's running estimate."""
        if record.status not in ("ok", "pruned"):
            return None
        if self.scalarized:
            return [self.score(record.objectives)]
        return [record.objectives[o.name] for o in self.objectives]

    def _tell(self, genomes: list[np.ndarray], record: TrialRecord) -> None:
        """Tell one record; a pruned one as such (Optuna strategies: PRUNED with its intermediate values)."""
        value = self._strategy_value(record)
        if record.status == "pruned":
            sign = self.objectives[0].sign if len(self.objectives) == 1 else 1.0  # intermediate values: see record.py
            steps = [(int(st), sign * float(v)) for st, v in record.user_attrs.get("intermediate", [])]
            self.strategy.tell_pruned(genomes, value, steps)
        else:
            self.strategy.tell(genomes, [value] * len(genomes))

    def race_request(self, horizon: int, records: Iterable[TrialRecord]) -> Any:
        """The racing request for a candidate asked when ``horizon`` trials were recorded (None: racing is off)."""
        from evomerge.racing.driver import race_request, racing_enabled

        if not racing_enabled(self.config):
            return None
        return race_request(self.config, self.objectives, self.tasks, self.scalarized,
                            (r for r in records if r.number < horizon), self.score)

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[Progress], None] | None = None) -> StudySummary:
        """Search until the budget is spent (or Ctrl-C), then report the front. Safe to call again after a crash.

        Strategies that take results out of order stream (``evomerge.study.stream``):
        every free worker gets a new candidate at once. Generational ones (CMA-ES,
        MAP, MM-MO) are asked a batch, which is evaluated in parallel and told whole.
        """
        from evomerge import runlock

        runlock.acquire(self.run_dir)  # one writer per run folder (re-entrant: `create` usually holds it already)
        stored = [r for r in self.store.records() if r.key]
        records = {r.key: r for r in stored}
        budget = self.config.budget
        started = time.monotonic()
        reused = 0
        # kept up to date per result (a progress report after every cheap candidate must not rescan the run)
        scores = [self.score(r.objectives) for r in records.values() if r.status == "ok"]
        best: float | None = max(scores) if scores else None
        failed = sum(r.status == "failed" for r in records.values())
        breaker = Breaker(budget.stop_after_first_failures, self.run_dir, succeeded=bool(scores))

        def elapsed() -> float:
            return self._elapsed_before + time.monotonic() - started

        last_record: list[TrialRecord] = []

        def report(last: EvalResult | None) -> None:
            if on_progress is not None:
                states = getattr(self._runner, "worker_states", None)
                rec = last_record[-1] if last is not None and last_record else None
                on_progress(Progress(done=len(records), budget=budget.evaluations, best=best, elapsed_s=elapsed(),
                                     wall_budget_s=budget.wall_time_s, last=last, reused=reused, failed=failed,
                                     workers=states() if callable(states) else [],
                                     last_trial=rec.number if rec else None,
                                     last_score=self.score(rec.objectives) if rec and rec.status == "ok" else None))

        def record(result: EvalResult, cand: Candidate, extra: dict[str, Any]) -> TrialRecord:
            recipe = cand.recipe.to_dict() if cand.recipe is not None else None
            number = self.store.add(result, cand.genome, recipe,
                                    {"split": "train", "details": result.details, **extra})
            attrs = dict(extra)
            if result.racing:  # what replay and racing read back from the record
                attrs["intermediate"] = result.racing.get("intermediate", [])
                if "rung" in result.racing:  # successive halving: the rung it failed (see evomerge.racing.pruners)
                    attrs["race_rung"] = int(result.racing["rung"])
            if result.ok and cand.race is not None:
                attrs["per_example"] = {k: np.asarray(v).tolist() for k, v in result.per_example.items()}
            rec = TrialRecord(number=number, key=result.key, status=result.status, objectives=result.objectives,
                              genome=cand.genome, recipe=recipe, user_attrs=attrs)
            records[result.key] = rec
            last_record[:] = [rec]
            nonlocal best, failed
            if rec.status == "ok":
                score = self.score(rec.objectives)
                best = score if best is None else max(best, score)
            elif rec.status == "failed":
                failed += 1
            # a pruned candidate was scored (on part of the examples): not a failure
            breaker.observe(rec.status != "failed", result.error)  # raises when the first ones all failed alike
            return rec

        def count_reused(n: int) -> None:
            nonlocal reused
            reused += n

        hooks = LoopHooks(elapsed=elapsed, wall_budget_s=budget.wall_time_s, evaluations=budget.evaluations,
                          record=record, report=report, count_reused=count_reused)
        report(None)
        try:
            if self.strategy.supports_async:
                stopped_early = StreamLoop(self, hooks, self._stream_state).run(stored)
            else:
                stopped_early = self._run_generations(hooks, records)
        except KeyboardInterrupt:
            stopped_early = True
        return self.summary(stopped_early=stopped_early)

    def _run_generations(self, hooks: LoopHooks, records: dict[str, TrialRecord]) -> bool:
        """Ask a batch, evaluate it (in parallel where the runner can), tell it whole; True when stopped early."""
        budget = hooks.evaluations
        while not self.strategy.finished:
            if (budget is not None and len(records) >= budget) or hooks.out_of_time():
                return False
            genomes = self.strategy.ask(None)
            if not genomes:
                return False  # nothing to evaluate and this loop tells whole batches: waiting would spin forever
            race = self.race_request(self._horizon, records.values())  # same for the whole generation
            candidates = [Candidate(key=genome_key(g), recipe=self.space.decode(g), genome=np.asarray(g), race=race)
                          for g in genomes]
            hooks.count_reused(sum(c.key in records for c in candidates))
            todo: dict[str, Candidate] = {}
            for c in candidates:
                if c.key not in records and c.key not in todo:
                    todo[c.key] = c
            complete = True
            if budget is not None and len(records) + len(todo) > budget:
                todo = dict(list(todo.items())[: budget - len(records)])
                complete = False
            for result in self.runner.evaluate(list(todo.values())):
                hooks.record(result, todo[result.key], {})
                hooks.report(result)
                if interrupt.requested() or hooks.out_of_time():
                    complete = all(c.key in records for c in candidates)
                    break
            if not complete:
                return interrupt.requested()  # unfinished generation: no tell, a resume with more budget re-asks it
            # CMA-ES and the other generational strategies are told a pruned candidate's running estimate
            # (the objectives' means over the examples it was scored on), in the generation's own tell
            self.strategy.tell(genomes, [self._strategy_value(records[c.key]) for c in candidates])
            self._horizon = 1 + max(r.number for r in records.values())  # the next generation races these
            self._save_checkpoint(hooks.elapsed())
            if interrupt.requested():
                return True
        return False

    # ---- results ----------------------------------------------------------------------------------
    def archive(self) -> tuple[Archive, list[TrialRecord]]:
        ok = [r for r in self.store.records() if r.status == "ok"]
        values = np.array([[r.objectives[o.name] for o in self.objectives] for r in ok], dtype=np.float64)
        archive = Archive.of([r.number for r in ok], values.reshape(len(ok), len(self.objectives)),
                             [o.name for o in self.objectives], [o.direction for o in self.objectives],
                             self.config.reference_point)
        return archive, ok

    def summary(self, *, stopped_early: bool = False) -> StudySummary:
        records = self.store.records()
        archive, ok = self.archive()
        best = max(ok, key=lambda r: self.score(r.objectives)) if ok else None
        return StudySummary(run_dir=self.run_dir, n_trials=len(records),
                            n_failed=sum(r.status == "failed" for r in records),
                            n_pruned=sum(r.status == "pruned" for r in records),
                            examples_scored=sum(int(r.user_attrs.get("examples_scored", 0)) for r in records),
                            best_number=best.number if best else None,
                            best_score=self.score(best.objectives) if best else None,
                            front=archive.front, hypervolume=archive.hypervolume(),
                            reference_point=[float(x) for x in archive.reference_point],
                            test_results=dict(self.store.study.user_attrs.get("test_results", {})),
                            stopped_early=stopped_early)

    def finalize(self) -> dict[str, Any]:
        """Re-evaluate the front (and the configured baselines) on the held-out split; write the run's results.

        Results go to the study's user attributes (``test_results``) and to
        ``front.json`` / ``best_recipe.json`` in the run folder. Idempotent: a
        front already evaluated is not evaluated again.
        """
        from evomerge.recipe.model import Recipe

        self.require_success()
        archive, ok = self.archive()
        by_number = {r.number: r for r in ok}
        previous = dict(self.store.study.user_attrs.get("test_results", {}))
        split = self.config.test_split
        results: dict[str, Any] = {"split": split, "trials": dict(previous.get("trials", {})),
                                   "baselines": dict(previous.get("baselines", {}))}
        if split is not None and self.tasks:
            todo = [n for n in archive.front if str(n) not in results["trials"] and by_number[n].recipe]
            cands = [Candidate(key=f"trial:{n}", recipe=Recipe.model_validate(by_number[n].recipe), split=split)
                     for n in todo]
            for b in self.config.baselines:
                for sp in dict.fromkeys(("train", split)):
                    if sp not in results["baselines"].get(b.name, {}):
                        cands.append(Candidate(key=f"baseline:{b.name}:{sp}", split=sp,
                                               recipe=Recipe.from_dict(b.recipe, source=f"baselines[{b.name}]")))
            for res in self.runner.evaluate(cands):
                kind, _, rest = res.key.partition(":")
                entry = {"status": res.status, "objectives": res.objectives,
                         "score": self.score(res.objectives) if res.ok else None, "error": res.error}
                if kind == "trial":
                    results["trials"][rest] = entry
                else:
                    name, _, sp = rest.rpartition(":")
                    results["baselines"].setdefault(name, {})[sp] = entry
            self.store.study.set_user_attr("test_results", results)
        front = []
        for n in archive.front:
            r = by_number[n]
            front.append({"trial": n, "objectives": r.objectives, "score": self.score(r.objectives),
                          "test": results["trials"].get(str(n)), "recipe": r.recipe,
                          "genome": None if r.genome is None else [float(x) for x in r.genome]})
        doc = {"objectives": [o.__dict__ for o in self.objectives], "hypervolume": archive.hypervolume(),
               "reference_point": [float(x) for x in archive.reference_point], "front": front,
               "best_per_objective": archive.best_per_objective(), "baselines": results["baselines"]}
        atomic_write_bytes(self.run_dir / "front.json", json.dumps(doc, indent=2).encode())
        if ok:
            best = max(ok, key=lambda r: self.score(r.objectives))
            if best.recipe is not None:
                atomic_write_bytes(self.run_dir / "best_recipe.json", json.dumps(best.recipe, indent=2).encode())
        return results

    def no_success_reason(self) -> str | None:
        """One line saying why this run has no result yet (no trial, or every trial failed), else None."""
        return no_success_reason(self.run_dir, self.store.records())

    def require_success(self) -> None:
        """Raise ``NoSuccessError`` (one line, with the last error) when no trial succeeded: nothing to report."""
        reason = self.no_success_reason()
        if reason is not None:
            raise NoSuccessError(f"{reason}; nothing to finalize, export or report")

    def close(self) -> None:
        """Release the runner (Ray actors, and a Ray instance the runner started itself)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def record(self, number: int) -> TrialRecord:
        for r in self.store.records():
            if r.number == number:
                return r
        raise ConfigError(f"{self.run_dir}: no trial number {number}")


def _is_multi_objective(strategy_name: str) -> bool:
    from evomerge.strategies import STRATEGIES

    cls = STRATEGIES.get(strategy_name)
    if cls is None:
        raise ConfigError(f"strategy.name: unknown strategy '{strategy_name}' (known: {', '.join(sorted(STRATEGIES))})")
    return bool(cls.multi_objective)
