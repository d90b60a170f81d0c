"""One ``evomerge evolve`` run end to end: build the problem and algorithm, evolve, export the best model.

The run folder holds the resolved config (a changed config is refused, as for ``evomerge run``), the
driver's snapshot and journal, ``best/`` (a loadable checkpoint of the algorithm's answer) and
``summary.json`` (train and test scores of that model and of every starting model, side by side).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.errors import ConfigError
from evomerge.evolve.base import Child, ModelEvolution
from evomerge.evolve.config import CONFIG_FILE, EvolveConfig
from evomerge.evolve.driver import EvolveProgress, evolve
from evomerge.evolve.problem import ModelTasksProblem
from evomerge.io.writer import atomic_output_dir
from evomerge.study.checkpoint import atomic_write_bytes, claim_folder

BEST_DIR = "best"
SUMMARY_FILE = "summary.json"


def claim_run_dir(config: EvolveConfig) -> Path:
    """The run folder of a resolved config, holding that config; one with another config is refused."""
    run_dir = config.run_dir()
    return claim_folder(run_dir, CONFIG_FILE, config.to_yaml(), f"evomerge evolve --resume {run_dir}")


@dataclass
class Setup:
    """What a run needs: the problem, the algorithm, how to score a child, how to turn a genome into weights."""

    problem: ModelTasksProblem
    algorithm: ModelEvolution
    evaluate: Callable[[Child], np.ndarray]
    to_weights: Callable[[np.ndarray], np.ndarray]
    starts: dict[str, np.ndarray]  # the starting models' weights, reported as baselines


def build(config: EvolveConfig) -> Setup:
    from evomerge.evolve.registry import build_algorithm

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        models = config.init.expanded()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    reference = Path(config.init.base) if config.init.base else models[0]
    problem = ModelTasksProblem(reference, config.tasks, device=config.device)
    starts = {m.name if len(models) < 2 or m.parent == models[0].parent else str(m): problem.genome_of(m)
              for m in models}
    algorithm, evaluate, to_weights = build_algorithm(config, problem, list(starts.values()))
    return Setup(problem, algorithm, evaluate, to_weights, starts)


def run_evolution(config: EvolveConfig, *, run_dir: Path | None = None,
                  on_progress: Callable[[EvolveProgress], None] | None = None
                  ) -> tuple[EvolveProgress, dict[str, Any] | None]:
    """Evolve to the budget (resuming whatever the folder holds), then export ``best/`` and the summary.

    The summary is ``None`` when the run was stopped by Ctrl-C before its budget was spent.
    """
    if run_dir is None:
        config = config.resolved()
        setup = build(config)  # before claiming the folder: a config that cannot run must not take it
        run_dir = claim_run_dir(config)
    else:
        from evomerge import runlock

        runlock.acquire(run_dir)  # one writer per run folder, before the journal is touched
        setup = build(config)
    evaluator, runner = setup.evaluate, None
    if config.runner.type == "ray":
        from evomerge.evolve.evaluators import OnRunner
        from evomerge.evolve.registry import child_scorer
        from evomerge.exec.ray_runner import RayRunner

        rc = config.runner
        runner = RayRunner(target=child_scorer(config, str(setup.problem.reference)), address=rc.address,
                           workers=rc.workers, cpus_per_worker=rc.cpus_per_worker,
                           gpus_per_worker=rc.gpus_per_worker, max_in_flight=rc.max_in_flight)
        evaluator = OnRunner(runner)
    try:
        progress = evolve(setup.algorithm, evaluator, run_dir, children=config.budget.children,
                          wall_time_s=config.budget.wall_time_s, snapshot_every_s=config.snapshot_every_s,
                          on_progress=on_progress)
    finally:
        if runner is not None:
            runner.close()
    if progress.stopped:
        return progress, None
    summary = finalize(config, setup, run_dir, progress)
    return progress, summary


def finalize(config: EvolveConfig, setup: Setup, run_dir: Path, progress: EvolveProgress) -> dict[str, Any]:
    best = setup.to_weights(setup.algorithm.best_genome())
    splits = ["train"] + ([config.test_split] if config.test_split else [])
    rows = {"evolved": _scores(setup.problem, best, splits)}
    for name, weights in setup.starts.items():
        rows[f"start: {name}"] = _scores(setup.problem, weights, splits)
    summary = {"algorithm": config.algorithm, "children": progress.children, "failed": progress.failed,
               "elapsed_s": progress.elapsed_s, "splits": splits, "models": rows}
    _save_model(setup.problem, best, run_dir / BEST_DIR)
    atomic_write_bytes(run_dir / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _scores(problem: ModelTasksProblem, weights: np.ndarray, splits: list[str]) -> dict[str, dict[str, float]]:
    return {split: problem.score(weights, split=split).objectives for split in splits}


def _save_model(problem: ModelTasksProblem, weights: np.ndarray, out: Path) -> None:
    problem.layout.load_into(problem.model, weights)
    with atomic_output_dir(out, overwrite=True) as tmp:
        problem.model.save_pretrained(tmp)
        if problem.tokenizer is not None:
            problem.tokenizer.save_pretrained(tmp)
