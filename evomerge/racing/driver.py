"""Driver side of racing: the config checks, and the request attached to each candidate.

A candidate is raced against the trials recorded before it was asked (its *horizon*): the k-th best
fully scored one (one scalar objective) or every member of their Pareto front (several objectives).
The horizon is a function of the ask/tell order, which a resume replays, so a resumed run attaches the
same references and takes the same decisions as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from evomerge.errors import ConfigError
from evomerge.racing.request import RaceRequest, Reference, Term

PRUNER_RULES = ("median", "successive_halving", "hyperband")


def racing_enabled(config: Any) -> bool:
    return config.racing is not None and config.racing.rule != "none"


def check_racing(config: Any, objectives: Sequence[Any], tasks: Sequence[Any], scalarized: bool) -> None:
    """Refuse, naming the key or task and why, a racing config that cannot be honoured."""
    if not racing_enabled(config):
        return
    rc = config.racing
    if config.runner.type not in ("local", "ray") or config.runner.target is not None:
        raise ConfigError(f"racing: runner type '{config.runner.type}' has no fitness tasks to score in stages; "
                          "racing needs the local or ray runner with task objectives")
    if len(tasks) != len(objectives):
        raise ConfigError("racing: every objective must come from a fitness task (objectives[].task); "
                          "a named value without a task cannot be scored in stages")
    for task in tasks:
        kind = getattr(task, "kind", type(task).__name__)
        refusal = getattr(task, "race_refusal", "it does not support scoring a subset of its examples")
        if refusal is not None or not hasattr(task, "size"):
            raise ConfigError(f"racing: task '{task.name}' (kind {kind}) cannot be scored in stages: {refusal}")
        if rc.rule == "bound" and rc.test == "bernstein_serfling" and getattr(task, "score_range", None) is None \
                and task.size("train") > 1:
            hint = " (declare score_range: [low, high] in the task)" if kind == "python" else ""
            raise ConfigError(f"racing.rule bound: task '{task.name}' (kind {kind}) has no known range of its "
                              f"per-example scores, which the Bernstein-Serfling bound needs{hint}; use "
                              "test: normal or rule: median instead")
    if rc.rule in PRUNER_RULES and not scalarized:
        raise ConfigError(f"racing.rule {rc.rule}: Optuna's pruners are single-objective; with several "
                          "objectives (a multi-objective strategy) use rule bound")
    sh_keys = [k for k in ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count")
               if getattr(rc, k) != type(rc).model_fields[k].default]  # the config is saved with its defaults
    if rc.rule == "hyperband" and "min_early_stopping_rate" in sh_keys:
        raise ConfigError("racing.min_early_stopping_rate: rule hyperband sets it per bracket (as Optuna does)")
    if sh_keys and rc.rule not in ("successive_halving", "hyperband"):
        raise ConfigError(f"racing.{sh_keys[0]}: only rules successive_halving and hyperband read it "
                          f"(rule is {rc.rule})")


def terms_of(objectives: Sequence[Any], tasks: Sequence[Any]) -> list[Term]:
    total = sum(o.weight for o in objectives) or 1.0
    out = []
    for o, t in zip(objectives, tasks, strict=True):
        rng = getattr(t, "score_range", None)
        out.append(Term(task=t.name, objective=o.name, pe_sign=float(getattr(t, "per_example_sign", 1.0)),
                        sign=o.sign, weight=o.weight / total, score_range=None if rng is None else rng[1] - rng[0]))
    return out


def _reference(record: Any, terms: Sequence[Term], sizes: dict[str, int]) -> Reference | None:
    per = record.user_attrs.get("per_example") or {}
    vectors = {}
    for t in terms:
        v = per.get(t.task)
        if v is None or len(v) != sizes[t.task]:
            return None  # not a full-split vector of this task (another run's layout): not a usable reference
        vectors[t.task] = np.asarray(v, dtype=np.float64)
    return Reference(number=record.number, per_example=vectors)


def race_request(config: Any, objectives: Sequence[Any], tasks: Sequence[Any], scalarized: bool,
                 pool: Iterable[Any], score: Any) -> RaceRequest | None:
    """The request for a candidate raced against ``pool`` (the fully scored trials before its horizon)."""
    if not racing_enabled(config):
        return None
    rc = config.racing
    terms = terms_of(objectives, tasks)
    sizes = {t.name: int(t.size("train")) for t in tasks}
    pool_list = list(pool)
    ok = sorted((r for r in pool_list if r.status == "ok"), key=lambda r: r.number)
    refs: list[Reference] = []
    if scalarized:
        ranked = sorted(ok, key=lambda r: (-score(r.objectives), r.number))
        usable = [ref for ref in (_reference(r, terms, sizes) for r in ranked[: rc.k]) if ref is not None]
        if len(ranked) >= rc.k and len(usable) == rc.k:
            refs = [usable[-1]]
    elif ok:
        from evomerge.study.archive import non_dominated

        values = np.array([[r.objectives[o.name] for o in objectives] for r in ok], dtype=np.float64)
        front = [ok[i] for i in non_dominated(values, [o.direction for o in objectives])]
        refs = [ref for ref in (_reference(r, terms, sizes) for r in front) if ref is not None]
    seed = config.seed if rc.order_seed is None else rc.order_seed
    thresholds: dict[int, float] = {}
    if rc.rule == "median":
        from evomerge.racing.pruners import median_thresholds

        steps = _steps(terms, sizes, rc.stages)
        sign = terms[0].sign if len(terms) == 1 else 1.0  # recorded: the objective itself for one objective
        thresholds = median_thresholds(pool_list, steps, lambda v: sign * v)
        refs = []
    rungs: dict[int, list[tuple[int, float]]] = {}
    if rc.rule == "successive_halving":
        from evomerge.racing.pruners import sh_thresholds

        steps = _steps(terms, sizes, rc.stages)
        sign = terms[0].sign if len(terms) == 1 else 1.0
        first = rc.min_resource or _first_resource(steps, rc.stages)
        rungs = sh_thresholds(pool_list, steps, lambda v: sign * v, first, rc.reduction_factor or 4,
                              rc.min_early_stopping_rate, rc.bootstrap_count)
        refs = []
    budgets: list[int] = []
    brackets: dict[int, dict[int, list[tuple[int, float]]]] = {}
    if rc.rule == "hyperband":
        from evomerge.racing.pruners import hyperband_thresholds

        steps = _steps(terms, sizes, rc.stages)
        sign = terms[0].sign if len(terms) == 1 else 1.0
        first = rc.min_resource or _first_resource(steps, rc.stages)
        budgets, brackets = hyperband_thresholds(pool_list, steps, lambda v: sign * v, config.name, first,
                                                 rc.reduction_factor or 3, rc.bootstrap_count)
        refs = []
    return RaceRequest(rule=rc.rule, stages=list(rc.stages), confidence=rc.confidence, order_seed=int(seed),
                       terms=terms, scalar=scalarized, references=refs, thresholds=thresholds, test=rc.test,
                       rungs=rungs, bracket_rungs=brackets, budgets=budgets, run_name=config.name)


def _steps(terms: Sequence[Term], sizes: dict[str, int], stages: Sequence[float]) -> list[int]:
    """Examples scored (all tasks together) after each stage: the pruners' steps."""
    from evomerge.racing.order import stage_counts

    per_task = [stage_counts(sizes[t.task], stages) for t in terms]
    return [sum(c[s] for c in per_task) for s in range(len(stages))]


def _first_resource(steps: Sequence[int], stages: Sequence[float]) -> int:
    """The default ``min_resource``: a full pass's examples × the first stage's fraction, rounded down, so that
    rung ``r`` lands on the stage of fraction ``first · reduction_factor^r`` (each stage's count is rounded up:
    ``steps[0]`` itself would put 4 × ceil(1437 / 8) = 720 beyond the half stage's 719)."""
    return max(1, int(steps[-1] * stages[0]))
