"""Cached, deterministic builds of the zoo: ``build_zoo(name, out)`` and its stamp file.

A build writes ``OUT/NAME/`` and, last, ``OUT/NAME/zoo-stamp.json`` holding the
hash of the recipe and of ``ZOO_VERSION`` (bumped whenever the generating code
changes what it writes). A second build with the same hash returns at once, so
the prebuilt zoo committed under ``zoo/`` serves the demo and the tests in
seconds while ``evomerge zoo build --force`` can always rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.zoo.digits import DigitsRecipe, build_digits
from evomerge.zoo.tasks import write_digits_tasks
from evomerge.zoo.tinylm import TinyLMRecipe, build_tinylm

ZOO_VERSION = "1"
STAMP = "zoo-stamp.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    default_recipe: Callable[[], Any]
    members: tuple[str, ...]  # sub-folders a finished build must hold


ZOO: dict[str, ZooEntry] = {
    "tinylm": ZooEntry("tinylm", "Llama (4 layers, hidden 128) on synthetic languages A/B: base + experts "
                       "math_a, lang_b, list_a; tasks math_a, lang_b, list_a, math_b",
                       TinyLMRecipe, ("base", "math_a", "lang_b", "list_a", "tasks")),
    "digits": ZooEntry("digits", "MLP 64-256-10 on sklearn 8x8 digits: shared init, experts 0-4 / 5-9, "
                       "20 random inits", DigitsRecipe, ("init", "expert_0_4", "expert_5_9", "random")),
}


def default_out_dir() -> Path:
    """``zoo/`` at the repository root in a source checkout, else ``./zoo``."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "zoo"
    return Path.cwd() / "zoo"


def recipe_hash(name: str, recipe: Any) -> str:
    payload = json.dumps({"name": name, "zoo_version": ZOO_VERSION, "recipe": recipe.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise ConfigError(f"unknown zoo '{name}' (known: {', '.join(ZOO)})") from None


def is_built(name: str, out_dir: str | Path | None = None, recipe: Any = None) -> bool:
    """True when ``OUT/NAME`` holds a finished build of exactly this recipe."""
    folder = Path(out_dir or default_out_dir()) / name
    recipe = recipe or entry(name).default_recipe()
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stamp.get("hash") == recipe_hash(name, recipe) and all((folder / m).exists() for m in entry(name).members)


def build_zoo(name: str, out_dir: str | Path | None = None, *, recipe: Any = None, force: bool = False,
              tasks_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Build zoo ``name`` under ``OUT/NAME`` unless an identical build is already there; return that folder.

    ``tasks_dir`` also receives the task YAML/JSONL (the repository's ``fitness/NAME``).
    """
    spec = entry(name)
    recipe = recipe or spec.default_recipe()
    folder = Path(out_dir or default_out_dir()) / name
    if not force and is_built(name, folder.parent, recipe):
        if tasks_dir is not None:
            _copy_tasks(name, folder, Path(tasks_dir))
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if name == "tinylm":
        facts = build_tinylm(folder, recipe, progress=progress)
    else:
        facts = build_digits(folder, recipe, progress=progress)
        write_digits_tasks(folder / "tasks")
    if tasks_dir is not None:
        _copy_tasks(name, folder, Path(tasks_dir))
    import torch
    import transformers

    stamp = {"name": name, "hash": recipe_hash(name, recipe), "zoo_version": ZOO_VERSION,
             "torch": torch.__version__, "transformers": transformers.__version__, "facts": facts}
    (folder / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def _copy_tasks(name: str, folder: Path, tasks_dir: Path) -> None:
    src = folder / "tasks"
    if not src.exists():
        return
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        shutil.copyfile(f, tasks_dir / f.name)
