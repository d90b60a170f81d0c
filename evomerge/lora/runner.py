"""A runner for LoRA recipes: the base resident once, each candidate fused in place, scored by its LM loss.

It speaks the ordinary Runner protocol, so each Evo-Merging stage is an
ordinary Study (durable trial record, checkpointed strategy, exact resume).
Objectives it computes: ``loss`` (the answer LM loss, :class:`AnswerLoss`) and
``l1`` (mean |value| of the searched parameters, LoraHub's L1 term; its weight
in the run's objectives is the penalty, 0.05 in the paper).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.lora.apply import ResidentLoraMerge
from evomerge.lora.fitness import AnswerLoss
from evomerge.lora.recipe import LoraRecipe

OBJECTIVES = ("loss", "l1")


class LoraRunner(Runner):
    def __init__(self, merge: ResidentLoraMerge, loss: AnswerLoss, objectives: Sequence[str],
                 searched: Literal["alpha", "beta"]) -> None:
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise ConfigError(f"objectives: a LoRA search computes {', '.join(OBJECTIVES)}; cannot compute "
                              f"{', '.join(unknown)}")
        self.merge = merge
        self.loss = loss
        self.objectives = list(objectives)
        self.searched = searched
        self._adapters = [str(Path(p).resolve()) for p in merge.paths]

    def evaluate(self, candidates: Sequence[Candidate]) -> Iterator[EvalResult]:
        for c in candidates:
            t0 = time.perf_counter()
            try:
                recipe = c.recipe if isinstance(c.recipe, LoraRecipe) else LoraRecipe.model_validate(c.recipe)
                if [str(Path(p).resolve()) for p in recipe.adapters] != self._adapters:
                    raise ConfigError(f"recipe adapters {recipe.adapters} are not this runner's {self._adapters}")
                self.merge.apply(recipe.alpha, recipe.beta)
                t1 = time.perf_counter()
                with torch.inference_mode():
                    res = self.loss.evaluate(self.merge.model, self.merge.tokenizer, split=c.split)
            except Exception:
                yield EvalResult(key=c.key, status="failed", error=traceback.format_exc(), worker="lora",
                                 merge_seconds=time.perf_counter() - t0)
                continue
            values = {"loss": res.objectives[self.loss.objective_name],
                      "l1": float(np.mean(np.abs(getattr(recipe, self.searched))))}
            objectives = {k: values[k] for k in self.objectives}
            bad = {k: v for k, v in objectives.items() if not math.isfinite(v)}
            yield EvalResult(key=c.key, status="failed" if bad else "ok", objectives=objectives,
                             per_example={self.loss.name: res.per_example.tolist()},
                             error=f"non-finite objective(s): {bad}" if bad else None, merge_seconds=t1 - t0,
                             fitness_seconds=time.perf_counter() - t1, worker="lora", details=res.details)
