"""runner.model_dtype: a bf16 family is scored in a bf16 instance, exactly as its bf16 export loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from evomerge.exec.base import Candidate
from evomerge.exec.shared_sources import resident_sizes
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import evaluate_all, load_task
from evomerge.materialize.streaming import merge_to_disk
from evomerge.models import resolve_model_dtype
from evomerge.recipe.model import Recipe
from evomerge.testing import save_word_tokenizer, tiny_llama_family

TEXTS = ["the cat sat on the mat .", "a dog ran fast and then sat .", "the dog sat on a mat then ran .",
         "a cat ran slow .", "then the cat and the dog ran on the mat ."]


@pytest.fixture(scope="module")
def bf16_family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("bf16")
    base, experts = tiny_llama_family(root, n_experts=3, dtype=torch.bfloat16)
    save_word_tokenizer(base)
    (root / "ppl.train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    task = root / "ppl.yaml"
    task.write_text(yaml.safe_dump({"name": "ppl", "kind": "perplexity", "batch_size": 4,
                                    "data": {"train": "ppl.train.jsonl"}}))
    return base, experts, task


def _recipe(base: Path, experts: list[Path], method: str, params: dict) -> Recipe:
    # no dtype: the export is written in the sources' dtype (bf16), as a search's recipes are by default
    return Recipe.model_validate({"models": [{"model": str(e), "parameters": params} for e in experts],
                                  "base_model": str(base), "merge_method": method, "seed": 3})


@pytest.mark.parametrize(("method", "params"), [
    ("ties", {"weight": 0.7, "density": 0.5}),
    ("dare_linear", {"weight": 0.6, "density": 0.6}),
    ("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.1}),
])
def test_a_bf16_candidate_in_place_scores_and_weighs_what_its_bf16_export_loads_as(bf16_family, tmp_path, method,
                                                                                     params):
    base, experts, task_path = bf16_family
    task = load_task(task_path)
    worker = EvalWorker(str(base), [str(e) for e in experts], [task])  # model_dtype: auto
    assert worker.model_dtype == torch.bfloat16
    assert {p.dtype for p in worker.model.parameters()} == {torch.bfloat16}
    recipe = _recipe(base, experts, method, params)
    result = worker.evaluate(Candidate(key="c", recipe=recipe, genome=np.zeros(1)))
    assert result.status == "ok", result.error

    merge_to_disk(recipe, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto").eval()
    assert reloaded.dtype == torch.bfloat16
    expected = reloaded.state_dict()
    got = worker.model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    from transformers import AutoTokenizer

    with torch.inference_mode():
        scores = evaluate_all([task], reloaded, AutoTokenizer.from_pretrained(base), split="train")
    assert result.objectives == scores["ppl"].objectives


def test_model_dtype_auto_follows_the_checkpoint_and_an_explicit_one_wins(bf16_family, family):
    base, experts, _ = bf16_family
    assert resolve_model_dtype("auto", base) == torch.bfloat16
    assert resolve_model_dtype("auto", family[0]) == torch.float32
    assert resolve_model_dtype("float32", base) == torch.float32
    worker = EvalWorker(str(base), [str(e) for e in experts], [], model_dtype="float32")
    assert {p.dtype for p in worker.model.parameters()} == {torch.float32}


def test_the_size_check_counts_the_instance_in_its_dtype(bf16_family):
    base, experts, _ = bf16_family
    models = [str(e) for e in experts]
    auto = resident_sizes(str(base), models, "bfloat16")
    wide = resident_sizes(str(base), models, "bfloat16", model_dtype="float32")
    assert auto.model_dtype == "bfloat16" and wide.model_dtype == "float32"
    assert wide.model == 2 * auto.model
    assert auto.model == auto.per_source[str(base)]  # bf16 instance = one bf16 copy of the base
