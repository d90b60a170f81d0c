"""A search config over sources with different vocabularies: recipes carry the tokenizer, the worker merges them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate
from evomerge.materialize.streaming import merge_to_disk
from evomerge.study.config import RunConfig
from evomerge.study.study import build_runner, build_space


def _config(fam, tmp_path, runner: str = "local", method: str | list[str] = "task_arithmetic") -> RunConfig:
    return RunConfig.from_dict({
        "name": "vocab", "output": str(tmp_path / "run"), "seed": 0,
        "sources": {"base": str(fam["base"]), "models": [str(fam["chat"]), str(fam["tool"])],
                    "tokenizer": "union"},
        "space": {"kind": "ps", "method": method},
        "strategy": {"name": "random"}, "budget": {"evaluations": 2},
        "objectives": [{"name": "loss", "direction": "minimize"}],
        "runner": {"type": runner},
    })


def test_search_candidates_carry_the_tokenizer_and_merge_in_the_merged_vocabulary(llama_family, tmp_path):
    config = _config(llama_family, tmp_path)
    space = build_space(config)
    recipe = space.decode(np.full(space.dim, 0.5))
    assert recipe.tokenizer is not None and recipe.tokenizer.source == "union"
    worker = build_runner(config, []).worker
    assert worker.model.get_input_embeddings().weight.shape[0] == 44
    result = worker.evaluate(Candidate(key="k", recipe=recipe, genome=np.full(space.dim, 0.5)))
    assert result.status == "ok", result.error



def test_a_method_that_ignores_the_base_searches_in_its_own_merged_vocabulary(llama_family, tmp_path):
    # linear over the fine-tunes alone: mergekit anchors its union on the first model, not on the base
    config = _config(llama_family, tmp_path, method="linear")
    space = build_space(config)
    genome = np.full(space.dim, 0.3)
    recipe = space.decode(genome)
    assert recipe.base_model is None and recipe.tokenizer is not None
    worker = build_runner(config, []).worker
    assert worker.resident.base_model is None  # held without the base, in the candidates' vocabulary
    result = worker.evaluate(Candidate(key="k", recipe=recipe, genome=genome))
    assert result.status == "ok", result.error
    streamed = load_file(merge_to_disk(recipe, tmp_path / "streamed").out_dir / "model.safetensors")
    state = worker.model.state_dict()
    for name, tensor in streamed.items():
        assert torch.equal(state[name], tensor), name  # bit for bit, vocabulary rows included
    assert worker.tokenizer.get_vocab() == worker.resident.vocabulary.tokenizer.get_vocab()


def test_a_space_mixing_methods_with_and_without_the_base_is_refused_by_name(llama_family, tmp_path):
    config = _config(llama_family, tmp_path, method=["task_arithmetic", "linear"])
    with pytest.raises(ConfigError, match="task_arithmetic merge against the base and linear merge the models alone"):
        build_space(config)
