"""Evo-Merging (Chen et al., arXiv 2509.12951): black-box LoRA merging as two CMA-ES searches.

Stage one searches each adapter's keep-fraction α of LoRA-A (β = 1/N), stage
two the signed weights β ∈ [−1.5, 1.5] with α fixed at stage one's best; the
fitness is the LM loss on a few hundred mixed examples plus an L1 penalty on
the genome (0.05 · mean |x|, LoraHub's). Both stages are ordinary Studies in
``RUN/stage1-alpha`` and ``RUN/stage2-beta`` (own storage and checkpoint), as
PS+DFS does in ``evomerge.study.stages``; they share one resident base model
and a :class:`LoraRunner` injected into each. ``evomerge run`` / ``evomerge
resume`` reach this module through ``stages.run_two_stages``; a kill -9 at any
moment loses no recorded evaluation and the resumed run asks the same genomes.

When stage two finishes, ``RUN/result.json`` holds the best α and β with their
train and held-out (test split) losses and ``RUN/fused_adapter/`` the fusion
as one PEFT LoRA folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.lora.config import LoraEvoConfig, LoraStageConfig, parse_lora_space
from evomerge.lora.space import LoraStageSpace, stage_one, stage_two
from evomerge.spaces.base import Sources
from evomerge.study.checkpoint import atomic_write_bytes
from evomerge.study.config import RunConfig
from evomerge.study.study import Progress, Study, StudySummary, claim_run_dir

STAGE_DIRS = {"alpha": "stage1-alpha", "beta": "stage2-beta"}
RESULT_FILE = "result.json"
FUSED_DIR = "fused_adapter"
CMA_LIKE = ("cma", "sep-cma")


def lora_space(config: RunConfig) -> LoraEvoConfig | LoraStageConfig:
    """The run's LoRA space config (inline or a YAML file), its fitness task paths made absolute."""
    raw: Any = config.space
    if isinstance(raw, str):
        from evomerge.yamlfile import read_yaml

        raw = read_yaml(raw, "search-space file")
    spec = parse_lora_space(raw, source=str(config.space) if isinstance(config.space, str) else "space")
    tasks = [str(Path(t).expanduser().resolve()) for t in spec.fitness.tasks]
    return spec.model_copy(update={"fitness": spec.fitness.model_copy(update={"tasks": tasks})})


def resolved(config: RunConfig) -> RunConfig:
    """``config.resolved()`` plus the inline space's fitness tasks as absolute paths (a self-contained run folder)."""
    config = config.resolved()
    if isinstance(config.space, dict):
        config = RunConfig.model_validate({**config.model_dump(mode="json"),
                                           "space": lora_space(config).model_dump(mode="json")})
    return config


def _sources(config: RunConfig) -> Sources:
    if config.sources is None or config.sources.base is None:
        raise ConfigError("sources: a LoRA merge needs 'base' (the adapters' base model) and 'models' (the adapters)")
    return Sources(base=config.sources.base, models=list(config.sources.models))


def _strategy(config: RunConfig, sigma0: float, width: float) -> dict[str, Any]:
    """The run's strategy with CMA-ES's σ0 given in genome units (``cma`` takes a fraction of the box)."""
    options = dict(config.strategy.options)
    if config.strategy.name in CMA_LIKE:
        if "sigma0" in options:
            raise ConfigError("strategy.options.sigma0: set 'sigma0' in the lora_evo space instead (genome units, "
                              "the paper's 0.05); each stage converts it to cma's fraction of its box")
        options["sigma0"] = sigma0 / width
    return {**config.strategy.model_dump(mode="json"), "options": options}


def stage_config(config: RunConfig, spec: LoraEvoConfig, stage: LoraStageConfig) -> RunConfig:
    """The RunConfig of one stage: the run's sources, objectives and seed; its own space, budget and folder."""
    total = config.budget.evaluations
    if total is None:
        raise ConfigError("budget.evaluations: a lora_evo run needs an evaluation budget (split between stages)")
    if total <= spec.alpha_evaluations:
        raise ConfigError(f"budget.evaluations ({total}) must exceed space.alpha_evaluations "
                          f"({spec.alpha_evaluations}): stage two gets the rest")
    share = spec.alpha_evaluations if stage.search == "alpha" else total - spec.alpha_evaluations
    budget: dict[str, Any] = {"evaluations": share}
    if config.budget.wall_time_s is not None:
        budget["wall_time_s"] = config.budget.wall_time_s * share / total
    base = config.model_dump(mode="json")
    return RunConfig.model_validate({
        **base, "name": f"{config.name}-{stage.search}", "space": stage.model_dump(mode="json"),
        "strategy": _strategy(config, spec.sigma0, stage.range[1] - stage.range[0]), "budget": budget,
        "output": str(config.run_dir() / STAGE_DIRS[stage.search]), "test_split": None, "baselines": []})


class _Context:
    """What both stages share: the resident base + adapters and the LM-loss set (built once per process)."""

    def __init__(self, config: RunConfig, stage: LoraStageConfig) -> None:
        import torch

        from evomerge.lora.apply import ResidentLoraMerge
        from evomerge.lora.fitness import AnswerLoss

        if config.runner.threads:
            torch.set_num_threads(config.runner.threads)
        if config.runner.worker_devices():
            raise ConfigError(f"run config '{config.name}': LoRA merging runs on one device; runner.devices / "
                              "gpus_per_worker split a model worker over several")
        sources = _sources(config)
        assert sources.base is not None
        self.merge = ResidentLoraMerge(sources.base, sources.models, device=config.runner.device)
        self.loss = AnswerLoss(stage.fitness.tasks, examples=stage.fitness.examples,
                               batch_size=stage.fitness.batch_size)

    def study(self, config: RunConfig) -> Study:
        from evomerge.lora.runner import LoraRunner

        config = resolved(config)
        stage = lora_space(config)
        assert isinstance(stage, LoraStageConfig)
        runner = LoraRunner(self.merge, self.loss, [o.name or "" for o in config.objectives], stage.search)
        return Study(config, claim_run_dir(config), runner=runner, space=LoraStageSpace(stage, _sources(config)))


def run_evo_merging(config: RunConfig, on_progress: Callable[[Progress], None] | None = None,
                    on_stage: Callable[[str], None] | None = None) -> tuple[Study, StudySummary]:
    """Run or resume a ``lora_evo`` run (both stages) or one ``lora_stage`` folder; returns the last study run."""
    config = resolved(config)
    spec = lora_space(config)
    _check_objectives(config)
    if isinstance(spec, LoraStageConfig):  # a stage folder resumed on its own
        study = _Context(config, spec).study(config)
        return study, study.run(on_progress=on_progress)
    claim_run_dir(config)
    first = stage_one(spec)
    context = _Context(config, first)
    if on_stage:
        on_stage(f"stage 1/2: keep-fractions α of LoRA-A (β = 1/{len(context.merge.adapters)})")
    study1 = context.study(stage_config(config, spec, first))
    summary1 = study1.run(on_progress=on_progress)
    if summary1.stopped_early:
        return study1, summary1
    if summary1.best_number is None:
        raise ConfigError(f"{study1.run_dir}: every stage-one candidate failed; nothing to build stage two on")
    alpha = study1.record(summary1.best_number).recipe["alpha"]  # type: ignore[index]
    study1.close()
    if on_stage:
        on_stage(f"stage 2/2: signed weights β with α = {[round(a, 3) for a in alpha]} (trial "
                 f"{summary1.best_number})")
    study2 = context.study(stage_config(config, spec, stage_two(spec, alpha)))
    summary2 = study2.run(on_progress=on_progress)
    if not summary2.stopped_early and summary2.best_number is not None:
        write_result(config, context, study1, summary1, study2, summary2)
    return study2, summary2


def _check_objectives(config: RunConfig) -> None:
    for i, o in enumerate(config.objectives):
        if o.task is not None or o.name not in ("loss", "l1") or o.direction != "minimize":
            raise ConfigError(f"objectives[{i}]: a LoRA search has the objectives 'loss' (answer LM loss, minimize) "
                              "and 'l1' (mean |genome|, minimize; its weight is the L1 penalty)")


def write_result(config: RunConfig, context: _Context, study1: Study, summary1: StudySummary, study2: Study,
                 summary2: StudySummary) -> dict[str, Any]:
    """``RUN/result.json`` (best α, β; train and test loss) and ``RUN/fused_adapter/``; idempotent."""
    from evomerge.lora.apply import export_adapter

    run_dir = config.run_dir()
    path = run_dir / RESULT_FILE
    assert summary2.best_number is not None and summary1.best_number is not None
    best = study2.record(summary2.best_number)
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("stage2", {}).get("trial") == summary2.best_number:
            return done
    recipe = best.recipe or {}
    context.merge.apply(recipe["alpha"], recipe["beta"])
    import torch

    with torch.inference_mode():
        test = context.loss.evaluate(context.merge.model, context.merge.tokenizer, split="test")
    result = {
        "method": "evo_merging (arXiv 2509.12951)", "adapters": recipe["adapters"], "base": recipe["base"],
        "alpha": recipe["alpha"], "beta": recipe["beta"],
        "stage1": {"trial": summary1.best_number, "objectives": study1.record(summary1.best_number).objectives},
        "stage2": {"trial": summary2.best_number, "objectives": best.objectives},
        "test_loss": test.objectives[context.loss.objective_name], "test_per_task_loss": test.details["per_task_loss"],
    }
    export_adapter(recipe["base"], recipe["adapters"], recipe["alpha"], recipe["beta"], run_dir / FUSED_DIR,
                   overwrite=True)
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
    return result


def read_result(run_dir: str | Path) -> dict[str, Any]:
    """The finished run's result (best α and β, losses), read from ``RUN/result.json``."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {RESULT_FILE} yet; the run has not finished stage two "
                          f"(`evomerge resume {run_dir}`)")
    return json.loads(path.read_text())
