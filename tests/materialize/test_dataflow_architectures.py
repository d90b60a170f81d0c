"""Data flow beyond Llama: the routed model and the folded checkpoint agree per architecture; the rest is refused
at config time with the reason.

Forward passes use ``use_cache=False`` (the routed model's KV cache under transformers 5.25 is handled elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, GPT2Config, MistralConfig, Qwen2Config

from evomerge.errors import ConfigError
from evomerge.materialize.dataflow import fold_layer_path_to_disk, load_routed_model
from evomerge.recipe.model import Hop, Recipe
from evomerge.spaces.base import Sources
from evomerge.spaces.config import DFSConfig
from evomerge.spaces.dfs import DFSSpace

SMALL = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
IDS = torch.arange(16).reshape(2, 8) % 64


def save(config, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    return folder


def routed_equals_folded(config, tmp_path: Path) -> None:
    a, b = save(config, tmp_path / "a", 1), save(config, tmp_path / "b", 2)
    path = [Hop(model=str(a), layer=0, scale=1.0), Hop(model=str(b), layer=2, scale=1.6),
            Hop(model=str(a), layer=1, scale=0.7), Hop(model=str(b), layer=1, scale=1.2),
            Hop(model=str(a), layer=2, scale=0.9)]
    recipe = Recipe(models=[{"model": str(a)}], merge_method="passthrough", base_model=str(a), layer_path=path,
                    dtype="float32")
    with torch.no_grad():
        routed = load_routed_model(recipe)(IDS, use_cache=False).logits
    fold_layer_path_to_disk(recipe, tmp_path / "folded")
    folded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "folded", dtype=torch.float32,
                                                        output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        got = folded.eval()(IDS, use_cache=False).logits
    torch.testing.assert_close(got, routed, rtol=1e-4, atol=1e-4)
    assert (got - routed).abs().max() < 1e-3 * routed.abs().max()


def test_qwen2_with_sliding_layers(tmp_path):
    routed_equals_folded(Qwen2Config(num_hidden_layers=3, use_sliding_window=True, sliding_window=4,
                                     max_window_layers=1, **SMALL), tmp_path)


def test_gemma2_sandwich_norms_fold_into_the_post_norm_weights(tmp_path):
    routed_equals_folded(Gemma2Config(num_hidden_layers=3, head_dim=8, sliding_window=4, **SMALL), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    MistralConfig(num_hidden_layers=3, **SMALL),
    Gemma3TextConfig(num_hidden_layers=3, head_dim=8, sliding_window=4, **SMALL),
], ids=["mistral", "gemma3"])
def test_more_architectures(config, tmp_path):
    routed_equals_folded(config, tmp_path)


def test_an_architecture_the_routed_model_cannot_take_is_refused_when_the_space_is_built(tmp_path):
    a = save(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=64, n_positions=32), tmp_path / "a", 3)
    with pytest.raises(ConfigError, match=r"models\[0\].*not supported for model_type 'gpt2': its decoder layers"):
        DFSSpace(DFSConfig(), Sources(base=None, models=[str(a)]))
