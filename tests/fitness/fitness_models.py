"""Models whose behaviour the fitness tests know, and the word-level tokenizer they share.

``make_table_llama`` builds a real transformers Llama (KV cache, ``generate`` and all)
whose next-token logits depend only on the current token through a table we
choose: embeddings are one-hot, every attention and MLP output projection is
zero (the residual stream stays the embedding), so after the final RMSNorm the
logits are ``sqrt(d) * lm_head[:, token]``. Greedy decoding is then a walk over
the table, which the tests compute by hand (``walk``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["what", "is", "plus", "the", "a", "b", "c", "d", "e", "f", "g", "h", "x", "y",
         *[str(i) for i in range(10)]]
VOCAB = SPECIALS + WORDS
PAD, BOS, EOS = 0, 1, 2


def tok_id(word: str) -> int:
    return VOCAB.index(word)


def make_tokenizer() -> Any:
    """Word-level tokenizer: whitespace split, BOS prepended, decode joins words with spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


def make_table_llama(next_logits: torch.Tensor) -> Any:
    """A Llama whose logits after token ``j`` are exactly ``next_logits[j]`` (shape [V, V])."""
    from transformers import LlamaConfig, LlamaForCausalLM

    v = next_logits.shape[0]
    d = -(-v // 4) * 4  # hidden size: room for one-hot embeddings, and an even head dim for RoPE
    cfg = LlamaConfig(hidden_size=d, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=v, max_position_embeddings=128, rms_norm_eps=0.0,
                      tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(v, d))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        # RMSNorm turns the one-hot e_j into sqrt(d) * e_j, so lm_head[:, j] = next_logits[j] / sqrt(d)
        model.lm_head.weight.copy_(torch.cat([next_logits.T, torch.zeros(v, d - v)], dim=1) / math.sqrt(d))
    return model


def bigram_table(transitions: dict[str, str], *, default: str = "</s>", seed: int = 0) -> torch.Tensor:
    """[V, V] logits: 5.0 on the chosen next token, small distinct noise elsewhere (no ties)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.rand(len(VOCAB), len(VOCAB), generator=g)
    for j, word in enumerate(VOCAB):
        table[j, tok_id(transitions.get(word, default))] = 5.0
    return table


def walk(transitions: dict[str, str], start: str, max_new_tokens: int, default: str = "</s>") -> list[str]:
    """Greedy decoding of the bigram model, by hand: the words before EOS."""
    out, cur = [], start
    for _ in range(max_new_tokens):
        cur = transitions.get(cur, default)
        if cur == "</s>":
            break
        out.append(cur)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
