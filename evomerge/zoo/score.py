"""Small scorers the zoo uses to check itself: greedy exact match for tinylm, accuracy for digits.

They exist so the zoo (and ``bench/zoo_table.py``) can be verified without the
fitness engine; the engine in ``evomerge.fitness`` is the one searches use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def normalise(text: str) -> str:
    return " ".join(text.split())


def load_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 128) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), decoded without special tokens."""
    tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def exact_match(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 128) -> float:
    """Share of rows whose whitespace-normalised greedy answer equals ``answer``."""
    got = greedy_answers(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, batch_size)
    return float(np.mean([normalise(g) == normalise(r["answer"]) for g, r in zip(got, rows, strict=True)]))


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, labels: list[int] | None = None) -> float:
    """Classification accuracy, optionally on the examples whose label is in ``labels``."""
    if labels is not None:
        keep = np.isin(y, labels)
        x, y = x[keep], y[keep]
    pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())
