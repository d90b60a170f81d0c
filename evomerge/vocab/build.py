"""The merged vocabulary: the output tokenizer and, per source, where each output token's row is.

Built from tokenizer files and config.json alone (no weight is read), so that
the plan knows every vocabulary tensor's output shape and a model whose rows
cannot be placed fails before the merge starts. The semantics are mergekit
0.1.5's (``mergekit/tokenizer/build.py``):

- ``base``: the base model's tokenizer (the first model's when there is no base);
- ``union``: the base tokenizer plus, as added tokens, every other model's
  tokens it lacks (vocabulary tokens first, then the models' added tokens with
  their settings; the first model to add a token wins);
- ``<model>``: that model's tokenizer;
- tokens named in ``tokenizer.tokens`` are added when the output lacks them.

Only rows below a model's ``vocab_size`` count as present. One documented
difference: mergekit walks the non-base models in the order of a Python set
(so the ids of a union's new tokens vary between its runs); evomerge walks them
in the recipe's order, so the same recipe always gives the same ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomerge.errors import ConfigError
from evomerge.io.json_object import read_json_object
from evomerge.recipe.tokenizer import TokenizerSpec

if TYPE_CHECKING:
    import torch


def model_folder(key: str) -> Path:
    """A model's folder from its key (a lone .safetensors file's folder holds its config and tokenizer)."""
    path = Path(key)
    return path.parent if path.is_file() else path


def config_vocab_size(folder: Path) -> int | None:
    """``vocab_size`` from config.json (or its ``text_config``), None when absent."""
    file = folder / "config.json"
    if not file.is_file():
        return None
    config = read_json_object(file)
    for cfg in (config, config.get("text_config") or {}):
        value = cfg.get("vocab_size") if isinstance(cfg, dict) else None
        if isinstance(value, int):
            return value
    return None


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer through transformers (fast), or a ConfigError naming the folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for unloadable folders
        raise ConfigError(f"{folder}: cannot load its tokenizer for the merged vocabulary ({exc})") from None


@dataclass
class MergedVocabulary:
    """The output tokenizer and, per source model, the output-id → source-row map (-1: token absent)."""

    tokenizer: Any
    vocab: dict[str, int]  # output token -> output id
    rows: int  # output rows (the vocabulary, padded to pad_to_multiple_of)
    permutations: dict[str, torch.Tensor]  # model key -> LongTensor[len(vocab)]
    original_vocabs: dict[str, dict[str, int]]
    spec: TokenizerSpec
    base: str  # the model whose tokenizer the others are added to
    fingerprint: str = ""  # same fingerprint, same vocabulary and row sources (what in-place checks compare)
    _assemblies: dict = field(default_factory=dict, repr=False)

    @property
    def tokens(self) -> int:
        return len(self.vocab)


def build_vocabulary(spec: TokenizerSpec, base: str | None, models: tuple[str, ...]) -> MergedVocabulary:
    """The merged vocabulary for ``models`` (keys, in recipe order); cached for a search's repeated plans."""
    return _build(spec.model_dump_json(), base, tuple(models))


@functools.lru_cache(maxsize=8)
def _build(spec_json: str, base: str | None, models: tuple[str, ...]) -> MergedVocabulary:
    import torch  # only a recipe that builds a vocabulary needs it (a plan without one stays torch-free)

    from evomerge.materialize.plan import model_key

    spec = TokenizerSpec.model_validate_json(spec_json)
    base = base or models[0]
    sizes = {m: config_vocab_size(model_folder(m)) for m in models}
    base_tok = load_tokenizer(model_folder(base))
    base_size = sizes.get(base) or len(base_tok.get_vocab())
    beyond = sorted(t for t, i in base_tok.get_vocab().items() if i >= base_size)
    if beyond:
        raise ConfigError(f"{base}: its tokenizer has {len(beyond)} token(s) beyond the model's vocab_size "
                          f"{base_size} (e.g. {beyond[:3]}); such a base cannot anchor a merged vocabulary")
    tokenizers = {base: base_tok}
    for m in models:
        if m != base:
            tokenizers[m] = _tokenizer_or_base(m, base, sizes, base_size)
    if spec.source == "base":
        out = load_tokenizer(model_folder(base))
    elif spec.source == "union":
        out = _union(base, tokenizers, sizes)
    else:
        out = load_tokenizer(model_folder(model_key(spec.source)))
    present = set(out.get_vocab())
    for token in spec.tokens or {}:
        if token not in present:
            out.add_tokens(token)
            present.add(token)
    vocab = dict(out.get_vocab())
    if vocab and max(vocab.values()) >= len(vocab):
        raise ConfigError(f"the merged tokenizer's ids are not contiguous (max id {max(vocab.values())} for "
                          f"{len(vocab)} tokens); mergekit's row layout needs ids 0..n-1")
    rows = len(vocab)
    if spec.pad_to_multiple_of and rows % spec.pad_to_multiple_of:
        rows += spec.pad_to_multiple_of - rows % spec.pad_to_multiple_of
    permutations = {}
    originals = {m: dict(tok.get_vocab()) for m, tok in tokenizers.items()}
    for m in models:
        own = originals[m]
        size = sizes.get(m) or len(own)
        perm = torch.full((len(vocab),), -1, dtype=torch.long)
        for token, out_id in vocab.items():
            idx = own.get(token)
            if idx is not None and idx < size:
                perm[out_id] = idx
        permutations[m] = perm
    digest = hashlib.blake2b(json.dumps([spec_json, base, rows, sorted(vocab.items()),
                                         {m: p.tolist() for m, p in permutations.items()}]).encode(), digest_size=16)
    return MergedVocabulary(tokenizer=out, vocab=vocab, rows=rows, permutations=permutations,
                            original_vocabs=originals, spec=spec, base=base, fingerprint=digest.hexdigest())


def _tokenizer_or_base(model: str, base: str, sizes: dict[str, int | None], base_size: int) -> Any:
    """A model's tokenizer; mergekit assumes the base's when a model has none, which is only safe at equal size."""
    folder = model_folder(model)
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json",
                                            "tokenizer_config.json")):
        return load_tokenizer(folder)
    if sizes.get(model) not in (None, base_size):
        raise ConfigError(f"{model}: no tokenizer files and vocab_size {sizes.get(model)} differs from the base's "
                          f"{base_size}; add its tokenizer to the folder")
    return load_tokenizer(model_folder(base))


def _union(base: str, tokenizers: dict[str, Any], sizes: dict[str, int | None]) -> Any:
    """mergekit's union: base tokenizer + others' vocabulary tokens + every model's added tokens."""
    vocab_tokens: dict[str, None] = {}
    added: dict[str, Any] = {}
    for model, tok in tokenizers.items():
        size = sizes.get(model) or tok.vocab_size
        decoder = tok.added_tokens_decoder
        added_contents = {info.content for info in decoder.values()}
        for token, idx in tok.get_vocab().items():
            if idx < size and token not in added_contents:
                vocab_tokens.setdefault(token, None)
        for idx, info in decoder.items():
            if idx < size:
                added.setdefault(info.content, info)
    out = load_tokenizer(model_folder(base))  # a fresh copy: the base's own object stays as it is
    base_vocab = tokenizers[base].get_vocab()
    for token in vocab_tokens:
        if token not in added and token not in base_vocab:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out

