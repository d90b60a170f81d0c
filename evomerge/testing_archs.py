"""Tiny random model families of many architectures, built from transformers' config classes (no downloads).

Each family is a base and experts that are the base plus small Gaussian noise
(the shape of real fine-tunes), saved with ``save_pretrained`` (so the
checkpoints carry the names transformers writes, e.g. Mixtral's per-expert
``block_sparse_moe.experts.N.w1``) and a small word-level tokenizer, plus a
perplexity task over texts in that vocabulary. Used by the architecture test
matrix and ``bench/arch_matrix.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB = 64
_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_COMMON = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 128, **_TOKENS}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


def _config(class_name: str, **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers

        return getattr(transformers, class_name)(**kwargs)

    return make


# name -> (config factory, transformers config class name); README order.
ARCHS: dict[str, Callable[[], Any]] = {
    "llama": _config("LlamaConfig", **_COMMON),
    "llama-tied": _config("LlamaConfig", **_COMMON, tie_word_embeddings=True),
    "mistral": _config("MistralConfig", **_COMMON),
    "qwen2": _config("Qwen2Config", **_COMMON),
    "qwen3": _config("Qwen3Config", **_COMMON, head_dim=8),
    "gemma2": _config("Gemma2Config", **_COMMON, head_dim=8),
    "phi3": _config("Phi3Config", **_COMMON),
    "gpt2": _config("GPT2Config", n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128, **_TOKENS),
    "gpt_neox": _config("GPTNeoXConfig", **{k: v for k, v in _COMMON.items() if k != "num_key_value_heads"}),
    "mixtral": _config("MixtralConfig", **_COMMON, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": _config("Qwen2MoeConfig", **_COMMON, **_MOE, shared_expert_intermediate_size=32),
    "qwen3_moe": _config("Qwen3MoeConfig", **_COMMON, **_MOE, head_dim=8),
    "olmoe": _config("OlmoeConfig", **_COMMON, num_experts=4, num_experts_per_tok=2),
}


def available_archs() -> list[str]:
    """The architectures of ARCHS this transformers can build (OLMoE and the MoE configs are recent)."""
    out = []
    for name, make in ARCHS.items():
        try:
            make()
        except (AttributeError, TypeError):
            continue
        out.append(name)
    return out


def _words() -> list[str]:
    return [f"w{i}" for i in range(30)]  # 4 special + 30 words + 20 digit tokens = 54 <= VOCAB


def save_tokenizer(out: Path) -> None:
    from evomerge.zoo.tokenizer import build_tokenizer, to_transformers

    to_transformers(build_tokenizer(_words())).save_pretrained(out)


def write_perplexity_task(root: str | Path, *, n: int = 6, seed: int = 0) -> Path:
    """A perplexity task (train and test splits of ``n`` short texts) in the families' vocabulary."""
    root = Path(root)
    rng = random.Random(seed)
    words = _words()
    for split in ("train", "test"):
        with (root / f"texts.{split}.jsonl").open("w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(12))}) + "\n")
    task = root / "perplexity.yaml"
    task.write_text("name: ppl\nkind: perplexity\nbatch_size: 8\n"
                    "data: {train: texts.train.jsonl, test: texts.test.jsonl}\n")
    return task


def save_random_model(config: Any, folder: Path, seed: int, *, noise: float = 0.05,
                      embedding_scale: float = 1.0) -> Path:
    """A model built from ``config`` with every parameter perturbed (non-trivial norms and biases, so a layer
    mix-up shows in the logits), its embeddings scaled by ``embedding_scale``, saved to ``folder``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
        model.get_input_embeddings().weight.mul_(embedding_scale)
    model.save_pretrained(folder)
    return folder


def save_model(model: Any, out: Path) -> Path:
    model.save_pretrained(out)
    save_tokenizer(out)
    return out


def tiny_family(arch: str, root: str | Path, *, n_experts: int = 3, seed: int = 0, delta_scale: float = 0.05,
                config_overrides: dict[str, Any] | None = None) -> tuple[Path, list[Path]]:
    """A base of architecture ``arch`` and ``n_experts`` noisy fine-tunes of it, under ``root``."""
    from transformers import AutoModelForCausalLM

    root = Path(root)
    config = ARCHS[arch]()
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    base = save_model(model, root / "base")
    experts = []
    for k in range(n_experts):
        expert = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed + 1 + k)
        with torch.no_grad():
            for param in expert.parameters():
                noise = torch.randn(param.shape, generator=gen)
                param.add_(noise * delta_scale * (param.std() + 1e-3))
        experts.append(save_model(expert, root / f"expert{k}"))
    return base, experts


# ---------------------------------------------------------------------------------------------- checks
# One implementation for the test matrix (tests/materialize/test_arch_matrix.py) and its README table
# (bench/arch_matrix.py): each check raises with the tensor or score at fault, or returns quietly.

MERGE_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "slerp", "model_stock")


def merge_recipe(method: str, base: Path, experts: list[Path]) -> dict[str, Any]:
    """A recipe of ``method`` over the family, parameters off their defaults so every input matters."""
    models = [str(e) for e in experts]
    if method == "linear":
        return {"merge_method": "linear", "models": [{"model": m, "parameters": {"weight": w}}
                                                     for m, w in zip(models, (1.0, 0.6, 0.3), strict=False)]}
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.3},
                "models": [{"model": str(base)}, {"model": models[0]}]}
    params: dict[str, dict[str, Any]] = {
        "task_arithmetic": {"weight": 0.7}, "ties": {"weight": 0.9, "density": 0.5},
        "dare_ties": {"weight": 0.9, "density": 0.6}, "model_stock": {},
    }
    recipe: dict[str, Any] = {"merge_method": method, "base_model": str(base),
                              "models": [{"model": m, "parameters": params[method] or None} for m in models]}
    if method == "dare_ties":
        recipe["seed"] = 7
    return recipe


def load_strictly(folder: Path) -> Any:
    """The folder loaded by plain transformers, refusing missing, unexpected or mismatched keys."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    bad = {k: sorted(v) if not isinstance(v, dict) else v for k, v in info.items() if v}
    if bad:
        raise AssertionError(f"{folder}: transformers does not load it cleanly: {bad}")
    return model.eval()


def check_streaming_merge(method: str, base: Path, experts: list[Path], out: Path) -> dict[str, torch.Tensor]:
    """``evomerge merge``'s streaming merge to ``out``, loaded strictly by transformers: its state dict."""
    from evomerge.materialize.streaming import merge_to_disk
    from evomerge.recipe.model import Recipe

    merge_to_disk(Recipe.model_validate(merge_recipe(method, base, experts)), out)
    return load_strictly(out).state_dict()


def check_in_place(method: str, base: Path, experts: list[Path], reloaded: dict[str, torch.Tensor], model: Any,
                   resident: Any) -> None:
    """The in-place merge into ``model`` equals the reloaded streaming merge, bit for bit."""
    from evomerge.materialize.inplace import materialize_into
    from evomerge.recipe.model import Recipe

    materialize_into(model, Recipe.model_validate(merge_recipe(method, base, experts)), resident)
    got = model.state_dict()
    for name, tensor in reloaded.items():
        if not torch.equal(got[name], tensor):
            raise AssertionError(f"{method}: in-place '{name}' differs from the streaming merge reloaded by "
                                 f"transformers (max |diff| {float((got[name] - tensor).abs().max()):.3g})")


def check_ps_search(base: Path, experts: list[Path], task: Path, root: Path, *, evaluations: int = 3) -> float:
    """A PS search in place; the exported best model, loaded by plain transformers, reproduces its scores.

    Returns the best trial's train score. Raises when the search failed a trial or the exported
    model's train or test score differs from the recorded one by any amount.
    """
    from transformers import AutoTokenizer

    from evomerge.export import export_run
    from evomerge.fitness import evaluate_all, load_task
    from evomerge.study.config import RunConfig
    from evomerge.study.study import Study

    cfg = RunConfig.from_dict({
        "name": "arch", "output": str(root / "run"),
        "sources": {"base": str(base), "models": [str(e) for e in experts]},
        "space": {"kind": "ps", "method": "dare_ties"}, "strategy": {"name": "random"},
        "objectives": [{"task": str(task)}], "budget": {"evaluations": evaluations}, "seed": 1,
        "test_split": "test", "runner": {"type": "local", "threads": 1},
    })
    study = Study.create(cfg)
    try:
        summary = study.run()
        results = study.finalize()
        records = {r.number: r for r in study.store.records()}
    finally:
        study.close()
    failed = [r for r in records.values() if r.status != "ok"]
    if failed or summary.best_number is None:
        raise AssertionError(f"PS search: {len(failed)} failed trial(s): {failed[0].error if failed else ''}")
    best = summary.best_number
    report = export_run(root / "run", root / "export", trials=[best], checkpoints=True)
    folder = report.trials[0].folder / "model"
    model, tokenizer = load_strictly(folder), AutoTokenizer.from_pretrained(folder)
    tasks = [load_task(task)]
    with torch.inference_mode():
        train = evaluate_all(tasks, model, tokenizer, split="train")
        test = evaluate_all(tasks, model, tokenizer, split="test")
    for split, got, recorded in (("train", train, records[best].objectives),
                                 ("test", test, results["trials"][str(best)]["objectives"])):
        for name, res in got.items():
            if res.objectives[name] != recorded[name]:
                raise AssertionError(f"trial {best}: exported model scores {res.objectives[name]!r} on {split}, "
                                     f"the search recorded {recorded[name]!r}")
    return float(records[best].objectives[tasks[0].objective_name])


def check_passthrough(base: Path, experts: list[Path], out: Path) -> int:
    """A layer stack (mergekit passthrough slices: the base's layers, then the expert's last layer again) loads
    strictly with a config that says so, and its added layer holds the expert's weights bit for bit.

    Returns the output's layer count.
    """
    from safetensors.torch import load_file

    from evomerge.io.checkpoint import Checkpoint
    from evomerge.materialize.streaming import merge_to_disk
    from evomerge.recipe.layout import place_of
    from evomerge.recipe.model import Recipe

    n = Checkpoint.open(base).num_layers
    recipe = Recipe.model_validate({"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(base), "layer_range": [0, n]}]},
        {"sources": [{"model": str(experts[0]), "layer_range": [n - 1, n]}]}]})
    merge_to_disk(recipe, out)
    model = load_strictly(out)
    layers = model.config.num_hidden_layers
    if layers != n + 1:
        raise AssertionError(f"passthrough of {n} + 1 layers: the config says {layers}")
    written = {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}
    source = {k: v for f in sorted(Path(experts[0]).glob("*.safetensors")) for k, v in load_file(f).items()}
    added = [k for k in written if place_of(k).layer == n]
    if not added:
        raise AssertionError(f"passthrough: no tensor of layer {n} was written")
    for name in added:
        want = source[name.replace(f".{n}.", f".{n - 1}.", 1)]
        if not torch.equal(written[name], want):
            raise AssertionError(f"passthrough: '{name}' is not the expert's layer {n - 1} tensor")
    return layers


def check_dataflow(base: Path, experts: list[Path], out: Path) -> str:
    """A data-flow layer path (base's layers with an expert's layer repeated, scaled hops) folded into a plain
    checkpoint: the folded model, loaded strictly, gives the routed model's logits. Returns the largest logit
    difference relative to the largest logit; raises ConfigError where the architecture is refused (its reason).
    """
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.io.json_object import read_json_object
    from evomerge.materialize.dataflow import check_foldable, fold_layer_path_to_disk, load_routed_model
    from evomerge.recipe.model import Hop, Recipe

    check_foldable(read_json_object(Path(base) / "config.json"), f"{base}")
    n = Checkpoint.open(base).num_layers
    path = [Hop(model=str(base), layer=j, scale=1.0) for j in range(n)]
    path.insert(1, Hop(model=str(experts[0]), layer=n - 1, scale=1.3))
    path[-1] = Hop(model=str(base), layer=n - 1, scale=0.8)
    recipe = Recipe(models=[{"model": str(base)}], merge_method="passthrough", base_model=str(base),
                    layer_path=path, dtype="float32")
    ids = torch.arange(12).reshape(2, 6) % 60
    with torch.no_grad():
        routed = load_routed_model(recipe)(ids, use_cache=False).logits
        fold_layer_path_to_disk(recipe, out)
        folded = load_strictly(out)(ids, use_cache=False).logits
    rel = float((folded - routed).abs().max() / routed.abs().max())
    # exact up to the norms' eps, which a tiny random model's small residual stream magnifies (~1e-3 here);
    # a fold that missed or misplaced a hop's scale is off by tens of percent
    if not rel < 1e-2:
        raise AssertionError(f"data flow: folded logits differ from the routed model's by {rel:.2g} (relative)")
    return f"{rel:.0e}"
