"""Search spaces: genome → recipe maps that are deterministic, total on their box, and plan on real checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evomerge.errors import ConfigError
from evomerge.io.checkpoint import Checkpoint
from evomerge.materialize.plan import model_key, plan_merge
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe
from evomerge.spaces import (
    DFSSpace,
    LayerSwapSpace,
    LiNeSSpace,
    PSSpace,
    Sources,
    build_space,
    dfs_stage,
    load_space,
)

PRESETS = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.fixture(scope="module")
def sources(family) -> Sources:
    base, experts = family
    return Sources(base=str(base), models=[str(e) for e in experts], labels=["math_a", "lang_b", "code_c"])


@pytest.fixture(scope="module")
def indexes(family) -> dict[str, Checkpoint]:
    base, experts = family
    return {model_key(p): Checkpoint.open(p) for p in [base, *experts]}


@pytest.fixture(scope="module")
def deep_family(tmp_path_factory) -> tuple[Path, list[Path]]:
    """24 layers: a depth where (i/(n-1))*(n-1) != i in floating point (layer 13)."""
    from evomerge.testing import tiny_llama_config, tiny_llama_family

    config = tiny_llama_config(hidden_size=8, intermediate_size=16, num_layers=24, num_heads=2, num_kv_heads=1,
                               vocab_size=16)
    return tiny_llama_family(tmp_path_factory.mktemp("deep"), n_experts=2, config=config)


ALL_CONFIGS = {
    "ps": {"kind": "ps"},
    "ps_methods_groups": {"kind": "ps", "method": ["dare_ties", "ties", "task_arithmetic", "della"],
                          "layer_groups": 2},
    "ps_breadcrumbs": {"kind": "ps", "method": "breadcrumbs_ties"},
    "ps_linear": {"kind": "ps", "method": "linear"},
    "ps_lambda": {"kind": "ps", "method": "ties", "search": ["weight", "density", "lambda"], "layer_groups": 2},
    "dfs": {"kind": "dfs"},
    "dfs_per_slot": {"kind": "dfs", "scaling": "per_slot", "repeats": 2},
    "lines": {"kind": "lines"},
    "lines_weights_ties": {"kind": "lines", "method": "ties", "search_weights": True, "fixed": {"density": 0.5}},
    "layer_swap": {"kind": "layer_swap"},
}


def check_plannable(recipe: Recipe, indexes: dict[str, Checkpoint]) -> None:
    """A per-tensor recipe plans; a data-flow one has hops that exist and an A that plans on its own."""
    from evomerge.recipe.layout import count_layers

    if recipe.layer_path:
        for hop in recipe.layer_path:
            assert hop.layer < count_layers(indexes[model_key(hop.model)].names)
        recipe = recipe.model_copy(update={"layer_path": None})
    assert plan_merge(recipe, indexes).tasks


def _random_genomes(space, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    corners = [space.lower.copy(), space.upper.copy()]
    return corners + [rng.uniform(space.lower, space.upper) for _ in range(n)]


# ---- presets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_every_preset_loads_builds_and_decodes_its_x0(preset, deep_family):
    base, experts = deep_family
    sources = Sources(base=str(base), models=[str(e) for e in experts])
    indexes = {model_key(p): Checkpoint.open(p) for p in [base, *experts]}
    space = build_space(load_space(PRESETS / preset), sources)
    assert space.dim == len(space.names) == len(space.lower) == len(space.upper)
    assert np.all(space.lower <= space.x0()) and np.all(space.x0() <= space.upper)
    recipe = space.decode(space.x0())
    check_plannable(recipe, indexes)
    json.dumps(space.describe())


# ---- the contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(ALL_CONFIGS))
def test_decoding_is_deterministic_and_leaves_the_genome_alone(key, sources):
    space = build_space(ALL_CONFIGS[key], sources)
    for g in _random_genomes(space, 5):
        before = g.copy()
        first = space.decode(g).to_json()
        assert space.decode(g.copy()).to_json() == first
        assert build_space(ALL_CONFIGS[key], sources).decode(g).to_json() == first  # no hidden state
        assert np.array_equal(g, before)


@pytest.mark.parametrize("key", list(ALL_CONFIGS))
def test_every_in_box_genome_decodes_to_a_recipe_that_plans(key, sources, indexes):
    space = build_space(ALL_CONFIGS[key], sources)
    for g in _random_genomes(space, 25, seed=1):
        recipe = space.decode(g)
        assert Recipe.from_json(recipe.to_json()) == recipe
        check_plannable(recipe, indexes)


@pytest.mark.parametrize("key", ["ps_methods_groups", "ps_breadcrumbs", "lines_weights_ties", "layer_swap"])
def test_decoded_recipes_materialize_to_finite_weights(key, sources, tmp_path):
    space = build_space(ALL_CONFIGS[key], sources)
    for i, g in enumerate(_random_genomes(space, 2, seed=2)):
        recipe = space.decode(g)
        merge_to_disk(recipe, tmp_path / f"m{i}")  # raises on NaN/inf or a parameter out of domain
        check_merged(tmp_path / f"m{i}", recipe, sources.base, list(sources.models))


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
                                    "breadcrumbs_ties", "della", "della_linear", "slerp"])
def test_the_corners_of_every_ps_box_merge(method, family, tmp_path):
    """Corners are where forbidden values live (all weights 0, density ± epsilon at the edge)."""
    base, experts = family
    n = 1 if method == "slerp" else 2
    space = build_space({"kind": "ps", "method": method}, Sources(base=str(base), models=[str(e) for e in experts[:n]]))
    for name, g in [("lower", space.lower), ("upper", space.upper), ("x0", space.x0())]:
        recipe = space.decode(g)
        merge_to_disk(recipe, tmp_path / name)
        check_merged(tmp_path / name, recipe, str(base), [str(e) for e in experts[:n]])


def check_merged(folder: Path, recipe: Recipe, base: str, models: list[str]) -> None:
    """The merge on disk loads strictly with plain transformers, is finite (weights and logits), has the base's
    tensors and shapes, and holds exactly what the in-place path (other loading and writing code) computes."""
    import torch
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.inplace import ResidentSources, materialize_into

    merged, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    state = merged.state_dict()
    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in state.values()), "non-finite merged weight"
    with torch.no_grad():
        assert torch.isfinite(merged(torch.arange(8).reshape(1, 8)).logits).all()
    resident = ResidentSources.from_paths(models, base)
    materialize_into(reference, recipe, resident)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, state[name]), f"{name}: the streamed merge differs from the in-place merge"


@pytest.mark.parametrize("key", list(ALL_CONFIGS))
def test_out_of_box_genomes_are_clipped_to_the_box(key, sources):
    space = build_space(ALL_CONFIGS[key], sources)
    far = space.upper + 10.0 * (space.upper - space.lower + 1)
    assert space.decode(far) == space.decode(space.upper)
    assert space.decode(-far) == space.decode(space.lower)


def test_a_genome_of_the_wrong_length_or_with_nan_is_a_config_error(sources):
    space = build_space({"kind": "ps"}, sources)
    with pytest.raises(ConfigError, match="6 dimensions"):
        space.decode(np.zeros(5))
    g = space.x0()
    g[1] = np.nan
    with pytest.raises(ConfigError, match=r"weight\[lang_b\]"):
        space.decode(g)


def test_describe_is_json_and_records_box_names_and_config(sources):
    space = build_space({"kind": "ps", "layer_groups": 2}, sources)
    d = json.loads(json.dumps(space.describe()))
    assert d["kind"] == "ps" and d["dim"] == 12 and d["names"] == space.names
    assert d["config"]["layer_groups"] == 2 and d["sources"]["labels"] == ["math_a", "lang_b", "code_c"]


# ---- dimension counts -------------------------------------------------------------------------
def test_ps_dimensions_are_params_times_sources_times_groups_plus_method(sources):
    s = 3
    assert build_space({"kind": "ps"}, sources).dim == 2 * s
    assert build_space({"kind": "ps", "layer_groups": 2}, sources).dim == 2 * s * 2
    assert build_space({"kind": "ps", "method": "task_arithmetic"}, sources).dim == s
    assert build_space({"kind": "ps", "method": "della"}, sources).dim == 3 * s  # weight, density, epsilon
    # union of the methods' parameters, plus one for the choice
    assert build_space({"kind": "ps", "method": ["dare_ties", "task_arithmetic"]}, sources).dim == 2 * s + 1
    assert build_space({"kind": "ps", "search": ["weight", "lambda"]}, sources).dim == s + 1
    one = Sources(base=sources.base, models=sources.models[:1])
    assert build_space({"kind": "ps", "method": "slerp"}, one).dim == 1


def test_ps_dimension_names_follow_param_source_group(sources):
    space = build_space({"kind": "ps", "layer_groups": 2}, sources)
    assert space.names[:4] == ["weight[math_a]@g0", "weight[math_a]@g1", "weight[lang_b]@g0", "weight[lang_b]@g1"]
    assert "density[code_c]@g1" in space.names
    assert build_space({"kind": "ps"}, sources).names == [
        "weight[math_a]", "weight[lang_b]", "weight[code_c]", "density[math_a]", "density[lang_b]", "density[code_c]"]


def test_dfs_dimensions_are_slots_plus_matrix_or_slots_plus_one(sources):
    two = Sources(base=None, models=sources.models[:2], labels=["a", "b"])
    M, r = 2 + 2, 3
    T = M * r
    assert build_space({"kind": "dfs"}, two).dim == T + M * M
    assert build_space({"kind": "dfs", "scaling": "per_slot"}, two).dim == 2 * T + 1
    three = build_space({"kind": "dfs", "repeats": 2}, sources)
    assert three.dim == 6 * 2 + 36 and three.T == 12


def test_dfs_dimension_counts_for_the_papers_7b_setting():
    srcs = Sources(base=None, models=["/m/a", "/m/b"], num_layers={"/m/a": 32, "/m/b": 32})
    space = build_space({"kind": "dfs"}, srcs)
    assert space.T == 192 and space.dim == 192 + 64 * 64


def test_lines_and_layer_swap_dimensions(sources):
    assert build_space({"kind": "lines"}, sources).names == ["alpha", "beta"]
    assert build_space({"kind": "lines", "search_weights": True}, sources).dim == 2 + 3
    assert build_space({"kind": "layer_swap"}, sources).names == ["k_bottom", "k_top"]


# ---- hand-checked decodes -----------------------------------------------------------------------
def test_ps_decodes_each_coordinate_into_its_source_parameter(sources):
    space = build_space({"kind": "ps", "seed": 7, "fixed": {"normalize": True}}, sources)
    recipe = space.decode(np.array([0.5, 1.5, 2.5, 0.3, 0.0, 1.0]))  # 2.5 and 0.0 are clipped
    base, (a, b, c) = sources.base, sources.models
    assert recipe.to_dict() == {
        "models": [{"model": a, "parameters": {"weight": 0.5, "density": 0.3}},
                   {"model": b, "parameters": {"weight": 1.5, "density": 0.01}},
                   {"model": c, "parameters": {"weight": 2.0, "density": 1.0}}],
        "merge_method": "dare_ties", "base_model": base, "parameters": {"normalize": True}, "seed": 7,
        "groups": [],
    }


def test_ps_method_dimension_cuts_zero_one_into_equal_intervals(sources):
    space = build_space({"kind": "ps", "method": ["dare_ties", "ties", "task_arithmetic"]}, sources)
    assert space.names[0] == "method"
    g = space.x0()
    picks = {}
    for x in (0.0, 0.33, 0.34, 0.66, 0.67, 1.0):
        g[0] = x
        picks[x] = space.decode(g).merge_method
    assert picks == {0.0: "dare_ties", 0.33: "dare_ties", 0.34: "ties", 0.66: "ties", 0.67: "task_arithmetic",
                     1.0: "task_arithmetic"}
    g[0] = 0.9  # task_arithmetic has no density: those dimensions are ignored
    assert all("density" not in (m.parameters or {}) for m in space.decode(g).models or [])
    assert space.decode(space.x0()).merge_method == "dare_ties"


def test_ps_x0_is_the_middle_of_every_range(sources):
    space = build_space({"kind": "ps", "ranges": {"weight": [0, 2], "density": [0.2, 0.6]}}, sources)
    assert space.x0().tolist() == [1.0] * 3 + [0.4] * 3


def test_ps_layer_groups_decode_to_one_exact_value_per_layer(sources):
    space = build_space({"kind": "ps", "method": "task_arithmetic", "layer_groups": 2}, sources)
    recipe = space.decode(np.array([0.25, 1.75, 1.0, 1.0, 0.5, 0.6]))
    weight = recipe.models[0].parameters["weight"]  # type: ignore[index]
    # outside the layers (embeddings, final norm, head): the first group's value, as a plain number
    assert [(c.filter, c.value) for c in weight] == [("model.layers.0.", 0.25), ("model.layers.1.", 1.75),
                                                      (None, 0.25)]
    assert recipe.models[1].parameters["weight"] == 1.0  # type: ignore[index]  (equal groups collapse)


def test_ps_layer_groups_give_every_layer_its_groups_value_when_planned(deep_family):
    """Planned on 24 real layers: each tensor gets its group's value bit for bit (layer 13 included)."""
    base, experts = deep_family
    srcs = Sources(base=str(base), models=[str(e) for e in experts])
    space = build_space({"kind": "ps", "method": "ties", "layer_groups": 5}, srcs)
    rng = np.random.default_rng(3)
    genome = rng.uniform(space.lower, space.upper)
    plan = plan_merge(space.decode(genome), {model_key(p): Checkpoint.open(p) for p in [base, *experts]})
    by_name = dict(zip(space.names, genome, strict=True))
    layers_seen = set()
    for task in plan.tasks:
        g = 0 if task.layer is None else task.layer * 5 // 24  # embeddings, final norm, head: the first group
        for k, label in enumerate(srcs.labels or []):
            assert task.params["weight"][k] == by_name[f"weight[{label}]@g{g}"], task.out_name
            assert task.params["density"][k] == by_name[f"density[{label}]@g{g}"], task.out_name
        layers_seen.add(task.layer)
    assert layers_seen == {None, *range(24)}
    assert [layer * 5 // 24 for layer in (0, 4, 5, 9, 10, 23)] == [0, 0, 1, 1, 2, 4]


def test_della_epsilon_is_kept_inside_the_density_band(sources, tmp_path):
    space = build_space({"kind": "ps", "method": "della", "ranges": {"density": [0.05, 0.95],
                                                                      "epsilon": [0.0, 0.5]}}, sources)
    g = space.upper.copy()
    g[3:6] = 0.05  # density at its minimum, epsilon at its maximum
    recipe = space.decode(g)
    for spec in recipe.models or []:
        assert spec.parameters["epsilon"] < spec.parameters["density"]  # type: ignore[index,operator]
    merge_to_disk(recipe, tmp_path / "out")


def test_lines_lambda_is_alpha_plus_beta_depth_in_layers_and_alpha_outside(deep_family):
    base, experts = deep_family
    srcs = Sources(base=str(base), models=[str(e) for e in experts])
    space = build_space({"kind": "lines"}, srcs)
    alpha, beta = 0.3, 1.2
    plan = plan_merge(space.decode(np.array([alpha, beta])),
                      {model_key(p): Checkpoint.open(p) for p in [base, *experts]})
    from evomerge.merge.methods.lines import lines_factor

    for task in plan.tasks:
        want = alpha if task.layer is None else lines_factor(task.layer, 24, alpha, beta)
        assert task.params["lambda"] == pytest.approx(want, abs=1e-12), task.out_name
        assert task.params["weight"] == [1.0, 1.0]


def test_layer_swap_takes_bottom_and_top_from_b_and_the_middle_from_a(tmp_path):
    srcs = Sources(base=None, models=["/m/math", "/m/lang"], num_layers={"/m/math": 8, "/m/lang": 8})
    space = build_space({"kind": "layer_swap", "expert_a": "math", "expert_b": "lang"}, srcs)
    assert isinstance(space, LayerSwapSpace)
    assert space.lower.tolist() == [-0.5, -0.5] and space.upper.tolist() == [4.5, 4.5]
    recipe = space.decode(np.array([2.4, 0.5]))  # rounds to 2 and 1
    assert [(s.sources[0].model, s.sources[0].layer_range) for s in recipe.slices or []] == [
        ("/m/lang", (0, 2)), ("/m/math", (2, 7)), ("/m/lang", (7, 8))]
    assert [(s.sources[0].model, s.sources[0].layer_range) for s in space.decode(np.array([0, 0])).slices or []] \
        == [("/m/math", (0, 8))]
    wide = build_space({"kind": "layer_swap", "k_bottom": [0, 8], "k_top": [0, 8]}, srcs)
    assert wide.ks(np.array([6, 5])) == (6, 2)  # k_top cut so the stack keeps 8 layers


def test_layer_swap_recipe_plans_with_the_experts_layers(sources, indexes):
    space = build_space({"kind": "layer_swap", "expert_a": "math_a", "expert_b": "lang_b"}, sources)
    plan = plan_merge(space.decode(np.array([1, 1])), indexes)  # 2 layers: bottom and top from B
    a, b = (model_key(m) for m in sources.models[:2])
    assert {t.sources[0].model for t in plan.tasks} == {b}
    plan = plan_merge(space.decode(np.array([1, 0])), indexes)
    layer1 = [t for t in plan.tasks if t.layer == 1]
    assert {t.sources[0].model for t in layer1} == {a}


def test_dfs_x0_decodes_to_model_a_itself(sources):
    space = build_space({"kind": "dfs"}, sources)
    recipe = space.decode(space.x0())
    a = sources.models[0]
    assert recipe.base_model == a
    assert [(h.model, h.layer, h.scale) for h in recipe.layer_path or []] == [(a, 0, 1.0), (a, 1, 1.0)]


def test_dfs_decodes_indicator_and_scaling_matrix_by_hand():
    srcs = Sources(base=None, models=["/m/A", "/m/B"], num_layers={"/m/A": 3, "/m/B": 2})
    space = build_space({"kind": "dfs", "repeats": 2}, srcs)
    assert isinstance(space, DFSSpace)
    M, T = 5, 10  # layers A0 A1 A2 B0 B1, twice
    assert space.names[:5] == ["I[A.0]@r1", "I[A.1]@r1", "I[A.2]@r1", "I[B.0]@r1", "I[B.1]@r1"]
    assert space.names[T + 1 * M + 3] == "W[A.1->B.0]"
    g = np.full(space.dim, -1.0)
    g[1] = 0.2  # A1 (rep 1)
    g[3] = 0.9  # B0 (rep 1)
    g[5 + 3] = 0.1  # B0 again (rep 2)
    W = np.full((M, M), 1.0)
    W[0, 1] = 0.5  # A0 -> A1
    W[1, 3] = 1.5  # A1 -> B0
    W[3, 3] = 0.25  # B0 -> B0
    W[3, 2] = 2.0  # B0 -> A2 (the pinned end)
    g[T:] = W.reshape(-1)
    hops = [(h.model, h.layer, h.scale) for h in space.decode(g).layer_path or []]
    assert hops == [("/m/A", 0, 1.0), ("/m/A", 1, 0.5), ("/m/B", 0, 1.5), ("/m/B", 0, 0.25), ("/m/A", 2, 2.0)]


def test_dfs_per_slot_scales_and_the_end_scale():
    srcs = Sources(base=None, models=["/m/A", "/m/B"], num_layers={"/m/A": 2, "/m/B": 2})
    space = build_space({"kind": "dfs", "scaling": "per_slot", "repeats": 1}, srcs)
    assert space.names[4:] == ["s[A.0]@r1", "s[A.1]@r1", "s[B.0]@r1", "s[B.1]@r1", "s[end]"]
    g = np.array([1, -1, -1, 1, 0.3, 0.4, 0.5, 0.6, 0.7])
    hops = [(h.model, h.layer, h.scale) for h in space.decode(g).layer_path or []]
    assert hops == [("/m/A", 0, 1.0), ("/m/A", 0, 0.3), ("/m/B", 1, 0.6), ("/m/A", 1, 0.7)]


def test_dfs_scales_stay_positive_on_the_whole_box(sources):
    space = build_space({"kind": "dfs"}, sources)
    for g in _random_genomes(space, 10):
        assert all(h.scale >= 0.1 for h in space.decode(g).layer_path or [])


def test_ps_dfs_stage_two_uses_the_ps_winner_folder_as_model_a(sources, tmp_path):
    config = load_space(PRESETS / "ps_dfs.yaml")
    stage1 = build_space(config, sources)
    assert isinstance(stage1, PSSpace)
    winner = tmp_path / "winner"
    merge_to_disk(stage1.decode(stage1.x0()), winner)
    stage2 = dfs_stage(config, sources, winner)
    assert stage2.models == [str(winner), sources.models[1]]
    assert stage2.names[0] == "I[ps.0]@r1" and "I[lang_b.1]@r3" in stage2.names
    hops = stage2.decode(stage2.x0()).layer_path or []
    assert [(h.model, h.layer) for h in hops] == [(str(winner), 0), (str(winner), 1)]


# ---- config errors name the key -------------------------------------------------------------------
@pytest.mark.parametrize(("config", "key"), [
    ({"kind": "ps", "layer_groups": 3}, "layer_groups"),
    ({"kind": "ps", "layer_groups": 0}, "layer_groups"),
    ({"kind": "ps", "ranges": {"density": [0.0, 1.0]}}, "ranges.density"),
    ({"kind": "ps", "ranges": {"density": [0.5, 0.1]}}, "ranges.density"),
    ({"kind": "ps", "ranges": {"lambda": [0.5, 1.0]}}, "ranges.lambda"),
    ({"kind": "ps", "init": {"weight": 5.0}}, "init.weight"),
    ({"kind": "ps", "search": ["weight", "nope"]}, "search[1]"),
    ({"kind": "ps", "search": ["normalize"]}, "search[0]"),
    ({"kind": "ps", "search": ["density"]}, "fixed"),  # weight is required and neither searched nor fixed
    ({"kind": "ps", "fixed": {"gamma": 0.1}}, "fixed.gamma"),
    ({"kind": "ps", "method": "frobnicate"}, "method"),
    ({"kind": "ps", "method": "model_stock"}, "search"),  # nothing numeric to search
    ({"kind": "ps", "method": "slerp"}, "method"),  # three sources
    ({"kind": "ps", "colour": "red"}, "colour"),
    ({"kind": "dfs", "scale_range": [0.0, 2.0]}, "scale_range"),
    ({"kind": "dfs", "models": ["math_a", "nope"]}, "models[1]"),
    ({"kind": "dfs", "repeats": 0}, "repeats"),
    ({"kind": "lines", "method": "linear"}, "method"),
    ({"kind": "lines", "fixed": {"lambda": 2.0}}, "fixed.lambda"),
    ({"kind": "layer_swap", "expert_b": 0}, "expert_b"),
    ({"kind": "layer_swap", "k_top": [0, 9]}, "k_top"),
    ({"kind": "ps_dfs", "b": ["nope"]}, "b[0]"),
    ({"kind": "warp"}, "kind"),
    ({}, "kind"),
])
def test_config_errors_name_the_key(config, key, sources):
    with pytest.raises(ConfigError) as info:
        build_space(config, sources)
    assert key in str(info.value)


def test_load_space_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ps\nlayer_groups: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*layer_groups"):
        load_space(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")


def test_sources_default_labels_are_unique_folder_names(tmp_path):
    srcs = Sources(base=None, models=["/x/expert", "/y/expert", "/z/other"], num_layers={})
    assert srcs.labels == ["expert", "expert_2", "other"]
    assert srcs.resolve("expert_2", key="k") == "/y/expert" and srcs.resolve(2, key="k") == "/z/other"
    with pytest.raises(ConfigError, match="sources.models"):
        Sources(base=None, models=["/a", "/a"])


def test_space_classes_match_their_kinds(sources):
    for key, cls in [("ps", PSSpace), ("dfs", DFSSpace), ("lines", LiNeSSpace), ("layer_swap", LayerSwapSpace)]:
        space = build_space(ALL_CONFIGS[key], sources)
        assert isinstance(space, cls) and space.kind == ALL_CONFIGS[key]["kind"]

