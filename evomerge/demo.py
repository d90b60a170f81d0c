"""`evomerge demo`: the main job of the README, runnable on a fresh machine in seconds.

Until the search lands, the demo builds a tiny Llama family (a base and three
experts), merges it with every mergekit-compatible method through the same
streaming path as `evomerge merge`, reloads each merge with plain
transformers and reports how far its logits sit from the sources.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.testing import tiny_llama_family

DEMO_METHODS: dict[str, dict] = {
    "linear": {"parameters": {"weight": 1.0}},
    "task_arithmetic": {"parameters": {"weight": 0.5}},
    "ties": {"parameters": {"weight": 1.0, "density": 0.5}},
    "dare_ties": {"parameters": {"weight": 1.0, "density": 0.5}},
    "breadcrumbs_ties": {"parameters": {"weight": 1.0, "density": 0.8, "gamma": 0.05}},
    "della": {"parameters": {"weight": 1.0, "density": 0.5, "epsilon": 0.1}},
    "model_stock": {"parameters": {}},
}


def _logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits


def run_demo(workdir: Path, console: Console) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    workdir = Path(workdir)
    zoo = workdir / "zoo"
    if not (zoo / "base" / "config.json").is_file() or not (zoo / "expert2" / "config.json").is_file():
        console.print(f"building a tiny Llama family in {zoo}")
        tiny_llama_family(zoo, n_experts=3)
    base, experts = zoo / "base", [zoo / f"expert{k}" for k in range(3)]
    ids = torch.arange(16).reshape(1, 16) % 64
    ref = {p.name: _logits(p, ids) for p in (base, *experts)}
    table = Table("method", "seconds", "|Δ logits| to base", "to nearest expert", title="tiny Llama merges")
    for method, extra in DEMO_METHODS.items():
        recipe = Recipe.model_validate({
            "models": [{"model": str(e)} for e in experts],
            "base_model": None if method == "linear" else str(base),
            "merge_method": method,
            "dtype": "float32",
            "seed": 0,
            **extra,
        })
        out_dir = workdir / "merges" / method
        report = merge_to_disk(recipe, out_dir, overwrite=True)
        logits = _logits(out_dir, ids)
        to_base = (logits - ref["base"]).abs().mean().item()
        to_expert = min((logits - ref[e.name]).abs().mean().item() for e in experts)
        table.add_row(method, f"{report.seconds:.2f}", f"{to_base:.4f}", f"{to_expert:.4f}")
    console.print(table)
    console.print(f"merged models are in {workdir / 'merges'}; each loads with AutoModelForCausalLM")
