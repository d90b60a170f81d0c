"""Placing a vocabulary tensor's rows (embedding, LM head) in the merged vocabulary, per source model.

mergekit 0.1.5's rule (``mergekit/tokenizer/embed.py``), decided here once per
set of models from the vocabularies alone, then applied to tensors:

- a token a model has keeps that model's own row (unless ``force``);
- a token some model lacks gets, in that model, a default row: the row of the
  ``tokens`` entry's source if one is configured; else the only model that has
  it; else the base's row when the base has it; else the mean of the rows of
  the models that have it; zeros when none has it;
- rows past the vocabulary (``pad_to_multiple_of``) are the mean of the model's
  vocabulary rows.

The merge method then runs on these aligned tensors as on any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evomerge.errors import ConfigError
from evomerge.recipe.tokenizer import ModelTokenSource, TokenEmbedding, ZeroSource
from evomerge.vocab.build import MergedVocabulary

if TYPE_CHECKING:
    import torch

# Token-indexed tensors outside the layers: input embeddings and LM heads under the names the
# architectures transformers ships use (Llama/Mistral/Qwen/Gemma, GPT-2, BLOOM/BERT, GPT-NeoX, Llama 1).
_VOCAB_NAME = re.compile(r"(?:^|\.)(embed_tokens|wte|word_embeddings|tok_embeddings|lm_head|embed_out|output)"
                         r"\.(weight|bias)$")


def is_vocabulary_tensor(name: str, index: Any) -> bool:
    """True for an embedding/head tensor whose first axis is the model's vocabulary.

    By name, confirmed by the row count where config.json gives ``vocab_size``
    (a position embedding never matches the name; an ``output`` projection that
    is not token-indexed fails the row check).
    """
    if not _VOCAB_NAME.search(name):
        return False
    config = getattr(index, "config", None) or {}
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    shape = tuple(index.info(name).shape)
    return bool(shape) and (not isinstance(size, int) or shape[0] == size)


@dataclass(frozen=True)
class DefaultRows:
    """Output rows ``dst`` made from rows of ``models`` (summed in order, divided by their count when ``mean``).

    No models: zero rows.
    """

    dst: torch.Tensor  # LongTensor of output ids
    models: tuple[str, ...]
    src: tuple[torch.Tensor, ...]  # per model, LongTensor of its rows
    mean: bool


@dataclass(frozen=True)
class RowAssembly:
    """How to lay out each model's rows of one vocabulary tensor in the merged vocabulary."""

    models: tuple[str, ...]
    rows: int
    tokens: int
    keep: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # model -> (output ids, own rows)
    defaults: tuple[DefaultRows, ...]
    fill: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # model -> (output ids, index into the defaults table)
    key: tuple  # identity: same key, same layout (what the in-place search checks)

    def assemble(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each model's tensor (vocabulary on axis 0) laid out in the merged vocabulary."""
        import torch  # imported here: planning a recipe without a merged vocabulary needs no torch

        table = self._default_table(tensors)
        first = tensors[self.models[0]]
        out = {}
        for model in self.models:
            old = tensors[model]
            new = torch.zeros((self.rows, *first.shape[1:]), dtype=first.dtype, device=first.device)
            dst, src = self.keep[model]
            new[dst] = old[src]
            fdst, fidx = self.fill[model]
            if len(fdst):
                new[fdst] = table[fidx]
            if self.rows > self.tokens:  # as mergekit, after J. Hewitt's vocabulary-expansion note
                new[self.tokens:] = torch.mean(new[: self.tokens], dim=0)
            out[model] = new
        return out

    def _default_table(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        import torch

        first = tensors[self.models[0]]
        count = sum(len(d.dst) for d in self.defaults)
        table = torch.zeros((count, *first.shape[1:]), dtype=first.dtype, device=first.device)
        at = 0
        for group in self.defaults:
            n = len(group.dst)
            if group.models:
                acc = tensors[group.models[0]][group.src[0]]
                for model, src in zip(group.models[1:], group.src[1:], strict=True):
                    acc = acc + tensors[model][src]
                if group.mean:
                    acc = acc / len(group.models)
                table[at:at + n] = acc
            at += n
        return table


def row_assembly(vocab: MergedVocabulary, models: Sequence[str], base: str | None,
                 source_rows: Mapping[str, int], *, tensor: str) -> RowAssembly:
    """The layout for a tensor merged from ``models`` (in mergekit's order: slice sources, then the base).

    ``source_rows``: each model's row count of this tensor (checked against the rows the layout reads).
    Cached per (models, base, rows) on ``vocab``: a search plans the same layout for every candidate.
    """
    cache_key = (tuple(models), base, tuple(sorted(source_rows.items())))
    found = vocab._assemblies.get(cache_key)
    if found is None:
        found = _row_assembly(vocab, tuple(models), base, source_rows, tensor)
        vocab._assemblies[cache_key] = found
    return found


def _row_assembly(vocab: MergedVocabulary, models: tuple[str, ...], base: str | None,
                  source_rows: Mapping[str, int], tensor: str) -> RowAssembly:
    import torch

    perms = {m: vocab.permutations[m] for m in models}
    for m in models:
        bad = perms[m] >= source_rows[m]
        if bool(bad.any()):
            raise ConfigError(f"tensor '{tensor}' of {m} has {source_rows[m]} rows but its tokenizer places tokens "
                              f"up to id {int(perms[m].max())}; the tokenizer and the weights disagree")
    configs: dict[str, TokenEmbedding] = dict(vocab.spec.tokens or {})
    present = torch.stack([perms[m] >= 0 for m in models])  # models x tokens
    forced = {vocab.vocab[t] for t, c in configs.items() if c.force}
    # Group defaults by how they are computed, so that each group is one gather per model.
    groups: dict[tuple[tuple[str, ...], bool], list[tuple[int, tuple[int, ...]]]] = {}
    needs_default = (~present.all(0)).nonzero().flatten().tolist()
    needs_default = sorted(set(needs_default) | forced)
    id_to_token = {i: t for t, i in vocab.vocab.items()}
    for tid in needs_default:
        token = id_to_token[tid]
        cfg = configs.get(token)
        if cfg is not None:
            key, rows = _configured(vocab, cfg, token, tid, models, source_rows, tensor)
        else:
            have = [m for m, p in zip(models, present[:, tid].tolist(), strict=True) if p]
            if len(have) == 1:
                key, rows = ((have[0],), False), (int(perms[have[0]][tid]),)
            elif not have:
                key, rows = ((), False), ()
            elif base in models and bool(present[models.index(base), tid]):
                key, rows = ((base,), False), (int(perms[base][tid]),)
            else:
                key, rows = (tuple(have), True), tuple(int(perms[m][tid]) for m in have)
        groups.setdefault(key, []).append((tid, rows))
    defaults = []
    default_index: dict[int, int] = {}
    for (gmodels, mean), items in groups.items():
        for tid, _ in items:
            default_index[tid] = len(default_index)
        dst = torch.tensor([tid for tid, _ in items], dtype=torch.long)
        src = tuple(torch.tensor([rows[j] for _, rows in items], dtype=torch.long) for j in range(len(gmodels)))
        defaults.append(DefaultRows(dst=dst, models=gmodels, src=src, mean=mean))
    keep, fill = {}, {}
    for m in models:
        own = perms[m] >= 0
        if forced:
            own[list(forced)] = False
        dst = own.nonzero().flatten()
        keep[m] = (dst, perms[m][dst])
        missing = [tid for tid in needs_default if tid in forced or int(perms[m][tid]) < 0]
        fill[m] = (torch.tensor(missing, dtype=torch.long),
                   torch.tensor([default_index[t] for t in missing], dtype=torch.long))
    key = (vocab.fingerprint, models, base, tuple(sorted(source_rows.items())))
    return RowAssembly(models=models, rows=vocab.rows, tokens=vocab.tokens, keep=keep, defaults=tuple(defaults),
                       fill=fill, key=key)


def _configured(vocab: MergedVocabulary, cfg: TokenEmbedding, token: str, tid: int, models: tuple[str, ...],
                source_rows: Mapping[str, int], tensor: str) -> tuple[tuple[tuple[str, ...], bool], tuple[int, ...]]:
    """The row a ``tokenizer.tokens`` entry asks for, or a ConfigError naming the token and tensor."""
    from evomerge.materialize.plan import model_key

    source = cfg.source
    if isinstance(source, ZeroSource):
        return ((), False), ()
    if source is None:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: some model lacks it (or force is set) and no 'source' "
                          "says where its row comes from")
    model = model_key(source.model if isinstance(source, ModelTokenSource) else source)
    if model not in models:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: its source {model} is not one of the models merged "
                          f"into tensor '{tensor}'")
    if isinstance(source, ModelTokenSource):
        row = source.token_id
        if row is None:
            row = vocab.original_vocabs[model].get(source.token)
            if row is None:
                raise ConfigError(f"tokenizer.tokens[{token!r}]: token {source.token!r} is not in {model}'s vocabulary")
        if not 0 <= row < source_rows[model]:
            raise ConfigError(f"tokenizer.tokens[{token!r}]: token id {row} is out of range for {model} "
                              f"({source_rows[model]} rows in '{tensor}')")
        return ((model,), False), (row,)
    row = int(vocab.permutations[model][tid])
    if row < 0:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: its source {model} does not have this token")
    return ((model,), False), (row,)
