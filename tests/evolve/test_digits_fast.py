"""The fast digits scorer is the task path, bit for bit: same predictions as DigitsMLP under
ClassificationTask (via ModelTasksProblem) on the experts, random inits and merges of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.evolve.base import EvolutionError
from evomerge.evolve.digits_fast import DigitsScorer
from evomerge.evolve.problem import ModelTasksProblem

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "zoo" / "digits"
TASK = ROOT / "fitness" / "digits" / "digits_all.yaml"


@pytest.fixture(scope="module")
def problem() -> ModelTasksProblem:
    torch.set_num_threads(1)
    return ModelTasksProblem(ZOO / "init", [TASK])


def genomes(problem: ModelTasksProblem) -> list[np.ndarray]:
    experts = [problem.genome_of(ZOO / n) for n in ("init", "expert_0_4", "expert_5_9")]
    rng = np.random.default_rng(0)
    random = [(rng.standard_normal(problem.layout.size) * s).astype(np.float32) for s in (0.01, 0.1, 1.0)]
    zoo_random = [problem.genome_of(ZOO / "random" / f"init_{i:02d}") for i in (0, 7)]
    mixes = [(w * experts[1] + (1 - w) * experts[2]).astype(np.float32) for w in (0.3, 0.5, 0.8)]
    return experts + random + zoo_random + mixes


@pytest.mark.parametrize("factory", [DigitsScorer.from_split, lambda: DigitsScorer.from_task(TASK)])
def test_fast_scores_equal_the_task_path_exactly(problem: ModelTasksProblem, factory) -> None:
    scorer = factory()
    for g in genomes(problem):
        for split in ("train", "test"):
            expected = problem.score(g, split=split).per_example
            got = scorer.correct(g, split)
            assert got.dtype == np.float64 and np.array_equal(got, expected)
    assert scorer.n_examples("train") == 1437 and scorer.n_examples("test") == 360


def test_correct_many_stacks_rows(problem: ModelTasksProblem) -> None:
    scorer = DigitsScorer.from_split()
    gs = np.stack(genomes(problem)[:4])
    np.testing.assert_array_equal(scorer.correct_many(gs, "test"), [scorer.correct(g, "test") for g in gs])


def test_wrong_genome_size_and_unknown_split_are_errors() -> None:
    scorer = DigitsScorer.from_split()
    with pytest.raises(EvolutionError, match="19210"):
        scorer.correct(np.zeros(10, np.float32))
    with pytest.raises(EvolutionError, match="validation"):
        scorer.correct(np.zeros(19210, np.float32), "validation")
