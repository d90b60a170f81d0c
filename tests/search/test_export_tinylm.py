"""The exported best tinylm model loads with plain transformers and reproduces the trial's test score."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.export import export_run
from evomerge.fitness import evaluate_all, load_task
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "zoo" / "tinylm"
TASKS = [ROOT / "fitness" / "tinylm" / f"{name}.yaml" for name in ("math_a", "lang_b")]

pytestmark = pytest.mark.skipif(not (ZOO / "base" / "config.json").is_file(), reason="tinylm zoo not built")


def test_exported_best_model_reproduces_its_test_scores_with_plain_transformers(tmp_path):
    cfg = RunConfig.from_dict({
        "name": "exp", "output": str(tmp_path / "run"),
        "sources": {"base": str(ZOO / "base"), "models": [str(ZOO / "math_a"), str(ZOO / "lang_b")]},
        "space": {"kind": "ps", "method": "dare_ties"},
        "strategy": {"name": "cma"}, "objectives": [{"task": str(t)} for t in TASKS],
        "budget": {"evaluations": 6}, "seed": 2, "test_split": "test",
        "runner": {"type": "local", "threads": 1},
    })
    study = Study.create(cfg)
    summary = study.run()
    results = study.finalize()
    best = summary.best_number
    recorded = results["trials"][str(best)]["objectives"]

    report = export_run(study.run_dir, tmp_path / "export", trials=[best], checkpoints=True)
    model_dir = report.trials[0].folder / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        scores = evaluate_all([load_task(t) for t in TASKS], model, tokenizer, split="test")
    for name, res in scores.items():
        assert res.objectives[name] == recorded[name], name
