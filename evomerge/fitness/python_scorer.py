"""``kind: python``: the user's own scoring function over a candidate's generations or log-likelihoods.

What a paper's fitness needs is often a few lines of Python that no task kind foresees:
the evolutionary-merge paper counts a math answer only when it is right *and* written
in Japanese (arXiv 2403.13187); CycleQD scores code by running unit tests (arXiv
2410.14735). The function is imported once per worker (the task object travels to
workers without it and imports it on first use); an exception inside it fails the
candidate with the user's own traceback, never the search.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_indices, check_split
from evomerge.fitness.config import PythonSpec
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.decoding import token_nll
from evomerge.fitness.generation import PromptGenerator
from evomerge.fitness.likelihood import split_continuation
from evomerge.fitness.prompts import PromptBuilder
from evomerge.fitness.tokens import EncodingCache, pad_id


def load_callable(ref: str, base_dir: Path, source: str) -> Callable[..., Any]:
    """``module:callable`` from the import path, or ``file.py:callable`` relative to the task YAML."""
    target, _, attr = ref.rpartition(":")
    try:
        if target.endswith(".py"):
            path = resolve(base_dir, target).resolve()
            if not path.is_file():
                raise ConfigError(f"{source}: key 'function': file not found: {path}")
            name = "evomerge_user_scorer_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception:
        raise ConfigError(f"{source}: key 'function': importing {target!r} failed:\n"
                          f"{traceback.format_exc(limit=-3)}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{source}: key 'function': {target!r} has no callable {attr!r}")
    return fn


class PythonTask:
    """Scores = ``function(generations|loglikelihoods, examples, **args)``; objective = their mean."""

    kind = "python"
    per_example_sign = 1.0
    race_refusal: str | None = None

    def __init__(self, spec: PythonSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        self.source = source
        self.base_dir = base_dir
        required: dict[str, Any] = {"prompt": str}
        if spec.inputs == "loglikelihoods":
            required["choices"] = list
        self.examples = {split: read_jsonl(resolve(base_dir, rel), required=required)
                         for split, rel in spec.data.splits().items()}
        self.prompts = PromptBuilder(spec.prompt_format(), self.examples, task=self.name)
        self.generator = PromptGenerator(self.prompts, max_new_tokens=spec.max_new_tokens,
                                         batch_size=spec.batch_size, add_special_tokens=spec.add_special_tokens,
                                         decoder=spec.decoder, stop=spec.stop)
        self._ll_cache: EncodingCache[tuple[list[list[int]], list[tuple[int, int, int, int]]]] = EncodingCache()
        self._fn: Callable[..., Any] | None = load_callable(spec.function, base_dir, source)  # fail at load
        # the user's declared bounds of one score (racing's bound rule needs them), else unknown
        self.score_range: tuple[float, float] | None = tuple(spec.score_range) if spec.score_range else None

    def size(self, split: str) -> int:
        check_split(self.name, split, list(self.examples))
        return len(self.examples[split])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fn"] = None  # a function from a file path does not pickle; each worker imports it once
        return state

    @property
    def function(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = load_callable(self.spec.function, self.base_dir, self.source)
        return self._fn

    def check_tokenizer(self, tokenizer: Any, source: str = "the model") -> None:
        self.prompts.check_tokenizer(tokenizer, source)

    def _choice_seqs(self, split: str, tokenizer: Any) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
        seqs, spans = [], []
        add = self.generator.add_special_tokens
        for i, (prompt, rec) in enumerate(zip(self.prompts.render(split, tokenizer), self.examples[split],
                                              strict=True)):
            for j, choice in enumerate(rec["choices"]):
                ctx, cont = split_continuation(tokenizer, prompt, self.spec.delimiter + str(choice),
                                               add_special_tokens=add)
                if not ctx or not cont:
                    raise FitnessError(f"task '{self.name}' split '{split}' example {i} choice {j}: "
                                       "the prompt or the choice encodes to no tokens")
                seqs.append(ctx + cont)
                spans.append((i, j, len(ctx) - 1, len(cont)))
        return seqs, spans

    def _loglikelihoods(self, model: Any, tokenizer: Any, split: str,
                        idx: np.ndarray | None = None) -> list[list[float]]:
        seqs, spans = self._ll_cache.get(split, tokenizer, lambda: self._choice_seqs(split, tokenizer))
        recs = self.examples[split]
        if idx is not None:  # only the chosen examples, renumbered to their positions in ``idx``
            position = {int(i): p for p, i in enumerate(idx)}
            keep = [k for k, sp in enumerate(spans) if sp[0] in position]
            seqs = [seqs[k] for k in keep]
            spans = [(position[spans[k][0]], *spans[k][1:]) for k in keep]
            recs = [recs[int(i)] for i in idx]
        nll = token_nll(model, seqs, batch_size=self.spec.batch_size, pad_id=pad_id(tokenizer))
        out: list[list[float]] = [[0.0] * len(r["choices"]) for r in recs]
        for k, (i, j, start, length) in enumerate(spans):
            out[i][j] = -float(nll[k][start:start + length].double().sum())
        return out

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train", indices: Any = None) -> TaskResult:
        """Produce the model's side (generations or log-likelihoods), then call the user's function.

        With ``indices`` only those examples are produced and handed to the function (in that order).
        """
        check_split(self.name, split, list(self.examples))
        idx = check_indices(self.name, split, indices, len(self.examples[split]))
        t0 = time.perf_counter()
        examples = self.examples[split] if idx is None else [self.examples[split][int(i)] for i in idx]
        details: dict[str, Any] = {}
        if self.spec.inputs == "generations":
            gen = self.generator.run(model, tokenizer, split, idx)
            inputs: dict[str, Any] = {"generations": gen.texts}
            details.update(generations=gen.texts, generated_tokens=gen.generated_tokens,
                           seconds_generate=gen.seconds_generate)
        else:
            was_training = getattr(model, "training", False)
            model.eval()
            try:
                inputs = {"loglikelihoods": self._loglikelihoods(model, tokenizer, split, idx)}
            finally:
                model.train(was_training)
            details["loglikelihoods"] = inputs["loglikelihoods"]
        t1 = time.perf_counter()
        try:
            raw = self.function(examples=examples, **inputs, **self.spec.args)
        except Exception:
            raise FitnessError(f"task '{self.name}': the scoring function {self.spec.function} raised:\n"
                               f"{traceback.format_exc()}") from None
        scores = self._check_scores(raw, len(examples))
        details["seconds_scorer"] = time.perf_counter() - t1
        return TaskResult(task=self.name, split=split, objectives={self.objective_name: float(scores.mean())},
                          per_example=scores, n=len(scores), seconds=time.perf_counter() - t0, details=details)

    def _check_scores(self, raw: Any, n: int) -> np.ndarray:
        where = f"task '{self.name}': the scoring function {self.spec.function}"
        try:
            scores = np.asarray(list(raw), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FitnessError(f"{where} must return one number per example, got {type(raw).__name__}: {exc}") \
                from None
        if scores.shape != (n,):
            raise FitnessError(f"{where} returned {scores.size} scores for {n} examples")
        bad = [i for i, v in enumerate(scores) if not math.isfinite(v)]
        if bad:
            raise FitnessError(f"{where} returned {scores[bad[0]]} for example {bad[0]}")
        if self.score_range is not None:
            lo, hi = self.score_range
            out = np.flatnonzero((scores < lo) | (scores > hi))
            if out.size:
                raise FitnessError(f"{where} returned {scores[out[0]]} for example {int(out[0])}, outside its "
                                   f"declared score_range [{lo}, {hi}]")
        return scores
