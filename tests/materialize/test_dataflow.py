"""Data-flow merges: the routed model runs a layer path over shared source layers; the fold exports it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from evomerge.errors import ConfigError, MergeError
from evomerge.materialize.dataflow import (
    LayerPool,
    cumulative_scales,
    fold_layer_path_to_disk,
    load_routed_model,
    routed_model_for,
)
from evomerge.materialize.plan import model_key
from evomerge.recipe.model import Hop, Recipe
from evomerge.spaces import Sources, build_space


def _family(root: Path, eps: float) -> tuple[Path, list[Path]]:
    from evomerge.testing import tiny_llama_config, tiny_llama_family

    config = tiny_llama_config(num_layers=3)
    config.rms_norm_eps = eps
    return tiny_llama_family(root, n_experts=2, config=config)


@pytest.fixture(scope="module")
def fam(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 3-layer family whose RMSNorm eps is negligible, so the fold is exact to float rounding."""
    base, experts = _family(tmp_path_factory.mktemp("dataflow"), 1e-12)
    (base / "tokenizer_config.json").write_text('{"model_max_length": 128}\n')  # A's tokenizer marker
    return base, experts


@pytest.fixture(scope="module")
def pool(fam) -> LayerPool:
    base, experts = fam
    return LayerPool.load(base, experts)


def _path(fam) -> list[Hop]:
    """Reuses base layer 1 twice, mixes two models, non-unit scales."""
    base, (e0, e1) = fam
    return [Hop(model=str(base), layer=0), Hop(model=str(base), layer=1, scale=1.7),
            Hop(model=str(e0), layer=2, scale=0.6), Hop(model=str(base), layer=1, scale=1.3),
            Hop(model=str(e1), layer=0, scale=0.45), Hop(model=str(base), layer=2, scale=1.9)]


def _recipe(fam, path: list[Hop]) -> Recipe:
    base = str(fam[0])
    return Recipe(models=[{"model": base}], merge_method="passthrough", base_model=base, layer_path=path)


IDS = torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8], [9, 7, 9, 3, 23, 8, 4, 6]])


def _logits(model, ids=IDS, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs).logits


# ---- the routed model -----------------------------------------------------------------------------
def test_a_path_of_a_own_layers_at_scale_one_reproduces_a_exactly(pool, fam):
    base = str(fam[0])
    routed = pool.route([Hop(model=base, layer=i) for i in range(3)])
    assert torch.equal(_logits(routed), _logits(pool.base_model))


def test_routed_model_shares_every_weight_with_the_sources(pool, fam):
    routed = pool.route(_path(fam))
    source_ptrs = {p.data_ptr() for p in pool.base_model.parameters()}
    source_ptrs |= {p.data_ptr() for layers in pool.layers.values() for p in layers.parameters()}
    routed_params = list(routed.parameters())
    assert routed_params and all(p.data_ptr() in source_ptrs for p in routed_params)
    # a layer used by two hops is one module, counted once
    hops = routed.model.layers
    assert hops[1].layer is hops[3].layer is pool.base_model.model.layers[1]
    assert sum(p.numel() for p in routed.parameters()) < sum(p.numel() for p in pool.base_model.parameters()) * 2


def test_routing_leaves_model_a_intact(pool, fam):
    before = _logits(pool.base_model)
    pool.route(_path(fam))
    assert len(pool.base_model.model.layers) == 3 and pool.base_model.config.num_hidden_layers == 3
    assert torch.equal(_logits(pool.base_model), before)


def test_each_hop_has_its_own_kv_cache_slot(pool, fam):
    routed = pool.route(_path(fam))
    with torch.no_grad():
        out = routed(IDS, use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, DynamicCache) and len(cache.layers) == len(_path(fam))
    k1, k3 = cache.layers[1].keys, cache.layers[3].keys  # same module, different inputs
    assert k1.shape == k3.shape == (2, 2, 8, 8) and not torch.equal(k1, k3)


def test_incremental_decoding_with_the_cache_equals_the_full_forward(pool, fam):
    routed = pool.route(_path(fam))
    full = _logits(routed)
    with torch.no_grad():
        out = routed(IDS[:, :5], use_cache=True)
        step = routed(IDS[:, 5:6], cache=out.past_key_values, use_cache=True)
        step2 = routed(IDS[:, 6:8], cache=step.past_key_values, use_cache=True)
    torch.testing.assert_close(out.logits, full[:, :5], rtol=0, atol=1e-5)
    torch.testing.assert_close(step.logits[:, 0], full[:, 5], rtol=0, atol=1e-5)
    torch.testing.assert_close(step2.logits, full[:, 6:8], rtol=0, atol=1e-5)


def test_batched_greedy_generation_with_cache_equals_without(pool, fam):
    routed = pool.route(_path(fam))
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0  # left padding
    kwargs = {"attention_mask": mask, "max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    cached = routed.generate(IDS, use_cache=True, **kwargs)
    uncached = routed.generate(IDS, use_cache=False, **kwargs)
    assert cached.shape == (2, 18)
    assert torch.equal(cached, uncached)


def _greedy(model, ids, mask, steps: int, *, cache: bool) -> torch.Tensor:
    """The fitness engine's hand loop (left padding, positions from the mask), with or without a cache."""
    out_tokens = []
    position = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=cache)
        for _ in range(steps):
            tok = out.logits[:, -1].argmax(-1)
            out_tokens.append(tok)
            ids = torch.cat([ids, tok[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones(len(ids), 1)], 1)
            position = (mask.cumsum(-1) - 1).clamp_min(0)
            if cache:
                out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=position[:, -1:],
                            cache=out.past_key_values, use_cache=True)
            else:
                out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=False)
    return torch.stack(out_tokens, 1)


def test_hand_written_greedy_loop_with_cache_equals_recomputing_everything(pool, fam):
    routed = pool.route(_path(fam))
    ids = IDS.clone()
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # left padding
    assert torch.equal(_greedy(routed, ids, mask, 8, cache=True), _greedy(routed, ids, mask, 8, cache=False))


def test_routed_model_refuses_hidden_state_outputs_it_would_duplicate(pool, fam):
    with pytest.raises(MergeError, match="output_hidden_states"):
        pool.route(_path(fam))(IDS, output_hidden_states=True)


def test_routed_model_refuses_save_pretrained(pool, fam, tmp_path):
    with pytest.raises(MergeError, match="fold_layer_path_to_disk"):
        pool.route(_path(fam)).save_pretrained(tmp_path / "x")


def test_routing_rejects_unknown_models_and_layers(pool, fam):
    with pytest.raises(ConfigError, match="not in the pool"):
        pool.route([Hop(model="/nowhere", layer=0)])
    with pytest.raises(ConfigError, match=r"layer_path\[1\]: layer 3"):
        pool.route([Hop(model=str(fam[0]), layer=0), Hop(model=str(fam[0]), layer=3)])


# ---- folding --------------------------------------------------------------------------------------
def test_folded_checkpoint_gives_the_routed_models_logits(pool, fam, tmp_path):
    path = _path(fam)
    report = fold_layer_path_to_disk(_recipe(fam, path), tmp_path / "folded")
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "folded", dtype=torch.float32)
    assert type(folded).__name__ == "LlamaForCausalLM" and folded.config.num_hidden_layers == len(path)
    assert report.tensors == len(folded.state_dict())
    routed = pool.route(path)
    torch.testing.assert_close(_logits(folded), _logits(routed), rtol=0, atol=1e-5)
    mask = torch.ones_like(IDS)
    kwargs = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(folded.generate(IDS, **kwargs), routed.generate(IDS, **kwargs))


def test_fold_scales_only_the_residual_writes_by_the_cumulative_product(fam, tmp_path):
    from safetensors.torch import load_file

    base, (e0, _) = fam
    path = _path(fam)
    fold_layer_path_to_disk(_recipe(fam, path), tmp_path / "folded")
    out = load_file(tmp_path / "folded" / "model.safetensors")
    src = {str(base): load_file(base / "model.safetensors"), str(e0): load_file(e0 / "model.safetensors")}
    P = cumulative_scales(path)
    assert P[:3] == pytest.approx([1.0, 1.7, 1.02])
    hop = path[2]  # expert0 layer 2, P = 1.7 * 0.6
    for suffix, factor in [("self_attn.o_proj.weight", 1 / P[2]), ("mlp.down_proj.weight", 1 / P[2]),
                           ("self_attn.q_proj.weight", 1.0), ("mlp.up_proj.weight", 1.0),
                           ("input_layernorm.weight", 1.0)]:
        want = src[hop.model][f"model.layers.{hop.layer}.{suffix}"] * factor
        torch.testing.assert_close(out[f"model.layers.2.{suffix}"], want, rtol=1e-6, atol=0)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(out[name], src[str(base)][name])


def test_fold_of_a_own_path_is_a_bit_for_bit(fam, tmp_path):
    from safetensors.torch import load_file

    base = fam[0]
    fold_layer_path_to_disk(_recipe(fam, [Hop(model=str(base), layer=i) for i in range(3)]), tmp_path / "same")
    got, want = load_file(tmp_path / "same" / "model.safetensors"), load_file(base / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_folded_folder_has_a_config_tokenizer_and_recipe(fam, tmp_path):
    path = _path(fam)
    fold_layer_path_to_disk(_recipe(fam, path), tmp_path / "folded", max_shard_bytes=20_000)
    out = tmp_path / "folded"
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == len(path) and config["model_type"] == "llama"
    assert (out / "tokenizer_config.json").read_text() == (fam[0] / "tokenizer_config.json").read_text()
    assert Recipe.from_json((out / "evomerge_recipe.json").read_text()).layer_path == path
    assert (out / "model.safetensors.index.json").is_file()  # sharded through the streaming writer
    assert not list(tmp_path.glob(".folded*"))  # nothing left of the temporary folder


def test_fold_error_with_a_real_rmsnorm_eps_is_small_and_comes_from_eps(tmp_path):
    """With eps = 1e-6 the fold is exact only up to eps·P²: small, and it vanishes as eps → 0."""
    base, experts = _family(tmp_path / "eps", 1e-6)
    path = [Hop(model=str(base), layer=0), Hop(model=str(experts[0]), layer=1, scale=1.5),
            Hop(model=str(base), layer=2, scale=0.8)]
    recipe = Recipe(models=[{"model": str(base)}], merge_method="passthrough", base_model=str(base),
                    layer_path=path)
    fold_layer_path_to_disk(recipe, tmp_path / "f")
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "f", dtype=torch.float32)
    routed = load_routed_model(recipe)
    err = (_logits(folded) - _logits(routed)).abs().max().item()
    assert 0 < err < 1e-2 * _logits(routed).abs().max().item()
    for model in (folded, routed):
        for module in model.modules():
            if hasattr(module, "variance_epsilon"):
                module.variance_epsilon = 0.0
    assert (_logits(folded) - _logits(routed)).abs().max().item() < 1e-5


def test_fold_refuses_bad_layers_and_existing_output(fam, tmp_path):
    base = str(fam[0])
    with pytest.raises(ConfigError, match=r"layer_path\[1\]: layer 5 is outside 0..2"):
        fold_layer_path_to_disk(_recipe(fam, [Hop(model=base, layer=0), Hop(model=base, layer=5)]), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        fold_layer_path_to_disk(_recipe(fam, _path(fam)), tmp_path / "busy")


def test_fold_refuses_an_architecture_it_cannot_fold(fam, tmp_path):
    base = tmp_path / "gemma_like"
    base.mkdir()
    for f in fam[0].iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    config = json.loads((base / "config.json").read_text())
    config["model_type"] = "gpt2"  # a decoder stack the routed model cannot take (transformer.h)
    (base / "config.json").write_text(json.dumps(config))
    recipe = Recipe(models=[{"model": str(base)}], merge_method="passthrough", base_model=str(base),
                    layer_path=[Hop(model=str(base), layer=0)])
    with pytest.raises(ConfigError, match="not supported for model_type 'gpt2'"):
        fold_layer_path_to_disk(recipe, tmp_path / "out")


def test_fold_refuses_scale_products_that_overflow(fam, tmp_path):
    base = str(fam[0])
    path = [Hop(model=base, layer=0, scale=1e-30), Hop(model=base, layer=1, scale=1e-30)]
    with pytest.raises(MergeError, match="overflows"):
        fold_layer_path_to_disk(_recipe(fam, path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- with the DFS space ---------------------------------------------------------------------------
def test_dfs_decoded_recipes_route_and_fold_to_the_same_logits(pool, fam, tmp_path):
    base, experts = fam
    space = build_space({"kind": "dfs", "repeats": 2}, Sources(base=None, models=[str(base), str(experts[0])]))
    rng = np.random.default_rng(0)
    genome = rng.uniform(space.lower, space.upper)
    recipe = space.decode(genome)
    assert recipe.layer_path is not None and len(recipe.layer_path) > 3
    fold_layer_path_to_disk(recipe, tmp_path / "dfs")
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "dfs", dtype=torch.float32)
    routed = pool.route(recipe.layer_path)
    torch.testing.assert_close(_logits(folded), _logits(routed), rtol=0, atol=1e-5)
    assert torch.equal(_logits(pool.route(space.decode(space.x0()).layer_path or [])), _logits(pool.base_model))


def test_routed_model_for_a_worker_loads_sources_once_and_grows_the_pool(fam, pool):
    class Worker:  # what an evaluation worker offers: a device, its model, a cache dict
        def __init__(self) -> None:
            self.device = "cpu"
            self.model = pool.base_model
            self._routed_cache: dict = {}

    base, (e0, _) = fam
    worker = Worker()
    first = routed_model_for(_recipe(fam, [Hop(model=str(base), layer=0), Hop(model=str(e0), layer=1)]), worker)
    cached = worker._routed_cache[model_key(base)]
    second = routed_model_for(_recipe(fam, _path(fam)), worker)  # also uses expert1: added to the same pool
    assert worker._routed_cache == {model_key(base): cached} and len(cached.layers) == 3
    assert first.model.layers[0].layer is second.model.layers[0].layer
    torch.testing.assert_close(_logits(second), _logits(pool.route(_path(fam))), rtol=0, atol=0)
