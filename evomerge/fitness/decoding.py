"""Batched greedy decoding with a KV cache, and log-likelihood scoring of token sequences.

Scoring throughput bounds the search, so both functions work on pre-tokenized,
length-sorted batches (tokenization depends only on the tokenizer and is done
once per task, not once per candidate).

Greedy decoding: a short hand-written loop over ``model(..., past_key_values=...)``
instead of ``model.generate``. On tiny CPU models the per-call bookkeeping of
``generate`` (logits processors, stopping criteria, cache setup) is a visible
share of the time; ``bench/fitness_bench.py`` measures both, and
``tests/fitness`` checks that they produce identical tokens.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    """One left- or right-padded batch and the positions of its rows in the original order."""

    index: torch.Tensor  # [B] positions of the rows in the task's example list
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B] number of real tokens per row


def make_batches(seqs: Sequence[Sequence[int]], batch_size: int, *, pad_id: int, left: bool) -> list[Batch]:
    """Group sequences of similar length (longest first) into padded batches.

    Sorting by length keeps padding, and hence wasted compute, small. The
    sort is stable, so the grouping is deterministic.
    """
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            s = torch.as_tensor(list(seqs[i]), dtype=torch.long)
            if left:
                ids[row, width - len(s):] = s
                mask[row, width - len(s):] = 1
            else:
                ids[row, :len(s)] = s
                mask[row, :len(s)] = 1
        batches.append(Batch(torch.as_tensor(idx), ids, mask, mask.sum(1)))
    return batches


@functools.lru_cache(maxsize=64)
def _accepts(forward_cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(forward_cls.forward).parameters
    except (TypeError, ValueError):
        return False


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.inference_mode()
def greedy_loop(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                max_new_tokens: int, eos_ids: Sequence[int], pad_id: int) -> torch.Tensor:
    """Greedy continuation of a left-padded batch; returns [B, n<=max_new_tokens] new tokens.

    Rows that produced an EOS are padded with ``pad_id`` afterwards (like
    ``generate``); the loop stops when every row has finished. Position ids
    come from the attention mask so that left padding does not shift them.
    """
    bsz = input_ids.shape[0]
    device = input_ids.device
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    kwargs: dict[str, Any] = {}
    if _accepts(type(model), "logits_to_keep"):
        kwargs["logits_to_keep"] = 1  # only the last position's logits are needed
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=True, **kwargs)
    next_tok = out.logits[:, -1, :].argmax(-1)
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)
    position = position_ids[:, -1:]
    ones = attention_mask.new_ones(bsz, 1)
    generated: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        next_tok = next_tok.masked_fill(finished, pad_id)
        generated.append(next_tok)
        if eos.numel():
            finished = finished | torch.isin(next_tok, eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        attention_mask = torch.cat([attention_mask, ones], dim=1)
        position = position + 1
        out = model(input_ids=next_tok[:, None], attention_mask=attention_mask, position_ids=position,
                    past_key_values=out.past_key_values, use_cache=True)
        next_tok = out.logits[:, -1, :].argmax(-1)
    return torch.stack(generated, dim=1)


@torch.inference_mode()
def greedy_hf(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
              max_new_tokens: int, eos_ids: Sequence[int], pad_id: int) -> torch.Tensor:
    """The same contract as :func:`greedy_loop`, through ``model.generate`` (the reference)."""
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         num_beams=1, use_cache=True, max_new_tokens=max_new_tokens,
                         eos_token_id=list(eos_ids) or None, pad_token_id=pad_id)
    return out[:, input_ids.shape[1]:]


def cut_at_eos(row: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """The generated tokens before the first EOS (EOS excluded)."""
    eos = set(eos_ids)
    out = []
    for t in row:
        if t in eos:
            break
        out.append(int(t))
    return out


@torch.inference_mode()
def token_nll(model: Any, seqs: Sequence[Sequence[int]], *, batch_size: int, pad_id: int,
              with_greedy: bool = False) -> list[torch.Tensor]:
    """Per-token negative log-likelihood of ``seq[1:]`` given its prefix, for every sequence.

    Entry ``i`` of the result has ``len(seqs[i]) - 1`` values: value ``t`` is
    ``-log p(seq[t+1] | seq[:t+1])``. Batches are right-padded, so the real
    tokens keep positions 0..L-1 and never attend to padding. With
    ``with_greedy`` each entry is a [2, L-1] tensor whose second row is 1.0
    where ``seq[t+1]`` is also the argmax (lm-evaluation-harness's ``is_greedy``).
    """
    device = model_device(model)
    result: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for b in make_batches(seqs, batch_size, pad_id=pad_id, left=False):
        ids = b.input_ids.to(device)
        mask = b.attention_mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1, :]
        targets = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        if with_greedy:
            nll = torch.stack([nll, (logits.argmax(-1) == targets).to(nll.dtype)], dim=1)
        nll = nll.cpu()
        for row, i in enumerate(b.index.tolist()):
            result[i] = nll[row, ..., : int(b.lengths[row]) - 1]
    return result
