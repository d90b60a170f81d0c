"""Every bad input is refused with a MergeError whose message names the problem."""

from __future__ import annotations

import math

import pytest
import torch

from evomerge.errors import MergeError
from evomerge.merge import MergeInputs, get_method
from evomerge.merge.methods import lines_factor


def inputs(n_sources: int = 2, *, base: bool = True, shape: tuple[int, ...] = (2, 3)) -> MergeInputs:
    sources = [torch.full(shape, float(i + 1)) for i in range(n_sources)]
    return MergeInputs("model.layers.0.mlp.up_proj.weight", torch.zeros(shape) if base else None,
                       sources=sources)


def test_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(MergeError, match=r"unknown merge method 'tiez' \(known: .*ties"):
        get_method("tiez")


@pytest.mark.parametrize("density", [0.0, -0.5])
def test_density_at_or_below_zero_is_refused(density: float) -> None:
    with pytest.raises(MergeError, match=r"source 0: parameter 'density' = .* is outside \(0, 1\]"):
        get_method("ties")(inputs(), {"weight": 1.0, "density": density})


def test_density_above_one_is_refused() -> None:
    with pytest.raises(MergeError, match=r"parameter 'density' = 1.5 is above its maximum 1"):
        get_method("dare_ties")(inputs(), {"weight": 1.0, "density": 1.5}, seed=0)


def test_negative_slerp_t_is_refused() -> None:
    with pytest.raises(MergeError, match=r"parameter 't' = -0.1 is outside \[0, 1\]"):
        get_method("slerp")(inputs(), {"t": -0.1})


def test_slerp_t_above_one_is_refused() -> None:
    with pytest.raises(MergeError, match=r"parameter 't' = 1.2 is above its maximum 1"):
        get_method("slerp")(inputs(), {"t": 1.2})


@pytest.mark.parametrize(("name", "n", "message"), [
    ("slerp", 3, "takes at most 2 source"),
    ("slerp", 1, "needs at least 2 source"),
    ("passthrough", 2, "takes at most 1 source"),
    ("model_stock", 1, "needs at least 2 source"),
])
def test_wrong_number_of_sources_is_refused(name: str, n: int, message: str) -> None:
    with pytest.raises(MergeError, match=message):
        get_method(name)(inputs(n), {"t": 0.5} if name == "slerp" else {})


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "breadcrumbs", "model_stock", "dare_linear"])
def test_task_vector_methods_refuse_a_missing_base(name: str) -> None:
    with pytest.raises(MergeError, match=rf"method '{name}' needs a base model \(set base_model\)"):
        get_method(name)(inputs(base=False), {"weight": 1.0} if name != "model_stock" else {}, seed=0)


def test_per_source_list_of_wrong_length_is_refused() -> None:
    with pytest.raises(MergeError, match="parameter 'weight' has 3 values for 2 sources"):
        get_method("linear")(inputs(), {"weight": [1.0, 2.0, 3.0]})


def test_shape_mismatch_names_the_tensor_and_shapes() -> None:
    with pytest.raises(MergeError, match=r"tensor 'w': shapes differ across sources: \[\(2,\), \(3,\)\]"):
        MergeInputs("w", None, sources=[torch.zeros(2), torch.zeros(3)])


@pytest.mark.parametrize(("name", "params", "message"), [
    ("linear", {"weight": [1.0, math.nan]}, "source 1: parameter 'weight' must be finite"),
    ("task_arithmetic", {"weight": 1.0, "lambda": math.nan}, "parameter 'lambda' must be finite"),
    ("ties", {"weight": 1.0, "density": math.nan}, "parameter 'density' must be finite"),
    ("slerp", {"t": math.inf}, "parameter 't' must be finite"),
])
def test_nan_or_infinite_parameter_is_refused(name: str, params: dict, message: str) -> None:
    with pytest.raises(MergeError, match=message):
        get_method(name)(inputs(), params)


def test_missing_required_weight_is_refused() -> None:
    with pytest.raises(MergeError, match="method 'task_arithmetic' needs parameter 'weight'"):
        get_method("task_arithmetic")(inputs(), {})


def test_unknown_parameter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(MergeError, match=r"method 'linear' has no parameter 'density' \(known: weight, normalize\)"):
        get_method("linear")(inputs(), {"weight": 1.0, "density": 0.5})


def test_boolean_parameter_refuses_a_number_other_than_0_or_1() -> None:
    # mergekit (pydantic lax mode) reads 1 and 0 as true and false, and refuses other numbers
    with pytest.raises(MergeError, match="parameter 'normalize' must be true or false"):
        get_method("linear")(inputs(), {"weight": 1.0, "normalize": 2})


def test_randomised_method_without_seed_is_refused() -> None:
    with pytest.raises(MergeError, match="method 'dare_ties' is randomised and needs an explicit seed"):
        get_method("dare_ties")(inputs(), {"weight": 1.0, "density": 0.5})


def test_della_refuses_epsilon_that_pushes_probabilities_out_of_range() -> None:
    with pytest.raises(MergeError, match=r"source 1: della needs density ± epsilon inside \(0, 1\), "
                                         r"got density 0.9 and epsilon 0.15"):
        get_method("della")(inputs(), {"weight": 1.0, "density": [0.5, 0.9]}, seed=0)


def test_linear_normalize_refuses_weights_summing_to_zero() -> None:
    with pytest.raises(MergeError, match="weights that do not sum to zero .* set normalize: false"):
        get_method("linear")(inputs(), {"weight": [1.0, -1.0]})


@pytest.mark.parametrize(("args", "message"), [
    ((4, 4, 0.5, 0.5), r"layer_index 4 is outside 0..3"),
    ((-1, 4, 0.5, 0.5), r"layer_index -1 is outside 0..3"),
    ((0, 0, 0.5, 0.5), "num_layers must be at least 1"),
    ((0, 4, math.nan, 0.5), "alpha and beta must be finite"),
])
def test_lines_factor_refuses_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(MergeError, match=message):
        lines_factor(*args)
