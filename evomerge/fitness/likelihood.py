"""Tasks scored from the model's log-likelihoods: multiple choice and perplexity.

Both are one forward pass per sequence (no decoding), so they are the cheapest
language-model fitness signals; multiple choice follows lm-evaluation-harness's
definition (argmax of the continuation's summed log-probability, optionally
length-normalised).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_indices, check_split
from evomerge.fitness.config import MultipleChoiceSpec, PerplexitySpec
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.decoding import token_nll
from evomerge.fitness.tokens import EncodingCache, encode, pad_id


def split_continuation(tokenizer: Any, context: str, continuation: str, *,
                       add_special_tokens: bool) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation that follows it.

    Encodes the whole string and splits it where the context's own encoding
    ends (so merges across the boundary are tokenized as the model sees them);
    when the whole encoding does not start with the context's, falls back to
    encoding the continuation on its own.
    """
    ctx = encode(tokenizer, [context], add_special_tokens=add_special_tokens)[0]
    whole = encode(tokenizer, [context + continuation], add_special_tokens=add_special_tokens)[0]
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, encode(tokenizer, [continuation], add_special_tokens=False)[0]


class MultipleChoiceTask:
    """Accuracy of the highest-likelihood choice; per example 1.0 if right, else 0.0."""

    kind = "multiple_choice"
    per_example_sign = 1.0
    score_range: tuple[float, float] | None = (0.0, 1.0)
    race_refusal: str | None = None

    def __init__(self, spec: MultipleChoiceSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        self.examples: dict[str, list[dict[str, Any]]] = {}
        for split, rel in spec.data.splits().items():
            path = resolve(base_dir, rel)
            recs = read_jsonl(path, required={"prompt": str, "choices": list, "answer": int})
            for i, r in enumerate(recs):
                ch = r["choices"]
                if len(ch) < 2 or not all(isinstance(c, str) for c in ch):
                    raise FitnessError(f"{path}: example {i}: 'choices' must be a list of at least 2 strings")
                if not 0 <= r["answer"] < len(ch):
                    raise FitnessError(f"{path}: example {i}: 'answer' {r['answer']} is not an index into "
                                       f"its {len(ch)} choices")
            self.examples[split] = recs
        self._cache: EncodingCache[tuple[list[list[int]], list[tuple[int, int, int, int]]]] = EncodingCache()

    def _encode(self, split: str, tokenizer: Any) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
        """Flatten (example, choice) pairs to sequences plus (example, choice, start, length) spans."""
        seqs: list[list[int]] = []
        spans: list[tuple[int, int, int, int]] = []
        for i, r in enumerate(self.examples[split]):
            for j, choice in enumerate(r["choices"]):
                ctx, cont = split_continuation(tokenizer, r["prompt"], self.spec.delimiter + choice,
                                               add_special_tokens=self.spec.add_special_tokens)
                if not ctx or not cont:
                    raise FitnessError(f"task '{self.name}' split '{split}' example {i} choice {j}: "
                                       "the prompt or the choice encodes to no tokens")
                seqs.append(ctx + cont)
                spans.append((i, j, len(ctx) - 1, len(cont)))  # nll index t scores token t+1
        return seqs, spans

    def size(self, split: str) -> int:
        check_split(self.name, split, list(self.examples))
        return len(self.examples[split])

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train", indices: Any = None) -> TaskResult:
        """Score every choice's log-likelihood and take the argmax per example (only ``indices``' examples if given)."""
        check_split(self.name, split, list(self.examples))
        idx = check_indices(self.name, split, indices, len(self.examples[split]))
        t0 = time.perf_counter()
        seqs, spans = self._cache.get(split, tokenizer, lambda: self._encode(split, tokenizer))
        recs = self.examples[split]
        if idx is not None:  # the chosen examples' sequences; spans renumbered to positions in ``idx``
            position = {int(i): p for p, i in enumerate(idx)}
            keep = [k for k, sp in enumerate(spans) if sp[0] in position]
            seqs = [seqs[k] for k in keep]
            spans = [(position[spans[k][0]], *spans[k][1:]) for k in keep]
            recs = [recs[int(i)] for i in idx]
        t1 = time.perf_counter()
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            nll = token_nll(model, seqs, batch_size=self.spec.batch_size, pad_id=pad_id(tokenizer))
        finally:
            model.train(was_training)
        t2 = time.perf_counter()
        loglik = [np.full(len(r["choices"]), -np.inf) for r in recs]
        for k, (i, j, start, length) in enumerate(spans):
            ll = -float(nll[k][start:start + length].double().sum())
            if self.spec.normalization == "tokens":
                ll /= length
            elif self.spec.normalization == "chars":
                ll /= max(len(self.spec.delimiter + recs[i]["choices"][j]), 1)
            if not math.isfinite(ll):
                raise FitnessError(f"task '{self.name}' split '{split}' example {i} choice {j}: "
                                   f"log-likelihood is {ll}")
            loglik[i][j] = ll
        chosen = np.array([int(np.argmax(ll)) for ll in loglik], dtype=np.int64)
        scores = (chosen == np.array([r["answer"] for r in recs])).astype(np.float64)
        seconds = time.perf_counter() - t0
        return TaskResult(
            task=self.name, split=split, objectives={self.objective_name: float(scores.mean())},
            per_example=scores, n=len(scores), seconds=seconds,
            details={"chosen": chosen.tolist(), "loglikelihoods": [ll.tolist() for ll in loglik],
                     "scored_tokens": sum(s[3] for s in spans), "seconds_tokenize": t1 - t0,
                     "seconds_forward": t2 - t1},
        )


class PerplexityTask:
    """Mean token negative log-likelihood of texts; objective = mean loss, per example = -loss."""

    kind = "perplexity"
    per_example_sign = -1.0  # objective = mean loss, per example = -loss
    score_range: tuple[float, float] | None = None  # a loss has no upper bound
    race_refusal: str | None = None

    def __init__(self, spec: PerplexitySpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "minimize"
        self.texts = {split: [r["text"] for r in read_jsonl(resolve(base_dir, rel), required={"text": str})]
                      for split, rel in spec.data.splits().items()}
        self._cache: EncodingCache[list[list[int]]] = EncodingCache()

    def _encode(self, split: str, tokenizer: Any) -> list[list[int]]:
        seqs = encode(tokenizer, self.texts[split], add_special_tokens=self.spec.add_special_tokens)
        for i, s in enumerate(seqs):
            if len(s) < 2:
                raise FitnessError(f"task '{self.name}' split '{split}' example {i}: text encodes to "
                                   f"{len(s)} token(s); perplexity needs at least 2")
        return seqs

    def size(self, split: str) -> int:
        check_split(self.name, split, list(self.texts))
        return len(self.texts[split])

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train", indices: Any = None) -> TaskResult:
        """Per example, the mean NLL of each token after the first given its prefix (only ``indices`` if given)."""
        check_split(self.name, split, list(self.texts))
        idx = check_indices(self.name, split, indices, len(self.texts[split]))
        t0 = time.perf_counter()
        seqs = self._cache.get(split, tokenizer, lambda: self._encode(split, tokenizer))
        if idx is not None:
            seqs = [seqs[int(i)] for i in idx]
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            nll = token_nll(model, seqs, batch_size=self.spec.batch_size, pad_id=pad_id(tokenizer))
        finally:
            model.train(was_training)
        losses = np.array([float(x.double().mean()) for x in nll], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise FitnessError(f"task '{self.name}' split '{split}': loss is {losses[bad[0]]} at example "
                               f"{int(bad[0])} ({bad.size} non-finite in all); the candidate is numerically broken")
        n_tokens = sum(len(x) for x in nll)
        token_loss = float(sum(float(x.double().sum()) for x in nll) / n_tokens)
        return TaskResult(
            task=self.name, split=split, objectives={self.objective_name: float(losses.mean())},
            per_example=-losses, n=len(losses), seconds=time.perf_counter() - t0,
            details={"scored_tokens": n_tokens, "token_weighted_loss": token_loss,
                     "perplexity": math.exp(min(token_loss, 700.0))},
        )
