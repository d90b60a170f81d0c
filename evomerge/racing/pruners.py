"""Optuna's median pruner as a racing rule: per-stage thresholds computed by the driver with Optuna's own class.

The worker cannot call Optuna (it has no study), so the driver mirrors the fully scored trials before the
candidate's horizon in an in-memory study (their intermediate values: the running scalarised score at each
stage's examples-scored step) and finds, per stage, the smallest best-so-far value ``MedianPruner.prune``
keeps (bisection: its decision is monotone in that value). The worker stops the candidate when its best
running score so far is below that threshold: exactly Optuna's rule (``best < median`` of the completed
trials' values at that step), with Optuna's defaults (5 startup trials, no warm-up steps).

Successive halving and Hyperband keep their rungs in trial system attributes that only their own pruning
calls write during a trial's life, so they cannot be replayed from recorded trials: they are refused.
"""

from __future__ import annotations

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
