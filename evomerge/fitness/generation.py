"""Generation tasks: greedy answers to prompts, scored by exact match of the extracted answer.

The shape of the evolutionary-merge paper's math benchmark (arXiv 2403.13187):
deterministic decoding so that a candidate's score is a function of its weights.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_indices, check_split
from evomerge.fitness.config import GenerationSpec
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.decoding import Batch, cut_at_eos, cut_at_stop, greedy_hf, greedy_loop, make_batches, model_device
from evomerge.fitness.extract import make_extractor, normalize
from evomerge.fitness.prompts import PromptBuilder
from evomerge.fitness.tokens import EncodingCache, encode, eos_ids, pad_id

log = logging.getLogger(__name__)


@dataclass
class Generations:
    """What local generation produced for one split, with where the time went."""

    texts: list[str]
    generated_tokens: int
    prompt_tokens: int
    seconds_tokenize: float  # encoding (cached after the first candidate) + decoding
    seconds_generate: float  # forward passes


class PromptGenerator:
    """Renders and encodes prompts once per tokenizer and runs batched greedy decoding on them.

    ``prompts``: the raw prompts per split, or a :class:`PromptBuilder` that renders them (template,
    chat template, few-shot) for a tokenizer.
    """

    def __init__(self, prompts: dict[str, list[str]] | PromptBuilder, *, max_new_tokens: int, batch_size: int,
                 add_special_tokens: bool | None, decoder: str = "loop", stop: list[str] | None = None) -> None:
        if isinstance(prompts, PromptBuilder):
            self.builder: PromptBuilder | None = prompts
            add_special_tokens = prompts.add_special_tokens(add_special_tokens)
        else:
            self.builder, add_special_tokens = None, True if add_special_tokens is None else add_special_tokens
            self.prompts = prompts
        self.stop = list(stop or [])
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens
        self.decoder = greedy_loop if decoder == "loop" else greedy_hf
        self._cache: EncodingCache[tuple[list[Batch], int, int]] = EncodingCache()
        self._ids: EncodingCache[list[list[int]]] = EncodingCache()  # per split, for subsets (staged scoring)
        self._subsets: EncodingCache[tuple[list[Batch], int, int]] = EncodingCache()

    def texts(self, split: str, tokenizer: Any) -> list[str]:
        """The prompts of ``split`` exactly as the model reads them."""
        return self.builder.render(split, tokenizer) if self.builder is not None else self.prompts[split]

    def _encode_ids(self, split: str, tokenizer: Any) -> list[list[int]]:
        ids = encode(tokenizer, self.texts(split, tokenizer), add_special_tokens=self.add_special_tokens)
        for i, seq in enumerate(ids):
            if not seq:
                raise FitnessError(f"prompt {i} of split '{split}' encodes to no tokens")
        return ids

    def _encode(self, split: str, tokenizer: Any, indices: np.ndarray | None = None) -> tuple[list[Batch], int, int]:
        if indices is None:
            ids = self._encode_ids(split, tokenizer)
        else:
            every = self._ids.get(split, tokenizer, lambda: self._encode_ids(split, tokenizer))
            ids = [every[int(i)] for i in indices]
        batches = make_batches(ids, self.batch_size, pad_id=pad_id(tokenizer), left=True)
        return batches, sum(map(len, ids)), len(ids)

    def _batches(self, split: str, tokenizer: Any, indices: np.ndarray | None) -> tuple[list[Batch], int, int]:
        if indices is None:
            return self._cache.get(split, tokenizer, lambda: self._encode(split, tokenizer))
        key = f"{split}:{hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()}"
        return self._subsets.get(key, tokenizer, lambda: self._encode(split, tokenizer, indices))

    def run(self, model: Any, tokenizer: Any, split: str, indices: np.ndarray | None = None) -> Generations:
        """Greedy generations for the prompts of ``split`` (only those at ``indices``, in that order, if given)."""
        t0 = time.perf_counter()
        batches, prompt_tokens, n = self._batches(split, tokenizer, indices)
        t_enc = time.perf_counter() - t0
        device = model_device(model)
        eos = eos_ids(model, tokenizer)
        pid = pad_id(tokenizer)
        ends = [*eos, pid] if self.stop else eos  # a row that met a stop string is padded after it
        rows: list[list[int]] = [[] for _ in range(n)]
        n_generated = 0
        t_gen = 0.0
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            for b in batches:
                t1 = time.perf_counter()
                out = self.decoder(model, b.input_ids.to(device), b.attention_mask.to(device),
                                   max_new_tokens=self.max_new_tokens, eos_ids=eos, pad_id=pid,
                                   stop=self.stop, tokenizer=tokenizer).cpu()
                t_gen += time.perf_counter() - t1
                for row, i in zip(out.tolist(), b.index.tolist(), strict=True):
                    kept = cut_at_eos(row, ends)
                    rows[i] = kept
                    n_generated += len(kept) + int(len(kept) < len(row) and row[len(kept)] in eos)  # + EOS
        finally:
            model.train(was_training)
        t2 = time.perf_counter()
        texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
        if self.stop:
            texts = [cut_at_stop(t, self.stop) for t in texts]
        t_dec = time.perf_counter() - t2
        return Generations(texts, n_generated, prompt_tokens, t_enc + t_dec, t_gen)


class GenerationTask:
    """Exact match of the extracted greedy answer against the reference answer."""

    kind = "generation"
    per_example_sign = 1.0
    score_range: tuple[float, float] | None = (0.0, 1.0)
    race_refusal: str | None = None

    def __init__(self, spec: GenerationSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        self.source = source
        self.examples: dict[str, list[dict[str, Any]]] = {
            split: read_jsonl(resolve(base_dir, rel), required={"prompt": str, "answer": (str, int, float)})
            for split, rel in spec.data.splits().items()
        }
        self.extract = make_extractor(spec.extract.type, spec.extract.pattern)
        self.answers = {s: [normalize(str(r["answer"])) for r in recs] for s, recs in self.examples.items()}
        if spec.extract.type == "regex":
            refs = [a for answers in self.answers.values() for a in answers]
            if not any(self.extract(a) for a in refs):
                msg = (f"{source}: task '{self.name}': extract.pattern {spec.extract.pattern!r} matches none of "
                       f"the {len(refs)} reference answers; every candidate will score 0")
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
        self.prompts = PromptBuilder(spec.prompt_format(), self.examples, task=self.name)
        self.generator = PromptGenerator(
            self.prompts,
            max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
            add_special_tokens=spec.add_special_tokens, decoder=spec.decoder, stop=spec.stop,
        )

    def check_tokenizer(self, tokenizer: Any, source: str = "the model") -> None:
        """Preflight: what this task needs of the tokenizer (a chat template when it asks for one)."""
        self.prompts.check_tokenizer(tokenizer, source)

    def size(self, split: str) -> int:
        check_split(self.name, split, list(self.examples))
        return len(self.examples[split])

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train", indices: Any = None) -> TaskResult:
        """Generate greedily for every prompt of ``split`` (or those at ``indices``) and score exact matches."""
        check_split(self.name, split, list(self.examples))
        idx = check_indices(self.name, split, indices, len(self.examples[split]))
        t0 = time.perf_counter()
        gen = self.generator.run(model, tokenizer, split, idx)
        t1 = time.perf_counter()
        predictions = [self.extract(text) for text in gen.texts]
        answers = self.answers[split] if idx is None else [self.answers[split][i] for i in idx]
        scores = np.fromiter((p == a for p, a in zip(predictions, answers, strict=True)),
                             dtype=np.float64, count=len(predictions))
        seconds = time.perf_counter() - t0
        return TaskResult(
            task=self.name, split=split, objectives={self.objective_name: float(scores.mean())},
            per_example=scores, n=len(scores), seconds=seconds,
            details={
                "generations": gen.texts, "predictions": predictions,
                "generated_tokens": gen.generated_tokens, "prompt_tokens": gen.prompt_tokens,
                "seconds_generate": gen.seconds_generate, "seconds_tokenize": gen.seconds_tokenize,
                "seconds_other": seconds - gen.seconds_generate - gen.seconds_tokenize,
                "seconds_extract": time.perf_counter() - t1,
            },
        )

