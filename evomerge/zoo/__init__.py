"""The tiny model zoo: sources evomerge builds itself on the CPU (no hub needed).

``tinylm`` (a Llama with math / language / list experts over two synthetic
languages), ``tinylm-lora`` (PEFT LoRA adapters of its base, one per skill)
and ``digits`` (the M2N2 MLP setting); see DESIGN.md, "The tiny zoo".
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Exported lazily (PEP 562): building the zoo needs torch, but `evomerge --help` mounts the zoo's
# commands and must not pay for importing it.
_EXPORTS = {
    "ZOO": "build", "build_zoo": "build", "default_out_dir": "build", "is_built": "build",
    "DIGITS_SPLIT_SEED": "digits", "DigitsMLP": "digits", "DigitsRecipe": "digits", "digits_split": "digits",
    "TinyLMRecipe": "tinylm", "TinyLoraRecipe": "tinylm_lora",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evomerge.zoo' has no attribute {name!r}")
    return getattr(import_module(f"evomerge.zoo.{module}"), name)


__all__ = [
    "DIGITS_SPLIT_SEED",
    "ZOO",
    "DigitsMLP",
    "DigitsRecipe",
    "TinyLMRecipe",
    "TinyLoraRecipe",
    "build_zoo",
    "default_out_dir",
    "digits_split",
    "is_built",
]
