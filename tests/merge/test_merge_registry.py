"""The registry and method declarations: names, defaults and ranges as mergekit has them."""

from __future__ import annotations

import re

import pytest

from evomerge.merge import all_methods, get_method, register
from evomerge.merge.methods import lines_factor

EXPECTED = {
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
    "della", "della_linear", "slerp", "model_stock", "passthrough",
}

# mergekit's registry (merge_methods/registry.py): (normalize, rescale) defaults per method
MERGEKIT_DEFAULTS = {
    "task_arithmetic": (False, False),  # declared by mergekit, ignored (no sparsifier): inert here
    "ties": (True, False),
    "dare_ties": (False, True),
    "dare_linear": (False, True),
    "breadcrumbs": (False, False),
    "breadcrumbs_ties": (False, False),
    "della": (True, True),
    "della_linear": (False, True),
    "linear": (True, None),
}


def test_every_builtin_method_is_registered_once_with_its_mergekit_name() -> None:
    methods = all_methods()
    assert {m.name for m in methods} == EXPECTED
    for m in methods:
        assert m.mergekit_name == m.name
        assert m.summary and m.reference


def test_methods_with_a_paper_cite_its_arxiv_id() -> None:
    for name in EXPECTED - {"slerp", "passthrough"}:
        assert re.fullmatch(r"arXiv:\d{4}\.\d{5}", get_method(name).reference), name


def test_registering_a_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'ties' is registered twice"):
        register(get_method("ties"))


@pytest.mark.parametrize(("name", "defaults"), sorted(MERGEKIT_DEFAULTS.items()))
def test_normalize_and_rescale_defaults_match_mergekit(name: str, defaults: tuple) -> None:
    method = get_method(name)
    normalize, rescale = defaults
    assert method.param("normalize").default is normalize
    if rescale is None:
        assert "rescale" not in {p.name for p in method.params}
    else:
        assert method.param("rescale").default is rescale


def test_shared_parameter_defaults_and_ranges_match_mergekit() -> None:
    ties = get_method("ties")
    assert ties.param("weight").default is None  # required, unbounded
    assert ties.param("weight").low is None and ties.param("weight").high is None
    density = ties.param("density")
    assert (density.default, density.low, density.high, density.low_open) == (1.0, 0.0, 1.0, True)
    assert ties.param("lambda").default == 1.0
    assert get_method("breadcrumbs").param("gamma").default == 0.01
    assert get_method("della").param("epsilon").default == 0.15
    assert get_method("model_stock").param("filter_wise").default is False
    assert get_method("slerp").param("t").default is None


def test_only_dare_and_della_are_randomised() -> None:
    assert {m.name for m in all_methods() if m.randomized} == {"dare_linear", "dare_ties", "della", "della_linear"}


def test_lines_factor_goes_from_alpha_at_first_block_to_alpha_plus_beta_at_last() -> None:
    # λ(ℓ) = α + β·ℓ/(L − 1), ℓ 0-based: 0.2, 0.2 + 0.8/3, 0.2 + 1.6/3, 1.0
    assert lines_factor(0, 4, 0.2, 0.8) == 0.2
    assert lines_factor(1, 4, 0.2, 0.8) == pytest.approx(0.2 + 0.8 / 3)
    assert lines_factor(2, 4, 0.2, 0.8) == pytest.approx(0.2 + 1.6 / 3)
    assert lines_factor(3, 4, 0.2, 0.8) == 1.0


def test_lines_factor_of_a_single_block_model_is_alpha() -> None:
    assert lines_factor(0, 1, 0.3, 0.7) == 0.3
