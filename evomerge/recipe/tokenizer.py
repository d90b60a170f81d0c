"""The tokenizer part of a recipe, in mergekit's schema: ``tokenizer_source``, ``tokenizer:``, ``chat_template``.

mergekit 0.1.5 accepts ``tokenizer_source: base | union | <model>`` or (not both)
a ``tokenizer:`` block with ``source`` (default ``union``), ``tokens`` that give
individual tokens their embedding source, and ``pad_to_multiple_of``. A token's
``source`` is a model (its own row of that token), ``{kind: model_token, model,
token | token_id}`` (another token's row of a model) or ``{kind: zero}``;
``force: true`` uses that source in every model even where the token exists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelTokenSource(_Strict):
    """The row of ``token`` (or of id ``token_id``) in ``model``'s own vocabulary."""

    kind: Literal["model_token"]
    model: str
    token_id: int | None = Field(default=None, ge=0)
    token: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ModelTokenSource:
        if (self.token_id is None) == (self.token is None):
            raise ValueError("give exactly one of 'token' or 'token_id'")
        return self


class ZeroSource(_Strict):
    """An all-zero row."""

    kind: Literal["zero"]


class TokenEmbedding(_Strict):
    """Where one token's embedding and head rows come from (``None``: the default rule)."""

    source: ModelTokenSource | ZeroSource | str | None = None
    force: bool = False


class TokenizerSpec(_Strict):
    """mergekit's ``tokenizer:`` block."""

    source: str = "union"
    tokens: dict[str, TokenEmbedding] | None = None
    pad_to_multiple_of: int | None = Field(default=None, ge=1)


def tokenizer_settings(tokenizer_source: str | None, tokenizer: TokenizerSpec | None) -> TokenizerSpec | None:
    """One spec for both spellings (``tokenizer_source: x`` is ``tokenizer: {source: x}`` without tokens)."""
    if tokenizer is not None:
        return tokenizer
    if tokenizer_source is not None:
        return TokenizerSpec(source=tokenizer_source)
    return None
