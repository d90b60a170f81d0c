"""What the driver attaches to a candidate to race it, and the decision the worker takes after each stage.

The decision is taken where the candidate is scored (the worker), against references the driver
attached when it submitted the candidate: a stopped candidate frees its worker at once, with no round
trip, and a resume replays it exactly (the references are a function of the trials recorded before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from evomerge.racing.bound import mean_lower_bound, mean_upper_bound, normal_variance, z_quantile


@dataclass(frozen=True)
class Term:
    """One objective of the run, computed by one task: ``objective = pe_sign · mean(per_example)``."""

    task: str
    objective: str
    pe_sign: float  # the task kind's per_example_sign
    sign: float  # +1: the run maximises this objective, -1: minimises it
    weight: float  # its share of the scalarised score (weight / total weight)
    score_range: float | None  # high − low of one per-example score; None: unknown


@dataclass
class Reference:
    """A fully scored trial the candidate is raced against: its per-example scores on the whole split."""

    number: int
    per_example: dict[str, np.ndarray]  # task name -> one score per example, natural index order


@dataclass
class RaceRequest:
    """Everything the worker needs to score a candidate in stages and decide when to stop it."""

    rule: str  # none | bound | median | successive_halving | hyperband
    stages: list[float]
    confidence: float
    order_seed: int
    terms: list[Term]
    scalar: bool  # True: race the scalarised score against references[0]; False: Pareto dominance by any reference
    references: list[Reference] = field(default_factory=list)
    # pruner rules: per stage index, the running scalar a candidate must reach to go on (computed by the driver)
    thresholds: dict[int, float] = field(default_factory=dict)
    test: str = "bernstein_serfling"  # rule bound: bernstein_serfling | normal (see evomerge.racing.bound)
    # rule successive_halving: per stage index, (rung, threshold) of the rungs reached there (computed by the driver)
    rungs: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    # rule hyperband: the rungs of each bracket, and what assigns a candidate its bracket (see for_key)
    bracket_rungs: dict[int, dict[int, list[tuple[int, float]]]] = field(default_factory=dict)
    budgets: list[int] = field(default_factory=list)
    run_name: str = ""

    def for_key(self, key: str) -> RaceRequest:
        """The request for the candidate with this key: under hyperband, the rungs of its bracket."""
        if self.rule != "hyperband":
            return self
        from evomerge.racing.pruners import bracket_of

        return replace(self, rungs=self.bracket_rungs.get(bracket_of(self.run_name, key, self.budgets), {}))

    def scalar_value(self, objectives: dict[str, float]) -> float:
        """The scalarised score (larger is better), as the Study computes it."""
        return sum(t.weight * t.sign * objectives[t.objective] for t in self.terms)

    def running_value(self, objectives: dict[str, float]) -> float:
        """The intermediate value recorded per stage: the objective itself for one objective, else the scalar."""
        return objectives[self.terms[0].objective] if len(self.terms) == 1 else self.scalar_value(objectives)

    # ---- the decision ----------------------------------------------------------------------------------------
    def decide(self, stage: int, scored: dict[str, tuple[np.ndarray, np.ndarray]], sizes: dict[str, int],
               objectives: dict[str, float], history: list[float] | None = None) -> str | None:
        """After stage ``stage`` (not the last): a one-line reason to stop the candidate, or None to go on.

        ``scored``: per task, (example indices scored so far, their scores); ``history``: the running
        scalarised score after each stage so far (the median rule compares the best of them, as Optuna does).
        """
        if self.rule == "bound":
            return self._bound(stage, scored, sizes)
        if self.rule == "median":
            threshold = self.thresholds.get(stage)
            best = max(history) if history else self.scalar_value(objectives)
            if threshold is not None and best < threshold:
                return (f"median: best running score {best:.6g} after stage {stage + 1} of {len(self.stages)} is "
                        f"below the median of the fully scored trials at that stage ({threshold:.6g})")
        if self.rule in ("successive_halving", "hyperband"):
            failed = self.failed_rung(stage, history[-1] if history else self.scalar_value(objectives))
            if failed is not None:
                rung, threshold = failed
                return (f"{self.rule}: running score {history[-1] if history else float('nan'):.6g} after "
                        f"stage {stage + 1} of {len(self.stages)} is below rung {rung}'s promotion threshold "
                        f"({threshold:.6g})")
        return None

    def failed_rung(self, stage: int, value: float) -> tuple[int, float] | None:
        """Successive halving: the first rung of this stage whose threshold ``value`` is below (Optuna compares the
        value at the current step, not the best so far), with that threshold; None: promoted through them all."""
        for rung, threshold in self.rungs.get(stage, []):
            if math.isnan(value) or value < threshold:
                return rung, threshold
        return None

    def _delta(self) -> float:
        """The per-test error: 1 − confidence shared (union bound) by every stage, task and reference tested
        (the normal test bounds the scalarised score in one test per stage)."""
        per_stage = 1 if self.scalar and self.test == "normal" else len(self.terms)
        tests = max(1, len(self.stages) - 1) * per_stage * (1 if self.scalar else max(1, len(self.references)))
        return (1.0 - self.confidence) / tests

    def _normal_upper(self, terms: list[tuple[Term, float]], ref: Reference,
                      scored: dict[str, tuple[np.ndarray, np.ndarray]], sizes: dict[str, int], delta: float) -> float:
        """Upper bound of Σ coef × (full-split mean difference) under the normal approximation (independent tasks)."""
        mean, var = 0.0, 0.0
        for term, coef in terms:
            idx, scores = scored[term.task]
            d = scores - ref.per_example[term.task][idx]
            mean += coef * float(d.mean())
            var += coef * coef * normal_variance(d, sizes[term.task])
        return mean + z_quantile(delta) * math.sqrt(var) if math.isfinite(var) else math.inf

    def _difference_bound(self, term: Term, ref: Reference, scored: dict[str, tuple[np.ndarray, np.ndarray]],
                          sizes: dict[str, int], coef: float, delta: float) -> float:
        """Upper bound (at 1 − delta) of ``coef`` × the full-split mean of candidate − reference per-example scores."""
        idx, scores = scored[term.task]
        n, size = len(idx), sizes[term.task]
        d = scores - ref.per_example[term.task][idx]
        if n >= size:
            return coef * float(d.mean())
        if term.score_range is None:
            return math.inf  # no known range: this term never lets the bound stop a candidate
        width = 2.0 * term.score_range  # a difference of two scores in [lo, hi] lies in [lo − hi, hi − lo]
        if coef >= 0:
            return coef * mean_upper_bound(d, size, width, delta)
        return coef * mean_lower_bound(d, size, width, delta)

    def _bound(self, stage: int, scored: dict[str, tuple[np.ndarray, np.ndarray]], sizes: dict[str, int]) -> str | None:
        if not self.references:
            return None
        delta = self._delta()
        seen = sum(len(scored[t.task][0]) for t in self.terms)
        if self.scalar:
            ref = self.references[0]
            if self.test == "normal":
                upper = self._normal_upper([(t, t.weight * t.sign * t.pe_sign) for t in self.terms], ref, scored,
                                           sizes, delta)
            else:
                upper = sum(self._difference_bound(t, ref, scored, sizes, t.weight * t.sign * t.pe_sign, delta)
                            for t in self.terms)
            if upper < 0:
                return (f"bound ({self.test}): after {seen} examples the {self.confidence:g}-confidence upper "
                        f"bound of the full-split score minus trial {ref.number}'s is {upper:.4g} < 0")
            return None
        for ref in self.references:
            if self.test == "normal":
                uppers = [self._normal_upper([(t, t.sign * t.pe_sign)], ref, scored, sizes, delta) for t in self.terms]
            else:
                uppers = [self._difference_bound(t, ref, scored, sizes, t.sign * t.pe_sign, delta)
                          for t in self.terms]
            if all(u <= 0 for u in uppers) and any(u < 0 for u in uppers):
                shown = ", ".join(f"{u:.4g}" for u in uppers)
                return (f"bound ({self.test}): after {seen} examples trial {ref.number} dominates it at "
                        f"{self.confidence:g} confidence (upper bounds of the differences {shown})")
        return None
