"""In-place merging over sources with different vocabularies: assembled once at load, equal to streaming."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import MergeError
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.recipe.tokenizer import TokenizerSpec


def _recipe(fam, method: str, weights: tuple[float, float], tokenizer: dict | None) -> Recipe:
    data = {"models": [{"model": str(fam["chat"]), "parameters": {"weight": weights[0]}},
                       {"model": str(fam["tool"]), "parameters": {"weight": weights[1]}}],
            "base_model": str(fam["base"]), "merge_method": method}
    if tokenizer is not None:
        data["tokenizer"] = tokenizer
    return Recipe.from_dict(data)


def test_inplace_merge_over_different_vocabularies_equals_the_streaming_merge(llama_family, tmp_path):
    from transformers import AutoModelForCausalLM

    fam = llama_family
    spec = {"source": "union", "pad_to_multiple_of": 8,
            "tokens": {"<|im_end|>": {"source": str(fam["tool"]), "force": True},
                       "<nil>": {"source": {"kind": "zero"}}}}
    resident = ResidentSources.from_paths([fam["chat"], fam["tool"]], fam["base"],
                                          tokenizer=TokenizerSpec.model_validate(spec))
    assert resident.vocabulary is not None and resident.vocabulary.rows == 48
    model = AutoModelForCausalLM.from_pretrained(fam["base"], dtype=torch.float32)
    model.resize_token_embeddings(resident.vocabulary.rows, mean_resizing=False)
    for k, (method, weights) in enumerate([("task_arithmetic", (0.7, 0.4)), ("ties", (0.5, 0.9))]):
        recipe = _recipe(fam, method, weights, spec)
        if method == "ties":
            recipe = Recipe.from_dict({**recipe.to_dict(), "parameters": {"density": 0.6}})
        materialize_into(model, recipe, resident)
        streamed = load_file(merge_to_disk(recipe, tmp_path / f"m{k}").out_dir / "model.safetensors")
        state = model.state_dict()
        for name, tensor in streamed.items():
            assert torch.equal(state[name], tensor), name  # bit for bit, vocabulary rows included


def test_a_recipe_without_the_residents_tokenizer_settings_is_refused_by_name(llama_family):
    fam = llama_family
    resident = ResidentSources.from_paths([fam["chat"], fam["tool"]], fam["base"],
                                          tokenizer=TokenizerSpec(source="union"))
    recipe_base_vocab = _recipe(fam, "task_arithmetic", (0.5, 0.5), {"source": "base"})
    with pytest.raises(MergeError, match="lays out vocabulary rows otherwise than the resident sources"):
        for task in resident.plan(recipe_base_vocab).tasks:
            resident.gather(task)


def test_eval_worker_holds_a_model_and_tokenizer_in_the_merged_vocabulary(llama_family):
    from evomerge.exec.worker import EvalWorker

    fam = llama_family
    worker = EvalWorker(str(fam["base"]), [str(fam["chat"]), str(fam["tool"])], [],
                        tokenizer=TokenizerSpec(source="union"))
    assert worker.model.get_input_embeddings().weight.shape[0] == len(worker.tokenizer) == 44
    materialize_into(worker.model, _recipe(fam, "task_arithmetic", (0.5, 0.5), {"source": "union"}),
                     worker.resident)
    ids = worker.tokenizer("w1 <|im_end|> zebra", return_tensors="pt")
    assert worker.model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3
