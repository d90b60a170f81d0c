"""Scoring one model outside a search (``evomerge eval``), with the code a search's workers run.

A user's first questions before a search (how good is the base? each expert?) and
after it (does the exported trial hold up on the test split?) need exactly the
search's scoring, not a re-implementation: same task loading, same preflight, same
``evaluate_all``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evomerge.errors import ConfigError
from evomerge.fitness.base import TaskResult
from evomerge.fitness.loader import check_tokenizer, evaluate_all, load_tasks


@dataclass
class EvalReport:
    model: Path  # the checkpoint folder that was scored
    source: str  # what the user named: a checkpoint, an exported trial's model/, or its recipe.json
    split: str
    results: dict[str, TaskResult]


def _checkpoint_of(path: Path, tmp: Path, device: str) -> tuple[Path, str]:
    """A checkpoint folder, an exported trial (its model/ folder, else its recipe merged now), or a recipe file."""
    if (path / "config.json").is_file():
        return path, "checkpoint"
    if (path / "model" / "config.json").is_file():
        return path / "model", "exported trial (model/)"
    recipe_file = path / "recipe.json" if path.is_dir() else path
    if recipe_file.is_file() and recipe_file.suffix in {".json", ".yaml", ".yml"}:
        from evomerge.materialize.streaming import merge_to_disk
        from evomerge.recipe.model import Recipe

        merged = merge_to_disk(Recipe.load(recipe_file), tmp / "merged", device=device).out_dir
        return merged, f"recipe {recipe_file.name} (merged for this evaluation)"
    raise ConfigError(f"{path}: neither a checkpoint folder (config.json), an exported trial (model/ or "
                      "recipe.json) nor a recipe file")


def evaluate_model(model: str | Path, tasks: Sequence[str | Path], *, split: str = "test",
                   device: str = "cpu") -> EvalReport:
    """Every task's result for ``model`` on ``split`` (a failing task raises, naming itself)."""
    from evomerge.models import load_model

    loaded = load_tasks(tasks)
    path = Path(model)
    if not path.exists():
        raise ConfigError(f"model not found: {path}")
    with tempfile.TemporaryDirectory(prefix="evomerge-eval-") as tmp:
        folder, source = _checkpoint_of(path, Path(tmp), device)
        net, tokenizer = load_model(folder, device=device)
        check_tokenizer(loaded, tokenizer, str(folder))
        import torch

        with torch.inference_mode():
            results = evaluate_all(loaded, net, tokenizer, split=split)
    return EvalReport(model=folder if folder.is_relative_to(path) else path, source=source, split=split,
                      results=results)
