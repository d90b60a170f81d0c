"""Black-box merging of LoRA adapters (Evo-Merging, Chen et al., arXiv 2509.12951).

``LoraAdapter.open`` reads PEFT adapters without ``peft``; ``fusion`` holds the
paper's asymmetric sparsification and fusion as pure functions;
``ResidentLoraMerge`` writes a fusion into a resident base model in place and
``export_checkpoint`` / ``export_adapter`` write it out; ``run_evo_merging``
is the two-stage CMA-ES search (``space: {kind: lora_evo}`` in a run config).
"""

from evomerge.lora.adapter import LoraAdapter, LoraPair, check_same_family
from evomerge.lora.apply import ResidentLoraMerge, export_adapter, export_checkpoint, fuse, open_adapters
from evomerge.lora.config import LORA_KINDS, LoraEvoConfig, LoraFitnessConfig, LoraStageConfig
from evomerge.lora.fusion import apply_delta, fuse_pair, lora_delta, topk_a
from evomerge.lora.recipe import LoraRecipe

__all__ = [
    "LORA_KINDS",
    "LoraAdapter",
    "LoraEvoConfig",
    "LoraFitnessConfig",
    "LoraPair",
    "LoraRecipe",
    "LoraStageConfig",
    "ResidentLoraMerge",
    "apply_delta",
    "check_same_family",
    "export_adapter",
    "export_checkpoint",
    "fuse",
    "fuse_pair",
    "lora_delta",
    "open_adapters",
    "topk_a",
]
