"""Writing the merged tokenizer (and chat template) next to the merged weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomerge.io.writer import TOKENIZER_FILES
from evomerge.vocab.build import load_tokenizer, model_folder
from evomerge.vocab.chat_template import resolve_chat_template


def set_vocab_size(config: dict[str, Any], rows: int) -> None:
    """The output's vocabulary size, where the config keeps it (top level or ``text_config``)."""
    nested = config.get("text_config")
    if "vocab_size" not in config and isinstance(nested, dict) and "vocab_size" in nested:
        nested["vocab_size"] = rows
    else:
        config["vocab_size"] = rows


def write_tokenizer(out: Path, recipe: Any, plan: Any) -> None:
    """Save the merged tokenizer through transformers (as mergekit does), then the chat template.

    Without a merged vocabulary the tokenizer files were copied as they are; a
    ``chat_template`` then re-saves that tokenizer with the template (mergekit's
    behaviour too). Files of the copied tokenizer are removed first so that no
    stale file (a sentencepiece model beside a new tokenizer.json) disagrees.
    """
    template = None
    if recipe.chat_template:
        folders = [model_folder(m) for m in plan.models or [plan.config_model]]
        template = resolve_chat_template(recipe.chat_template, folders)
    if plan.vocabulary is None and template is None:
        return
    tokenizer = plan.vocabulary.tokenizer if plan.vocabulary is not None else load_tokenizer(out)
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(str(out))
    if template is not None:  # on a fresh copy: the merged tokenizer is cached for the next plan
        copy = load_tokenizer(out)
        copy.chat_template = template
        copy.save_pretrained(str(out))
