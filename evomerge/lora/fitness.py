"""The LM loss Evo-Merging minimises: answer tokens' NLL given the prompt, on a mix of skills' examples.

LoraHub (arXiv 2307.13269), which Evo-Merging (arXiv 2509.12951) follows, scores
a composition by the model's loss on the labels of a few hundred examples; for a
decoder-only model that is the negative log-likelihood of each answer (and the
EOS that ends it) given its prompt, not of the prompt itself. The examples are
taken evenly, in file order, from existing generation tasks (prompt/answer
JSONL), so the search set is a fixed mixture of the skills' train splits and
the same tasks' test splits give the held-out loss. Scoring reuses the fitness
engine's batched, length-sorted ``token_nll``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_split
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.decoding import token_nll
from evomerge.fitness.likelihood import split_continuation
from evomerge.fitness.loader import parse_spec
from evomerge.fitness.tokens import EncodingCache, pad_id


def mixed_examples(task_files: Sequence[str | Path], examples: int, split: str) -> list[dict[str, str]]:
    """``examples`` prompt/answer rows, ⌊examples/N⌋ from each task (the first tasks take the remainder)."""
    n = len(task_files)
    rows: list[dict[str, str]] = []
    for k, file in enumerate(task_files):
        path = Path(file)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the fitness task ({exc})") from None
        spec = parse_spec(raw, path)
        data = getattr(spec, "data", None)
        if spec.kind != "generation" or data is None:
            raise ConfigError(f"{path}: the LoRA LM loss reads prompt/answer pairs of 'generation' tasks, "
                              f"got kind '{spec.kind}'")
        splits = data.splits()
        if split not in splits:
            raise FitnessError(f"{path}: task '{spec.name}' has no split '{split}' (it has {', '.join(splits)})")
        file_rows = read_jsonl(resolve(path.parent, splits[split]), required={"prompt": str, "answer": str})
        want = examples // n + (1 if k < examples % n else 0)
        if len(file_rows) < want:
            raise FitnessError(f"{path}: split '{split}' has {len(file_rows)} examples; the LM-loss mix takes "
                               f"{want} from it ({examples} over {n} tasks)")
        rows += [{"task": spec.name, "prompt": r["prompt"], "answer": r["answer"]} for r in file_rows[:want]]
    return rows


class AnswerLoss:
    """Mean over examples of the answer's mean token NLL (answer tokens + EOS) given the prompt; lower is better."""

    kind = "answer_loss"

    def __init__(self, task_files: Sequence[str | Path], *, examples: int = 300, batch_size: int = 64,
                 name: str = "loss", splits: Sequence[str] = ("train", "test")) -> None:
        self.name = name
        self.objective_name = name
        self.direction: Direction = "minimize"
        self.batch_size = batch_size
        self.examples = {s: mixed_examples(task_files, examples, s) for s in splits}
        self._cache: EncodingCache[tuple[list[list[int]], list[tuple[int, int]]]] = EncodingCache()

    def _encode(self, split: str, tokenizer: Any) -> tuple[list[list[int]], list[tuple[int, int]]]:
        eos = getattr(tokenizer, "eos_token_id", None)
        seqs, spans = [], []
        for i, r in enumerate(self.examples[split]):
            ctx, cont = split_continuation(tokenizer, r["prompt"], " " + r["answer"], add_special_tokens=True)
            cont = cont + ([int(eos)] if isinstance(eos, int) else [])
            if not ctx or not cont:
                raise FitnessError(f"LM loss '{self.name}' split '{split}' example {i}: prompt or answer encodes "
                                   "to no tokens")
            seqs.append(ctx + cont)
            spans.append((len(ctx) - 1, len(cont)))  # nll index t scores token t + 1
        return seqs, spans

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult:
        check_split(self.name, split, list(self.examples))
        t0 = time.perf_counter()
        seqs, spans = self._cache.get(split, tokenizer, lambda: self._encode(split, tokenizer))
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            nll = token_nll(model, seqs, batch_size=self.batch_size, pad_id=pad_id(tokenizer))
        finally:
            model.train(was_training)
        losses = np.array([float(x[s:s + n].double().mean()) for x, (s, n) in zip(nll, spans, strict=True)])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise FitnessError(f"LM loss '{self.name}' split '{split}': loss is {losses[bad[0]]} at example "
                               f"{int(bad[0])}; the candidate is numerically broken")
        tasks = [r["task"] for r in self.examples[split]]
        per_task = {t: float(np.mean([v for v, u in zip(losses, tasks, strict=True) if u == t]))
                    for t in dict.fromkeys(tasks)}
        return TaskResult(task=self.name, split=split, objectives={self.objective_name: float(losses.mean())},
                          per_example=-losses, n=len(losses), seconds=time.perf_counter() - t0,
                          details={"per_task_loss": per_task})
