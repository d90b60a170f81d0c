"""The registry and method declarations: names, defaults and ranges as mergekit has them."""

from __future__ import annotations

import re

import pytest

from evomerge.merge import all_methods, get_method, register
from evomerge.merge.methods import lines_factor

EXPECTED = {
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
    "della", "della_linear", "slerp", "model_stock", "passthrough",
    "sce", "nuslerp", "multislerp", "karcher", "arcee_fusion", "nearswap", "ram", "ramplus_tl",
}
# mergekit's methods without a paper
NO_PAPER = {"slerp", "passthrough", "nuslerp", "multislerp", "arcee_fusion", "nearswap"}

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


BEYOND_MERGEKIT = {"tsv_m", "iso_c", "iso_cts"}


def test_every_builtin_method_is_registered_once_with_its_mergekit_name() -> None:
    methods = all_methods()
    assert {m.name for m in methods} == EXPECTED | BEYOND_MERGEKIT
    for m in methods:
        assert m.mergekit_name == (None if m.name in BEYOND_MERGEKIT else m.name)
        assert m.summary and m.reference


def test_methods_with_a_paper_cite_its_arxiv_id() -> None:
    for name in (EXPECTED | BEYOND_MERGEKIT) - NO_PAPER:
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


# mergekit 0.1.5's declarations (merge_methods/*.py): parameter -> (scope, default)
NEW_METHOD_PARAMS = {
    "sce": {"select_topk": ("global", 1.0), "int8_mask": ("global", False)},
    "nuslerp": {"weight": ("per_source", None), "nuslerp_row_wise": ("global", False),
                "nuslerp_flatten": ("global", True)},
    "multislerp": {"weight": ("per_source", None), "normalize_weights": ("global", True), "eps": ("global", 1e-8)},
    "karcher": {"max_iter": ("global", 10), "tol": ("global", 1e-5)},
    "arcee_fusion": {},
    "nearswap": {"t": ("global", None)},
    "ram": {"epsilon": ("global", 1e-5)},
    "ramplus_tl": {"r": ("global", 0.1), "alpha": ("global", 0.2), "epsilon": ("global", 1e-5)},
}
NEW_METHOD_INPUTS = {  # (base: needs / optional / no, least and most models besides the base)
    "sce": ("needs", 1, None), "nuslerp": ("optional", 2, 2), "multislerp": ("optional", 1, None),
    "karcher": ("no", 1, None), "arcee_fusion": ("needs", 1, 1), "nearswap": ("needs", 1, 1),
    "ram": ("needs", 1, None), "ramplus_tl": ("needs", 1, None),
}


@pytest.mark.parametrize("name", sorted(NEW_METHOD_PARAMS))
def test_new_methods_declare_mergekits_parameters_defaults_and_inputs(name: str) -> None:
    method = get_method(name)
    assert {p.name: (p.scope, p.default) for p in method.params} == NEW_METHOD_PARAMS[name]
    base = "needs" if method.needs_base else "optional" if method.optional_base else "no"
    assert (base, method.min_sources, method.max_sources) == NEW_METHOD_INPUTS[name]
    assert not method.randomized


def test_evomerge_methods_lists_at_least_twenty_methods() -> None:
    assert len(all_methods()) >= 20
