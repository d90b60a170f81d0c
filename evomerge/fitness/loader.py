"""Loading task YAML files and evaluating a list of tasks on one candidate."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness.base import FitnessTask, TaskResult
from evomerge.fitness.config import (
    ClassificationSpec,
    GenerationSpec,
    HttpSpec,
    LmEvalSpec,
    MultipleChoiceSpec,
    PerplexitySpec,
    PythonSpec,
    TaskSpec,
    WeightDistanceSpec,
)

_SPEC = TypeAdapter(TaskSpec)


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # drop the union tag pydantic inserts ("generation", "DataFiles", ...) so the key reads like the YAML
        if loc and loc[0] in {"generation", "multiple_choice", "perplexity", "classification", "http", "lm_eval",
                              "weight_distance", "python"}:
            loc = loc[1:]
        loc = [p for p in loc if p not in {"DataFiles", "DataSource"}]
        key = ".".join(loc) or "<top level>"
        lines.append(f"key '{key}': {err['msg']}")
    return f"{path}: invalid fitness task: " + "; ".join(dict.fromkeys(lines))


def parse_spec(raw: Any, path: Path) -> Any:
    """Validate a parsed YAML mapping into a task spec, or raise ConfigError naming the file and key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a fitness task must be a YAML mapping, got {type(raw).__name__}")
    if "kind" not in raw:
        raise ConfigError(f"{path}: key 'kind' is missing (one of generation, multiple_choice, perplexity, "
                          "classification, http, lm_eval, weight_distance, python)")
    try:
        return _SPEC.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None


def task_from_spec(spec: Any, base_dir: Path, source: str = "<memory>") -> FitnessTask:
    """Build the task object for a validated spec; data paths resolve against ``base_dir``."""
    from evomerge.fitness.classification import ClassificationTask
    from evomerge.fitness.generation import GenerationTask
    from evomerge.fitness.http_scorer import HttpTask
    from evomerge.fitness.likelihood import MultipleChoiceTask, PerplexityTask
    from evomerge.fitness.lm_eval_adapter import LmEvalTask
    from evomerge.fitness.python_scorer import PythonTask
    from evomerge.fitness.weight_distance import WeightDistanceTask

    table: dict[type, Any] = {
        GenerationSpec: GenerationTask, MultipleChoiceSpec: MultipleChoiceTask, PerplexitySpec: PerplexityTask,
        ClassificationSpec: ClassificationTask, HttpSpec: HttpTask, LmEvalSpec: LmEvalTask,
        WeightDistanceSpec: WeightDistanceTask, PythonSpec: PythonTask,
    }
    return table[type(spec)](spec, base_dir, source)


def load_task(path: str | Path) -> FitnessTask:
    """Load one task YAML; a malformed file raises ConfigError, missing/empty data FitnessError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fitness task file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    spec = parse_spec(raw, path)
    return task_from_spec(spec, path.parent, str(path))


def load_tasks(paths: Iterable[str | Path]) -> list[FitnessTask]:
    """Load several task files; two tasks reporting the same objective name is a ConfigError."""
    tasks = [load_task(p) for p in paths]
    seen: dict[str, str] = {}
    for t in tasks:
        if t.objective_name in seen:
            raise ConfigError(f"tasks '{seen[t.objective_name]}' and '{t.name}' both report objective "
                              f"'{t.objective_name}'; rename one under `objective.name`")
        seen[t.objective_name] = t.name
    return tasks


def check_tokenizer(tasks: Iterable[FitnessTask], tokenizer: Any, source: str = "the model") -> None:
    """Preflight, before any candidate: every task that needs something of the tokenizer (a chat
    template) gets it, or a FitnessError names the task and the source."""
    for task in tasks:
        check = getattr(task, "check_tokenizer", None)
        if check is not None:
            check(tokenizer, source)


def evaluate_all(tasks: Iterable[FitnessTask], model: Any, tokenizer: Any, split: str = "train"
                 ) -> dict[str, TaskResult]:
    """Every task's result on ``split``, keyed by task name (a FitnessError propagates: the candidate failed)."""
    out: dict[str, TaskResult] = {}
    for task in tasks:
        if task.name in out:
            raise FitnessError(f"two tasks are named '{task.name}'")
        out[task.name] = task.evaluate(model, tokenizer, split=split)
    return out
