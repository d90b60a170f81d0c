"""Parameter settings: scalars, gradients across depth, module filters (mergekit's meaning)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evomerge.recipe.params import ConditionalParameter, evaluate_setting, interpolate


def test_scalar_setting_is_the_same_everywhere():
    assert evaluate_setting("model.layers.3.mlp.up_proj.weight", 0.25, t=0.7) == 0.25


def test_gradient_interpolates_linearly_across_depth():
    # three anchors at t = 0, 0.5, 1
    grad = [0.0, 1.0, 0.5]
    assert evaluate_setting("x", grad, t=0.0) == 0.0
    assert evaluate_setting("x", grad, t=0.25) == pytest.approx(0.5)
    assert evaluate_setting("x", grad, t=0.5) == pytest.approx(1.0)
    assert evaluate_setting("x", grad, t=0.75) == pytest.approx(0.75)
    assert evaluate_setting("x", grad, t=1.0) == 0.5


def test_a_list_of_one_value_per_layer_gives_each_layer_its_value():
    values = [0.1, 0.2, 0.3, 0.4]
    for i, v in enumerate(values):
        assert evaluate_setting("x", values, t=i / 3) == pytest.approx(v)


def test_first_matching_filter_wins_and_unfiltered_condition_is_the_fallback():
    setting = [
        ConditionalParameter(filter="self_attn", value=0.1),
        ConditionalParameter(filter="mlp", value=[0.0, 1.0]),
        ConditionalParameter(value=0.9),
    ]
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", setting, t=0.5) == 0.1
    assert evaluate_setting("model.layers.0.mlp.up_proj.weight", setting, t=0.5) == pytest.approx(0.5)
    assert evaluate_setting("model.norm.weight", setting, t=1.0) == 0.9


def test_no_matching_filter_gives_none_so_the_next_level_applies():
    setting = [ConditionalParameter(filter="mlp", value=0.3)]
    assert evaluate_setting("model.embed_tokens.weight", setting, t=0.0) is None


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=8), st.floats(0, 1))
def test_interpolation_stays_within_the_anchor_range(values, t):
    v = interpolate(values, t)
    assert min(values) - 1e-9 <= v <= max(values) + 1e-9
