"""Fitness tasks: (model, tokenizer) → named objectives plus one score per example.

Task kinds: generation (greedy, exact match), multiple_choice (log-likelihood),
perplexity, classification, http (an outside scorer), python (the user's own
scoring function) and lm_eval (an adapter to lm-evaluation-harness, optional).
Generating kinds take a prompt format (template, chat template, few-shot, stop).
Tasks are YAML + JSONL with fixed splits; the search sees ``train`` only.
"""

from evomerge.fitness.base import FitnessTask, TaskResult
from evomerge.fitness.loader import (
    check_tokenizer,
    evaluate_all,
    load_task,
    load_tasks,
    parse_spec,
    task_from_spec,
)

__all__ = ["FitnessTask", "TaskResult", "check_tokenizer", "evaluate_all", "load_task", "load_tasks", "parse_spec",
           "task_from_spec"]
