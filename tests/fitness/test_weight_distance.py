"""The sparsity objective (MM-MO, arXiv 2407.00487): mean |θ − θ₀| of the evaluated model against a base checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.errors import FitnessError
from evomerge.fitness import load_task
from evomerge.io.checkpoint import Checkpoint

ROOT = Path(__file__).parents[2]


class Tiny(torch.nn.Module):
    """Two parameters with hand-picked values: w (2×2) and b (1)."""

    def __init__(self, w: list[list[float]], b: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.b = torch.nn.Parameter(torch.tensor(b))


def write_base(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def sparsity_task(tmp_path: Path, base: str = "base") -> Path:
    path = tmp_path / "sparsity.yaml"
    path.write_text(f"name: sparsity\nkind: weight_distance\nbase: {base}\n", encoding="utf-8")
    return path


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_base(tmp_path / "base", {"w": torch.tensor([[0.0, 2.0], [1.0, 4.0]]), "b": torch.tensor([1.5])})


def test_distance_is_the_mean_absolute_difference_over_every_parameter_entry(tmp_path: Path, base_dir: Path) -> None:
    task = load_task(sparsity_task(tmp_path))
    model = Tiny([[1.0, 2.0], [3.0, 4.0]], [0.5])
    # |Δw| = 1, 0, 2, 0 and |Δb| = 1: sum 4 over 5 entries
    res = task.evaluate(model, None, split="train")
    assert res.objectives == {"sparsity": pytest.approx(0.8, abs=1e-12)}
    assert task.direction == "minimize" and task.objective_name == "sparsity"
    assert res.n == 1 and np.array_equal(res.per_example, [-res.objectives["sparsity"]])
    assert res.details["l1"] == pytest.approx(4.0) and res.details["n_parameters"] == 5


def test_every_split_scores_the_same_and_the_base_itself_scores_zero(tmp_path: Path, base_dir: Path) -> None:
    task = load_task(sparsity_task(tmp_path))
    model = Tiny([[1.0, 2.0], [3.0, 4.0]], [0.5])
    assert task.evaluate(model, split="test").objectives == task.evaluate(model, split="train").objectives
    assert task.evaluate(Tiny([[0.0, 2.0], [1.0, 4.0]], [1.5])).objectives["sparsity"] == 0.0


def test_base_tensors_are_read_once_and_cached(tmp_path: Path, base_dir: Path, monkeypatch) -> None:
    task = load_task(sparsity_task(tmp_path))
    reads: list[str] = []
    original = Checkpoint.get

    def counting(self, name, **kw):
        reads.append(name)
        return original(self, name, **kw)

    monkeypatch.setattr(Checkpoint, "get", counting)
    for v in (0.0, 1.0, 2.0):
        task.evaluate(Tiny([[v, v], [v, v]], [v]))
    assert sorted(reads) == ["b", "w"]


def test_a_parameter_missing_from_the_base_is_named(tmp_path: Path) -> None:
    write_base(tmp_path / "base", {"w": torch.zeros(2, 2)})
    task = load_task(sparsity_task(tmp_path))
    with pytest.raises(FitnessError, match=r"parameter 'b' of the evaluated model is not in the base checkpoint"):
        task.evaluate(Tiny([[0.0, 0.0], [0.0, 0.0]], [0.0]))


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path: Path) -> None:
    write_base(tmp_path / "base", {"w": torch.zeros(2, 3), "b": torch.zeros(1)})
    task = load_task(sparsity_task(tmp_path))
    with pytest.raises(FitnessError, match=r"parameter 'w' has shape \[2, 2\] but the base checkpoint .* \[2, 3\]"):
        task.evaluate(Tiny([[0.0, 0.0], [0.0, 0.0]], [0.0]))


def test_a_missing_base_fails_when_the_task_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(FitnessError, match=r"sparsity\.yaml: key 'base': .*nowhere"):
        load_task(sparsity_task(tmp_path, base="nowhere"))


def test_digits_sparsity_task_matches_the_checkpoints_read_independently() -> None:
    from evomerge.models import load_model

    task = load_task(ROOT / "fitness/digits/sparsity.yaml")
    model, _ = load_model(ROOT / "zoo/digits/expert_0_4")
    expert = load_file(str(ROOT / "zoo/digits/expert_0_4/model.safetensors"))
    init = load_file(str(ROOT / "zoo/digits/init/model.safetensors"))
    total = sum(float((expert[k].double() - init[k].double()).abs().sum()) for k in init)
    count = sum(t.numel() for t in init.values())
    assert task.evaluate(model).objectives["sparsity"] == pytest.approx(total / count, rel=1e-12)


def test_tinylm_sparsity_task_loads_and_points_at_the_tinylm_base() -> None:
    task = load_task(ROOT / "fitness/tinylm/sparsity.yaml")
    assert task.base_path.resolve() == (ROOT / "zoo/tinylm/base").resolve()
    assert task.direction == "minimize"
