"""Search spaces: the map from a genome (a point in a box) to a merge Recipe, and YAML presets of them.

``build_space(config, sources)`` makes the space a config describes (``kind``:
ps, dfs, lines, layer_swap, ps_dfs); ``load_space(path)`` reads a preset from
``search_spaces/``. PS+DFS (arXiv 2403.13187) runs in two stages: ``build_space``
gives the PS stage, ``dfs_stage`` the DFS stage over the PS winner's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.spaces.base import SearchSpace, Sources
from evomerge.spaces.config import (
    DFSConfig,
    LayerSwapConfig,
    LiNeSConfig,
    PSConfig,
    PSDFSConfig,
    SpaceConfig,
    SpaceConfigModel,
    load_space,
    parse_space_config,
)
from evomerge.spaces.dfs import DFSSpace
from evomerge.spaces.layer_swap import LayerSwapSpace
from evomerge.spaces.lines import LiNeSSpace
from evomerge.spaces.ps import PSSpace

__all__ = [
    "DFSConfig",
    "DFSSpace",
    "LayerSwapConfig",
    "LayerSwapSpace",
    "LiNeSConfig",
    "LiNeSSpace",
    "PSConfig",
    "PSDFSConfig",
    "PSSpace",
    "SearchSpace",
    "Sources",
    "SpaceConfig",
    "build_space",
    "dfs_sources_after_ps",
    "dfs_stage",
    "load_space",
    "parse_space_config",
]


def build_space(config: dict[str, Any] | SpaceConfigModel, sources: Sources) -> SearchSpace:
    """The search space ``config`` describes over ``sources``; errors name the key at fault.

    For ``kind: ps_dfs`` this is stage one (the PS space); stage two comes from ``dfs_stage``.
    LoRA kinds (``lora_evo``, ``lora_stage``: merging PEFT adapters) are built by ``evomerge.lora``.
    """
    if isinstance(config, dict) and config.get("kind") in ("lora_evo", "lora_stage"):
        from evomerge.lora.space import build_lora_space

        return build_lora_space(config, sources)
    cfg = parse_space_config(config)
    if isinstance(cfg, PSConfig):
        return PSSpace(cfg, sources)
    if isinstance(cfg, DFSConfig):
        return DFSSpace(cfg, sources)
    if isinstance(cfg, LiNeSConfig):
        return LiNeSSpace(cfg, sources)
    if isinstance(cfg, LayerSwapConfig):
        return LayerSwapSpace(cfg, sources)
    if isinstance(cfg, PSDFSConfig):
        _stage_two_models(cfg, sources)  # fail now, not after the whole PS stage
        return PSSpace(cfg.ps, sources)
    raise ConfigError(f"space: unsupported config {type(cfg).__name__}")  # pragma: no cover


def dfs_sources_after_ps(winner_dir: str | Path, sources: Sources, b: list[str]) -> Sources:
    """Sources of a DFS stage: the PS winner's materialized folder as model A, then the models ``b``.

    ``b`` are paths of ``sources`` (the paper: the language model). The winner
    is labelled ``ps`` in dimension names; its layer count is read from its folder.
    """
    winner = str(winner_dir)
    if not Path(winner).is_dir():
        raise ConfigError(f"{winner}: the PS winner must be a materialized model folder (merge it first)")
    known = {m: sources.layers(m) for m in b}
    return Sources(base=None, models=[winner, *b], labels=["ps", *(sources.label(m) for m in b)],
                   num_layers=known)


def _stage_two_models(config: PSDFSConfig, sources: Sources) -> list[str]:
    return [sources.resolve(ref, key=f"b[{i}]") for i, ref in enumerate(config.b)]


def dfs_stage(config: dict[str, Any] | PSDFSConfig, sources: Sources, winner_dir: str | Path) -> DFSSpace:
    """Stage two of PS+DFS (arXiv 2403.13187): a DFS space with the PS winner as A and ``config.b`` as B."""
    cfg = parse_space_config(config)
    if not isinstance(cfg, PSDFSConfig):
        raise ConfigError(f"space: dfs_stage needs a 'ps_dfs' config, got kind '{cfg.kind}'")
    return DFSSpace(cfg.dfs, dfs_sources_after_ps(winner_dir, sources, _stage_two_models(cfg, sources)))
