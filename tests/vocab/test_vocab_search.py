"""A search config over sources with different vocabularies: recipes carry the tokenizer, the worker merges them."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate
from evomerge.study.config import RunConfig
from evomerge.study.study import build_runner, build_space


def _config(fam, tmp_path, runner: str = "local") -> RunConfig:
    return RunConfig.from_dict({
        "name": "vocab", "output": str(tmp_path / "run"), "seed": 0,
        "sources": {"base": str(fam["base"]), "models": [str(fam["chat"]), str(fam["tool"])],
                    "tokenizer": "union"},
        "space": {"kind": "ps", "method": "task_arithmetic"},
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


def test_the_ray_runner_refuses_sources_with_a_merged_vocabulary_by_name(llama_family, tmp_path):
    with pytest.raises(ConfigError, match="sources.tokenizer"):
        build_runner(_config(llama_family, tmp_path, runner="ray"), [])
