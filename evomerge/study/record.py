"""The trial record: every evaluation in an Optuna storage, found again by its genome.

Optuna's storage is the system of record (sqlite in the run folder by default,
any SQLAlchemy URL, or a journal file on a shared filesystem), so
optuna-dashboard opens a run as it is. A trial is written only once it is
finished (complete or failed), in a single storage call: a crash leaves each
evaluation either fully recorded or absent, never half.

A candidate stopped by racing is recorded PRUNED (Optuna's state for it), with its intermediate
values (step: examples scored so far, value: the running objective) and partial scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from evomerge.errors import ConfigError
from evomerge.exec.base import EvalResult

# Optuna stores every param as a row; past this many genome dimensions only the
# genome itself (a user attribute) is kept.
MAX_PARAMS = 256


def genome_key(genome: np.ndarray) -> str:
    """A stable identity for a genome: the hash of its exact float64 bytes."""
    return hashlib.sha1(np.ascontiguousarray(genome, dtype=np.float64).tobytes()).hexdigest()[:20]


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """``sqlite:///...`` or any SQLAlchemy URL, or ``journal:PATH`` for a journal file (many writers)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many kinds
        raise ConfigError(f"storage '{url}' cannot be opened: {exc}") from None


@dataclass
class TrialRecord:
    """What the Study needs back from a recorded trial."""

    number: int
    key: str
    status: str
    objectives: dict[str, float]
    genome: np.ndarray | None
    recipe: dict | None
    user_attrs: dict[str, Any]


def _lists(per_example: dict[str, Any]) -> dict[str, list[float]]:
    """Per-example scores as JSON lists (workers send numpy arrays)."""
    return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in per_example.items()}


def _record_of(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    genome = np.asarray(attrs["genome"], dtype=np.float64) if "genome" in attrs else None
    user_attrs = dict(attrs)
    if trial.intermediate_values:  # racing's stages: [[examples scored, running objective], ...]
        user_attrs["intermediate"] = [[int(k), float(v)] for k, v in sorted(trial.intermediate_values.items())]
    return TrialRecord(number=trial.number, key=attrs.get("key", ""), status=attrs.get("status", "?"),
                       objectives=dict(attrs.get("objectives", {})), genome=genome, recipe=attrs.get("recipe"),
                       user_attrs=user_attrs)


def racing_attrs(result: EvalResult) -> dict[str, Any]:
    """What racing adds to a trial's user attributes: examples scored, and for a stopped one its stage and reason."""
    out: dict[str, Any] = {}
    if result.status in ("ok", "pruned"):
        out["examples_scored"] = int(result.racing.get("examples_scored",
                                                       sum(len(v) for v in result.per_example.values())))
    if "references" in result.racing:  # the fully scored trials it was raced against
        out["race_references"] = [int(n) for n in result.racing["references"]]
    if result.status == "pruned":
        out["stage"] = int(result.racing["stage"])
        out["racing"] = str(result.racing["reason"])
        out["scored_indices"] = result.racing.get("scored_indices", {})
        if "rung" in result.racing:  # successive halving: the rung it failed (rebuilds its rung attributes)
            out["race_rung"] = int(result.racing["rung"])
    return out


class TrialStore:
    """The run's Optuna study used as an append-only log of finished evaluations."""

    def __init__(self, url: str, study_name: str, objective_names: list[str], directions: list[str],
                 dim_names: list[str], lower: np.ndarray, upper: np.ndarray) -> None:
        self.storage = open_storage(url)
        self.objective_names = objective_names
        self.study = optuna.create_study(storage=self.storage, study_name=study_name, directions=directions,
                                         load_if_exists=True)
        if self.study.user_attrs.get("objectives", objective_names) != objective_names:
            raise ConfigError(f"storage {url} holds study '{study_name}' with objectives "
                              f"{self.study.user_attrs['objectives']}, not {objective_names}")
        self.study.set_user_attr("objectives", objective_names)
        self._count = len(self.study.get_trials(deepcopy=False))
        self.dim_names = dim_names
        self._dists = {n: FloatDistribution(float(lo), float(hi)) for n, lo, hi in zip(dim_names, lower, upper,
                                                                                        strict=True)}

    def records(self) -> list[TrialRecord]:
        trials = self.study.get_trials(deepcopy=False,
                                       states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
        return [_record_of(t) for t in trials]

    def running(self) -> list[TrialRecord]:
        """Trials handed out by ``begin`` and not finished yet (remote scoring: asked, not told)."""
        return [_record_of(t) for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]

    def _params(self, genome: np.ndarray | None) -> tuple[dict[str, float], dict[str, FloatDistribution]]:
        params, dists = {}, {}
        if genome is not None and len(genome) <= MAX_PARAMS and len(genome) == len(self.dim_names):
            for name, value in zip(self.dim_names, genome, strict=True):
                dist = self._dists[name]
                params[name] = float(min(max(value, dist.low), dist.high))
                dists[name] = dist
        return params, dists

    def begin(self, key: str, genome: np.ndarray | None, recipe: dict | None, extra: dict[str, Any]) -> int:
        """Record an asked, not yet scored trial (state RUNNING), so a remote ask survives a restart."""
        attrs: dict[str, Any] = {"key": key, "status": "running", **extra}
        if genome is not None:
            attrs["genome"] = [float(x) for x in genome]
        if recipe is not None:
            attrs["recipe"] = recipe
        params, dists = self._params(genome)
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=dists,
                                             user_attrs=json.loads(json.dumps(attrs)))
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        self._count += 1
        return self.storage.get_trial_number_from_id(trial_id)

    def finish(self, number: int, result: EvalResult, extra: dict[str, Any]) -> bool:
        """Finish a ``begin``-recorded trial; the state is written last, so a crash leaves it running (retellable).

        Returns whether it counts as complete (ok and every objective present).
        """
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        attrs: dict[str, Any] = {"status": result.status, "objectives": result.objectives,
                                 "per_example": _lists(result.per_example), "merge_seconds": result.merge_seconds,
                                 "fitness_seconds": result.fitness_seconds, "worker": result.worker, **extra}
        if result.error:
            attrs["error"] = result.error[-20000:]
        attrs.update(racing_attrs(result))
        for k, v in json.loads(json.dumps(attrs)).items():
            self.storage.set_trial_user_attr(trial_id, k, v)
        ok = result.ok and all(n in result.objectives for n in self.objective_names)
        for step, value in result.racing.get("intermediate", []):
            self.storage.set_trial_intermediate_value(trial_id, int(step), float(value))
        state = TrialState.COMPLETE if ok else TrialState.PRUNED if result.status == "pruned" else TrialState.FAIL
        self.storage.set_trial_state_values(trial_id, state,
                                            [result.objectives[n] for n in self.objective_names] if ok else None)
        return ok

    def add(self, result: EvalResult, genome: np.ndarray | None, recipe: dict | None, extra: dict[str, Any]) -> int:
        """Record one finished evaluation; returns its trial number."""
        attrs: dict[str, Any] = {
            "key": result.key,
            "status": result.status,
            "objectives": result.objectives,
            "per_example": _lists(result.per_example),
            "merge_seconds": result.merge_seconds,
            "fitness_seconds": result.fitness_seconds,
            "worker": result.worker,
            **extra,
        }
        if genome is not None:
            attrs["genome"] = [float(x) for x in genome]
        if recipe is not None:
            attrs["recipe"] = recipe
        if result.error:
            attrs["error"] = result.error[-20000:]
        attrs.update(racing_attrs(result))
        params, dists = self._params(genome)
        ok = result.ok and all(n in result.objectives for n in self.objective_names)
        pruned = result.status == "pruned"
        trial = optuna.trial.create_trial(
            state=TrialState.COMPLETE if ok else TrialState.PRUNED if pruned else TrialState.FAIL,
            values=[result.objectives[n] for n in self.objective_names] if ok else None,
            params=params, distributions=dists, user_attrs=json.loads(json.dumps(attrs)),
            intermediate_values={int(step): float(v) for step, v in result.racing.get("intermediate", [])},
        )
        self.study.add_trial(trial)
        self._count += 1
        return self._count - 1
