"""Data-flow merges (Akiba et al., arXiv 2403.13187): run a layer path, and fold it into a plain checkpoint.

A data-flow recipe keeps every weight as it is and changes only the order in
which layers are run: ``recipe.layer_path`` is a list of hops (model, layer,
input scale). Embeddings, final norm, head and tokenizer come from model A
(``recipe.base_model``). Two ways to run it:

* **Routed model** (``LayerPool`` / ``load_routed_model``), for the search:
  a ``LlamaForCausalLM``-compatible model whose decoder stack is the hop list,
  built from the source layers themselves: no weight is copied, whatever the
  path, so a worker holds one copy of each source and re-routes per
  candidate in microseconds. It is a real instance of A's model class, so
  ``forward(input_ids, attention_mask, past_key_values, use_cache)`` and
  ``generate(...)`` work unchanged.

  KV cache: transformers' attention writes its keys/values with
  ``cache.update(k, v, self.layer_idx)``, so a layer used twice
  would write both hops into one cache slot. Each hop therefore hands its
  layer a ``HopCache`` view of the shared cache whose ``update`` ignores the
  layer's own ``layer_idx`` and uses the hop's position instead; the cache
  (built by transformers from the routed config, ``num_hidden_layers`` = hop
  count) has one slot per hop. Nothing on the shared modules is mutated, so
  several routed models over the same layers may run concurrently.

* **Folded checkpoint** (``fold_layer_path_to_disk``), for export: the hop
  layers duplicated into a standard ``LlamaForCausalLM`` with the input
  scales folded into the weights (derivation in ``fold_layer_path_to_disk``),
  loadable with ``AutoModelForCausalLM`` and no custom code.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomerge.errors import CheckpointError, ConfigError, MergeError
from evomerge.io.checkpoint import Checkpoint, check_compatible
from evomerge.io.dtypes import parse_dtype
from evomerge.materialize.execute import all_finite
from evomerge.materialize.fold_rule import FoldRule
from evomerge.materialize.plan import MergePlan, model_key
from evomerge.materialize.publish import write_checkpoint
from evomerge.materialize.streaming import MergeReport, write_model_files
from evomerge.recipe.layout import place_of
from evomerge.recipe.model import Hop, Recipe

__all__ = [
    "HopCache",
    "LayerPool",
    "RoutedLayer",
    "check_foldable",
    "cumulative_scales",
    "fold_layer_path_to_disk",
    "load_routed_model",
    "path_models",
    "routed_model_for",
]

# Which architectures fold exactly, and which tensors carry the residual writes, is derived per architecture
# by a probe (evomerge.materialize.fold_rule), not listed here.
# The keyword a decoder layer receives its KV cache under: ``cache`` since transformers 5.x (which still
# accepts ``past_key_values`` until 5.40), ``past_key_values`` / ``past_key_value`` before.
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


# ------------------------------------------------------------------------------------------ helpers
def path_models(recipe: Recipe) -> list[str]:
    """``model_key`` of model A, then of every other model the layer path uses, in first-use order."""
    if not recipe.layer_path or not recipe.base_model:
        raise ConfigError("the recipe has no layer_path (a data-flow merge needs 'layer_path' and 'base_model')")
    seen = {model_key(recipe.base_model): None}
    for hop in recipe.layer_path:
        seen[model_key(hop.model)] = None
    return list(seen)


def cumulative_scales(layer_path: Sequence[Hop]) -> list[float]:
    """P_j = Π_{i<=j} s_i: how much larger the routed stream is than the folded one after hop j."""
    out, p = [], 1.0
    for hop in layer_path:
        p *= float(hop.scale)
        out.append(p)
    return out


def _check_hops(layer_path: Sequence[Hop], num_layers: Mapping[str, int]) -> None:
    for j, hop in enumerate(layer_path):
        n = num_layers[model_key(hop.model)]
        if hop.layer >= n:
            raise ConfigError(f"layer_path[{j}]: layer {hop.layer} is outside 0..{n - 1} of {hop.model}")
        if not (math.isfinite(hop.scale) and hop.scale > 0):
            raise ConfigError(f"layer_path[{j}]: scale must be finite and > 0, got {hop.scale}")


def _routed_config(config: Any, layer_path: Sequence[Hop], layer_types_of: Callable[[str], list[str] | None]) -> Any:
    """A's config with one decoder layer per hop (``layer_types`` follow the hop's source layer)."""
    out = copy.deepcopy(config)
    out.num_hidden_layers = len(layer_path)
    if getattr(config, "layer_types", None) is not None:
        types = []
        for hop in layer_path:
            src = layer_types_of(model_key(hop.model)) or config.layer_types
            types.append(src[hop.layer])
        out.layer_types = types
    return out


# ------------------------------------------------------------------------------------------ routed model
class HopCache:
    """A view of a shared KV cache that stores a layer's keys/values in its hop's slot.

    The attention module calls ``update(k, v, self.layer_idx)``; the view replaces
    that index by the hop's position in the path, so a layer module used by two
    hops keeps two separate cache entries. Only the calls a decoder layer makes
    are forwarded; anything else raises, loudly, instead of reading another slot.
    """

    __slots__ = ("cache", "index")

    def __init__(self, cache: Any, index: int) -> None:
        self.cache = cache
        self.index = index

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int | None = None,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(key_states, value_states, self.index, *args, **kwargs)

    def get_seq_length(self, layer_idx: int | None = None) -> int:
        return self.cache.get_seq_length(self.index)


class RoutedLayer(nn.Module):
    """One hop: scale the residual stream by ``scale``, then run the shared decoder ``layer``.

    ``layer`` is the source model's own module (registered here as a child, so
    ``.to()``/``.eval()`` reach it, but never copied); ``index`` is the hop's
    position, used as its KV-cache slot.
    """

    def __init__(self, layer: nn.Module, scale: float, index: int) -> None:
        super().__init__()
        self.layer = layer
        self.scale = float(scale)
        self.index = index
        if hasattr(layer, "attention_type"):  # families that pick a mask per layer type (Qwen2, Mistral)
            self.attention_type = layer.attention_type

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.scale != 1.0:
            hidden_states = hidden_states * self.scale
        for name in CACHE_KWARGS:  # whichever name this transformers passes the cache under
            if kwargs.get(name) is not None:
                kwargs[name] = HopCache(kwargs[name], self.index)
        return self.layer(hidden_states, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"hop={self.index}, scale={self.scale:g}"


class _RoutedMixin:
    """Marks a routed model; refuses to save it (its state dict holds unscaled duplicates)."""

    layer_path: list[Hop]

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise MergeError("a routed data-flow model cannot be saved as is (its layers are shared and its hop "
                         "scales are not weights); export it with evomerge.materialize.dataflow."
                         "fold_layer_path_to_disk")


@functools.cache
def _routed_class(cls: type) -> type:
    """``cls`` (e.g. LlamaForCausalLM) with ``_RoutedMixin``; ``forward`` keeps its signature.

    transformers records ``output_hidden_states`` / ``output_attentions`` with
    forward hooks on the decoder-layer modules, which a shared layer carries
    once per use (and model A's own hooks too), so those outputs would be
    duplicated: a routed model refuses them instead of returning wrong ones.
    """
    base_forward = cls.forward

    @functools.wraps(base_forward)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        for flag in ("output_hidden_states", "output_attentions"):
            if kwargs.get(flag) or getattr(self.config, flag, False):
                raise MergeError(f"a routed data-flow model does not support {flag} (shared layers would record "
                                 "it twice); fold it with fold_layer_path_to_disk and load the folded model")
        return base_forward(self, *args, **kwargs)

    return type(f"Routed{cls.__name__}", (_RoutedMixin, cls), {"__module__": __name__, "forward": forward})


class LayerPool:
    """Resident sources of a data-flow search: model A in full, the decoder layers of every other model.

    ``route(layer_path)`` builds a routed model over these modules; nothing is
    copied, so building one per candidate costs a few milliseconds and no memory.
    Keys are ``model_key`` of the model folders.
    """

    def __init__(self, base: str, base_model: nn.Module, layers: Mapping[str, Sequence[nn.Module]]) -> None:
        self.base = model_key(base)
        self.base_model = base_model
        prefix = base_model.base_model_prefix
        self.layers: dict[str, Sequence[nn.Module]] = {self.base: getattr(base_model, prefix).layers}
        for key, mods in layers.items():
            self.layers.setdefault(model_key(key), mods)
        self._layer_types: dict[str, list[str] | None] = {}

    @classmethod
    def load(cls, base: str | Path, models: Sequence[str | Path] = (), *, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, base_model: nn.Module | None = None,
             check: bool = True) -> LayerPool:
        """Load A with ``AutoModelForCausalLM`` (unless ``base_model`` is given) and keep only the decoder
        layers of ``models``."""
        from transformers import AutoModelForCausalLM

        def load(path: str | Path) -> nn.Module:
            try:
                model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: cannot load as a causal LM ({exc})") from exc
            return model.to(device).eval()

        base_model = base_model if base_model is not None else load(base)
        if check:
            check_foldable(base_model.config.to_dict(), str(base))
        layers: dict[str, Sequence[nn.Module]] = {}
        layer_types: dict[str, list[str] | None] = {}
        for path in models:
            key = model_key(path)
            if key == model_key(base) or key in layers:
                continue
            other = load(path)
            if other.config.model_type != base_model.config.model_type:
                raise CheckpointError(f"{path}: model type '{other.config.model_type}' differs from model A's "
                                      f"'{base_model.config.model_type}'; a layer path needs one architecture")
            layers[key] = getattr(other, other.base_model_prefix).layers  # the rest of `other` is freed
            layer_types[key] = getattr(other.config, "layer_types", None)
        pool = cls(str(base), base_model, layers)
        pool._layer_types.update(layer_types)
        return pool

    def num_layers(self, model: str) -> int:
        return len(self.layers[model_key(model)])

    def ensure(self, models: Sequence[str | Path], *, dtype: torch.dtype | None = None) -> None:
        """Load the decoder layers of any of ``models`` not pooled yet (same device and dtype as A)."""
        missing = [m for m in models if model_key(m) not in self.layers]
        if not missing:
            return
        ref = next(self.base_model.parameters())
        extra = LayerPool.load(self.base, missing, device=ref.device, dtype=dtype or ref.dtype,
                               base_model=self.base_model)
        for key, mods in extra.layers.items():
            self.layers.setdefault(key, mods)
        self._layer_types.update(extra._layer_types)

    def route(self, layer_path: Sequence[Hop]) -> nn.Module:
        """A model of A's class running ``layer_path`` over the pooled layers (no weight copied)."""
        if not layer_path:
            raise ConfigError("layer_path is empty: a routed model needs at least one hop")
        unknown = sorted({hop.model for hop in layer_path if model_key(hop.model) not in self.layers})
        if unknown:
            raise ConfigError(f"layer_path uses model(s) not in the pool: {', '.join(unknown)}")
        _check_hops(layer_path, {k: len(v) for k, v in self.layers.items()})
        a = self.base_model
        config = _routed_config(a.config, layer_path, self._layer_types_of)
        # Built from the routed config itself (so per-layer-type setup such as Qwen2's sliding-window masks
        # sees the hops' types); on the meta device it allocates nothing: every module is replaced below.
        with torch.device("meta"):
            routed = _routed_class(type(a))(copy.deepcopy(config))
        prefix = a.base_model_prefix
        inner, a_inner = getattr(routed, prefix), getattr(a, prefix)
        for name, child in a.named_children():
            if name != prefix:
                setattr(routed, name, child)
        for name, child in a_inner.named_children():
            if name != "layers":
                setattr(inner, name, child)
        inner.layers = nn.ModuleList(
            RoutedLayer(self.layers[model_key(hop.model)][hop.layer], hop.scale, j) for j, hop in enumerate(layer_path)
        )
        routed.config = config
        inner.config = config
        routed.generation_config = copy.deepcopy(a.generation_config)
        left = [n for n, t in (*routed.named_parameters(), *routed.named_buffers()) if t.is_meta]
        if left:  # an architecture with modules this routing does not know about
            raise MergeError(f"routing {type(a).__name__}: {len(left)} tensor(s) were not taken from model A, "
                             f"e.g. {left[:3]}")
        routed.layer_path = [Hop(model=h.model, layer=h.layer, scale=h.scale) for h in layer_path]
        return routed.train(a.training)

    def _layer_types_of(self, key: str) -> list[str] | None:
        if key == self.base:
            return getattr(self.base_model.config, "layer_types", None)
        return self._layer_types.get(key)


def load_routed_model(recipe: Recipe, *, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load the sources of a ``layer_path`` recipe once and return its routed model (eval mode)."""
    models = path_models(recipe)
    pool = LayerPool.load(models[0], models[1:], device=device, dtype=dtype)
    assert recipe.layer_path is not None
    return pool.route(recipe.layer_path)


def routed_model_for(recipe: Recipe, worker: Any) -> nn.Module:
    """The routed model of ``recipe`` for an evaluation worker, its sources loaded once per worker.

    Pools are kept in ``worker._routed_cache`` (a dict; one pool per model A, grown
    as new models appear in paths) on ``worker.device``, in the dtype of
    ``worker.model``'s weights (float32 when it has none). Routing itself copies
    nothing and costs milliseconds per candidate.
    """
    models = path_models(recipe)
    assert recipe.layer_path is not None
    cache: dict[str, Any] = getattr(worker, "_routed_cache", None)  # type: ignore[assignment]
    if cache is None:
        cache = {}
    pool = cache.get(models[0])
    if pool is None:
        model = getattr(worker, "model", None)
        ref = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        pool = LayerPool.load(models[0], models[1:], device=getattr(worker, "device", "cpu"), dtype=dtype)
        cache[models[0]] = pool
    else:
        pool.ensure(models[1:])
    return pool.route(recipe.layer_path)


# ------------------------------------------------------------------------------------------ folding
def check_foldable(config: Mapping[str, Any], where: str) -> FoldRule:
    """The fold rule of this architecture, or a ConfigError naming ``where`` and why data flow is refused.

    Called where a data-flow space is built (before any budget is spent), when
    sources are pooled, and before a fold; the probe runs once per architecture
    setting (cached).
    """
    from evomerge.materialize.fold_rule import fold_rule

    return fold_rule(config, where)


def fold_layer_path_to_disk(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 2**30,
    device: str | torch.device = "cpu",
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> MergeReport:
    """Write ``recipe``'s layer path as a plain checkpoint: duplicated layers, hop scales folded in.

    Derivation. Write a pre-norm decoder layer as
    ``L(u) = v + M(N₂(v))`` with ``v = u + A(N₁(u))``, where N₁, N₂ are
    RMSNorms, and A, M end in the residual writes ``o_proj``, ``down_proj``.
    The routed model computes x₀ = embed, ``x_j = L_j(s_j·x_{j−1})``, logits =
    head(N_f(x_T)). Let P_j = Π_{i≤j} s_i and fold hop j by multiplying its
    residual writes (o_proj and down_proj weights and biases) by 1/P_j; the
    folded model computes y₀ = x₀, ``y_j = L'_j(y_{j−1})``. Claim:
    y_j = x_j / P_j. Induction: with u_j = s_j·x_{j−1} = P_j·y_{j−1},
    N₁(y_{j−1}) = N₁(u_j/P_j) = N₁(u_j) because RMSNorm is scale-invariant;
    so the attention output is A(N₁(u_j))/P_j and y_{j−1} + it = v_j/P_j; the
    same step through N₂ gives y_j = (v_j + M(N₂(v_j)))/P_j = x_j/P_j.
    Finally N_f(y_T) = N_f(x_T/P_T) = N_f(x_T): same logits. Embeddings are
    untouched (P₀ = 1), and a later hop's factor already contains every
    earlier scale, so each hop's writes carry only their own 1/P_j.

    The writes are found per architecture (`evomerge.materialize.fold_rule`,
    which states the exactness condition): o_proj/down_proj for Llama-like
    layers, the expert down projections of MoE blocks, and for sandwich-norm
    layers (Gemma 2/3) the post-norm weights, whose ``1 + w`` form is
    rescaled as ``(1 + w)/P − 1``.

    Exactness: RMSNorm computes x/√(mean(x²)+ε), and N(x/c) equals N(x)
    evaluated with ε·c², so the fold is exact for ε = 0 and otherwise off by
    a relative ~ε·|P_j²−1|/(2·mean(x²)) at each norm; it matters only where
    the stream is tiny (right after the embeddings: the DFS space keeps the
    first hop at scale 1, P₁ = 1) and vanishes as the stream grows. Extreme
    scale products overflow the weights: a non-finite folded tensor raises
    MergeError.

    The output has A's config (``num_hidden_layers`` = number of hops, and
    ``layer_types`` per hop where the config has them), A's tokenizer (or
    ``tokenizer_source``), dtype ``out_dtype``/``dtype``/A's, and the recipe
    (``evomerge_recipe.json``) for provenance.
    """
    models = path_models(recipe)
    with Checkpoint.open(models[0]) as a:
        rule = check_foldable(a.config, str(a.path))
    return _fold_to_disk(recipe, out_dir, rule, overwrite=overwrite, max_shard_bytes=max_shard_bytes, device=device,
                         on_tensor=on_tensor)


def _fold_to_disk(recipe: Recipe, out_dir: str | Path, rule: FoldRule, *, overwrite: bool = False,
                  max_shard_bytes: int = 5 * 2**30, device: str | torch.device = "cpu",
                  on_tensor: Callable[[int, int, str], None] | None = None) -> MergeReport:
    """`fold_layer_path_to_disk` with the architecture's fold rule given (the probe folds with a candidate)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    models = path_models(recipe)
    layer_path = recipe.layer_path
    assert layer_path is not None
    with ExitStack() as stack:
        ckpts: dict[str, Checkpoint] = {}
        for key in models:
            ckpts[key] = Checkpoint.open(key)
            stack.callback(ckpts[key].close)
        a = ckpts[models[0]]
        if len(ckpts) > 1:
            check_compatible(list(ckpts.values()))
        _check_hops(layer_path, {k: c.num_layers or 0 for k, c in ckpts.items()})
        text = recipe.out_dtype or recipe.dtype
        dtype = parse_dtype(text) if text else a.info(a.names[0]).dtype
        pre = [n for n in a.names if place_of(n).layer is None and place_of(n).is_pre]
        post = [n for n in a.names if place_of(n).layer is None and not place_of(n).is_pre]
        # (output name, source checkpoint, source name, factor, offset) in checkpoint order
        jobs: list[tuple[str, Checkpoint, str, float, float]] = [(n, a, n, 1.0, 0.0) for n in pre]
        for j, (hop, p) in enumerate(zip(layer_path, cumulative_scales(layer_path), strict=True)):
            src = ckpts[model_key(hop.model)]
            places = [q for q in map(place_of, src.names) if q.layer == hop.layer]
            if not places:
                raise CheckpointError(f"layer_path[{j}]: layer {hop.layer} of {src.path} has no tensors")
            for q in places:
                offset = rule.factor_for(q.suffix)
                factor = 1.0 if offset is None else 1.0 / p
                jobs.append((q.renamed(j), src, q.name, factor, offset or 0.0))
        jobs += [(n, a, n, 1.0, 0.0) for n in post]
        layout = [(out, tuple(ck.info(name).shape), dtype) for out, ck, name, _, _ in jobs]
        bytes_read = 0

        def folded_tensors() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal bytes_read
            for out, ck, name, factor, offset in jobs:
                tensor = ck.get(name, device=device)
                bytes_read += tensor.numel() * tensor.element_size()
                if factor != 1.0:  # (t + a)·factor − a: a = 1 for zero-centred norm weights (1 + w)
                    tensor = (tensor.float() + offset) * factor - offset if offset else tensor.float() * factor
                    if not all_finite(tensor.to(dtype)):
                        raise MergeError(f"tensor '{out}': folding the hop scales (factor {factor:.3g}) "
                                         f"overflows {dtype}; the path's scale products are too extreme")
                yield out, tensor

        tok = recipe.tokenizer_source
        tok_key = models[0] if tok in (None, "base") else model_key(tok)
        if tok_key not in ckpts:
            ckpts[tok_key] = Checkpoint.open(tok_key)
            stack.callback(ckpts[tok_key].close)
        plan = MergePlan(tasks=[], base_model=models[0], config_model=models[0], tokenizer_model=tok_key,
                         num_layers=len(layer_path))
        layers = [(model_key(hop.model), hop.layer) for hop in layer_path]
        files = write_checkpoint(
            out_dir, layout, folded_tensors(),
            side_files=lambda tmp: write_model_files(tmp, recipe, ckpts, plan, dtype, layers=layers),
            verify=True, overwrite=overwrite, max_shard_bytes=max_shard_bytes, on_tensor=on_tensor)
        bytes_written = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
    return MergeReport(out_dir=out_dir, tensors=len(jobs), bytes_read=bytes_read, bytes_written=bytes_written,
                       seconds=time.perf_counter() - started, files=files)

