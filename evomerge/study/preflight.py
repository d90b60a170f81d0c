"""Everything about a run that can be checked without scoring, checked before its folder or budget exist.

A search whose every candidate fails for a reason known up front (an lm-eval task
name with a typo, a scorer that is down, a data-flow space over an architecture the
routed model does not support, sources that do not line up) would otherwise spend
its whole budget failing. Each check here raises one of evomerge's own errors,
naming the file, key or URL, so ``evomerge run`` stops in seconds with one line.

What only a real evaluation can show is left to the search's breaker
(``evomerge.study.breaker``): the first candidates all failing the same way stop it.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from evomerge.errors import CheckpointError, ConfigError, FitnessError
from evomerge.study.config import RunConfig

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


def preflight(config: RunConfig, space: Any, tasks: list[Any]) -> None:
    """Check the built ``space`` and ``tasks`` of a resolved ``config`` against what scoring will need."""
    if config.runner.type in ("local", "ray") and config.runner.target is None:
        check_first_recipe(space)
        if config.sources is not None:
            check_chat_templates(config.sources, tasks)
    split_worker = config.runner.type in ("local", "ray") and config.runner.worker_devices()
    if split_worker and space.decode(space.x0()).layer_path:
        split = (f"runner.devices: {config.runner.devices}" if config.runner.devices
                 else f"runner.gpus_per_worker: {config.runner.gpus_per_worker:g}")
        raise ConfigError(f"{split} splits the worker over several GPUs, but this space's recipes are data-flow "
                          "paths (layer_path), which run on one device per worker; use one GPU per worker or a "
                          "parameter-space search")
    for task in tasks:
        kind = getattr(task, "kind", None)
        if kind == "lm_eval":
            check_lm_eval_names(task)
        elif kind == "http":
            try:
                probe_scorer(task.spec.url, task.name)
            except FitnessError as exc:
                if config.runner.type != "ray":
                    raise
                log.warning("%s (the Ray workers may reach it; the search's breaker stops the run if not)", exc)


def check_first_recipe(space: Any) -> None:
    """Plan the space's starting recipe against its models' headers (shapes, methods, architectures)."""
    recipe = space.decode(space.x0())
    if recipe.layer_path:
        from evomerge.materialize.dataflow import path_models

        check_dataflow_models(list(getattr(space, "models", None) or path_models(recipe)))
        return
    from evomerge.materialize.plan import plan_merge
    from evomerge.materialize.streaming import open_checkpoints

    checkpoints = open_checkpoints(recipe)
    try:
        plan_merge(recipe, checkpoints)
    finally:
        for ckpt in checkpoints.values():
            ckpt.close()


def scoring_tokenizer_folder(sources: Any) -> Path:
    """The folder whose tokenizer the workers score with: the base's (or the first model's), or the model
    that mergekit's ``tokenizer: {source: ...}`` names (base and union keep the base's chat template)."""
    from evomerge.materialize.plan import model_key
    from evomerge.vocab.build import model_folder

    spec = sources.tokenizer
    if spec is not None and spec.source not in ("base", "union"):
        return model_folder(model_key(spec.source))
    return model_folder(sources.base or sources.models[0])


def _asks_for_the_tokenizer_template(task: Any) -> str | None:
    """The key by which a task asks for the tokenizer's own chat template, if it does."""
    if getattr(task, "kind", None) == "lm_eval":
        return "apply_chat_template" if task.spec.apply_chat_template is True else None
    fmt = getattr(getattr(task, "prompts", None), "fmt", None)
    return "chat_template" if fmt is not None and fmt.chat_template is True else None


def check_chat_templates(sources: Any, tasks: list[Any]) -> None:
    """A task asking for the tokenizer's chat template needs a scoring tokenizer that has one: checked here,
    with the check the workers run, so the run stops before its folder and budget, not when workers start."""
    asking = [(t, key) for t in tasks if (key := _asks_for_the_tokenizer_template(t))]
    if not asking:
        return  # no tokenizer is loaded for runs that do not need one
    from transformers import AutoTokenizer

    from evomerge.fitness import check_tokenizer

    folder = scoring_tokenizer_folder(sources)
    tokenizer = None  # as the workers' load_model: no tokenizer files, no tokenizer (and no template)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for unloadable folders
            raise ConfigError(f"{folder}: cannot load its tokenizer, which task '{asking[0][0].name}' needs for "
                              f"its chat template ({exc})") from None
    check_tokenizer([t for t, key in asking if key == "chat_template"], tokenizer, str(folder))
    if not getattr(tokenizer, "chat_template", None):
        task = next(t for t, key in asking if key == "apply_chat_template")
        raise FitnessError(f"task '{task.name}' asks for apply_chat_template: true, but the tokenizer of {folder} "
                           "has no chat template")


def check_dataflow_models(models: list[str]) -> None:
    """A layer path needs models of one architecture whose layer paths fold exactly (the routed model's rule)."""
    from evomerge.io.json_object import read_json_object
    from evomerge.materialize.dataflow import check_foldable

    types: dict[str, Any] = {}
    for model in models:
        cfg = Path(model) / "config.json"
        if not cfg.is_file():
            raise CheckpointError(f"{model}: no config.json; a data-flow space needs transformers checkpoints")
        config = read_json_object(cfg)
        types[model] = config.get("model_type")
        check_foldable(config, f"space: {model}")
    if len(set(types.values())) > 1:
        listed = ", ".join(f"{m} ({t})" for m, t in types.items())
        raise ConfigError(f"space: a layer path needs one architecture; the models are {listed}")


def check_lm_eval_names(task: Any) -> None:
    """Each lm-eval task name exists in lm-eval's registry (or the task's include folder), when lm-eval is here."""
    from evomerge.fitness.lm_eval_adapter import lm_eval_available

    if not lm_eval_available():
        return  # scoring will say how to install it; a missing package is not a typo
    from lm_eval.tasks import TaskManager

    managers: dict[str | None, Any] = {}
    for split, (name, include) in task.refs.items():
        if include is not None and name in TaskManager(include_path=include, include_defaults=False,
                                                       verbosity="ERROR").all_tasks:
            continue  # a local YAML, found in its own folder (as the adapter loads it) without lm-eval's index
        if include not in managers:
            managers[include] = TaskManager(include_path=include, verbosity="ERROR")
        known = managers[include].all_tasks
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise FitnessError(f"task '{task.name}': lm-eval has no task '{name}' (split {split}){hint}")


def probe_scorer(url: str, task_name: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """The scorer answers HTTP at all (any status: it may only accept POST); refused or silent is an error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FitnessError(f"task '{task_name}': the scorer at {url} does not answer ({reason}); start it, or "
                           "fix the task's url, before running the search") from None
