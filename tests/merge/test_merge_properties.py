"""Algebraic properties that must hold for any inputs (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.merge import MergeInputs, all_methods, get_method

PROFILE = settings(max_examples=25, deadline=None)

values = st.floats(-4, 4, allow_nan=False, width=32)
nonzero_weights = st.floats(0.125, 3, width=32) | st.floats(-3, -0.125, width=32)
weights = st.floats(-3, 3, width=32)


@st.composite
def family(draw: st.DrawFn, n_sources: int | None = None, *, dyadic: bool = False,
           nonnegative: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and 1..3 sources of one small shape."""
    n = n_sources or draw(st.integers(1, 3))
    size = draw(st.integers(1, 12))
    # dyadic: multiples of 1/4, so sums and differences stay exact in float32
    elems = st.integers(-32, 32).map(lambda i: i / 4) if dyadic else values
    base = torch.tensor(draw(st.lists(elems, min_size=size, max_size=size)), dtype=torch.float32)
    delta_elems = st.floats(0, 4, width=32) if nonnegative else elems
    deltas = [torch.tensor(draw(st.lists(delta_elems, min_size=size, max_size=size)), dtype=torch.float32)
              for _ in range(n)]
    return base, [base + d for d in deltas]


def merge(name: str, base: torch.Tensor | None, sources: list[torch.Tensor], seed: int | None = None,
          **params: object) -> torch.Tensor:
    return get_method(name)(MergeInputs("t", base, sources=sources), params, seed=seed)


@PROFILE
@given(family(1), nonzero_weights)
def test_linear_of_one_source_is_identity(fam: tuple, w: float) -> None:
    _, (source,) = fam
    torch.testing.assert_close(merge("linear", None, [source], weight=[w]), source)


@PROFILE
@given(family(), st.data(), st.booleans(), weights)
def test_dare_linear_at_density_one_is_task_arithmetic(fam: tuple, data: st.DataObject, normalize: bool,
                                                       lam: float) -> None:
    base, sources = fam
    w = data.draw(st.lists(weights, min_size=len(sources), max_size=len(sources)))
    params = {"weight": w, "normalize": normalize, "lambda": lam}
    expected = merge("task_arithmetic", base, sources, **params)
    for name in ("dare_linear", "della_linear"):
        assert torch.equal(merge(name, base, sources, seed=5, density=1.0, **params), expected)


@PROFILE
@given(family(), st.data(), st.booleans())
def test_dare_ties_at_density_one_is_ties_at_density_one(fam: tuple, data: st.DataObject,
                                                         normalize: bool) -> None:
    base, sources = fam
    w = data.draw(st.lists(weights, min_size=len(sources), max_size=len(sources)))
    params = {"weight": w, "normalize": normalize, "density": 1.0}
    expected = merge("ties", base, sources, **params)
    for name in ("dare_ties", "della"):
        assert torch.equal(merge(name, base, sources, seed=5, **params), expected)


@PROFILE
@given(family(1), nonzero_weights, st.booleans())
def test_ties_of_one_source_at_density_one_is_task_arithmetic(fam: tuple, w: float, normalize: bool) -> None:
    base, sources = fam
    params = {"weight": [w], "normalize": normalize}
    torch.testing.assert_close(merge("ties", base, sources, density=1.0, **params),
                               merge("task_arithmetic", base, sources, **params))


@PROFILE
@given(family(nonnegative=True), st.data())
def test_ties_of_sign_consistent_task_vectors_is_task_arithmetic(fam: tuple, data: st.DataObject) -> None:
    base, sources = fam
    w = data.draw(st.lists(st.floats(0.125, 3, width=32), min_size=len(sources), max_size=len(sources)))
    torch.testing.assert_close(merge("ties", base, sources, weight=w, normalize=False),
                               merge("task_arithmetic", base, sources, weight=w), atol=1e-5, rtol=1e-5)


@PROFILE
@given(family(), st.data(), weights)
def test_task_arithmetic_is_linear_in_weights(fam: tuple, data: st.DataObject, c: float) -> None:
    base, sources = fam
    k = len(sources)
    u = data.draw(st.lists(weights, min_size=k, max_size=k))
    v = data.draw(st.lists(weights, min_size=k, max_size=k))

    def tv(w: list[float]) -> torch.Tensor:
        return merge("task_arithmetic", base, sources, weight=w) - base

    torch.testing.assert_close(tv([a + b for a, b in zip(u, v, strict=True)]), tv(u) + tv(v),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tv([c * a for a in u]), c * tv(u), atol=1e-4, rtol=1e-4)


@PROFILE
@given(family(2))
def test_slerp_endpoints_are_the_sources(fam: tuple) -> None:
    _, sources = fam
    assert torch.equal(merge("slerp", None, sources, t=0.0), sources[0])
    assert torch.equal(merge("slerp", None, sources, t=1.0), sources[1])


@PROFILE
@given(family(), st.data(), st.integers(0, 2**31 - 1))
def test_randomised_methods_are_bit_identical_for_a_seed(fam: tuple, data: st.DataObject, seed: int) -> None:
    base, sources = fam
    k = len(sources)
    params = {"weight": data.draw(st.lists(weights, min_size=k, max_size=k)),
              "density": data.draw(st.lists(st.floats(0.2, 0.8), min_size=k, max_size=k)), "epsilon": 0.1}
    for name in ("dare_linear", "dare_ties", "della", "della_linear"):
        p = {key: val for key, val in params.items() if key != "epsilon" or name.startswith("della")}
        assert torch.equal(merge(name, base, sources, seed=seed, **p), merge(name, base, sources, seed=seed, **p))


def params_for(name: str, k: int) -> dict[str, object]:
    """Parameters valid for every method, with densities < 1 so sparsifiers do work."""
    method = get_method(name)
    names = {p.name for p in method.params}
    out: dict[str, object] = {}
    if "weight" in names:
        out["weight"] = [0.6 + 0.3 * i for i in range(k)]
    if "density" in names:
        out["density"] = [0.5] * k
    if "t" in names:
        out["t"] = 0.3
    if "scale" in names:
        out["scale"] = 1.5
    if "select_topk" in names:
        out["select_topk"] = 0.5
    return out


def sources_for(name: str, sources: list[torch.Tensor]) -> list[torch.Tensor]:
    method = get_method(name)
    if method.max_sources is not None:
        sources = sources[: method.max_sources]
    return sources


@settings(max_examples=15, deadline=None)
@given(family(3, dyadic=True))
def test_deltas_view_and_sources_view_give_identical_results(fam: tuple) -> None:
    base, sources = fam
    for method in all_methods():
        chosen = sources_for(method.name, sources)
        params = params_for(method.name, len(chosen))
        deltas = [s - base for s in chosen]
        before = [x.clone() for x in (base, *chosen, *deltas)]
        full = method(MergeInputs("t", base, sources=chosen), params, seed=11)
        resident = method(MergeInputs("t", base, deltas=deltas), params, seed=11)
        assert torch.equal(full, resident), method.name
        for x, y in zip(before, (base, *chosen, *deltas), strict=True):
            assert torch.equal(x, y), f"{method.name} wrote into its inputs"


@settings(max_examples=15, deadline=None)
@given(family(3))
def test_deltas_view_matches_sources_view_for_any_floats(fam: tuple) -> None:
    # task-vector methods are bit-identical; weight-space ones see base + (θ − base), equal up to rounding
    base, sources = fam
    for method in all_methods():
        chosen = sources_for(method.name, sources)
        params = params_for(method.name, len(chosen))
        deltas = [s - base for s in chosen]
        full = method(MergeInputs("t", base, sources=chosen), params, seed=11)
        resident = method(MergeInputs("t", base, deltas=deltas), params, seed=11)
        if method.needs_base:
            assert torch.equal(full, resident), method.name
        else:
            torch.testing.assert_close(full, resident, atol=1e-5, rtol=1e-5)
