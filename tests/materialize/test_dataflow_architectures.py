"""Data flow beyond Llama: the routed model and the folded checkpoint agree per architecture; the rest is refused
at config time with the reason.

Forward passes use ``use_cache=False`` (the routed model's KV cache under transformers 5.25 is handled elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    MistralConfig,
    MixtralConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
)

from evomerge.errors import ConfigError
from evomerge.materialize.dataflow import fold_layer_path_to_disk, load_routed_model
from evomerge.recipe.model import Hop, Recipe
from evomerge.spaces.base import Sources
from evomerge.spaces.config import DFSConfig
from evomerge.spaces.dfs import DFSSpace
from evomerge.testing_archs import save_random_model

SMALL = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
IDS = torch.arange(16).reshape(2, 8) % 64


def save(config, folder: Path, seed: int) -> Path:
    # A residual stream well above the norms' ε, as in trained models past their first layer: the fold is
    # exact up to ε·(P²−1)/mean(x²) (fold_layer_path_to_disk), which a random tiny stream would magnify.
    return save_random_model(config, folder, seed, embedding_scale=30.0)


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


def test_mixtral_experts_fold_their_down_projections_whatever_their_number(tmp_path):
    # 6 experts, the probe has 4: the rule is per expert pattern, every expert's w2 is rescaled
    routed_equals_folded(MixtralConfig(num_hidden_layers=3, num_local_experts=6, num_experts_per_tok=2, **SMALL),
                         tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    MistralConfig(num_hidden_layers=3, **SMALL),
    Qwen3Config(num_hidden_layers=3, head_dim=8, **SMALL),
    Phi3Config(num_hidden_layers=3, pad_token_id=0, **SMALL),
    GemmaConfig(num_hidden_layers=3, head_dim=8, **SMALL),
    Gemma3TextConfig(num_hidden_layers=3, head_dim=8, sliding_window=4, **SMALL),
    Qwen2MoeConfig(num_hidden_layers=3, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                   shared_expert_intermediate_size=16, **SMALL),
    GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=48, num_attention_heads=4, vocab_size=64),
], ids=["mistral", "qwen3", "phi3", "gemma", "gemma3", "qwen2_moe", "gpt_neox"])
def test_more_architectures(config, tmp_path):
    routed_equals_folded(config, tmp_path)


def test_a_decoder_that_reads_the_raw_stream_is_refused_with_the_reason(tmp_path):
    # OLMo 2 normalizes after attention and MLP, not before: its sublayers read the residual stream raw
    a = save(Olmo2Config(num_hidden_layers=3, **SMALL), tmp_path / "a", 4)
    with pytest.raises(ConfigError, match="'olmo2': layer 0: a decoder layer reads its residual input other than"):
        DFSSpace(DFSConfig(), Sources(base=None, models=[str(a)]))


def test_an_architecture_the_routed_model_cannot_take_is_refused_when_the_space_is_built(tmp_path):
    a = save(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=64, n_positions=32), tmp_path / "a", 3)
    with pytest.raises(ConfigError, match=r"models\[0\].*not supported for model_type 'gpt2': its decoder layers"):
        DFSSpace(DFSConfig(), Sources(base=None, models=[str(a)]))


@pytest.mark.slow  # DeepSeek-V3's modeling import alone takes ~9 s here
def test_dense_and_moe_layers_of_one_model_are_each_probed():
    from transformers import DeepseekV3Config

    from evomerge.materialize.fold_rule import fold_rule

    config = DeepseekV3Config(num_hidden_layers=5, first_k_dense_replace=3, hidden_size=32, intermediate_size=48,
                              moe_intermediate_size=16, num_attention_heads=4, num_key_value_heads=4, vocab_size=64,
                              n_routed_experts=8, num_experts_per_tok=2, n_group=1, topk_group=1, kv_lora_rank=16,
                              q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
    rule = fold_rule(config.to_dict(), "deepseek")
    assert rule.factor_for("mlp.down_proj.weight") == 0.0  # the first 3 (dense) layers
    assert rule.factor_for("mlp.experts.7.down_proj.weight") == 0.0  # expert 7: the probe had 4
    assert rule.factor_for("mlp.shared_experts.down_proj.weight") == 0.0
    assert rule.factor_for("mlp.experts.7.gate_proj.weight") is None
