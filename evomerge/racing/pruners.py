"""Optuna's median pruner as a racing rule: per-stage thresholds computed by the driver with Optuna's own class.

The worker cannot call Optuna (it has no study), so the driver mirrors the fully scored trials before the
candidate's horizon in an in-memory study (their intermediate values: the running scalarised score at each
stage's examples-scored step) and finds, per stage, the smallest best-so-far value ``MedianPruner.prune``
keeps (bisection: its decision is monotone in that value). The worker stops the candidate when its best
running score so far is below that threshold: exactly Optuna's rule (``best < median`` of the completed
trials' values at that step), with Optuna's defaults (5 startup trials, no warm-up steps).

Successive halving keeps its rungs in trial system attributes (``completed_rung_<r>``: the trial's value at
the step where it reached rung ``r``) that its own pruning calls write during a trial's life. They are a
function of the trial's recorded intermediate values (the decision steps are the stages but the last) and,
for a stopped trial, of the rung it failed (recorded as ``race_rung``), so the mirror rebuilds them exactly
(``rung_attrs``). Per rung, the driver then finds the smallest value Optuna's ``SuccessiveHalvingPruner``
promotes, by binary search over the competing values (the decision flips at one of them); the worker stops
the candidate at the first rung whose threshold its current running score is below.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

BISECT_STEPS = 60


def median_thresholds(pool: Iterable[Any], steps: Sequence[int], scalar: Callable[[float], float]) -> dict[int, float]:
    """Per stage index (all but the last), the running score a candidate must reach to go on; {} when too few trials.

    ``pool``: the recorded trials before the candidate's horizon; ``steps``: examples scored after each stage;
    ``scalar``: a recorded intermediate value turned into the scalarised score (larger is better).
    """
    import optuna
    from optuna.storages import InMemoryStorage
    from optuna.trial import TrialState, create_trial

    pruner = optuna.pruners.MedianPruner()
    study = optuna.create_study(storage=InMemoryStorage(), direction="maximize", pruner=pruner)
    for r in sorted(pool, key=lambda r: r.number):
        inter = r.user_attrs.get("intermediate") or []
        if r.status != "ok" or not inter:
            continue
        values = {int(st): scalar(float(v)) for st, v in inter}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=values[max(values)],
                                     intermediate_values=values))
    out: dict[int, float] = {}
    for s, step in enumerate(steps[:-1]):
        seen = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
                if step in t.intermediate_values]
        if not seen:
            continue

        def prunes(v: float, s: int = s) -> bool:
            probe = create_trial(state=TrialState.COMPLETE, value=v,
                                 intermediate_values={int(st): v for st in steps[: s + 1]})
            return pruner.prune(study, probe)

        lo, hi = min(seen) - 1.0, max(seen) + 1.0
        if not prunes(lo):
            continue  # nothing is pruned at this stage (too few trials so far)
        for _ in range(BISECT_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if prunes(mid) else (lo, mid)
        out[s] = hi
    return out


SH_ATTR = "completed_rung_{}"


def promotion_steps(steps: Sequence[int], min_resource: int, reduction_factor: int, rate: int) -> dict[int, int]:
    """Rung -> the decision stage where it is reached: the first stage (not the last) whose examples scored are
    ≥ ``min_resource · reduction_factor ** (rate + rung)``, Optuna's rung promotion step."""
    out: dict[int, int] = {}
    rung = 0
    for s, step in enumerate(steps[:-1]):
        while step >= min_resource * reduction_factor ** (rate + rung):
            out[rung] = s
            rung += 1
    return out


def rung_attrs(inter: Sequence[tuple[int, float]], status: str, failed_rung: int | None,
               rungs: dict[int, int]) -> dict[str, float]:
    """The ``completed_rung_<r>`` attributes a trial with these stage values wrote while Optuna pruned it.

    ``inter``: its (step, value) per stage reached; a stopped trial wrote the rungs of its last stage up to the
    one it failed (``failed_rung``; None: the first rung of that stage)."""
    out: dict[str, float] = {}
    last = len(inter) - 1
    for rung, s in sorted(rungs.items()):
        if s > last:
            break
        if status == "pruned" and s == last:
            here = [r for r, st in rungs.items() if st == s]
            stop = failed_rung if failed_rung is not None else min(here, default=-1)
            if rung > stop:
                break
        out[SH_ATTR.format(rung)] = float(inter[s][1])
    return out


def _probe_storage() -> Any:
    """An in-memory storage where the probe trial (id -1, never added) takes no attribute writes: Optuna's pruner
    compares the probe against the stored trials' rungs and itself, exactly as during a live trial's report."""
    from optuna.storages import InMemoryStorage

    class ProbeStorage(InMemoryStorage):
        def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
            if trial_id != -1:
                super().set_trial_system_attr(trial_id, key, value)

    return ProbeStorage()


def sh_thresholds(pool: Iterable[Any], steps: Sequence[int], scalar: Callable[[float], float], min_resource: int,
                  reduction_factor: int, rate: int = 0, bootstrap_count: int = 0
                  ) -> dict[int, list[tuple[int, float]]]:
    """Per decision stage, ``(rung, threshold)`` pairs: the candidate goes on only if its running score at that
    stage is ≥ every threshold of the stage (the first one it is below is the rung it fails).

    Computed with Optuna's ``SuccessiveHalvingPruner`` on a mirror of ``pool`` (every trial that was scored,
    fully or stopped, with its intermediate values and rebuilt rung attributes): a trial stopped at a rung
    competes there too, as in Optuna."""
    import optuna
    from optuna.trial import FrozenTrial, TrialState, create_trial

    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor,
                                                    min_early_stopping_rate=rate, bootstrap_count=bootstrap_count)
    study = optuna.create_study(storage=_probe_storage(), direction="maximize", pruner=pruner)
    rungs = promotion_steps(steps, min_resource, reduction_factor, rate)
    by_rung: dict[int, list[float]] = {r: [] for r in rungs}
    for r in sorted(pool, key=lambda r: r.number):
        inter = [(int(st), scalar(float(v))) for st, v in r.user_attrs.get("intermediate") or []]
        if r.status not in ("ok", "pruned") or not inter:
            continue
        attrs = rung_attrs(inter, r.status, r.user_attrs.get("race_rung"), rungs)
        for rung in rungs:
            if SH_ATTR.format(rung) in attrs:
                by_rung[rung].append(attrs[SH_ATTR.format(rung)])
        state = TrialState.COMPLETE if r.status == "ok" else TrialState.PRUNED
        study.add_trial(create_trial(state=state, value=inter[-1][1] if r.status == "ok" else None,
                                     intermediate_values=dict(inter), system_attrs=attrs))
    out: dict[int, list[tuple[int, float]]] = {}
    for rung, s in sorted(rungs.items()):
        step = min_resource * reduction_factor ** (rate + rung)  # the probe's step: this rung only, not the next

        def prunes(v: float, rung: int = rung, step: int = step) -> bool:
            probe = FrozenTrial(number=1 << 30, trial_id=-1, state=TrialState.RUNNING, value=None, values=None,
                                datetime_start=None, datetime_complete=None, params={}, distributions={},
                                user_attrs={}, intermediate_values={step: v},
                                system_attrs={SH_ATTR.format(k): v for k in range(rung)})
            return pruner.prune(study, probe)

        cands = sorted(set(by_rung[rung]))
        lo_v = (cands[0] - 1.0) if cands else 0.0
        if not prunes(lo_v):
            continue  # nothing is stopped at this rung
        cands.append((cands[-1] + 1.0) if cands else 1.0)
        if prunes(cands[-1]):
            out.setdefault(s, []).append((rung, math.inf))  # bootstrap: every candidate stops here
            continue
        lo, hi = 0, len(cands) - 1  # invariant: prunes(cands[hi]) is False; the answer is the least such
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if not prunes(cands[mid]) else (mid + 1, hi)
        out.setdefault(s, []).append((rung, cands[hi]))
    return out


def hyperband_budgets(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """Optuna's ``HyperbandPruner`` trial allocation budget of each bracket (from its own initialisation)."""
    import optuna

    pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                            reduction_factor=reduction_factor)
    pruner._try_initialization(None)  # type: ignore[arg-type]  # max_resource is given: the study is not read
    return list(pruner._trial_allocation_budgets)


def bracket_of(name: str, key: str, budgets: Sequence[int]) -> int:
    """Optuna's bracket assignment (``HyperbandPruner._get_bracket_id``: crc32 of ``<study name>_<trial number>``
    modulo the total budget) with the candidate's key in place of the trial number: a candidate gets its number
    only once recorded, its key (recorded too) when it is submitted, so a resume assigns the same bracket."""
    n = zlib.crc32(f"{name}_{key}".encode()) % sum(budgets)
    for bracket, budget in enumerate(budgets):
        n -= budget
        if n < 0:
            return bracket
    raise AssertionError("unreachable: n < sum(budgets)")


def hyperband_thresholds(pool: Iterable[Any], steps: Sequence[int], scalar: Callable[[float], float], name: str,
                         min_resource: int, reduction_factor: int, bootstrap_count: int = 0
                         ) -> tuple[list[int], dict[int, dict[int, list[tuple[int, float]]]]]:
    """Optuna's ``HyperbandPruner`` (``max_resource``: the examples of a full pass): per bracket ``b``, a
    ``SuccessiveHalvingPruner`` with ``min_early_stopping_rate=b`` that sees only the trials of its bracket.
    Returns the brackets' budgets and, per bracket, the thresholds ``sh_thresholds`` gives on its trials."""
    budgets = hyperband_budgets(min_resource, steps[-1], reduction_factor)
    pool_list = list(pool)
    out = {}
    for b in range(len(budgets)):
        mine = [r for r in pool_list if bracket_of(name, r.key, budgets) == b]
        out[b] = sh_thresholds(mine, steps, scalar, min_resource, reduction_factor, b, bootstrap_count)
    return budgets, out
