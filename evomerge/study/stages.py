"""PS+DFS as two searches (Akiba et al., arXiv 2403.13187): the parameter-space winner becomes model A.

Stage one is a PS search over the sources; its best recipe is materialized
into ``RUN/stage1-ps/winner``; stage two is a DFS search over the winner and
the ``b`` models (the paper: the language model). Each stage is an ordinary
Study in its own subfolder, with its own storage and checkpoint, so a crash in
either stage resumes exactly like any run. The evaluation and wall-time
budgets are split evenly between the stages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.study.config import RunConfig
from evomerge.study.study import Progress, Study, StudySummary

WINNER_DIR = "winner"


def space_kind(config: RunConfig) -> str | None:
    raw = _load(config.space) if isinstance(config.space, str) else config.space
    return raw.get("kind")


def is_two_stage(config: RunConfig) -> bool:
    """PS+DFS, and the LoRA searches (Evo-Merging's two stages, or one of its stage folders), run here."""
    return space_kind(config) in ("ps_dfs", "lora_evo", "lora_stage")


def _load(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _half(budget: dict[str, Any]) -> dict[str, Any]:
    out = {}
    if budget.get("evaluations") is not None:
        out["evaluations"] = max(1, budget["evaluations"] // 2)
    if budget.get("wall_time_s") is not None:
        out["wall_time_s"] = budget["wall_time_s"] / 2
    return out


def stage_configs(config: RunConfig, winner: Path | None) -> tuple[RunConfig, RunConfig | None]:
    """The two stages' run configs; the second only once the PS winner exists."""
    from evomerge.spaces import Sources, parse_space_config
    from evomerge.spaces.config import PSDFSConfig

    raw = _load(config.space) if isinstance(config.space, str) else config.space
    spec = parse_space_config(raw)
    if not isinstance(spec, PSDFSConfig):
        raise ConfigError("space: a two-stage run needs kind 'ps_dfs'")
    assert config.sources is not None
    run_dir = config.run_dir()
    base = config.model_dump(mode="json")
    budget = _half(base["budget"])
    stage1 = RunConfig.model_validate({**base, "name": f"{config.name}-ps", "space": spec.ps.model_dump(mode="json"),
                                       "output": str(run_dir / "stage1-ps"), "budget": budget, "test_split": None,
                                       "baselines": []})
    if winner is None:
        return stage1, None
    sources = Sources(base=config.sources.base, models=list(config.sources.models))
    b = [sources.resolve(ref, key=f"space.b[{i}]") for i, ref in enumerate(spec.b)]
    dfs = {**spec.dfs.model_dump(mode="json"), "models": [str(winner), *b]}
    stage2 = RunConfig.model_validate({**base, "name": f"{config.name}-dfs", "space": dfs,
                                       "sources": {"base": None, "models": [str(winner), *b]},
                                       "output": str(run_dir / "stage2-dfs"), "budget": budget})
    return stage1, stage2


def _check_stage_two_architecture(config: RunConfig) -> None:
    """Stage two routes layers of the PS winner (the sources' architecture) and the ``b`` models: check them now."""
    from evomerge.spaces import Sources, parse_space_config
    from evomerge.study.preflight import check_dataflow_models

    if config.runner.type not in ("local", "ray") or config.runner.target is not None:
        return
    assert config.sources is not None
    spec = parse_space_config(_load(config.space) if isinstance(config.space, str) else config.space)
    sources = Sources(base=config.sources.base, models=list(config.sources.models))
    b = [sources.resolve(ref, key=f"space.b[{i}]") for i, ref in enumerate(spec.b)]
    check_dataflow_models(list(dict.fromkeys([*sources.models, *b])))


def run_two_stages(config: RunConfig, on_progress: Callable[[Progress], None] | None = None,
                   on_stage: Callable[[str], None] | None = None) -> tuple[Study, StudySummary]:
    """Run (or resume) both stages; returns the DFS stage's study and summary."""
    raw = _load(config.space) if isinstance(config.space, str) else config.space
    if raw.get("kind") in ("lora_evo", "lora_stage"):
        from evomerge.lora.evo_merging import run_evo_merging

        return run_evo_merging(config, on_progress, on_stage)
    from evomerge.materialize.streaming import merge_to_disk
    from evomerge.recipe.model import Recipe

    config = config.resolved()
    stage1, _ = stage_configs(config, None)
    _check_stage_two_architecture(config)
    if on_stage:
        on_stage("stage 1/2: parameter-space search")
    study1 = Study.create(stage1, parent=config)  # claims RUN only once stage one validates
    try:
        summary1 = study1.run(on_progress=on_progress)
    finally:
        study1.close()
    if summary1.stopped_early:
        return study1, summary1
    if summary1.best_number is None:
        raise ConfigError(f"{study1.run_dir}: every stage-one candidate failed; nothing to build stage two on")
    winner = study1.run_dir / WINNER_DIR
    if not (winner / "config.json").is_file():
        if on_stage:
            on_stage(f"materializing the PS winner (trial {summary1.best_number}) into {winner}")
        merge_to_disk(Recipe.model_validate(study1.record(summary1.best_number).recipe), winner, overwrite=True)
    _, stage2 = stage_configs(config, winner)
    assert stage2 is not None
    if on_stage:
        on_stage("stage 2/2: data-flow search with the PS winner as model A")
    study2 = Study.create(stage2)
    return study2, study2.run(on_progress=on_progress)
