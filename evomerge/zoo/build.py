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
from evomerge.zoo.tinylm_lora import TinyLoraRecipe, build_tinylm_lora

ZOO_VERSION = "1"
STAMP = "zoo-stamp.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ZooEntry:
    """A zoo build. ``extends``: an entry whose built folder this one adds ``members`` to, with its own stamp.

    An extending entry's recipe carries the extended entry's recipe as ``parent`` (so its hash
    changes with it); rebuilding the extended entry deletes the whole folder, extensions included.
    """

    name: str
    description: str
    default_recipe: Callable[[], Any]
    members: tuple[str, ...]  # sub-folders a finished build must hold
    extends: str | None = None
    stamp: str = STAMP

    @property
    def folder_name(self) -> str:
        return self.extends or self.name


ZOO: dict[str, ZooEntry] = {
    "tinylm": ZooEntry("tinylm", "Llama (4 layers, hidden 128) on synthetic languages A/B: base + experts "
                       "math_a, lang_b, list_a; tasks math_a, lang_b, list_a, math_b",
                       TinyLMRecipe, ("base", "math_a", "lang_b", "list_a", "tasks")),
    "digits": ZooEntry("digits", "MLP 64-256-10 on sklearn 8x8 digits: shared init, experts 0-4 / 5-9, "
                       "20 random inits", DigitsRecipe, ("init", "expert_0_4", "expert_5_9", "random")),
    "tinylm-lora": ZooEntry("tinylm-lora", "PEFT LoRA adapters (r 8, every linear layer) of tinylm/base, one per "
                            "skill: tinylm/lora_math_a, lora_lang_b, lora_list_a", TinyLoraRecipe,
                            ("lora_math_a", "lora_lang_b", "lora_list_a"), extends="tinylm", stamp="lora-stamp.json"),
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
    """True when ``OUT/NAME`` (an extension: its parent's folder) holds a finished build of exactly this recipe."""
    spec = entry(name)
    out = Path(out_dir or default_out_dir())
    folder = out / spec.folder_name
    recipe = recipe or spec.default_recipe()
    if spec.extends is not None and not is_built(spec.extends, out, recipe.parent):
        return False
    try:
        stamp = json.loads((folder / spec.stamp).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stamp.get("hash") == recipe_hash(name, recipe) and all((folder / m).exists() for m in spec.members)


def build_zoo(name: str, out_dir: str | Path | None = None, *, recipe: Any = None, force: bool = False,
              tasks_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Build zoo ``name`` under ``OUT/NAME`` unless an identical build is already there; return that folder.

    ``tasks_dir`` also receives the task YAML/JSONL (the repository's ``fitness/NAME``).
    """
    spec = entry(name)
    recipe = recipe or spec.default_recipe()
    out = Path(out_dir or default_out_dir())
    folder = out / spec.folder_name
    if spec.extends is not None:
        tasks_dir = None  # the extended entry owns the folder's tasks
    if not force and is_built(name, out, recipe):
        if tasks_dir is not None:
            _copy_tasks(name, folder, Path(tasks_dir))
        return folder
    if spec.extends is not None:
        build_zoo(spec.extends, out, recipe=recipe.parent, progress=progress)  # instant when already built
        (folder / spec.stamp).unlink(missing_ok=True)
        for member in spec.members:
            shutil.rmtree(folder / member, ignore_errors=True)
    else:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    if name == "tinylm":
        facts = build_tinylm(folder, recipe, progress=progress)
    elif name == "tinylm-lora":
        facts = build_tinylm_lora(folder, recipe, progress=progress)
    else:
        facts = build_digits(folder, recipe, progress=progress)
        write_digits_tasks(folder / "tasks")
    if tasks_dir is not None:
        _copy_tasks(name, folder, Path(tasks_dir))
    import torch
    import transformers

    stamp = {"name": name, "hash": recipe_hash(name, recipe), "zoo_version": ZOO_VERSION,
             "torch": torch.__version__, "transformers": transformers.__version__, "facts": facts}
    if name == "tinylm-lora":
        import peft

        stamp["peft"] = peft.__version__
    (folder / spec.stamp).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def _copy_tasks(name: str, folder: Path, tasks_dir: Path) -> None:
    src = folder / "tasks"
    if not src.exists():
        return
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        shutil.copyfile(f, tasks_dir / f.name)
