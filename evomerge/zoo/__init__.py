"""The tiny model zoo: sources evomerge builds itself on the CPU (no hub needed).

``tinylm`` (a Llama with math / language / list experts over two synthetic
languages), ``tinylm-lora`` (PEFT LoRA adapters of its base, one per skill)
and ``digits`` (the M2N2 MLP setting); see DESIGN.md, "The tiny zoo".
"""

from evomerge.zoo.build import ZOO, build_zoo, default_out_dir, is_built
from evomerge.zoo.digits import DIGITS_SPLIT_SEED, DigitsMLP, DigitsRecipe, digits_split
from evomerge.zoo.tinylm import TinyLMRecipe
from evomerge.zoo.tinylm_lora import TinyLoraRecipe

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
