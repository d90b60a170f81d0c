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
(sizes shrunk, every behaviour flag kept) is built, the writes are found by
greedily choosing the layer parameters whose rescaling makes "scale the input
of layer 1 by k" and "rescale the writes of layer 1 by 1/k" give the same
logits, translated into checkpoint tensor names by saving the probe with
transformers (so fused, renamed or split tensors map correctly), and finally
a routed model and a folded checkpoint of a multi-hop path are compared.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
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


@dataclass(frozen=True)
class FoldRule:
    """Per-layer checkpoint suffix → offset a; the fold writes (t + a)/P − a."""

    writes: Mapping[str, float]

    def factor_for(self, suffix: str) -> float | None:
        return self.writes.get(suffix)


def fold_rule(config: Mapping[str, Any], where: str) -> FoldRule:
    """The fold rule of ``config``'s architecture; ConfigError naming ``where`` and the reason when unsupported."""
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
    from evomerge.materialize.layer_config import config_class, layer_count_key

    cls = config_class(config)
    aliases = getattr(cls, "attribute_map", {}) if cls is not None else {}
    out = {k: v for k, v in config.items() if k not in ("_name_or_path", "architectures", "dtype", "torch_dtype",
                                                         "transformers_version", "quantization_config")}
    for key, value in _SIZES.items():
        stored = aliases.get(key, key)
        if isinstance(out.get(stored), int):
            out[stored] = value
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if isinstance(out.get(key), int) and out[key] > 0:
            out[key] = min(out[key], 4)
    if isinstance(out.get("num_experts_per_tok"), int):
        out["num_experts_per_tok"] = min(out["num_experts_per_tok"], 2)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if key in out or cls is not None:
            out[key] = None
    count = layer_count_key(out)
    if count is not None:
        n = out[count]
        out[count] = 2
        for key, value in list(out.items()):
            if isinstance(value, list) and len(value) == n and n > 2 and key != count:
                out[key] = value[:2]
            elif key.endswith("layers") and isinstance(value, list):
                out[key] = [v for v in value if isinstance(v, int) and v < 2]
    return out


@functools.lru_cache(maxsize=32)
def _rule_for(probe_json: str) -> FoldRule | str:
    """A FoldRule, or the reason the fold is not exact for this architecture."""
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.layer_config import config_class, decoder_layers

    section = json.loads(probe_json)
    cls = config_class(section)
    if cls is None:
        return "transformers does not know this model_type"
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cls.from_dict(section), dtype=torch.float32).eval()
    except Exception as exc:
        return f"cannot build a small probe of it ({type(exc).__name__}: {exc})"
    finally:
        logger.setLevel(level)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    stack = decoder_layers(model, 2)
    base = getattr(model, model.base_model_prefix, None)
    if stack is None or base is None or getattr(base, "layers", None) is not stack:
        return "its decoder layers are not a '.layers' list of the base model, which the routed model needs"
    params = dict(stack[1].named_parameters())
    try:
        writes = _find_writes(model, stack, params)
    except Exception as exc:
        return f"the probe's forward failed ({type(exc).__name__}: {exc})"
    if isinstance(writes, str):
        return writes
    with tempfile.TemporaryDirectory(prefix="evomerge-fold-probe-") as tmp:
        return _checkpoint_rule(model, params, writes, Path(tmp))


def _ids() -> torch.Tensor:
    return torch.arange(2 * 9).reshape(2, 9) % 64


def _run(model: Any, stack: Any, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer 1's output, logits) with layer 1's input scaled by ``k`` (what a routed hop with scale k computes)."""
    def scale(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0] * k, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] * k}

    seen: list[torch.Tensor] = []

    def keep(module: Any, args: Any, output: Any) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handles = [stack[1].register_forward_hook(keep)]
    if k != 1.0:
        handles.append(stack[1].register_forward_pre_hook(scale, with_kwargs=True))
    try:
        with torch.no_grad():
            logits = model(_ids(), use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return seen[0], logits


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _find_writes(model: Any, stack: Any, params: dict[str, torch.nn.Parameter]) -> dict[str, float] | str:
    """The (parameter, offset) set of layer 1 whose rescaling by 1/k reproduces scaling its input by k.

    Chosen greedily, by how close the folded layer output comes to the routed
    one divided by k; the multi-hop check (`_verify`) then decides.
    """
    k = 2.0
    routed = _run(model, stack, k)[0] / k
    plain = _run(model, stack, 1.0)[0]
    if _error(plain, routed) < _TOL:
        return "its layer output does not depend on the scale of the residual stream (nothing to fold)"
    originals = {n: p.detach().clone() for n, p in params.items()}

    def output_with(chosen: dict[str, float], c: float) -> torch.Tensor:
        with torch.no_grad():
            for n, a in chosen.items():
                params[n].copy_((originals[n] + a) * c - a)
            try:
                return _run(model, stack, 1.0)[0]
            finally:
                for n in chosen:
                    params[n].copy_(originals[n])

    candidates = [(name, a) for name in params for a in OFFSETS]
    chosen: dict[str, float] = {}
    err = _error(plain, routed)
    for _ in range(8):
        best = None
        for name, a in candidates:  # in parameter order: on a tie the later one (down_proj over up_proj) wins
            if name in chosen:
                continue
            e = _error(output_with({**chosen, name: a}, 1 / k), routed)
            if best is None or e <= best[0] * (1 + 1e-3) + 1e-7:
                best = (min(e, best[0]) if best is not None and e > best[0] else e, name, a)
        if best is None or best[0] > 0.9 * err:
            break
        err, chosen = best[0], {**chosen, best[1]: best[2]}
        if err < _TOL:
            return chosen
    return ("a decoder layer reads its residual input other than through a scale-invariant norm, or writes it "
            f"through a map that cannot absorb a scale (best found: rescaling {sorted(chosen) or 'nothing'} "
            f"leaves a relative error of {err:.2g})")


def _checkpoint_rule(model: Any, params: dict[str, torch.nn.Parameter], writes: dict[str, float],
                     tmp: Path) -> FoldRule | str:
    """The writes as checkpoint suffixes: save the probe, rescale, save again, compare the files by name."""
    from safetensors.torch import load_file

    from evomerge.recipe.layout import place_of

    def saved(folder: Path) -> dict[str, torch.Tensor]:
        model.save_pretrained(folder)
        out: dict[str, torch.Tensor] = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    before = saved(tmp / "a")
    originals = {n: params[n].detach().clone() for n in writes}
    with torch.no_grad():
        for n, a in writes.items():
            params[n].copy_((originals[n] + a) / 2.0 - a)
    try:
        after = saved(tmp / "b")
    finally:
        with torch.no_grad():
            for n in writes:
                params[n].copy_(originals[n])
    rule: dict[str, float] = {}
    for name, tensor in after.items():
        if torch.equal(tensor, before[name]):
            continue
        place = place_of(name)
        if place.layer != 1:
            return f"rescaling layer 1's writes changed checkpoint tensor '{name}' outside that layer"
        offset = next((a for a in OFFSETS if torch.allclose(tensor, (before[name] + a) / 2.0 - a, atol=1e-6)), None)
        if offset is None:
            return f"its checkpoint stores the write '{name}' in a form the fold cannot rescale"
        rule[place.suffix] = offset
    result = FoldRule(writes=rule)
    return _verify(tmp / "a", result) or result


def _verify(folder: Path, rule: FoldRule) -> str | None:
    """Route a multi-hop path over the probe and fold it; the folded model must give the routed logits."""
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.dataflow import LayerPool, _fold_to_disk
    from evomerge.recipe.model import Hop, Recipe

    hops = [Hop(model=str(folder), layer=0, scale=1.0), Hop(model=str(folder), layer=1, scale=1.7),
            Hop(model=str(folder), layer=0, scale=0.6), Hop(model=str(folder), layer=1, scale=1.3)]
    recipe = Recipe(models=[{"model": str(folder)}], merge_method="passthrough", base_model=str(folder),
                    layer_path=hops, dtype="float32")
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
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
    finally:
        logger.setLevel(level)
    err = _error(got, routed)
    if err > _TOL:
        return f"a folded probe's logits differ from the routed model's by {err:.2g} (relative)"
    return None


def probe_config_copy(config: Mapping[str, Any]) -> dict[str, Any]:
    """The probe's config for ``config`` (for tests and messages)."""
    return copy.deepcopy(json.loads(_probe_key(config)))
