"""A tiny base with its own word-level tokenizer, and fine-tunes that added tokens and resized their embeddings.

The shape of real chat fine-tunes: ``chat`` adds ChatML's special tokens,
``tool`` adds a tool-call token, ChatML's end token (the same string ``chat``
added, at another id) and a plain word. Every added row is random, as after
``resize_token_embeddings`` and training.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(36)]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ADDED = {
    "chat": {"special": ["<|im_start|>", "<|im_end|>"], "plain": []},
    "tool": {"special": ["<tool>", "<|im_end|>"], "plain": ["zebra"]},
}


def base_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIALS, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def config(arch: str, vocab_size: int):
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=64,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    from transformers import Qwen2Config

    return Qwen2Config(**common)


def build_family(root: Path, arch: str = "llama") -> dict[str, Path]:
    """``base``, ``chat``, ``tool`` folders (float32) under ``root``."""
    from transformers import AutoModelForCausalLM

    out = {}
    tok = base_tokenizer()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config(arch, len(tok)))
    out["base"] = root / "base"
    base.save_pretrained(out["base"])
    tok.save_pretrained(out["base"])
    for k, (name, added) in enumerate(ADDED.items()):
        ft = AutoModelForCausalLM.from_pretrained(out["base"], dtype=torch.float32)
        ft_tok = base_tokenizer()
        ft_tok.add_special_tokens({"additional_special_tokens": added["special"]})
        ft_tok.add_tokens(added["plain"])
        gen = torch.Generator().manual_seed(10 + k)
        with torch.no_grad():
            for p in ft.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05 * (p.std() + 1e-3))
        old = ft.config.vocab_size
        ft.resize_token_embeddings(len(ft_tok), mean_resizing=False)
        with torch.no_grad():
            for emb in (ft.get_input_embeddings().weight, ft.get_output_embeddings().weight):
                emb[old:] = torch.randn(emb[old:].shape, generator=gen) * 0.1
        out[name] = root / name
        ft.save_pretrained(out[name])
        ft_tok.save_pretrained(out[name])
    return out
