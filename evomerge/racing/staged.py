"""Staged scoring of one candidate (worker side): the tasks' examples in the seeded order, stage by stage.

Each stage scores only the examples it adds, so a candidate that runs through every stage costs one full
pass. After every stage but the last the request's rule decides whether to stop; a stopped candidate's
result is ``pruned`` with its running objectives (the means over the examples seen) and the scores of those
examples. A task's objective must be ``per_example_sign`` × the mean of its per-example scores on every
subset; a result that is not is an error naming the task, never a silently wrong race.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evomerge.errors import FitnessError
from evomerge.fitness.base import FitnessTask
from evomerge.racing.order import example_order, stage_counts
from evomerge.racing.request import RaceRequest


@dataclass
class StagedOutcome:
    status: str  # ok | pruned
    objectives: dict[str, float]
    per_example: dict[str, np.ndarray]  # ok: full vectors in index order; pruned: the scored examples' scores
    racing: dict[str, Any] = field(default_factory=dict)  # examples_scored, stage, reason, intermediate, indices


def _mean_objective(task: FitnessTask, scores: np.ndarray) -> float:
    return float(getattr(task, "per_example_sign", 1.0)) * float(np.mean(scores))


def evaluate_staged(tasks: Sequence[FitnessTask], model: Any, tokenizer: Any, split: str,
                    request: RaceRequest) -> StagedOutcome:
    """Score ``tasks`` on ``split`` in the request's stages; stop where its rule says so."""
    sizes = {t.name: int(t.size(split)) for t in tasks}  # type: ignore[attr-defined]
    orders = {t.name: example_order(sizes[t.name], request.order_seed, t.name) for t in tasks}
    counts = {t.name: stage_counts(sizes[t.name], request.stages) for t in tasks}
    scores = {t.name: np.full(sizes[t.name], np.nan) for t in tasks}
    done = dict.fromkeys(sizes, 0)
    refs = [r.number for r in request.references]  # recorded: what the candidate was raced against
    intermediate: list[list[float]] = []
    history: list[float] = []  # the running scalarised score after each stage
    objectives: dict[str, float] = {}
    seconds: list[float] = []
    for stage in range(len(request.stages)):
        t0 = time.perf_counter()
        for task in tasks:
            name = task.name
            new = orders[name][done[name]:counts[name][stage]]
            if new.size == 0:
                continue
            res = task.evaluate(model, tokenizer, split=split, indices=new)  # type: ignore[call-arg]
            part = np.asarray(res.per_example, dtype=np.float64)
            if part.shape != new.shape:
                raise FitnessError(f"task '{name}': {part.size} per-example scores for the {new.size} examples asked")
            expected = _mean_objective(task, part)
            got = res.objectives.get(task.objective_name)
            if got is None or not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
                raise FitnessError(f"task '{name}': objective {task.objective_name}={got} is not "
                                   f"{getattr(task, 'per_example_sign', 1.0):+g} × the mean of its per-example scores "
                                   f"({expected}) on a subset of split '{split}': it cannot be scored in stages")
            scores[name][new] = part
            done[name] = counts[name][stage]
        for task in tasks:
            seen = orders[task.name][:done[task.name]]
            objectives[task.objective_name] = _mean_objective(task, scores[task.name][seen])
        bad = {k: v for k, v in objectives.items() if not math.isfinite(v)}
        if bad:
            raise FitnessError(f"non-finite objective(s) after stage {stage + 1}: {bad}")
        seconds.append(time.perf_counter() - t0)
        scored = {t.name: (orders[t.name][:done[t.name]], scores[t.name][orders[t.name][:done[t.name]]])
                  for t in tasks}
        examples = sum(done.values())
        intermediate.append([examples, request.running_value(objectives)])
        history.append(request.scalar_value(objectives))
        if stage == len(request.stages) - 1:
            break
        reason = request.decide(stage, scored, sizes, objectives, history)
        if reason is not None:
            indices = {n: np.sort(idx) for n, (idx, _) in scored.items()}
            return StagedOutcome(
                status="pruned", objectives=dict(objectives),
                per_example={n: scores[n][indices[n]] for n in indices},
                racing={"examples_scored": examples, "stage": stage, "reason": reason, "intermediate": intermediate,
                        "references": refs,
                        "scored_indices": {n: i.tolist() for n, i in indices.items()}, "stage_seconds": seconds,
                        **_rung(request, stage, history[-1])})
    return StagedOutcome(status="ok", objectives=dict(objectives), per_example=scores,
                         racing={"examples_scored": sum(done.values()), "stage": len(request.stages) - 1,
                                 "intermediate": intermediate, "references": refs, "stage_seconds": seconds})


def _rung(request: RaceRequest, stage: int, value: float) -> dict[str, int]:
    """Successive halving: the rung a stopped candidate failed (the mirror rebuilds its rung attributes from it)."""
    failed = request.failed_rung(stage, value) if request.rule in ("successive_halving", "hyperband") else None
    return {} if failed is None else {"rung": failed[0]}
