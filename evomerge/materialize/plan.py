"""Planning a merge: every output tensor, its inputs, its method and its resolved parameters.

The plan is computed from the checkpoints' indexes alone, before a single
weight is read, so a bad parameter or a missing tensor fails in a second
instead of an hour into a 7B merge, and leaves no output behind. Both
materializers (streaming to disk, in place for the search) execute the same
plan, which is what makes their numbers identical.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from evomerge.errors import CheckpointError, ConfigError
from evomerge.io.validate import check_vocabulary
from evomerge.merge.registry import get_method
from evomerge.merge.spec import MergeMethod
from evomerge.recipe.ignored import mergekit_parameter_names
from evomerge.recipe.layout import count_layers, place_of
from evomerge.recipe.model import GroupOverride, Parameters, Recipe, Slice
from evomerge.recipe.params import evaluate_setting
from evomerge.vocab.build import MergedVocabulary, build_vocabulary
from evomerge.vocab.rows import RowAssembly, is_vocabulary_tensor, row_assembly

if TYPE_CHECKING:
    from evomerge.io.checkpoint import Checkpoint

# Methods that interpolate *from* the base model take it as their first source
# (mergekit: slerp's t = 0 is the base endpoint).
_BASE_FIRST = frozenset({"slerp"})


class TensorIndex(Protocol):
    """What planning needs of a checkpoint: its tensor names and shapes."""

    names: list[str]

    def info(self, name: str): ...  # returns an object with a ``shape`` attribute


def model_key(path: str | Path) -> str:
    """The canonical name of a model folder, so 'a/../b' and 'b' are one source."""
    return _resolved(str(path))


@functools.lru_cache(maxsize=4096)
def _resolved(path: str) -> str:
    """Cached: a search plans thousands of recipes over the same folders, and resolve() costs syscalls."""
    return str(Path(path).expanduser().resolve())



def open_checkpoints(recipe: Recipe) -> dict[str, Checkpoint]:
    """Open (lazily: headers only, no torch for safetensors) every model the recipe names, keyed by ``model_key``."""
    from evomerge.io.checkpoint import Checkpoint

    return {model_key(p): Checkpoint.open(p) for p in recipe.referenced_models()}

def derive_seed(seed: int, tensor_name: str) -> int:
    """A per-tensor seed independent of the order tensors are merged in."""
    digest = hashlib.blake2b(f"{seed}:{tensor_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass(frozen=True)
class TensorRef:
    model: str  # model_key of the source folder
    name: str


@dataclass(frozen=True)
class TensorTask:
    """How to make one output tensor."""

    out_name: str
    shape: tuple[int, ...]
    method: str
    base: TensorRef | None
    sources: tuple[TensorRef, ...]
    params: Mapping[str, object]
    seed: int | None
    layer: int | None  # output layer index (None for embeddings, norms, head)
    vocab: RowAssembly | None = None  # embedding/head rows to lay out in the merged vocabulary first


@dataclass
class MergePlan:
    tasks: list[TensorTask]
    base_model: str | None
    config_model: str  # whose config.json the output takes
    tokenizer_model: str  # whose tokenizer files the output takes
    num_layers: int
    models: list[str] = field(default_factory=list)
    vocabulary: MergedVocabulary | None = None  # the merged tokenizer, when the recipe builds one

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(t.out_name, t.shape) for t in self.tasks]


def normalized_slices(recipe: Recipe, indexes: Mapping[str, TensorIndex]) -> list[Slice]:
    """mergekit's rule: a ``models`` recipe is one slice spanning every layer of every model.

    As in mergekit, a ``base_model`` missing from ``models`` is one more input of a method without a base
    role (linear, karcher), merged like any listed model. (Methods with a base role take it as the base
    anyway, and so do the ``groups`` of a recipe whose own method has one.)
    """
    if recipe.slices is not None:
        return recipe.slices
    from evomerge.recipe.model import SliceSource

    assert recipe.models is not None
    specs = [(spec.model, spec.parameters) for spec in recipe.models]
    base = recipe.base_model
    method = get_method(recipe.merge_method)
    base_role = method.needs_base or method.optional_base or method.name in _BASE_FIRST
    if base and not base_role and model_key(base) not in {model_key(m) for m, _ in specs}:
        specs.append((base, None))
    sources = []
    for model, parameters in specs:
        n = count_layers(indexes[model_key(model)].names)
        sources.append(SliceSource(model=model, layer_range=(0, max(n, 1)), parameters=parameters))
    return [Slice(sources=sources)]


class _Planner:
    def __init__(self, recipe: Recipe, indexes: Mapping[str, TensorIndex]) -> None:
        self.recipe = recipe
        self.indexes = indexes
        self._check_parameter_names()
        settings = recipe.tokenizer_settings
        base = model_key(recipe.base_model) if recipe.base_model else None
        # mergekit builds the tokenizer over every referenced model, the base (or the first model) as anchor
        self.vocabulary = None if settings is None else build_vocabulary(
            settings, base, tuple(model_key(m) for m in recipe.referenced_models()))

    # ---- validation --------------------------------------------------------------
    def _check_parameter_names(self) -> None:
        methods = [get_method(self.recipe.merge_method), *(get_method(g.merge_method) for g in self.recipe.groups)]
        known = {p.name for m in methods for p in m.params}
        names = ", ".join(sorted(known)) or "none"
        ignored = mergekit_parameter_names()  # accepted with a warning (the Recipe gave it): mergekit ignores them

        def check(params: Parameters | None, where: str) -> None:
            for key in params or {}:
                if key not in known and key not in ignored:
                    raise ConfigError(
                        f"{where}: '{key}' is not a parameter of {'/'.join(m.name for m in methods)} "
                        f"(known: {names})"
                    )

        check(self.recipe.parameters, "parameters")
        for i, spec in enumerate(self.recipe.models or []):
            check(spec.parameters, f"models[{i}] ({spec.model}).parameters")
        for i, sl in enumerate(self.recipe.slices or []):
            check(sl.parameters, f"slices[{i}].parameters")
            for j, src in enumerate(sl.sources):
                check(src.parameters, f"slices[{i}].sources[{j}] ({src.model}).parameters")
        for i, g in enumerate(self.recipe.groups):
            gm = get_method(g.merge_method)
            gknown = {p.name for p in gm.params}
            for key in g.parameters or {}:
                if key not in gknown:
                    raise ConfigError(f"groups[{i}].parameters: '{key}' is not a parameter of {gm.name}")
            for model, params in (g.model_parameters or {}).items():
                for key in params:
                    if key not in gknown:
                        raise ConfigError(
                            f"groups[{i}].model_parameters[{model}]: '{key}' is not a parameter of {gm.name}"
                        )

    # ---- planning ----------------------------------------------------------------
    def plan(self) -> MergePlan:
        slices = normalized_slices(self.recipe, self.indexes)
        first_model = model_key(slices[0].sources[0].model)
        base = self.recipe.base_model
        config_model = model_key(base) if base else first_model
        template = self.indexes[model_key(slices[0].sources[0].model)].names
        tasks: list[TensorTask] = []
        pre = [n for n in template if place_of(n).layer is None and place_of(n).is_pre]
        post = [n for n in template if place_of(n).layer is None and not place_of(n).is_pre]
        for name in pre:
            tasks.append(self._task(name, name, slices[0], 0, t=0.0, layer=None))
        out_layer = 0
        for sl in slices:
            n = sl.num_layers
            for idx in range(n):
                t = idx / (n - 1) if n > 1 else 1.0
                in_layer = sl.sources[0].layer_range[0] + idx
                src_names = self.indexes[model_key(sl.sources[0].model)].names
                layer_places = [p for p in map(place_of, src_names) if p.layer == in_layer]
                if not layer_places:
                    raise ConfigError(
                        f"slice layer {in_layer} of {sl.sources[0].model} has no tensors "
                        f"(the model has {count_layers(src_names)} layers)"
                    )
                for p in layer_places:
                    tasks.append(self._task(p.renamed(out_layer), p.name, sl, idx, t=t, layer=out_layer))
                out_layer += 1
        # mergekit 0.1.5 reads every tensor outside the layers at t = 0 (its module-level reader keeps t = 0 for
        # the final norm and head as for the embeddings): a gradient gives them its first value. (mergekit
        # before 0.1.5 took t = 1 after the layers; a config pasted today is written for 0.1.5.)
        for name in post:
            tasks.append(self._task(name, name, slices[-1], slices[-1].num_layers - 1, t=0.0, layer=None))
        tok = self.recipe.tokenizer_source
        tokenizer_model = config_model if tok in (None, "base", "union") else model_key(tok)
        models = sorted({r.model for t in tasks for r in (*t.sources, *([t.base] if t.base else []))})
        return MergePlan(tasks=tasks, base_model=model_key(base) if base else None, config_model=config_model,
                         tokenizer_model=tokenizer_model, num_layers=out_layer, models=models,
                         vocabulary=self.vocabulary)

    def _input_name(self, template_name: str, src_model: str, layer: int | None) -> str:
        if layer is None:
            return template_name
        return place_of(template_name).renamed(layer)

    def _task(self, out_name: str, template_name: str, sl: Slice, offset: int, *, t: float,
              layer: int | None) -> TensorTask:
        group = self.recipe.group_for(out_name, layer)
        method = get_method(group.merge_method if group else self.recipe.merge_method)
        base_path = sl.base_model or self.recipe.base_model
        base = model_key(base_path) if base_path else None
        slice_models = [(model_key(s.model), s) for s in sl.sources]
        if method.needs_base or ((method.name in _BASE_FIRST or method.optional_base) and base):
            if base is None:
                raise ConfigError(f"tensor '{out_name}': method '{method.name}' needs base_model")
            others = [(k, s) for k, s in slice_models if k != base]
            chosen = ([(base, None)] if method.name in _BASE_FIRST else []) + others
        else:
            chosen = list(slice_models)
        if not chosen:
            raise ConfigError(f"tensor '{out_name}': method '{method.name}' has no source models to merge")

        def ref(model: str, src) -> TensorRef:
            src_layer = None if place_of(template_name).layer is None else (
                (src.layer_range[0] if src is not None else sl.sources[0].layer_range[0]) + offset)
            return TensorRef(model, self._input_name(template_name, model, src_layer))

        sources = tuple(ref(k, s) for k, s in chosen)
        base_ref = None
        if base is not None:
            base_src = next((s for k, s in slice_models if k == base), None)
            base_ref = ref(base, base_src)
        refs = (*([base_ref] if base_ref else []), *sources)
        vocab = None
        if self.vocabulary is not None and layer is None and is_vocabulary_tensor(
                template_name, self.indexes[slice_models[0][0]]):
            # mergekit's tensor inputs: the slice's models, then the base when it is not among them
            order = [k for k, _ in slice_models] + ([base] if base and base not in dict(slice_models) else [])
            vocab_refs = [ref(k, None) for k in dict.fromkeys(order)]
            rest = self._check_shapes(out_name, vocab_refs, skip_rows=True)
            vocab = row_assembly(self.vocabulary, [r.model for r in vocab_refs], base,
                                 {r.model: self.indexes[r.model].info(r.name).shape[0] for r in vocab_refs},
                                 tensor=out_name)
            shape = (vocab.rows, *rest)
        else:
            shape = self._check_shapes(out_name, refs)
        params = self._params(method, group, sl, [s for _, s in chosen], [k for k, _ in chosen], out_name, t)
        seed = derive_seed(self.recipe.seed, out_name) if method.randomized else None
        return TensorTask(out_name=out_name, shape=shape, method=method.name, base=base_ref, sources=sources,
                          params=params, seed=seed, layer=layer, vocab=vocab)

    def _check_shapes(self, out_name: str, refs: Sequence[TensorRef], *, skip_rows: bool = False
                      ) -> tuple[int, ...]:
        """The sources' common shape (``skip_rows``: of all but the vocabulary axis, which may differ)."""
        shapes: dict[tuple[int, ...], str] = {}
        for r in refs:
            index = self.indexes[r.model]
            if r.name not in index.names:
                raise CheckpointError(f"tensor '{r.name}' (for output '{out_name}') is missing from {r.model}")
            shape = tuple(index.info(r.name).shape)
            shapes.setdefault(shape[1:] if skip_rows else shape, r.model)
        if len(shapes) > 1:
            detail = "; ".join(f"{list(s)} in {m}" for s, m in shapes.items())
            what = "shapes (past the vocabulary rows)" if skip_rows else "shapes"
            raise CheckpointError(f"tensor '{out_name}': {what} differ across sources: {detail}")
        return next(iter(shapes))

    def _params(self, method: MergeMethod, group: GroupOverride | None, sl: Slice, srcs: list,
                models: list[str], out_name: str, t: float) -> dict[str, object]:
        chain_global = [group.parameters if group else None, sl.parameters, self.recipe.parameters]
        raw: dict[str, object] = {}
        for spec in method.params:
            if spec.scope == "global":
                value = _first(out_name, t, chain_global, spec.name)
                if value is not None:
                    raw[spec.name] = value
                continue
            values = []
            for model, src in zip(models, srcs, strict=True):
                own = src.parameters if src is not None else None
                group_model = _group_model_params(group, model)
                values.append(_first(out_name, t, [group_model, group.parameters if group else None, own,
                                                   sl.parameters, self.recipe.parameters], spec.name))
            if any(v is not None for v in values) or spec.default is None:
                filled = [v if v is not None else spec.default for v in values]
                missing = [models[i] for i, v in enumerate(filled) if v is None]
                if missing:
                    raise ConfigError(
                        f"tensor '{out_name}': method '{method.name}' needs '{spec.name}' for {', '.join(missing)}"
                    )
                raw[spec.name] = filled
        return method.resolve_params(raw, len(models), where=f"tensor '{out_name}'")


def _group_model_params(group: GroupOverride | None, model: str) -> Parameters | None:
    if group is None or not group.model_parameters:
        return None
    for path, params in group.model_parameters.items():
        if model_key(path) == model:
            return params
    return None


def _first(tensor_name: str, t: float, chain: Sequence[Parameters | None], key: str) -> object | None:
    for params in chain:
        if params and key in params:
            value = evaluate_setting(tensor_name, params[key], t)
            if value is not None:
                return value
    return None


def plan_merge(recipe: Recipe, indexes: Mapping[str, TensorIndex]) -> MergePlan:
    """Plan ``recipe`` against the tensor indexes of its models (keyed by ``model_key``)."""
    if recipe.layer_path:
        raise ConfigError("a data-flow recipe (layer_path) is not a per-tensor merge: materialize it with "
                          "evomerge.materialize.dataflow (fold to disk, or a routed model)")
    missing = [m for m in map(model_key, recipe.referenced_models()) if m not in indexes]
    if missing:
        raise ConfigError(f"no index for model(s): {', '.join(missing)}")
    plan = _Planner(recipe, indexes).plan()
    # Every model the output draws a tensor or its tokenizer from must share one vocabulary: a passthrough
    # would otherwise take its embedding from one and its head from another (no source pair is compared).
    # A recipe with tokenizer settings lays every vocabulary row out in its merged vocabulary instead.
    if plan.vocabulary is None:
        used = dict.fromkeys([plan.config_model, *plan.models, plan.tokenizer_model])
        check_vocabulary([indexes[m] for m in used if m in indexes])
    return plan
