"""Every architecture transformers loads: merges load strictly, in place equals streaming, a PS search reproduces.

Tiny random families (base + 3 noisy fine-tunes) of each architecture are built
once per session from transformers' config classes, no downloads. The same
checks print the README's table (``python bench/arch_matrix.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.errors import ConfigError, MergeError
from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.materialize.load_map import LoadMap
from evomerge.recipe.model import Recipe
from evomerge.testing_archs import (
    MERGE_METHODS,
    available_archs,
    check_dataflow,
    check_in_place,
    check_passthrough,
    check_ps_search,
    check_streaming_merge,
    load_strictly,
    merge_recipe,
    tiny_family,
    write_perplexity_task,
)

ARCHS = available_archs()


@pytest.fixture(scope="session")
def arch_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("archs")


@pytest.fixture(scope="session")
def families(arch_root) -> dict[str, tuple[Path, list[Path]]]:
    return {arch: tiny_family(arch, arch_root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def perplexity_task(arch_root) -> Path:
    return write_perplexity_task(arch_root)


def test_the_matrix_covers_the_architectures_users_bring():
    for arch in ("llama", "llama-tied", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "gpt2", "gpt_neox",
                 "mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):
        assert arch in ARCHS, arch


@pytest.mark.parametrize("arch", ARCHS)
def test_every_merge_loads_strictly_and_in_place_equals_it_bit_for_bit(arch, families, tmp_path):
    base, experts = families[arch]
    resident = ResidentSources.from_paths(experts, base)
    model = load_strictly(base)
    for method in MERGE_METHODS:
        reloaded = check_streaming_merge(method, base, experts, tmp_path / method)
        check_in_place(method, base, experts, reloaded, model, resident)


# By default the architectures whose keys transformers converts, and tied embeddings; the rest under -m slow.
SEARCHED = ("gpt_neox", "mixtral", "qwen3_moe", "llama-tied")


@pytest.mark.parametrize("arch", SEARCHED)
def test_ps_search_in_place_is_reproduced_by_the_exported_model(arch, families, perplexity_task, tmp_path):
    base, experts = families[arch]
    check_ps_search(base, experts, perplexity_task, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in SEARCHED])
def test_ps_search_in_place_on_the_other_architectures(arch, families, perplexity_task, tmp_path):
    base, experts = families[arch]
    check_ps_search(base, experts, perplexity_task, tmp_path)


def test_moe_experts_are_merged_one_by_one_then_fused_as_transformers_fuses_them(families):
    """Per expert TIES (its own trim and sign election), then stacked: not one election over the fused tensor."""
    from evomerge.merge.base import MergeInputs
    from evomerge.merge.registry import get_method

    base, experts = families["mixtral"]
    recipe = Recipe.model_validate(merge_recipe("ties", base, experts))
    model = load_strictly(base)
    materialize_into(model, recipe, ResidentSources.from_paths(experts, base))
    from safetensors.torch import load_file

    def w(folder: Path, name: str) -> torch.Tensor:
        return load_file(folder / "model.safetensors")[name]

    expected = []
    for e in range(4):
        for proj in ("w1", "w3"):
            name = f"model.layers.1.block_sparse_moe.experts.{e}.{proj}.weight"
            b = w(base, name)
            inputs = MergeInputs(name, b, deltas=[w(x, name) - b for x in experts])
            expected.append((e, proj, get_method("ties")(inputs, {"weight": [0.9] * 3, "density": [0.5] * 3})))
    fused = model.model.layers[1].mlp.experts.gate_up_proj.detach()
    for e in range(4):
        gate = next(t for i, p, t in expected if i == e and p == "w1")
        up = next(t for i, p, t in expected if i == e and p == "w3")
        assert torch.equal(fused[e], torch.cat([gate, up])), e


def test_the_mapping_is_verified_once_and_names_what_it_cannot_cover(families):
    base, _ = families["mixtral"]
    model = load_strictly(base)
    from evomerge.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(base)
    layout = [(n, ckpt.info(n).shape) for n in ckpt.names]
    LoadMap(model, layout)  # the full checkpoint covers every parameter
    dropped = [(n, s) for n, s in layout if ".experts.3." not in n]
    with pytest.raises(MergeError, match=r"experts.gate_up_proj.*shape \(3, 128, 32\).*\(4, 128, 32\)"):
        LoadMap(model, dropped)
    with pytest.raises(MergeError, match=r"keep their initial values.*model.norm.weight"):
        LoadMap(model, [(n, s) for n, s in layout if n != "model.norm.weight"])
    with pytest.raises(MergeError, match=r"no parameter for 1 checkpoint tensor.*model.extra.weight"):
        LoadMap(model, [*layout, ("model.extra.weight", (4,))])


def test_tied_parameters_are_written_once(families):
    base, _ = families["llama-tied"]
    model = load_strictly(base)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    from evomerge.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(base)
    layout = [(n, ckpt.info(n).shape) for n in ckpt.names]
    assert "lm_head.weight" not in ckpt.names
    LoadMap(model, layout)
    with pytest.raises(MergeError, match=r"written 2 times.*tied"):
        LoadMap(model, [*layout, ("lm_head.weight", ckpt.info("model.embed_tokens.weight").shape)])


def test_a_worker_refuses_a_model_the_sources_do_not_cover_before_the_search(families, perplexity_task):
    """The worker maps the template checkpoint onto its model at start: a mismatch fails there, not per trial."""
    from evomerge.exec.worker import EvalWorker
    from evomerge.materialize import load_map

    base, experts = families["gpt_neox"]
    original = load_map._conversion_api

    def without_conversions():  # as if transformers had no embed_out -> lm_head rename
        api = original()
        real = api["mapping"]
        api["mapping"] = lambda model: [c for c in real(model) if "embed_out" not in str(c.source_patterns)]
        return api

    load_map._conversion_api = without_conversions
    try:
        with pytest.raises(MergeError, match=r"no parameter for 1 checkpoint tensor.*embed_out.weight"):
            EvalWorker(str(base), [str(e) for e in experts], [])
    finally:
        load_map._conversion_api = original


def test_a_candidate_that_failed_mid_group_leaves_nothing_for_the_next(families, tmp_path):
    """Half of a fused group from a failed candidate must not complete the next candidate's group."""
    from evomerge.materialize.load_map import load_map_for

    base, experts = families["qwen3_moe"]
    resident = ResidentSources.from_paths(experts, base)
    model = load_strictly(base)
    recipe = Recipe.model_validate(merge_recipe("task_arithmetic", base, experts))
    plan = materialize_into(model, recipe, resident)
    landing = load_map_for(model, plan.layout())
    for task in plan.tasks:  # a failed candidate: garbage in the first half of one layer's experts
        if ".layers.1.mlp.experts." in task.out_name and ".experts.2." not in task.out_name:
            landing.write(task.out_name, torch.full(task.shape, 7.0))
    materialize_into(model, recipe, resident)
    reloaded = check_streaming_merge("task_arithmetic", base, experts, tmp_path / "out")
    got = model.state_dict()
    assert all(torch.equal(got[n], t) for n, t in reloaded.items())


def test_bf16_sources_are_scored_as_the_bf16_checkpoint_transformers_loads(tmp_path):
    """A float32 resident model gets the merge rounded to the checkpoint's dtype, as the export stores it."""
    from evomerge.testing import tiny_llama_family

    base, experts = tiny_llama_family(tmp_path / "bf16", dtype=torch.bfloat16)
    recipe = Recipe.model_validate(merge_recipe("ties", base, experts))
    model = load_strictly(base)
    materialize_into(model, recipe, ResidentSources.from_paths(experts, base))
    reloaded = check_streaming_merge("ties", base, experts, tmp_path / "out")
    got = model.state_dict()
    assert all(torch.equal(got[n], t) for n, t in reloaded.items())


@pytest.fixture
def split_and_transposed_llama(tmp_path):
    """A Llama family stored the way another framework might: fused gate_up, transposed q_proj.

    transformers is taught to load it with its public ``register_checkpoint_conversion_mapping`` (a Chunk
    and a Transpose converter), exactly as a new architecture's mapping arrives in a release; the
    registration is undone afterwards.
    """
    from safetensors.torch import load_file, save_file
    from transformers import conversion_mapping as cm
    from transformers.core_model_loading import Chunk, Transpose, WeightConverter

    from evomerge.testing import tiny_llama_family

    base, experts = tiny_llama_family(tmp_path / "llama")
    for folder in (base, *experts):
        tensors = load_file(folder / "model.safetensors")
        out = {}
        for name, t in tensors.items():
            if name.endswith("mlp.gate_proj.weight"):
                up = tensors[name.replace("gate_proj", "up_proj")]
                out[name.replace("gate_proj", "gate_up_fused")] = torch.cat([t, up]).contiguous()
            elif name.endswith("mlp.up_proj.weight"):
                continue
            elif name.endswith("self_attn.q_proj.weight"):
                out[name.replace("q_proj", "q_proj_t")] = t.T.contiguous()
            else:
                out[name] = t
        save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    key = "LlamaForCausalLM"
    mapping = [
        WeightConverter("mlp.gate_up_fused.weight", ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
                        operations=[Chunk(dim=0)]),
        WeightConverter("self_attn.q_proj_t.weight", "self_attn.q_proj.weight", operations=[Transpose(0, 1)]),
    ]
    cm.register_checkpoint_conversion_mapping(key, mapping, overwrite=True)
    try:
        yield base, experts
    finally:
        cm._checkpoint_conversion_mapping_cache.pop(key, None)
        cm.USER_REGISTERED_MAPPINGS.discard(key)


def test_split_and_transposed_checkpoints_land_as_transformers_converts_them(split_and_transposed_llama, tmp_path):
    base, experts = split_and_transposed_llama
    model = load_strictly(base)
    resident = ResidentSources.from_paths(experts, base)
    for method in ("ties", "dare_ties"):
        reloaded = check_streaming_merge(method, base, experts, tmp_path / method)
        check_in_place(method, base, experts, reloaded, model, resident)
    from evomerge.io.checkpoint import Checkpoint

    ckpt = Checkpoint.open(base)
    summary = LoadMap(model, [(n, ckpt.info(n).shape) for n in ckpt.names]).summary()
    assert "4 converted into 6" in summary, summary  # 2 layers x (gate_up -> 2, q_proj_t -> 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_passthrough_layer_stack_loads_strictly_and_its_added_layer_is_the_sources(arch, families, tmp_path):
    base, experts = families[arch]
    assert check_passthrough(base, experts, tmp_path / "stack") == families_layers(base) + 1


def families_layers(base: Path) -> int:
    from evomerge.io.checkpoint import Checkpoint

    return Checkpoint.open(base).num_layers


# data flow: where the fold is exact the folded model gives the routed logits; elsewhere a refusal with its reason
DATAFLOW_DEFAULT = ("llama-tied", "mixtral")
DATAFLOW_REFUSED = {"gpt2": "not a '.layers' list"}


@pytest.mark.parametrize("arch", DATAFLOW_DEFAULT)
def test_data_flow_folds_to_the_routed_logits(arch, families, tmp_path):
    base, experts = families[arch]
    assert float(check_dataflow(base, experts, tmp_path / "folded")) < 1e-2


@pytest.mark.parametrize("arch", sorted(DATAFLOW_REFUSED))
def test_data_flow_is_refused_with_the_reason_where_the_fold_is_not_exact(arch, families, tmp_path):
    base, experts = families[arch]
    with pytest.raises(ConfigError, match=DATAFLOW_REFUSED[arch]):
        check_dataflow(base, experts, tmp_path / "folded")


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in DATAFLOW_DEFAULT and a not in DATAFLOW_REFUSED])
def test_data_flow_on_the_other_architectures_folds_or_is_refused_by_name(arch, families, tmp_path):
    base, experts = families[arch]
    try:
        assert float(check_dataflow(base, experts, tmp_path / "folded")) < 1e-2
    except ConfigError as exc:
        assert "data-flow merges are not supported for model_type" in str(exc)
