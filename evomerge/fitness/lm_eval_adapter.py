"""Adapter to lm-evaluation-harness tasks (optional: ``pip install lm-eval``).

The candidate is scored by lm-eval's own Hugging Face model class (``HFLM``) wrapped
around the model already in memory, so every choice lm-eval makes (BOS or not,
rolling log-likelihood windows, ``until`` stop sequences, chat templates and
multi-turn few-shot, truncation) is lm-eval's, and the scores equal ``lm_eval --model
hf`` on the same checkpoint. What depends only on the task is built once per worker:
the task index (for a registered task it walks lm-eval's ~14,000 YAML files; a local YAML is
looked up in its own folder), the loaded task, its requests (contexts with their few-shot examples) and its
documents, and the HFLM wrapper (the worker's model is updated in place). From the second candidate on,
each document's target and choices (lm-eval renders their Jinja template on every call) and the token ids of
``loglikelihood`` requests come from a per-worker memo; HFLM still runs every forward, its batching and padding
unchanged.

Per-example scores: lm-eval logs one sample per document *per filter*; the adapter
keeps one filter, chosen explicitly (``filter:``) or the task's first one, and says
which in the result's details.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_split
from evomerge.fitness.config import LmEvalSpec
from evomerge.fitness.data import resolve

INSTALL_HINT = "kind: lm_eval needs lm-evaluation-harness: pip install lm-eval"


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _task_ref(base_dir: Path, ref: str) -> tuple[str, str | None]:
    """(lm-eval task name, include path) for a registered name or a local task YAML."""
    if ref.endswith((".yaml", ".yml")):
        path = resolve(base_dir, ref)
        if not path.is_file():
            raise FitnessError(f"lm-eval task YAML not found: {path}")
        m = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        if m is None:
            raise FitnessError(f"{path}: no top-level 'task:' name in this lm-eval task YAML")
        return m.group(1), str(path.parent)
    return ref, None


def _per_example(value: Any, metric: str) -> float:
    """One number per document, higher is better. Corpus-level metrics (perplexities, bits per byte) log a
    (log-likelihood, words|bytes) pair per document; its per-document form is the log-likelihood per unit
    (for ``bits_per_byte`` in bits: minus the document's bits per byte)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        ll, weight = float(value[0]), float(value[1])
        return ll / weight / (math.log(2) if metric == "bits_per_byte" else 1.0)
    return float(value)


def _load_task_dict(task_name: str, include: str | None) -> dict[str, Any]:
    """lm-eval's task dict for ``task_name``. A local YAML is first looked up in its own folder only: indexing
    lm-eval's built-in tasks reads ~14,000 files (10 s); only a YAML that refers to them (a group of built-in
    tasks, say) gets the whole index, the local folder overriding it as in lm-eval's CLI."""
    from lm_eval.tasks import TaskManager

    if include is not None:
        local = TaskManager(include_path=include, include_defaults=False, verbosity="ERROR")
        if task_name in local.all_tasks:
            try:
                return local.load([task_name])
            except Exception:  # it refers to built-in tasks: load it with the whole index below
                pass
    return TaskManager(include_path=include, verbosity="ERROR").load([task_name])


def _keep_requests(task: Any) -> None:
    """lm-eval's ``evaluate`` rebuilds every request of a task (each document's Jinja templates, its few-shot
    draw) for each candidate, though they depend only on the task and the options (the few-shot seed is
    reset per candidate, so every rebuild is the same): the first build is kept, and each later call gets
    fresh copies of its instances with empty responses. Kept per options and per lm-eval model object."""
    build = task.build_all_requests
    kept: dict[str, list[Any]] = {}

    def fresh(instances: list[Any]) -> list[Any]:
        return [dataclasses.replace(inst, resps=[], filtered_resps={}) for inst in instances]

    def build_all_requests(**kwargs: Any) -> None:
        chat = kwargs.get("chat_template")
        key = repr(sorted((k, repr(v)) for k, v in kwargs.items() if k != "chat_template"))
        key += f"|chat={id(getattr(chat, '__self__', chat)) if chat is not None else None}"
        if key not in kept:
            build(**kwargs)
            kept.clear()  # one set of options per worker in practice; never grow with candidates
            kept[key] = fresh(task._instances)
        task._instances = fresh(kept[key])

    task.build_all_requests = build_all_requests


_MEMO_FIELDS = ("doc_to_target", "doc_to_choice")


def _doc_key(doc: Any) -> str | None:
    """A document's content as a string: lm-eval hands ``process_results`` a fresh dict per document and
    candidate (a ``datasets`` row), so the memo below is keyed by content, not identity. None for a document
    that is not plain JSON (images, bytes): it is not memoised."""
    try:
        return json.dumps(doc, sort_keys=True)
    except (TypeError, ValueError):
        return None


def _memo_doc_fields(task: Any) -> None:
    """Each candidate's ``process_results`` asks lm-eval for every document's target and choices again, and lm-eval
    compiles the task's Jinja template anew for every call (``jinja2.Environment.from_string``, 40 % of an
    evaluation of a 120-document multiple-choice task on the tinylm zoo). For a template, a feature name or a
    constant (not a user function, which might not be pure) the answer depends only on the document: it is
    computed once per document and worker; each call gets its own copy."""
    for field in _MEMO_FIELDS:
        original = getattr(task, field)
        configured = getattr(task.config, field, None)
        if getattr(task, "prompt", None) is not None or not isinstance(configured, (str, int, list, dict)):
            continue
        memo: dict[str, Any] = {}

        def cached(doc: Any, arg: Any = None, *, _original: Any = original, _memo: dict[str, Any] = memo) -> Any:
            if arg is not None:  # a few-shot config's own template: not memoised
                return _original(doc, arg)
            key = _doc_key(doc)
            if key is None:
                return _original(doc)
            if key not in _memo:
                _memo[key] = _original(doc)
            return copy.deepcopy(_memo[key])

        setattr(task, field, cached)


def _memo_encode_pair(lm: Any) -> None:
    """HFLM tokenizes every (context, continuation) pair of a ``loglikelihood`` request again for each candidate;
    the token ids depend only on the tokenizer and the strings, so HFLM's own ``_encode_pair`` is run once per pair
    and wrapper (the rest of HFLM's loglikelihood path, its batching and padding included, is unchanged)."""
    original = lm._encode_pair
    memo: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode_pair(context: str, continuation: str) -> tuple[list[int], list[int]]:
        key = (context, continuation)
        if key not in memo:
            memo[key] = original(context, continuation)
        ctx, cont = memo[key]
        return list(ctx), list(cont)

    lm._encode_pair = encode_pair


class _Loaded:
    """One split's lm-eval task dict, with the metric and filter the objective reads."""

    def __init__(self, spec: LmEvalSpec, task_name: str, include: str | None, name: str) -> None:
        try:
            self.task_dict = _load_task_dict(task_name, include)
        except Exception as exc:
            raise FitnessError(f"task '{name}': lm-eval cannot load task '{task_name}': {exc}") from exc
        self.tasks: dict[str, Any] = dict(self.task_dict["tasks"])
        if not self.tasks:
            raise FitnessError(f"task '{name}': lm-eval task '{task_name}' has no subtasks")
        for task in self.tasks.values():
            _keep_requests(task)
            _memo_doc_fields(task)
        for task in self.tasks.values():  # simple_evaluate's num_fewshot rules, applied once
            if spec.num_fewshot is not None:
                if task.get_config("num_fewshot") != 0:
                    task.set_config(key="num_fewshot", value=spec.num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
        first = self.tasks[sorted(self.tasks)[0]]
        metrics = [m["metric"] for m in (first.config.metric_list or [])] or list(first.aggregation())
        self.metric = spec.metric or metrics[0]
        filters = [f.name for f in getattr(first, "_filters", [])] or ["none"]
        self.filter = spec.filter or filters[0]
        if self.filter not in filters:
            raise FitnessError(f"task '{name}': lm-eval task '{task_name}' has no filter '{self.filter}'; "
                               f"it has {', '.join(filters)}")
        self.task_name = task_name


class LmEvalTask:
    """One lm-eval task per split; objective = lm-eval's aggregate of the chosen metric under the chosen filter."""

    kind = "lm_eval"
    race_refusal: str | None = ("lm-eval computes the objective itself (its aggregate, which for perplexity-like "
                                "metrics is not a mean of per-document scores) over the documents it picks")

    def __init__(self, spec: LmEvalSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        refs = spec.data.splits() if spec.data is not None else {"train": spec.task or ""}
        self.refs = {split: _task_ref(base_dir, ref) for split, ref in refs.items()}
        self._loaded: dict[str, _Loaded] = {}
        self._lm: tuple[Any, Any, Any] | None = None  # (model, tokenizer, HFLM)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_loaded"], state["_lm"] = {}, None  # built again, once, in each worker
        return state

    def _wrap(self, model: Any, tokenizer: Any) -> Any:
        """lm-eval's HFLM around the in-memory model; kept while the worker's model object is the same."""
        if self._lm is not None and self._lm[0] is model and self._lm[1] is tokenizer:
            return self._lm[2]
        from lm_eval.models.huggingface import HFLM

        kwargs: dict[str, Any] = {"add_bos_token": self.spec.add_bos_token} \
            if self.spec.add_bos_token is not None else {}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.spec.batch_size,
                  max_length=self.spec.max_length, **kwargs)
        _memo_encode_pair(lm)
        self._lm = (model, tokenizer, lm)
        return lm

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult:
        """lm-eval's ``evaluate`` on the prebuilt task dict, with the candidate wrapped in lm-eval's HFLM."""
        check_split(self.name, split, list(self.refs))
        try:
            import lm_eval.evaluator
        except ImportError:
            raise FitnessError(f"task '{self.name}': {INSTALL_HINT}") from None
        t0 = time.perf_counter()
        if split not in self._loaded:
            self._loaded[split] = _Loaded(self.spec, *self.refs[split], self.name)
        loaded = self._loaded[split]
        lm = self._wrap(model, tokenizer)
        t_setup = time.perf_counter() - t0
        spec = self.spec
        multiturn = spec.fewshot_as_multiturn if spec.fewshot_as_multiturn is not None \
            else bool(spec.apply_chat_template)
        # simple_evaluate's seeds, set again per candidate: few-shot draws must not depend on the order of candidates
        random.seed(0)
        np.random.seed(1234)
        import torch

        torch.manual_seed(1234)
        for task in loaded.tasks.values():
            task.set_fewshot_seed(seed=spec.fewshot_seed)
        was_training = getattr(model, "training", False)
        model.eval()
        t_eval = time.perf_counter()
        try:
            out = lm_eval.evaluator.evaluate(
                lm=lm, task_dict=loaded.task_dict, limit=spec.limit, bootstrap_iters=0, log_samples=True,
                system_instruction=spec.system_instruction, apply_chat_template=spec.apply_chat_template,
                fewshot_as_multiturn=multiturn, verbosity="ERROR")
        except Exception as exc:  # lm-eval raises many kinds; the candidate fails, not the search
            raise FitnessError(f"task '{self.name}': lm-eval task '{loaded.task_name}' failed: {exc}") from exc
        finally:
            model.train(was_training)
        return self._result(out, loaded, split, t0, t_setup, time.perf_counter() - t_eval)

    def _result(self, out: dict[str, Any], loaded: _Loaded, split: str, t0: float, t_setup: float,
                t_lm_eval: float) -> TaskResult:
        metric, filt = loaded.metric, loaded.filter
        per: list[float] = []
        for sub in sorted(loaded.tasks):
            samples = sorted((s for s in out["samples"].get(sub, []) if s.get("filter", "none") == filt),
                             key=lambda s: s["doc_id"])
            if samples and metric not in samples[0]:
                raise FitnessError(f"task '{self.name}': lm-eval task '{sub}' has no per-sample metric '{metric}'; "
                                   f"it has {samples[0].get('metrics')}")
            doc_ids = [s["doc_id"] for s in samples]
            if len(set(doc_ids)) != len(doc_ids):
                raise FitnessError(f"task '{self.name}': lm-eval task '{sub}' logged a document twice under "
                                   f"filter '{filt}'")
            per.extend(_per_example(s[metric], metric) for s in samples)
        if not per:
            raise FitnessError(f"task '{self.name}': lm-eval task '{loaded.task_name}' produced no samples "
                               f"under filter '{filt}'")
        key = f"{metric},{filt}"
        agg = out["results"].get(loaded.task_name, {})
        value = agg.get(key)
        if not isinstance(value, (int, float)):
            value = float(np.mean(per))
        return TaskResult(task=self.name, split=split, objectives={self.objective_name: float(value)},
                          per_example=np.asarray(per, dtype=np.float64), n=len(per),
                          seconds=time.perf_counter() - t0,
                          details={"lm_eval_task": loaded.task_name, "lm_eval_metric": metric,
                                   "lm_eval_filter": filt, "lm_eval_results": out["results"],
                                   "seconds_setup": t_setup, "seconds_lm_eval": t_lm_eval})
