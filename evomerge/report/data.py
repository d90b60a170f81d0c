"""What a report shows, computed once from a run's storage: points, front, baselines, convergence.

Kept apart from the drawing (``html``, ``figures``) so the interactive page and the PNGs plot the
very same numbers, and so tests can check the numbers without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.export.run import open_run, test_scores
from evomerge.study.archive import hypervolume
from evomerge.study.study import Study

MAX_CURVE_POINTS = 400  # hypervolume is recomputed at most this many times along the run


@dataclass
class Point:
    trial: int
    objectives: dict[str, float]
    score: float
    recipe: dict[str, Any] | None
    on_front: bool
    test: dict[str, float] | None = None


@dataclass
class Stopped:
    """A trial racing stopped early (Optuna state PRUNED): what it cost and how far it got. Never on the front."""

    trial: int
    examples: int            # train examples scored before the stop
    stage: int | None        # index into the run's racing stages
    value: float | None      # the running scalarised score at the stop (larger is better)
    reason: str              # the rule's one-line reason
    recipe: dict[str, Any] | None


@dataclass
class ReportData:
    run: str
    strategy: str
    budget: dict[str, Any]
    objectives: list[str]
    directions: list[str]
    points: list[Point]
    failed: int
    baselines: dict[str, dict[str, float]]  # name -> objectives (train split when scored, else the test split)
    baseline_split: dict[str, str]
    unscored_baselines: list[str]
    curve_evals: list[int] = field(default_factory=list)  # evaluation count (1-based, failures included)
    curve_best: list[float | None] = field(default_factory=list)
    curve_hv: list[float] = field(default_factory=list)
    reference_point: list[float] = field(default_factory=list)
    hypervolume: float = 0.0
    stopped: list[Stopped] = field(default_factory=list)
    curve_examples: list[int] = field(default_factory=list)  # train examples scored up to each curve point
    full_examples: int | None = None  # train examples of one fully scored candidate (None: not recorded)

    @property
    def examples_saved(self) -> int | None:
        """What the stopped trials did not score: a full evaluation each, less what they cost."""
        if self.full_examples is None:
            return None
        return sum(max(self.full_examples - s.examples, 0) for s in self.stopped)

    @property
    def front(self) -> list[Point]:
        return [p for p in self.points if p.on_front]


def collect(run_dir: str | Path, study: Study | None = None) -> ReportData:
    """Read a run folder (or an open Study) into plottable data."""
    study = study or open_run(run_dir)
    study.require_success()
    stopped = stopped_trials(study)
    pruned = {s.trial for s in stopped}  # whether or not the store's records list them too
    records = sorted((r for r in study.store.records() if r.number not in pruned), key=lambda r: r.number)
    archive, ok = study.archive()
    front = set(archive.front)
    tests = test_scores(study)
    names = [o.name for o in study.objectives]
    directions = [o.direction for o in study.objectives]
    points = [Point(trial=r.number, objectives={n: float(r.objectives[n]) for n in names},
                    score=study.score(r.objectives), recipe=r.recipe, on_front=r.number in front,
                    test=tests.get(str(r.number))) for r in ok]
    results = study.store.study.user_attrs.get("test_results", {}) or {}
    baselines: dict[str, dict[str, float]] = {}
    baseline_split: dict[str, str] = {}
    for name, by_split in (results.get("baselines") or {}).items():
        for split in ("train", results.get("split")):
            entry = (by_split or {}).get(split) if split else None
            if entry and entry.get("status") == "ok" and all(n in entry.get("objectives", {}) for n in names):
                baselines[name] = {n: float(entry["objectives"][n]) for n in names}
                baseline_split[name] = split
                break
    unscored = [b.name for b in study.config.baselines if b.name not in baselines]
    data = ReportData(run=study.config.name, strategy=study.config.strategy.name,
                      budget=study.config.budget.model_dump(exclude_none=True), objectives=names,
                      directions=directions, points=points, failed=sum(r.status != "ok" for r in records),
                      baselines=baselines, baseline_split=baseline_split, unscored_baselines=unscored,
                      reference_point=[float(x) for x in archive.reference_point],
                      hypervolume=archive.hypervolume(), stopped=stopped,
                      full_examples=full_examples(records))
    _convergence(study, records, names, directions, np.asarray(archive.reference_point), data)
    return data


def stopped_trials(study: Study) -> list[Stopped]:
    """The trials racing stopped, read from Optuna's PRUNED trials (the Study's records hold only finished ones)."""
    from optuna.trial import TrialState

    out = []
    for t in study.store.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        attrs = t.user_attrs
        steps = sorted(t.intermediate_values)
        examples = attrs.get("examples_scored", steps[-1] if steps else 0)
        stage = attrs.get("stage")
        out.append(Stopped(trial=t.number, examples=int(examples), stage=None if stage is None else int(stage),
                           value=float(t.intermediate_values[steps[-1]]) if steps else None,
                           reason=str(attrs.get("racing", "")), recipe=attrs.get("recipe")))
    return sorted(out, key=lambda s: s.trial)


def _examples(record) -> int | None:
    """Train examples a finished trial scored: ``examples_scored`` when recorded, else its per-example scores."""
    attrs = record.user_attrs
    if "examples_scored" in attrs:
        return int(attrs["examples_scored"])
    per_example = attrs.get("per_example") or {}
    return sum(len(v) for v in per_example.values()) or None


def full_examples(records: list) -> int | None:
    """The examples of one full evaluation: the most any fully scored trial scored (None when none says)."""
    counts = [n for r in records if r.status == "ok" and (n := _examples(r)) is not None]
    return max(counts) if counts else None


def _convergence(study: Study, records: list, names: list[str], directions: list[str], ref: np.ndarray,
                 data: ReportData) -> None:
    """Best scalarised score and hypervolume (against the final reference point) after each evaluation.

    Trials racing stopped count as evaluations (and add the examples they cost) but never move the curves.
    """
    sequence = sorted([*records, *data.stopped], key=lambda r: r.trial if isinstance(r, Stopped) else r.number)
    n = len(sequence)
    if n == 0:
        return
    marks = set(np.unique(np.linspace(1, n, min(n, MAX_CURVE_POINTS)).round().astype(int)).tolist())
    best: float | None = None
    values: list[list[float]] = []
    examples = 0
    for i, r in enumerate(sequence, start=1):
        if isinstance(r, Stopped):
            examples += r.examples
        else:
            spent = _examples(r)
            examples += spent if spent is not None else (data.full_examples or 0) if r.status == "ok" else 0
        if not isinstance(r, Stopped) and r.status == "ok":
            s = study.score(r.objectives)
            best = s if best is None else max(best, s)
            values.append([float(r.objectives[k]) for k in names])
        if i in marks:
            data.curve_evals.append(i)
            data.curve_examples.append(examples)
            data.curve_best.append(best)
            data.curve_hv.append(hypervolume(np.asarray(values), directions, ref) if values else 0.0)
