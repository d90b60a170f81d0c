"""Batched greedy decoding with a KV cache, and log-likelihood scoring of token sequences.

Scoring throughput bounds the search, so both functions work on pre-tokenized,
length-sorted batches (tokenization depends only on the tokenizer and is done
once per task, not once per candidate).

Greedy decoding: a short hand-written loop over ``model(..., cache=DynamicCache(...))``
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


def cache_argument(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache under: ``cache`` (transformers >= 5.2x; the old
    ``past_key_values`` is deprecated and removed in 5.40) or ``past_key_values`` (older releases,
    remote-code models)."""
    return "cache" if _accepts(type(model), "cache") else "past_key_values"


def new_cache(model: Any) -> Any:
    """A fresh :class:`transformers.DynamicCache` laid out for ``model`` (sliding/hybrid layers from its config)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    try:
        return DynamicCache(config=config) if config is not None else DynamicCache()
    except (TypeError, ValueError, AttributeError):  # a config the cache cannot read: one plain layer per block
        return DynamicCache()


class StopChecker:
    """Finds stop strings in what each row generated, looking only at the tail of new tokens.

    A stop string of ``L`` characters that was not there one step earlier ends in the newest
    token and spans at most ``L`` tokens (every non-special token decodes to at least one
    character), so decoding the last ``L + 1`` tokens per row and step is enough.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.window = max((len(s) for s in self.stops), default=0) + 1

    def hits(self, generated: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Boolean [len(rows)]: the row's generation now contains a stop string."""
        tail = torch.stack(generated[-self.window:], dim=1)[rows].tolist()
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], dtype=torch.bool)


@torch.inference_mode()
def greedy_loop(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                max_new_tokens: int, eos_ids: Sequence[int], pad_id: int,
                stop: Sequence[str] = (), tokenizer: Any = None) -> torch.Tensor:
    """Greedy continuation of a left-padded batch; returns [B, n<=max_new_tokens] new tokens.

    Rows that produced an EOS (or whose text now contains one of the ``stop`` strings, which
    needs the ``tokenizer``) are padded with ``pad_id`` afterwards, like ``generate``; the token
    that completed a stop string is kept (cut the text with :func:`cut_at_stop`). Finished rows
    leave the batch (``Cache.batch_select_indices``) so that short answers stop costing compute,
    and the loop ends when every row has finished. Position ids come from the attention mask so
    that left padding does not shift them. The cache is transformers' public ``DynamicCache``.
    """
    bsz = input_ids.shape[0]
    device = input_ids.device
    stops = StopChecker(tokenizer, stop) if stop else None
    if stops is not None and tokenizer is None:
        raise ValueError("stop strings need the tokenizer to read the generated text")
    cache = new_cache(model)
    cache_kw = cache_argument(model)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    kwargs: dict[str, Any] = {}
    if _accepts(type(model), "logits_to_keep"):
        kwargs["logits_to_keep"] = 1  # only the last position's logits are needed
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=True, **{cache_kw: cache}, **kwargs)
    eos = torch.as_tensor(list(eos_ids), dtype=torch.long, device=device)
    active = torch.arange(bsz, device=device)  # rows of the batch still in the model's batch
    next_tok = out.logits[:, -1, :].argmax(-1)
    position = position_ids[:, -1:]
    generated: list[torch.Tensor] = []  # [B] per step, pad_id for finished rows
    for step in range(max_new_tokens):
        column = torch.full((bsz,), pad_id, dtype=torch.long, device=device)
        column[active] = next_tok
        generated.append(column)
        done = torch.isin(next_tok, eos) if eos.numel() else torch.zeros_like(next_tok, dtype=torch.bool)
        if stops is not None:
            done |= stops.hits(generated, active.cpu()).to(device)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        position = position + 1
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, next_tok = active[keep], next_tok[keep]
            attention_mask, position = attention_mask[keep], position[keep]
        out = model(input_ids=next_tok[:, None], attention_mask=attention_mask, position_ids=position,
                    use_cache=True, **{cache_kw: cache}, **kwargs)
        next_tok = out.logits[:, -1, :].argmax(-1)
    return torch.stack(generated, dim=1)


@torch.inference_mode()
def greedy_hf(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
              max_new_tokens: int, eos_ids: Sequence[int], pad_id: int,
              stop: Sequence[str] = (), tokenizer: Any = None) -> torch.Tensor:
    """The same contract as :func:`greedy_loop`, through ``model.generate`` (the reference).

    ``stop`` is not passed to ``generate``: its ``stop_strings`` criterion probes the vocabulary and
    fails on some tokenizers (word-level ones); rows run on and the caller cuts the text instead."""
    extra: dict[str, Any] = {}
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         num_beams=1, use_cache=True, max_new_tokens=max_new_tokens,
                         eos_token_id=list(eos_ids) or None, pad_token_id=pad_id, **extra)
    return out[:, input_ids.shape[1]:]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest of the ``stop`` strings (lm-evaluation-harness's ``until``)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


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
