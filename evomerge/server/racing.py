"""Racing over the HTTP API: a client reports each stage's per-example scores and is told whether to stop.

A study created with ``racing`` (its per-objective example counts and, for the Bernstein–Serfling test,
score ranges) hands out candidates raced against the fully scored trials finished when they were asked
(recorded with the trial as ``race_references``). The client scores each objective's examples in the order
``GET /studies/NAME/racing`` gives (evomerge's seeded order), reports the scores each stage adds with
``POST .../trials/N/stage``, and stops when told to: the server has then recorded the trial PRUNED (with
its intermediate values) and told the strategy. A candidate that passes every stage but the last is told as
usual, with ``per_example`` for every objective over all its examples (its objective must be their mean).
Stage scores are stored with the trial, so a server restart keeps them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evomerge.errors import ConfigError
from evomerge.racing.order import example_order, stage_counts
from evomerge.racing.request import RaceRequest, Reference, Term


class RemoteRacing:
    """The racing settings of one remote study and the decisions they give."""

    def __init__(self, settings: dict[str, Any], study: Any) -> None:
        self.s = settings
        self.study = study
        self.names = [o.name for o in study.objectives]
        if sorted(settings["examples"]) != sorted(self.names):
            raise ConfigError(f"racing.examples: give the example count of every objective {self.names}, "
                              f"got {sorted(settings['examples'])}")
        ranges = settings.get("score_range") or {}
        unknown = [k for k in ranges if k not in self.names]
        if unknown:
            raise ConfigError(f"racing.score_range: unknown objective(s) {unknown}")
        if settings.get("test", "bernstein_serfling") == "bernstein_serfling":
            missing = [n for n in self.names if n not in ranges and settings["examples"][n] > 1]
            if missing:
                raise ConfigError(f"racing.score_range: the Bernstein-Serfling test needs the range of the "
                                  f"per-example scores of {missing} (or racing.test: normal)")
        seed = settings.get("order_seed")
        self.seed = int(study.config.seed if seed is None else seed)
        self.sizes = {n: int(settings["examples"][n]) for n in self.names}
        self.orders = {n: example_order(self.sizes[n], self.seed, n) for n in self.names}
        self.counts = {n: stage_counts(self.sizes[n], settings["stages"]) for n in self.names}
        total = sum(o.weight for o in study.objectives) or 1.0
        self.terms = [Term(task=o.name, objective=o.name, pe_sign=1.0, sign=o.sign, weight=o.weight / total,
                           score_range=None if o.name not in ranges else ranges[o.name][1] - ranges[o.name][0])
                      for o in study.objectives]

    def layout(self) -> dict[str, Any]:
        """What a client needs to score in stages: per objective the example order and the cumulative counts."""
        return {"stages": list(self.s["stages"]), "order": {n: self.orders[n].tolist() for n in self.names},
                "counts": dict(self.counts)}

    def references(self, finished: list[Any]) -> list[int]:
        """The trials a candidate asked now is raced against (the k-th best fully scored, or the front)."""
        ok = sorted((r for r in finished if r.status == "ok" and self._full(r)), key=lambda r: r.number)
        if not ok:
            return []
        if self.study.scalarized:
            ranked = sorted(ok, key=lambda r: (-self.study.score(r.objectives), r.number))
            k = int(self.s.get("k", 1))
            return [ranked[k - 1].number] if len(ranked) >= k else []
        from evomerge.study.archive import non_dominated

        values = np.array([[r.objectives[n] for n in self.names] for r in ok], dtype=np.float64)
        return [ok[i].number for i in non_dominated(values, [o.direction for o in self.study.objectives])]

    def _full(self, record: Any) -> bool:
        per = record.user_attrs.get("per_example") or {}
        return all(len(per.get(n, ())) == self.sizes[n] for n in self.names)

    def check_full(self, objectives: dict[str, float], per_example: dict[str, list[float]] | None) -> None:
        """A raced study's full tell: every objective's scores over all its examples, whose mean it is."""
        for n in self.names:
            scores = (per_example or {}).get(n)
            if scores is None or len(scores) != self.sizes[n]:
                raise ConfigError(f"per_example.{n}: a raced study needs all {self.sizes[n]} per-example scores "
                                  f"with the tell, got {0 if scores is None else len(scores)}")
            if not math.isclose(objectives[n], float(np.mean(scores)), rel_tol=1e-9, abs_tol=1e-12):
                raise ConfigError(f"objectives.{n}: {objectives[n]} is not the mean of its per-example scores "
                                  f"({float(np.mean(scores))}); racing compares those means")

    def decide(self, stage: int, partial: dict[str, list[float]], refs: list[Any]) -> tuple[str | None, dict]:
        """(reason to stop or None, the running state) after ``stage``, from all stage scores so far."""
        scored, objectives = {}, {}
        for n in self.names:
            idx = self.orders[n][: self.counts[n][stage]]
            vals = np.asarray(partial[n], dtype=np.float64)
            scored[n] = (idx, vals)
            objectives[n] = float(vals.mean())
        req = RaceRequest(rule=self.s.get("rule", "bound"), stages=list(self.s["stages"]),
                          confidence=float(self.s["confidence"]), order_seed=self.seed, terms=self.terms,
                          scalar=self.study.scalarized, test=self.s.get("test", "bernstein_serfling"),
                          references=[Reference(r.number, {n: np.asarray(r.user_attrs["per_example"][n],
                                                                         dtype=np.float64) for n in self.names})
                                      for r in refs])
        history = []
        for s in range(stage + 1):
            part = {n: float(np.mean(partial[n][: self.counts[n][s]])) for n in self.names}
            history.append(req.scalar_value(part))
        examples = sum(self.counts[n][stage] for n in self.names)
        state = {"objectives": objectives, "examples_scored": examples, "scored": scored,
                 "intermediate": [[sum(self.counts[n][s] for n in self.names),
                                   req.running_value({n: float(np.mean(partial[n][: self.counts[n][s]]))
                                                      for n in self.names})] for s in range(stage + 1)]}
        return req.decide(stage, scored, self.sizes, objectives, history), state

    def stage_scores(self, stage: int, per_example: dict[str, list[float]]) -> None:
        """The scores a stage adds: one per new example of every objective, finite, within a declared range."""
        if not 0 <= stage < len(self.s["stages"]) - 1:
            raise ConfigError(f"stage: {stage} is not a stage before the last (0..{len(self.s['stages']) - 2}); "
                              "the last stage is the tell")
        ranges = self.s.get("score_range") or {}
        for n in self.names:
            want = self.counts[n][stage] - (self.counts[n][stage - 1] if stage else 0)
            got = per_example.get(n)
            if got is None or len(got) != want:
                raise ConfigError(f"per_example.{n}: stage {stage} adds {want} examples, got "
                                  f"{0 if got is None else len(got)} scores")
            bad = [v for v in got if not math.isfinite(v) or (n in ranges and not ranges[n][0] <= v <= ranges[n][1])]
            if bad:
                raise ConfigError(f"per_example.{n}: {bad[0]} is not finite or outside the declared score_range")
