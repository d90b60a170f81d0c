"""A LoRA fusion as pure data: which adapters on which base, and each adapter's α and β.

It is what a LoRA search space decodes a genome into and what a run stores per
trial (JSON round-trips exactly), so any recorded candidate can be rebuilt with
``apply.export_checkpoint`` / ``export_adapter`` long after the search.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LoraRecipe(BaseModel):
    """Evo-Merging's candidate (arXiv 2509.12951): A = Σ β_i·topk(A_i, α_i), B = Σ β_i·B_i on ``base``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lora_fusion"] = "lora_fusion"
    base: str
    adapters: list[str] = Field(min_length=1)
    alpha: list[float]
    beta: list[float]

    @model_validator(mode="after")
    def _one_per_adapter(self) -> LoraRecipe:
        n = len(self.adapters)
        if len(self.alpha) != n or len(self.beta) != n:
            raise ValueError(f"need one alpha and one beta per adapter ({n}), got {len(self.alpha)} and "
                             f"{len(self.beta)}")
        if any(not 0.0 <= a <= 1.0 for a in self.alpha):
            raise ValueError(f"alpha values are keep-fractions in [0, 1], got {self.alpha}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
