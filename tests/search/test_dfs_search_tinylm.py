"""A data-flow (DFS) search on the tinylm zoo end to end: routed candidates, then the exported folded model.

The routed model the search scored and the plain transformers checkpoint the
winner is folded into must give the same logits (RMSNorm's epsilon makes the
fold exact only up to ~eps, hence the tolerance).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from evomerge.materialize.dataflow import load_routed_model
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "zoo" / "tinylm"

pytestmark = pytest.mark.skipif(not (ZOO / "math_a" / "config.json").is_file(), reason="tinylm zoo not built")


def test_dfs_search_runs_and_the_folded_winner_reproduces_the_routed_logits(tmp_path):
    cfg = RunConfig.from_dict({
        "name": "dfs", "output": str(tmp_path / "dfs"),
        "sources": {"models": [str(ZOO / "math_a"), str(ZOO / "lang_b")]},
        "space": {"kind": "dfs", "repeats": 1, "scaling": "per_slot"},
        "strategy": {"name": "cma"},
        "objectives": [{"task": str(ROOT / "fitness" / "tinylm" / "math_a.yaml")},
                       {"task": str(ROOT / "fitness" / "tinylm" / "lang_b.yaml")}],
        "budget": {"evaluations": 8}, "seed": 3, "test_split": None,
        "runner": {"type": "local", "threads": 1},
    })
    study = Study.create(cfg)
    summary = study.run()
    assert summary.n_trials == 8 and summary.n_failed == 0
    best = Recipe.model_validate(study.record(summary.best_number).recipe)
    assert best.layer_path and best.base_model

    merge_to_disk(best, tmp_path / "folded")
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "folded", dtype=torch.float32).eval()
    assert folded.config.num_hidden_layers == len(best.layer_path)
    routed = load_routed_model(best)
    ids = torch.arange(3, 27).reshape(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(folded(ids).logits, routed(ids).logits, rtol=1e-4, atol=1e-4)


def test_ps_then_dfs_two_stage_search_uses_the_ps_winner_as_model_a(tmp_path):
    from evomerge.study.stages import run_two_stages

    cfg = RunConfig.from_dict({
        "name": "psdfs", "output": str(tmp_path / "psdfs"),
        "sources": {"base": str(ZOO / "base"), "models": [str(ZOO / "math_a"), str(ZOO / "lang_b")]},
        "space": {"kind": "ps_dfs", "b": [1], "ps": {"kind": "ps", "method": "task_arithmetic"},
                  "dfs": {"kind": "dfs", "repeats": 1, "scaling": "per_slot"}},
        "strategy": {"name": "cma"},
        "objectives": [{"task": str(ROOT / "fitness" / "tinylm" / "math_a.yaml")}],
        "budget": {"evaluations": 12}, "seed": 0, "test_split": None,
        "runner": {"type": "local", "threads": 1},
    })
    study, summary = run_two_stages(cfg)
    winner = tmp_path / "psdfs" / "stage1-ps" / "winner"
    assert (winner / "config.json").is_file()
    assert summary.n_trials == 6
    best = Recipe.model_validate(study.record(summary.best_number).recipe)
    assert Path(best.base_model) == winner
    assert {Path(h.model) for h in best.layer_path} <= {winner, ZOO / "lang_b"}
    # running it again resumes both finished stages without evaluating anything
    _, again = run_two_stages(cfg)
    assert again.n_trials == 6
