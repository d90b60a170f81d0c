"""Flat genomes map to model parameters exactly, and a genome scored in place gives the checkpoint's scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evomerge.errors import CheckpointError
from evomerge.evolve.flat import FlatLayout, flatten_checkpoint
from evomerge.evolve.problem import ModelTasksProblem
from evomerge.zoo.digits import DigitsMLP

DIGITS = "zoo/digits"


def test_layout_offsets_follow_parameter_order() -> None:
    layout = FlatLayout.from_model(DigitsMLP())
    assert [(e.name, e.shape, e.offset) for e in layout.entries] == [
        ("layers.0.weight", (256, 64), 0), ("layers.0.bias", (256,), 16384),
        ("layers.1.weight", (10, 256), 16640), ("layers.1.bias", (10,), 19200)]
    assert layout.size == 19210
    assert [e.name for e in layout.matrices()] == ["layers.0.weight", "layers.1.weight"]


def test_flatten_and_load_round_trip() -> None:
    torch.manual_seed(0)
    model = DigitsMLP()
    layout = FlatLayout.from_model(model)
    vec = layout.flatten(model)
    assert np.array_equal(vec[16640:16640 + 256], model.layers[1].weight.detach().numpy()[0])
    other = DigitsMLP()
    layout.load_into(other, vec)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match=r"needs \(19210,\)"):
        layout.load_into(other, vec[:-1])


def test_flatten_checkpoint_refuses_another_architecture(tmp_path) -> None:
    DigitsMLP((64, 32, 10)).save_pretrained(tmp_path / "small")
    _, layout = flatten_checkpoint(f"{DIGITS}/init")
    with pytest.raises(CheckpointError, match="layers.0.weight"):
        flatten_checkpoint(tmp_path / "small", layout)


def test_problem_scores_equal_the_checkpoints_own() -> None:
    """Scoring expert_0_4's genome inside a model built from init = scoring the expert checkpoint directly."""
    from evomerge.fitness import load_task
    from evomerge.models import load_model

    problem = ModelTasksProblem(f"{DIGITS}/init", ["fitness/digits/digits_0_4.yaml", "fitness/digits/digits_5_9.yaml"])
    genome = problem.genome_of(f"{DIGITS}/expert_0_4")
    got = problem.score(genome, split="test")
    expert, _ = load_model(f"{DIGITS}/expert_0_4")
    own = [load_task(f"fitness/digits/{t}.yaml").evaluate(expert, None, split="test")
           for t in ("digits_0_4", "digits_5_9")]
    assert np.array_equal(got.per_example, np.concatenate([r.per_example for r in own]))
    assert np.allclose(got.per_task, [r.objectives[r.task] for r in own])
    assert got.per_task[0] > 0.9 > 0.5 > got.per_task[1]  # the 0-4 expert knows 0-4, not 5-9
