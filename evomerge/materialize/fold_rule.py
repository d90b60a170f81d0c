"""Which tensors a data-flow fold rescales, derived per architecture by a probe, and whether the fold is exact.

The fold (see ``fold_layer_path_to_disk``) replaces "scale hop j's input by
s_j" by "divide hop j's residual writes by P_j = Π_{i≤j} s_i". It is exact
when **every sublayer reads the residual stream only through a scale-invariant
norm** (RMSNorm, LayerNorm: N(c·x) = N(x) for c > 0, up to ε) **and writes it
only through a map that can absorb the scale** (a linear layer's weight and
bias, a fused expert block's down projection, or the elementwise weight of a
post-norm, ``w`` or ``1 + w``). Then hop j's sublayers see the same normalized
inputs whatever P_j, their writes shrink by 1/P_j, the stream stays x_j/P_j,
and the final norm removes the factor: same logits. What does not matter:
embedding scaling and learned positions (before the first hop), logit
soft-capping and attention soft-capping (they act on scale-free quantities).
What breaks it: a sublayer that reads the raw stream (post-norm decoders,
OLMo2's un-normed attention inputs), a write through a nonlinearity.

Rather than a list of model types, the condition is tested on the
architecture itself: a tiny random instance of the model's config class
(sizes shrunk, layer count and every behaviour flag kept) is built; for one
layer of each kind (dense and MoE layers differ), the writes are the
parameters whose rescaling by 1/k makes the layer behave as with its input
scaled by k (`_find_writes`); they are translated into checkpoint tensor
names by saving the probe with transformers (so fused, renamed or split
tensors map correctly), and finally a routed model and a folded checkpoint
of a multi-hop path over every kind are compared.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ConfigError

__all__ = ["FoldRule", "fold_rule"]

OFFSETS = (0.0, 1.0)  # a norm weight w (x·w) or a zero-centred one (x·(1 + w), Gemma)
_TOL = 1e-4


def _pattern(suffix: str) -> str:
    """Expert (or any inner) indices as '*': the probe has at most 4 experts, the model may have 64."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "*", suffix)


@dataclass(frozen=True)
class FoldRule:
    """Per-layer checkpoint suffix pattern → offset a; the fold writes (t + a)/P − a."""

    writes: Mapping[str, float]

    def factor_for(self, suffix: str) -> float | None:
        """The offset of a residual write, None for a tensor the fold leaves as it is."""
        return self.writes.get(_pattern(suffix))


def fold_rule(config: Mapping[str, Any], where: str) -> FoldRule:
    """The fold rule of ``config``'s architecture; ConfigError naming ``where`` and the reason when unsupported."""
    from evomerge.materialize.layer_config import quiet_transformers

    with quiet_transformers():
        rule = _rule_for(_probe_key(config))
    if isinstance(rule, str):
        raise ConfigError(f"{where}: data-flow merges are not supported for model_type "
                          f"'{config.get('model_type')}': {rule}")
    return rule


def _probe_key(config: Mapping[str, Any]) -> str:
    """The probe's config (sizes shrunk, behaviour kept) as a cache key: one probe per architecture setting."""
    return json.dumps(_probe_config(dict(config)), sort_keys=True, default=str)


_SIZES = {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 8, "vocab_size": 64, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16}


def _probe_config(config: dict[str, Any]) -> dict[str, Any]:
    from evomerge.materialize.layer_config import config_class

    cls = config_class(config)
    aliases = getattr(cls, "attribute_map", {}) if cls is not None else {}
    out = {k: v for k, v in config.items() if k not in ("_name_or_path", "architectures", "dtype", "torch_dtype",
                                                         "transformers_version", "quantization_config")}
    heads, kv = (out.get(aliases.get(k, k)) for k in ("num_attention_heads", "num_key_value_heads"))
    for key, value in _SIZES.items():
        stored = aliases.get(key, key)
        if isinstance(out.get(stored), int):
            out[stored] = value
    if isinstance(heads, int) and isinstance(kv, int) and kv > 0 and heads % kv == 0:  # keep the GQA ratio
        out[aliases.get("num_key_value_heads", "num_key_value_heads")] = max(1, 4 * kv // heads)
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if isinstance(out.get(key), int) and out[key] > 0:
            out[key] = min(out[key], 4)
    if isinstance(out.get("num_experts_per_tok"), int):
        out["num_experts_per_tok"] = min(out["num_experts_per_tok"], 2)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if key in out or cls is not None:
            out[key] = None
    return out


@functools.lru_cache(maxsize=32)
def _rule_for(probe_json: str) -> FoldRule | str:
    """A FoldRule, or the reason the fold is not exact for this architecture."""
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.layer_config import config_class, decoder_layers, layer_count_key

    section = json.loads(probe_json)
    cls = config_class(section)
    if cls is None:
        return "transformers does not know this model_type"
    try:
        model = _build(AutoModelForCausalLM, cls, section)
    except Exception as exc:
        return f"cannot build a small probe of it ({type(exc).__name__}: {exc})"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        # a stream well above the norms' ε, so that the probe tests the structure rather than ε (the fold is
        # exact up to ε; see fold_layer_path_to_disk)
        model.get_input_embeddings().weight.mul_(30.0)
    count_key = layer_count_key(section)
    stack = decoder_layers(model, section[count_key]) if count_key else None
    base = getattr(model, model.base_model_prefix, None)
    if stack is None or base is None or getattr(base, "layers", None) is not stack:
        return "its decoder layers are not a '.layers' list of the base model, which the routed model needs"
    writes: dict[int, dict[str, float]] = {}
    for i in _one_layer_per_kind(stack):
        try:
            found = _find_writes(model, stack, i)
        except Exception as exc:
            return f"the probe's forward failed ({type(exc).__name__}: {exc})"
        if isinstance(found, str):
            return f"layer {i}: {found}"
        writes[i] = found
    with tempfile.TemporaryDirectory(prefix="evomerge-fold-probe-") as tmp:
        return _checkpoint_rule(model, stack, writes, Path(tmp))


def _build(auto: Any, cls: type, section: dict[str, Any]) -> Any:
    """The probe model; without the RoPE scaling settings when those are sized for the real head dimension
    (Phi-3's longrope factors): positions reach attention through q and k, computed from normalized inputs,
    so RoPE does not change whether the fold is exact."""
    torch.manual_seed(0)
    try:
        return auto.from_config(cls.from_dict(section), dtype=torch.float32).eval()
    except Exception:
        plain = {k: v for k, v in section.items() if k not in ("rope_scaling", "rope_parameters")}
        if plain == section:
            raise
        torch.manual_seed(0)
        return auto.from_config(cls.from_dict(plain), dtype=torch.float32).eval()


def _one_layer_per_kind(stack: Any) -> list[int]:
    """One layer of each structure (module classes and parameter shapes): a dense and a MoE layer of a
    DeepSeek-style model write through different tensors, and each must be probed."""
    kinds: dict[tuple, int] = {}
    for i, layer in enumerate(stack):
        kind = (tuple((n, type(m).__name__) for n, m in layer.named_modules()),
                tuple((n, tuple(p.shape)) for n, p in layer.named_parameters()))
        kinds.setdefault(kind, i)
    return sorted(kinds.values())


def _ids() -> torch.Tensor:
    return torch.arange(8).reshape(1, 8) * 7 % 64


def _run(model: Any, stack: Any, i: int, k: float) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
    """Layer ``i`` run with its input scaled by ``k`` (what a routed hop with scale k computes): the output of
    each of its modules that hold parameters, their execution order, and the layer's output."""
    def scale(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0] * k, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] * k}

    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def keeper(name: str) -> Any:
        def keep(module: Any, args: Any, output: Any) -> None:
            if name not in outputs:
                outputs[name] = output[0] if isinstance(output, tuple) else output
                order.append(name)
        return keep

    layer = stack[i]
    handles = [m.register_forward_hook(keeper(n)) for n, m in layer.named_modules()
               if n and any(True for _ in m.parameters(recurse=False))]
    handles.append(layer.register_forward_hook(keeper("")))
    if k != 1.0:
        handles.append(layer.register_forward_pre_hook(scale, with_kwargs=True))
    try:
        with torch.no_grad():
            model(_ids(), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return outputs, [n for n in order if n], outputs[""]


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _find_writes(model: Any, stack: Any, i: int) -> dict[str, float] | str:
    """The (parameter, offset) set of layer ``i`` whose rescaling by 1/k reproduces scaling its input by k.

    Walks the layer's parameterized modules in execution order, comparing the
    folded run (writes rescaled, input not) with the routed one (input × k):
    every module output must be equal (it reads the stream through a norm)
    or 1/k of it (a write, or downstream of one inside its branch), and the
    layer output must be 1/k of the routed one. At the first place that is
    neither, the culprit is a write not rescaled yet: the modules run before
    it are tried (all their parameters, or one of them, with offset 0 or 1),
    and the one that moves the mismatch furthest (or shrinks it most) is kept;
    on a tie, the module run last (o_proj rather than v_proj).
    """
    k = 2.0
    params = dict(stack[i].named_parameters())
    routed, order, routed_out = _run(model, stack, i, k)
    originals = {n: p.detach().clone() for n, p in params.items()}
    module_params = {m: [n for n in params if n.rpartition(".")[0] == m] for m in order}

    def folded(chosen: dict[str, float]) -> tuple[int, float]:
        """(position of the first mismatch, len(order) for the layer output, or len(order)+1 when none; error)."""
        with torch.no_grad():
            for n, a in chosen.items():
                params[n].copy_((originals[n] + a) / k - a)
            try:
                outs, _, out = _run(model, stack, i, 1.0)
            finally:
                for n in chosen:
                    params[n].copy_(originals[n])
        for at, name in enumerate(order):
            same, scaled = _error(outs[name], routed[name]), _error(outs[name], routed[name] / k)
            if min(same, scaled) > _TOL:
                return at, min(same, scaled)
        err = _error(out, routed_out / k)
        return (len(order), err) if err > _TOL else (len(order) + 1, 0.0)

    chosen: dict[str, float] = {}
    at, err = folded(chosen)
    if at == len(order) + 1:
        return "its layer output does not depend on the scale of the residual stream (nothing to fold)"
    for _ in range(16):
        if at == len(order) + 1:
            return chosen
        progress = None
        for module in reversed(order[:at]):
            names = [n for n in module_params[module] if n not in chosen]
            if not names:
                continue
            options = [{n: 0.0 for n in names}] if len(names) > 1 else []
            options += [{n: a} for n in names for a in OFFSETS if a == 0.0 or params[n].dim() == 1]
            for option in options:
                now = folded({**chosen, **option})
                if (now[0] > at or (now[0] == at and now[1] < 0.9 * err)) and (
                        progress is None or (now[0], -now[1]) > (progress[1][0], -progress[1][1])):
                    progress = (option, now)  # the most progress; on a tie the module run last
            if progress is not None and progress[1][0] == len(order) + 1:
                break  # nothing does better than exact
        if progress is None:
            break
        chosen = {**chosen, **progress[0]}
        at, err = progress[1]
    if at == len(order) + 1:
        return chosen
    where = order[at] if at < len(order) else "the layer output"
    return ("a decoder layer reads its residual input other than through a scale-invariant norm, or writes it "
            f"through a map that cannot absorb a scale (at {where}, rescaling {sorted(chosen) or 'nothing'} "
            f"leaves a relative error of {err:.2g})")


def _checkpoint_rule(model: Any, stack: Any, writes: dict[int, dict[str, float]], tmp: Path) -> FoldRule | str:
    """The writes as checkpoint suffix patterns: save the probe, rescale, save again, compare the files by name."""
    from safetensors.torch import load_file

    from evomerge.recipe.layout import place_of

    def saved(folder: Path) -> dict[str, torch.Tensor]:
        model.save_pretrained(folder)
        out: dict[str, torch.Tensor] = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    params = {(i, n): p for i in writes for n, p in stack[i].named_parameters()}
    chosen = {(i, n): a for i, found in writes.items() for n, a in found.items()}
    before = saved(tmp / "a")
    originals = {key: params[key].detach().clone() for key in chosen}
    with torch.no_grad():
        for key, a in chosen.items():
            params[key].copy_((originals[key] + a) / 2.0 - a)
    try:
        after = saved(tmp / "b")
    finally:
        with torch.no_grad():
            for key in chosen:
                params[key].copy_(originals[key])
    rule: dict[str, float] = {}
    for name, tensor in after.items():
        if torch.equal(tensor, before[name]):
            continue
        place = place_of(name)
        if place.layer not in writes:
            return f"rescaling the probed layers' writes changed checkpoint tensor '{name}' outside them"
        offset = next((a for a in OFFSETS if torch.allclose(tensor, (before[name] + a) / 2.0 - a, atol=1e-6)), None)
        if offset is None:
            return f"its checkpoint stores the write '{name}' in a form the fold cannot rescale"
        key = _pattern(place.suffix)
        if rule.get(key, offset) != offset:
            return f"its writes '{key}' need different offsets in different layers"
        rule[key] = offset
    result = FoldRule(writes=rule)
    return _verify(tmp / "a", sorted(writes), result) or result


def _verify(folder: Path, kinds: list[int], rule: FoldRule) -> str | None:
    """Route a multi-hop path over the probe (every kind of layer, at scales ≠ 1) and fold it; the folded
    model must give the routed logits."""
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.dataflow import LayerPool, _fold_to_disk
    from evomerge.recipe.model import Hop, Recipe

    layers = [0, *(i for i in kinds for _ in range(2))]  # kinds in order: the path's config stays expressible
    scales = [1.0, *([1.7, 0.6, 1.3] * len(layers))][:len(layers)]
    hops = [Hop(model=str(folder), layer=i, scale=c) for i, c in zip(layers, scales, strict=True)]
    recipe = Recipe(models=[{"model": str(folder)}], merge_method="passthrough", base_model=str(folder),
                    layer_path=hops, dtype="float32")
    try:
        pool = LayerPool.load(folder, check=False)
        with torch.no_grad():
            routed = pool.route(hops)(_ids(), use_cache=False).logits
        _fold_to_disk(recipe, folder.parent / "folded", rule)
        folded = AutoModelForCausalLM.from_pretrained(folder.parent / "folded", dtype=torch.float32).eval()
        with torch.no_grad():
            got = folded(_ids(), use_cache=False).logits
    except Exception as exc:
        return f"routing or folding a probe failed ({type(exc).__name__}: {exc})"
    err = _error(got, routed)
    if err > _TOL:
        return f"a folded probe's logits differ from the routed model's by {err:.2g} (relative)"
    return None

