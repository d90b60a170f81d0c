"""The tiny model zoo: sources evomerge builds itself on the CPU (no hub needed).

``tinylm`` (a Llama with math / language / list experts over two synthetic
languages) and ``digits`` (the M2N2 MLP setting); see DESIGN.md, "The tiny zoo".
"""

from evomerge.zoo.build import ZOO, build_zoo, default_out_dir, is_built
from evomerge.zoo.digits import DIGITS_SPLIT_SEED, DigitsMLP, DigitsRecipe, digits_split
from evomerge.zoo.tinylm import TinyLMRecipe

__all__ = [
    "DIGITS_SPLIT_SEED",
    "ZOO",
    "DigitsMLP",
    "DigitsRecipe",
    "TinyLMRecipe",
    "build_zoo",
    "default_out_dir",
    "digits_split",
    "is_built",
]
