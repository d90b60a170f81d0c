"""The model card of an exported merge: YAML front matter a hub and a script can read, then prose.

The front matter carries what a reader needs to trust or reproduce the model: the sources, the
method and its parameters, the train and test scores, and the search that found it (strategy,
budget, trial number, run name). The body repeats it for people.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


def card_metadata(*, run: str, trial: int, strategy: str, budget: dict[str, Any], recipe: dict[str, Any] | None,
                  train: dict[str, float], test: dict[str, float] | None, directions: dict[str, str],
                  score: float | None, mergekit: bool, genome: list[float] | None = None) -> dict[str, Any]:
    """The front matter as data (YAML-safe: plain dicts, lists, strings and floats)."""
    meta: dict[str, Any] = {"library_name": "transformers", "tags": ["merge", "evomerge"]}
    if recipe is not None:
        models = _referenced(recipe)
        meta["base_model"] = models
        if mergekit:
            meta["tags"].append("mergekit")
    merge: dict[str, Any] = {}
    if recipe is not None:
        merge = {"method": recipe.get("merge_method"), "base_model": recipe.get("base_model"),
                 "models": _referenced(recipe), "parameters": _parameters(recipe)}
        if recipe.get("layer_path"):
            merge["layer_path"] = recipe["layer_path"]
        if recipe.get("groups"):
            merge["groups"] = recipe["groups"]
    meta["evomerge"] = {
        "run": run, "trial": trial, "strategy": strategy, "budget": budget,
        "objectives": directions,
        "scores": {"train": {k: float(v) for k, v in train.items()},
                   **({"test": {k: float(v) for k, v in test.items()}} if test else {})},
        "scalarized_score": score,
        "merge": merge,
        **({"genome": genome} if genome is not None else {}),
    }
    return json.loads(json.dumps(meta))  # plain types only


def model_card(meta: dict[str, Any]) -> str:
    """README.md: ``---`` YAML front matter ``---`` then a readable summary."""
    ev = meta["evomerge"]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# {ev['run']} — trial {ev['trial']}", "",
             f"A merge found by evomerge's `{ev['strategy']}` search (run `{ev['run']}`, trial {ev['trial']}, "
             f"budget {ev['budget']}).", ""]
    merge = ev.get("merge") or {}
    if merge:
        lines += [f"**Method:** `{merge.get('method')}`" + (f" over base `{merge['base_model']}`"
                                                            if merge.get("base_model") else ""), "",
                  "**Sources:**", *[f"- `{m}`" for m in merge.get("models", [])], ""]
        if merge.get("parameters"):
            lines += ["| model | parameters |", "| --- | --- |"]
            lines += [f"| `{m}` | {json.dumps(p)} |" for m, p in merge["parameters"].items()]
            lines.append("")
        if merge.get("layer_path"):
            lines += [f"Data-flow merge: {len(merge['layer_path'])} layer hops (folded into a plain checkpoint).", ""]
    scores = ev["scores"]
    names = list(ev["objectives"])
    lines += ["## Scores", "", "| objective | direction | train | test |", "| --- | --- | --- | --- |"]
    for n in names:
        test = scores.get("test", {}).get(n)
        lines.append(f"| {n} | {ev['objectives'][n]} | {_fmt(scores['train'].get(n))} | {_fmt(test)} |")
    lines += ["", "The test split was held out from the search; train scores are the ones the search optimised.",
              "", "Reproduce: `evomerge merge recipe.json OUT/` (or `mergekit-yaml mergekit.yml OUT/` where "
              "present).", ""]
    return "\n".join(lines)


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML between the leading ``---`` lines of a model card."""
    if not text.startswith("---\n"):
        raise ValueError("no YAML front matter")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _referenced(recipe: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    if recipe.get("base_model"):
        seen[recipe["base_model"]] = None
    for spec in recipe.get("models") or []:
        seen[spec["model"]] = None
    for sl in recipe.get("slices") or []:
        for src in sl.get("sources", []):
            seen[src["model"]] = None
    for hop in recipe.get("layer_path") or []:
        seen[hop["model"]] = None
    return list(seen)


def _parameters(recipe: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if recipe.get("parameters"):
        out["(global)"] = recipe["parameters"]
    for spec in recipe.get("models") or []:
        if spec.get("parameters"):
            out[spec["model"]] = spec["parameters"]
    return out
