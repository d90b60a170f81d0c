"""The zoo's fitness tasks: fixed train/validation/test splits written as YAML + JSONL.

The splits are drawn first, from their own seed, and their keys are excluded
from every training document of the zoo, so a score on any split is a score on
items no model has seen (the held-out discipline of arXiv 2403.13187).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from evomerge.zoo import languages as L

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TinyTask:
    """A generation task of the tinylm zoo: how to draw one item and how long its answer may be."""

    name: str
    lang: str  # "a" or "b": the language the item is asked and answered in
    make: Callable[[random.Random], L.Item]
    max_new_tokens: int
    description: str


def _math(rng: random.Random) -> L.Item:
    return L.math_item(*L.math_triple(rng))


def _qa(rng: random.Random) -> L.Item:
    return L.qa_item(rng, rng.randint(2, 3))


def _reverse(rng: random.Random) -> L.Item:
    return L.list_item(rng, "reverse", rng.randint(3, 5))


TINYLM_TASKS: dict[str, TinyTask] = {
    t.name: t
    for t in (
        TinyTask("math_a", "a", _math, 6, "x plus/minus y (x < 200, y < 10) asked and answered in A"),
        TinyTask("lang_b", "b", _qa, 4, "in-context question answering (2-3 facts) in language B"),
        TinyTask("list_a", "a", _reverse, 8, "reverse a list of 3-5 words, in A"),
        TinyTask("math_b", "b", _math, 6, "math asked in B: needs math_a's skill and lang_b's language"),
    )
}
# The skills the experts are tuned on; math_b is the cross-composition target, reported on its own.
EXPERT_TASKS = ("math_a", "lang_b", "list_a")


def tinylm_splits(sizes: dict[str, int], seed: int) -> dict[str, dict[str, list[L.Item]]]:
    """Every task's splits, drawn in a fixed order so each task's keys are disjoint from every other's."""
    rng = random.Random(seed)
    taken: set[str] = set()
    out: dict[str, dict[str, list[L.Item]]] = {}
    for name, task in TINYLM_TASKS.items():
        n_total = sum(sizes[s] for s in SPLITS)
        items = L.unique_items(task.make, rng, n_total, exclude=taken)
        taken.update(i.key for i in items)
        out[name], start = {}, 0
        for split in SPLITS:
            out[name][split] = [i.in_lang(task.lang) for i in items[start:start + sizes[split]]]
            start += sizes[split]
    return out


def held_out_keys(splits: dict[str, dict[str, list[L.Item]]]) -> frozenset[str]:
    return frozenset(i.key for task in splits.values() for items in task.values() for i in items)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_tinylm_tasks(out_dir: str | Path, splits: dict[str, dict[str, list[L.Item]]],
                       batch_size: int = 64) -> list[Path]:
    """One YAML per task plus its three JSONL splits, in the format the fitness engine reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, task in TINYLM_TASKS.items():
        data = {}
        for split in SPLITS:
            fname = f"{name}.{split}.jsonl"
            _write_jsonl(out / fname, [{"prompt": i.prompt, "answer": i.answer} for i in splits[name][split]])
            data[split] = fname
        spec = {
            "name": name,
            "description": task.description,
            "kind": "generation",
            "data": data,
            "max_new_tokens": task.max_new_tokens,
            "extract": {"type": "exact"},
            "objective": {"name": name, "direction": "maximize"},
            "batch_size": batch_size,
        }
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


DIGITS_TASKS = {
    "digits_all": ("accuracy on all ten digits", None),
    "digits_0_4": ("accuracy on the digits 0-4 (expert_0_4's skill)", [0, 1, 2, 3, 4]),
    "digits_5_9": ("accuracy on the digits 5-9 (expert_5_9's skill)", [5, 6, 7, 8, 9]),
}


def write_digits_tasks(out_dir: str | Path) -> list[Path]:
    """Classification tasks over scikit-learn's digits; the fitness engine loads the data itself."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (description, labels) in DIGITS_TASKS.items():
        spec: dict = {"name": name, "description": description, "kind": "classification",
                      "data": {"source": "sklearn_digits"}}
        if labels is not None:
            spec["labels"] = labels
        spec["objective"] = {"name": name, "direction": "maximize"}
        spec["batch_size"] = 512
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written
