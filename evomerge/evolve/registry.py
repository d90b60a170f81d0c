"""Build an evolve config's algorithm: the class, its starting genomes and how a child is scored.

M2N2 evolves whole models and competes on per-example scores; CycleQD evolves task vectors
(relative to ``init.base``) and keeps one archive per task, so it needs per-task scores.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evomerge.errors import ConfigError
from evomerge.evolve.base import Child, ModelEvolution
from evomerge.evolve.config import EvolveConfig
from evomerge.evolve.evaluators import ChildScorer
from evomerge.evolve.problem import ModelTasksProblem
from evomerge.strategies import check_options

Built = tuple[ModelEvolution, Callable[[Child], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def build_algorithm(config: EvolveConfig, problem: ModelTasksProblem, starts: list[np.ndarray]) -> Built:
    """(algorithm, evaluate(child) -> scores, to_weights(genome) -> model weights)."""
    if config.algorithm == "m2n2":
        from evomerge.evolve.m2n2 import M2N2

        check_options(M2N2, config.options, ("initial", "n_scores", "seed"), "m2n2")
        n_examples = problem.score(starts[0]).per_example.size
        algorithm = M2N2(starts, n_examples, seed=config.seed, **config.options)
        return algorithm, lambda child: problem.score(child.genome).per_example, lambda genome: genome
    if config.algorithm == "cycleqd":
        from evomerge.evolve.cycleqd import CycleQD

        check_options(CycleQD, config.options, ("layout", "experts", "seed", "n_tasks"), "cycleqd")
        base = problem.genome_of(config.init.base)
        if len(starts) != len(problem.tasks):
            raise ConfigError(f"cycleqd keeps one archive per task: {len(starts)} experts in init.models but "
                              f"{len(problem.tasks)} tasks")
        algorithm = CycleQD(problem.layout, [s - base for s in starts], seed=config.seed, **config.options)
        return (algorithm, lambda child: problem.score(base + child.genome).per_task,
                lambda genome: base + genome)
    raise ConfigError(f"unknown algorithm {config.algorithm!r}")


def child_scorer(config: EvolveConfig, reference: str) -> ChildScorer:
    """What a Ray worker runs for this config: the score vector the algorithm competes on, from the same tasks."""
    rc = config.runner
    device = "cuda" if rc.gpus_per_worker > 0 else config.device
    threads = max(1, int(rc.cpus_per_worker))
    if config.algorithm == "m2n2":
        return ChildScorer(reference, config.tasks, kind="per_example", device=device, threads=threads)
    return ChildScorer(reference, config.tasks, kind="per_task", offset=config.init.base, device=device,
                       threads=threads)
