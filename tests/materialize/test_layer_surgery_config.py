"""Layer surgery writes a config that describes its output, for architectures with per-layer config fields.

Truth is independent of evomerge: the expected config is written by hand, the
expected model assembled by hand from the sources' state dicts, and the output
is loaded with plain transformers (strictly: the loading report must be clean).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    Qwen2Config,
    Qwen2MoeConfig,
)

from evomerge.errors import MergeError
from evomerge.materialize.layer_config import rearranged_config
from evomerge.materialize.publish import verify_strict_load
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.testing_archs import load_strictly, save_random_model

SMALL = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
IDS = torch.arange(14).reshape(2, 7) % 64


def passthrough(*parts: tuple[Path, int, int]) -> Recipe:
    return Recipe.model_validate({
        "slices": [{"sources": [{"model": str(m), "layer_range": [lo, hi]}]} for m, lo, hi in parts],
        "merge_method": "passthrough", "dtype": "float32"})


def by_hand(config, parts: list[tuple[Path, int]], first: Path, last: Path):
    """The expected output: ``config`` (written by hand) loaded with the source layers renumbered by hand."""
    state = {}
    for j, (src, layer) in enumerate(parts):
        for k, v in AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).state_dict().items():
            m = re.match(r"^(.*\.(?:layers|h))\.(\d+)\.(.*)$", k)
            if m and int(m[2]) == layer:
                state[f"{m[1]}.{j}.{m[3]}"] = v
    outer = {k: v for k, v in AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32).state_dict().items()
             if not re.search(r"\.(layers|h)\.\d+\.", k)}
    tail = AutoModelForCausalLM.from_pretrained(last, dtype=torch.float32).state_dict()
    for k in outer:
        if "embed" not in k and "wte" not in k and "wpe" not in k:
            outer[k] = tail[k]
    model = AutoModelForCausalLM.from_config(config).eval()
    missing, unexpected = model.load_state_dict({**outer, **state}, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    return model


def test_qwen2_sliding_layer_types_follow_their_source_layers(tmp_path):
    cfg = Qwen2Config(num_hidden_layers=4, use_sliding_window=True, sliding_window=3, max_window_layers=2, **SMALL)
    assert cfg.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    a, b = save_random_model(cfg, tmp_path / "a", 1), save_random_model(cfg, tmp_path / "b", 2)
    merge_to_disk(passthrough((a, 0, 3), (b, 2, 4), (a, 1, 2)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    types = ["full_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention",
             "full_attention"]
    assert written["num_hidden_layers"] == 6 and written["layer_types"] == types
    expected = Qwen2Config(num_hidden_layers=6, use_sliding_window=True, sliding_window=3, layer_types=types, **SMALL)
    want = by_hand(expected, [(a, 0), (a, 1), (a, 2), (b, 2), (b, 3), (a, 1)], a, a)
    with torch.no_grad():
        torch.testing.assert_close(load_strictly(tmp_path / "out")(IDS).logits, want(IDS).logits, rtol=0, atol=1e-5)


def test_gemma2_alternating_layers_keep_their_attention_type(tmp_path):
    cfg = Gemma2Config(num_hidden_layers=4, head_dim=8, sliding_window=3, **SMALL)
    a = save_random_model(cfg, tmp_path / "a", 3)
    merge_to_disk(passthrough((a, 0, 2), (a, 0, 2), (a, 3, 4)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    types = [cfg.layer_types[i] for i in (0, 1, 0, 1, 3)]
    assert written["layer_types"] == types
    want = by_hand(Gemma2Config(num_hidden_layers=5, head_dim=8, sliding_window=3, layer_types=types, **SMALL),
                   [(a, 0), (a, 1), (a, 0), (a, 1), (a, 3)], a, a)
    with torch.no_grad():
        torch.testing.assert_close(load_strictly(tmp_path / "out")(IDS).logits, want(IDS).logits, rtol=0, atol=1e-5)


def test_gpt2_layer_count_is_written_under_its_own_name(tmp_path):
    cfg = GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=64, n_positions=32)
    a = save_random_model(cfg, tmp_path / "a", 4)
    merge_to_disk(passthrough((a, 0, 4), (a, 2, 4)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["n_layer"] == 6 and "num_hidden_layers" not in written
    got = load_strictly(tmp_path / "out")
    assert len(got.transformer.h) == 6
    want = by_hand(GPT2Config(n_layer=6, n_embd=32, n_head=4, vocab_size=64, n_positions=32),
                   [(a, i) for i in (0, 1, 2, 3, 2, 3)], a, a)
    with torch.no_grad():
        torch.testing.assert_close(got(IDS).logits, want(IDS).logits, rtol=0, atol=1e-5)


def test_moe_dense_layers_stay_dense_where_they_land(tmp_path):
    cfg = Qwen2MoeConfig(num_hidden_layers=4, mlp_only_layers=[1], decoder_sparse_step=1, num_experts=4,
                         num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
                         **SMALL)
    a = save_random_model(cfg, tmp_path / "a", 5)
    merge_to_disk(passthrough((a, 0, 2), (a, 1, 4)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["num_hidden_layers"] == 5 and written["mlp_only_layers"] == [1, 2]
    want = by_hand(Qwen2MoeConfig(num_hidden_layers=5, mlp_only_layers=[1, 2], decoder_sparse_step=1, num_experts=4,
                                  num_experts_per_tok=2, moe_intermediate_size=16,
                                  shared_expert_intermediate_size=16, **SMALL),
                   [(a, i) for i in (0, 1, 1, 2, 3)], a, a)
    with torch.no_grad():
        torch.testing.assert_close(load_strictly(tmp_path / "out")(IDS).logits, want(IDS).logits, rtol=0, atol=1e-5)


def test_a_sparse_step_is_rewritten_when_no_index_list_can_say_it():
    cfg = Qwen2MoeConfig(num_hidden_layers=4, decoder_sparse_step=2, num_experts=4, moe_intermediate_size=16,
                         **SMALL).to_dict()  # layers 1, 3 sparse; 0, 2 dense
    out = rearranged_config(cfg, [(cfg, 1), (cfg, 3), (cfg, 1)])  # all sparse
    built = Qwen2MoeConfig(**{k: v for k, v in out.items() if k != "model_type"})
    sparse = [i for i in range(3) if i not in built.mlp_only_layers and (i + 1) % built.decoder_sparse_step == 0]
    assert out["num_hidden_layers"] == 3 and sparse == [0, 1, 2]


def test_a_stale_layer_count_is_an_error_naming_the_field_and_nothing_is_published(tmp_path):
    cfg = GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=64, n_positions=32)
    folder = save_random_model(cfg, tmp_path / "a", 6)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(MergeError, match="'n_layer' says 3 layers but the weights hold layer 3"):
        verify_strict_load(folder)


def _deepseek_v3(layers: int):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(num_hidden_layers=layers, first_k_dense_replace=2, hidden_size=32, intermediate_size=48,
                            moe_intermediate_size=16, num_attention_heads=4, num_key_value_heads=4, vocab_size=64,
                            n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1, kv_lora_rank=16,
                            q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)


@pytest.mark.slow  # importing DeepSeek-V3's modeling code alone takes ~9 s here
def test_first_k_dense_replace_follows_the_dense_layers_or_the_merge_is_refused_unpublished(tmp_path):
    a = save_random_model(_deepseek_v3(4), tmp_path / "a", 7)  # layers 0, 1 dense; 2, 3 MoE
    merge_to_disk(passthrough((a, 0, 1), (a, 0, 4)), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["first_k_dense_replace"] == 3
    want = by_hand(_deepseek_v3(5).__class__(**{**_deepseek_v3(5).to_dict(), "first_k_dense_replace": 3}),
                   [(a, i) for i in (0, 0, 1, 2, 3)], a, a)
    with torch.no_grad():
        torch.testing.assert_close(load_strictly(tmp_path / "out")(IDS).logits, want(IDS).logits, rtol=0, atol=1e-5)
    # a MoE layer before a dense one: no first_k_dense_replace says that
    with pytest.raises(MergeError, match=r"output layer 0 \(source layer 2\).*first_k_dense_replace"):
        merge_to_disk(passthrough((a, 2, 3), (a, 0, 1)), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_list_that_only_happens_to_be_as_long_as_the_layers_is_left_alone():
    from transformers import LlamaConfig

    cfg = LlamaConfig(num_hidden_layers=2, eos_token_id=[5, 7], **SMALL).to_dict()
    out = rearranged_config(cfg, [(cfg, 1), (cfg, 1), (cfg, 0)])
    assert out["num_hidden_layers"] == 3 and out["eos_token_id"] == [5, 7]
