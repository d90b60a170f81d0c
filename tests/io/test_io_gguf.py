"""GGUF sources: a clear error naming the file and the command, and `evomerge convert` giving the exact weights.

The GGUF file is written here by the ``gguf`` package's writer from a tiny
random Llama, with llama.cpp's q/k row permutation (as convert_hf_to_gguf.py
writes it), so the truth is the Llama's own state dict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

gguf = pytest.importorskip("gguf")

from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from evomerge.cli import app  # noqa: E402
from evomerge.errors import CheckpointError  # noqa: E402
from evomerge.io.checkpoint import Checkpoint  # noqa: E402

HEADS, KV_HEADS = 4, 2
OUTER = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
PER_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotary halves interleaved per head."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("gguf")
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, vocab_size=64, max_position_embeddings=64,
                         tie_word_embeddings=False)
    state = AutoModelForCausalLM.from_config(config).state_dict()
    file = folder / "tiny-F32.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(48)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(32 // HEADS)
    writer.add_vocab_size(64)
    for name, tensor in state.items():
        array = tensor.numpy().astype(np.float32)
        if name in OUTER:
            gname = OUTER[name]
        else:
            parts = name.split(".")
            gname = f"blk.{parts[2]}.{PER_LAYER['.'.join(parts[3:-1])]}.weight"
            if "q_proj" in name:
                array = llama_cpp_permute(array, HEADS)
            elif "k_proj" in name:
                array = llama_cpp_permute(array, KV_HEADS)
        writer.add_tensor(gname, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return file, state


def test_a_gguf_source_is_named_with_the_command_that_converts_it(tiny_gguf):
    file, _ = tiny_gguf
    for path in (file, file.parent):
        with pytest.raises(CheckpointError, match=r"GGUF file \(llama, 2 layers, 21 tensors: F32\).*"
                                                  r"evomerge convert .*tiny-F32.gguf .*tiny-F32-hf"):
            Checkpoint.open(path)


def test_convert_writes_the_weights_transformers_reads_from_the_gguf(tiny_gguf, tmp_path):
    file, state = tiny_gguf
    result = CliRunner().invoke(app, ["convert", str(file), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32,
                                                       output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    got = model.state_dict()
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)  # q/k un-permuted, nothing else changed
    with Checkpoint.open(tmp_path / "hf") as ckpt:  # and evomerge reads it
        assert torch.equal(ckpt.get("model.layers.1.self_attn.q_proj.weight"),
                           state["model.layers.1.self_attn.q_proj.weight"])
