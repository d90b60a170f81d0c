"""Classification accuracy against hand-labelled arrays and a fixed linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evomerge.errors import FitnessError
from evomerge.fitness import load_task

# identity "classifier": logits are the features, so the prediction is the argmax of x
X = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.6], [0.8, 0.0, 0.3], [0.0, 0.4, 0.5], [0.3, 0.35, 0.2]]
Y = [0, 1, 1, 2, 2, 0]  # argmax is [0, 1, 2, 0, 2, 1] -> right, right, wrong, wrong, right, wrong


def _identity() -> nn.Module:
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
    return lin


def _rows(x=X, y=Y) -> list[dict]:
    return [{"x": a, "label": b} for a, b in zip(x, y, strict=True)]


def test_accuracy_and_per_example_match_hand_labels(write_task):
    path = write_task({"name": "cls", "kind": "classification", "batch_size": 4},
                      {"train": _rows(), "test": _rows(X[:2], Y[:2])})
    task = load_task(path)
    res = task.evaluate(_identity(), None)
    np.testing.assert_array_equal(res.per_example, [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(res.details["predictions"], [0, 1, 2, 0, 2, 1])
    assert res.objectives == {"cls": 0.5}
    assert task.evaluate(_identity(), None, split="test").per_example.tolist() == [1.0, 1.0]


def test_labels_keep_only_those_classes(write_task):
    path = write_task({"name": "cls", "kind": "classification", "labels": [1, 2]}, {"train": _rows()})
    res = load_task(path).evaluate(_identity(), None)
    np.testing.assert_array_equal(res.per_example, [1, 0, 0, 1])  # examples 1, 2, 3, 4


def test_restrict_logits_takes_the_argmax_over_the_listed_classes_only(write_task):
    path = write_task({"name": "cls", "kind": "classification", "labels": [1, 2], "restrict_logits": True},
                      {"train": _rows()})
    res = load_task(path).evaluate(_identity(), None)
    # example 3 ([0.8, 0.0, 0.3], label 2): class 0 no longer competes, so 2 wins
    np.testing.assert_array_equal(res.details["predictions"], [1, 2, 2, 2])
    np.testing.assert_array_equal(res.per_example, [1, 0, 1, 1])  # labels of examples 1-4: [1, 1, 2, 2]


def test_batch_size_does_not_change_predictions(write_task):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g).tolist()
    y = torch.randint(0, 3, (100,), generator=g).tolist()
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 3))
    res = [load_task(write_task({"name": "c", "kind": "classification", "batch_size": bs}, {"train": _rows(x, y)},
                                name=f"b{bs}")).evaluate(model, None) for bs in (1, 64)]
    np.testing.assert_array_equal(res[0].per_example, res[1].per_example)
    with torch.no_grad():
        want = (model(torch.tensor(x)).argmax(1) == torch.tensor(y)).double().numpy()
    np.testing.assert_array_equal(res[0].per_example, want)


def test_sklearn_digits_source_uses_the_fixed_split(write_task):
    from evomerge.zoo import digits  # our own module: an import error must fail, not skip
    x_train, y_train, x_test, y_test = digits.digits_split()
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    path = write_task({"name": "d", "kind": "classification", "data": {"source": "sklearn_digits"},
                       "labels": [0, 1, 2, 3, 4]})
    task = load_task(path)
    for split, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        res = task.evaluate(model, None, split=split)
        keep = y < 5
        with torch.no_grad():
            want = (model(torch.from_numpy(x[keep])).argmax(1).numpy() == y[keep]).astype(np.float64)
        np.testing.assert_array_equal(res.per_example, want)
        assert res.n == int(keep.sum())
    with pytest.raises(FitnessError, match="task 'd' has no split 'validation'; it has train, test"):
        task.evaluate(model, None, split="validation")


def test_bad_classification_inputs_are_named(write_task):
    path = write_task({"name": "c", "kind": "classification"}, {"train": [{"x": [1, 2], "label": 0},
                                                                           {"x": [1], "label": 1}]})
    with pytest.raises(FitnessError, match=r"task\.train\.jsonl: example 1 has 1 features, example 0 has 2"):
        load_task(path)
    path = write_task({"name": "c", "kind": "classification", "labels": [7]}, {"train": _rows()})
    with pytest.raises(FitnessError, match=r"task 'c' split 'train' has no examples with labels \[7\]"):
        load_task(path)
    path = write_task({"name": "c", "kind": "classification", "labels": [2], "restrict_logits": True},
                      {"train": _rows()})
    with pytest.raises(FitnessError, match=r"labels \[2\] exceed the model's 2 outputs"):
        load_task(path).evaluate(nn.Linear(3, 2), None)
