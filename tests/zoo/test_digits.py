"""The digits setting matches the M2N2 paper's: 1,437/360 split, a 19,210-parameter MLP."""

from __future__ import annotations

import numpy as np
import torch

from evomerge.errors import CheckpointError
from evomerge.zoo.digits import DigitsMLP, digits_split


def test_digits_split_is_fixed_80_20_scaled_to_unit_range():
    x_train, y_train, x_test, y_test = digits_split()
    assert (len(x_train), len(x_test)) == (1437, 360)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    again = digits_split()
    assert np.array_equal(again[3], y_test)


def test_mlp_has_the_paper_parameter_count_and_tensor_names():
    model = DigitsMLP()
    assert sum(p.numel() for p in model.parameters()) == 19_210
    assert list(model.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DigitsMLP()
    model.save_pretrained(tmp_path)
    loaded = DigitsMLP.from_pretrained(tmp_path)
    x = torch.rand(3, 64)
    assert torch.equal(model(x), loaded(x))


def test_loading_a_folder_without_a_checkpoint_names_it(tmp_path):
    try:
        DigitsMLP.from_pretrained(tmp_path)
    except CheckpointError as exc:
        assert str(tmp_path) in str(exc)
    else:
        raise AssertionError("expected CheckpointError")
