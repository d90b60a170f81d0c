"""The Ray runner over sources with different vocabularies (``sources.tokenizer``): the local runner's scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evomerge.errors import ConfigError
from evomerge.exec.base import Candidate
from evomerge.exec.ray_runner import RayRunner
from evomerge.exec.shared_sources import pack, source_paths, unpack
from evomerge.fitness import load_task
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.recipe.tokenizer import TokenizerSpec
from evomerge.study.config import RunConfig
from evomerge.study.study import build_runner, build_space
from evomerge.vocab.search import worker_sources

sys.path.insert(0, str(Path(__file__).parent.parent / "vocab"))
from vocab_family import build_family

# the fine-tunes' added tokens appear in the text, so their merged rows decide the score
TEXTS = ["w1 w2 <|im_start|> w3 <|im_end|>", "<tool> zebra w4 w5 <|im_end|>", "w6 zebra w7 <tool> w8",
         "<|im_start|> w9 w10 zebra <|im_end|>"]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray_vocab")
    fam = build_family(root, "llama")
    (root / "ppl.train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    fam["task"] = root / "ppl.yaml"
    fam["task"].write_text(yaml.safe_dump({"name": "ppl", "kind": "perplexity", "batch_size": 2,
                                           "data": {"train": "ppl.train.jsonl"}}))
    return fam


def _config(fam: dict[str, Path], tmp_path: Path, runner: dict, method: str = "ties") -> RunConfig:
    return RunConfig.from_dict({
        "name": "vocab", "output": str(tmp_path / "run"), "seed": 0,
        "sources": {"base": str(fam["base"]), "models": [str(fam["chat"]), str(fam["tool"])],
                    "tokenizer": {"source": "union", "pad_to_multiple_of": 8}},
        "space": {"kind": "ps", "method": method},
        "strategy": {"name": "random"}, "budget": {"evaluations": 4},
        "objectives": [{"name": "ppl", "direction": "minimize"}],
        "runner": runner,
    })


def _candidates(config: RunConfig, n: int) -> list[Candidate]:
    space = build_space(config)
    genomes = np.random.default_rng(3).uniform(0, 1, size=(n, space.dim))
    return [Candidate(key=f"c{i}", recipe=space.decode(g), genome=g) for i, g in enumerate(genomes)]


def test_a_ray_search_across_vocabularies_scores_what_the_local_runner_scores(local_ray, family, tmp_path):
    task = load_task(family["task"])
    local_config = _config(family, tmp_path, {"type": "local"})
    cands = _candidates(local_config, 4)
    assert all(c.recipe.tokenizer is not None for c in cands)
    local_runner = build_runner(local_config, [task])
    assert local_runner.worker.model.get_input_embeddings().weight.shape[0] == 48  # 44 tokens, padded to 8
    local = {r.key: r for r in local_runner.evaluate(cands)}
    with build_runner(_config(family, tmp_path, {"type": "ray", "workers": 2, "threads": 1}), [task]) as runner:
        remote = {r.key: r for r in runner.evaluate(cands)}
        states = runner.worker_states()
    assert all(st.shared_sources for st in states)  # through the object store, vocabulary tensors laid out
    assert set(remote) == set(local) and all(r.ok for r in [*remote.values(), *local.values()])
    for key, r in remote.items():
        assert r.objectives == pytest.approx(local[key].objectives, rel=1e-6, abs=0), key
        assert r.per_example["ppl"] == pytest.approx(local[key].per_example["ppl"], rel=1e-6)
    assert len({r.objectives["ppl"] for r in remote.values()}) == len(cands)  # the recipes really differ


def test_packed_sources_keep_the_merged_vocabulary_and_merge_like_the_originals(family):
    from transformers import AutoModelForCausalLM

    models = [str(family["chat"]), str(family["tool"])]
    spec = TokenizerSpec(source="union", pad_to_multiple_of=8)
    original = ResidentSources.from_paths(models, str(family["base"]), tokenizer=spec)
    shared = unpack(pack(original), source_paths(str(family["base"]), models))
    assert shared.vocabulary is not None and shared.vocabulary.fingerprint == original.vocabulary.fingerprint
    assert shared.vocabulary.vocab == original.vocabulary.vocab and set(shared._layouts) == set(original._layouts)
    config = _config(family, Path("/unused"), {"type": "local"})
    recipe = _candidates(config, 1)[0].recipe
    merged = []
    for resident in (original, shared):
        model = AutoModelForCausalLM.from_pretrained(family["base"], dtype=torch.float32)
        model.resize_token_embeddings(48, mean_resizing=False)
        materialize_into(model, recipe, resident)
        merged.append(model.state_dict())
    for name, tensor in merged[0].items():
        assert torch.equal(merged[1][name], tensor), name


def test_packed_sources_refuse_a_node_whose_tokenizer_files_give_another_vocabulary(family):
    models = [str(family["chat"]), str(family["tool"])]
    state = pack(ResidentSources.from_paths(models, str(family["base"]), tokenizer=TokenizerSpec(source="union")))
    state["vocabulary"] = "0" * 32  # what another node's tokenizer files would give
    with pytest.raises(ConfigError, match="merged vocabulary built here .* differs"):
        unpack(state, source_paths(str(family["base"]), models))


@pytest.mark.slow
def test_unshared_ray_workers_with_a_method_that_ignores_the_base_score_what_the_local_runner_scores(
        local_ray, family, tmp_path):
    task = load_task(family["task"])
    local_config = _config(family, tmp_path, {"type": "local"}, method="linear")
    cands = _candidates(local_config, 3)
    assert all(c.recipe.base_model is None for c in cands)  # the fine-tunes alone, in their own union
    local = {r.key: r for r in build_runner(local_config, [task]).evaluate(cands)}
    base, models = worker_sources(local_config)
    assert base is None and models == [str(family["chat"]), str(family["tool"])]
    # each worker reads its own sources (as GPU workers do) and builds the merged vocabulary itself
    with RayRunner(base=base, models=models, tasks=[task], workers=1, threads=1, share_sources=False,
                   tokenizer=local_config.sources.tokenizer) as runner:
        remote = {r.key: r for r in runner.evaluate(cands)}
        assert not runner.worker_states()[0].shared_sources
    assert set(remote) == set(local) and all(r.ok for r in [*remote.values(), *local.values()])
    for key, r in remote.items():
        assert r.objectives == pytest.approx(local[key].objectives, rel=1e-6, abs=0), key
