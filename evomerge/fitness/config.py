"""The task YAML schema: one strict pydantic model per task kind.

``extra="forbid"`` everywhere, so a misspelt key (``max_new_token``) is an error
that names the file and the key instead of a silently ignored default.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.fitness.prompts import PromptFormat

Split = Literal["train", "validation", "test"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(_Strict):
    """The objective a task reports: its name in the study and whether bigger is better."""

    name: str = Field(min_length=1)
    direction: Literal["maximize", "minimize"] = "maximize"


class DataFiles(_Strict):
    """Fixed splits, paths relative to the YAML; the search only ever sees ``train``."""

    train: str
    validation: str | None = None
    test: str | None = None

    def splits(self) -> dict[str, str]:
        return {k: v for k, v in (("train", self.train), ("validation", self.validation),
                                  ("test", self.test)) if v is not None}


class DataSource(_Strict):
    """A built-in data set instead of files (the 8×8 digits of scikit-learn)."""

    source: Literal["sklearn_digits"]


class Extract(_Strict):
    """How the answer is cut out of a generation before exact match."""

    type: Literal["regex", "last_number", "first_line", "exact"] = "exact"
    pattern: str | None = None

    @model_validator(mode="after")
    def _pattern_iff_regex(self) -> Extract:
        if self.type == "regex":
            if not self.pattern:
                raise ValueError("extract type 'regex' needs a 'pattern'")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"'pattern' is only used with type 'regex', not {self.type!r}")
        return self


class _TaskBase(_Strict):
    name: str = Field(min_length=1)
    objective: Objective | None = None  # default: {name: <task name>, direction: kind's natural one}
    batch_size: int = Field(default=32, ge=1)
    description: str = ""


class _Generating(_TaskBase, PromptFormat):
    """Keys of every task that generates from prompts: the prompt format (template, chat, few-shot) and decoding."""

    max_new_tokens: int = Field(default=32, ge=1)
    decoder: Literal["loop", "hf"] = "loop"  # hand-written KV-cache loop (faster) or HF generate
    add_special_tokens: bool | None = None  # default: true for plain text, false for a rendered chat
    stop: list[str] = Field(default_factory=list)  # generation ends at the first of these; the text is cut there

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(**{k: getattr(self, k) for k in PromptFormat.model_fields})


class GenerationSpec(_Generating):
    kind: Literal["generation"]
    data: DataFiles
    extract: Extract = Extract()


class MultipleChoiceSpec(_TaskBase):
    kind: Literal["multiple_choice"]
    data: DataFiles
    normalization: Literal["none", "tokens", "chars"] = "none"  # sum of log-probs, or per token / char
    delimiter: str = " "  # put between the prompt and each choice, as lm-evaluation-harness does
    add_special_tokens: bool = True


class PerplexitySpec(_TaskBase):
    kind: Literal["perplexity"]
    data: DataFiles
    add_special_tokens: bool = True


class ClassificationSpec(_TaskBase):
    kind: Literal["classification"]
    data: DataFiles | DataSource
    labels: list[int] | None = None  # keep only the examples of these classes
    restrict_logits: bool = False  # and take the argmax over their logits only
    batch_size: int = Field(default=4096, ge=1)

    @model_validator(mode="after")
    def _restrict_needs_labels(self) -> ClassificationSpec:
        if self.restrict_logits and self.labels is None:
            raise ValueError("restrict_logits: true needs `labels`")
        return self

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError("labels must be a non-empty list of distinct non-negative class indices")
        return v


class HttpSpec(_TaskBase):
    kind: Literal["http"]
    url: str
    send: Literal["generations", "checkpoint"] = "generations"
    data: DataFiles | None = None  # prompts (and optional answers) for send: generations
    max_new_tokens: int = Field(default=32, ge=1)
    add_special_tokens: bool = True
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=2, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    checkpoint_dir: str | None = None  # where candidate checkpoints are written for send: checkpoint
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"url must start with http:// or https:// and name a host, got {v!r}")
        return v

    @model_validator(mode="after")
    def _data_for_generations(self) -> HttpSpec:
        if self.send == "generations" and self.data is None:
            raise ValueError("send: generations needs `data` with the prompts to generate from")
        return self


class LmEvalSpec(_TaskBase):
    """lm-evaluation-harness tasks: per split, a registered task name or a local task YAML."""

    kind: Literal["lm_eval"]
    task: str | None = None  # one lm-eval task (name or YAML) as the train split
    data: DataFiles | None = None  # or one per split: train / validation / test
    metric: str | None = None  # default: the task's first metric
    filter: str | None = None  # default: the task's first filter ("none" when it declares none)
    num_fewshot: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=1)
    apply_chat_template: bool | str = False  # lm-eval's --apply_chat_template (true or a template name)
    fewshot_as_multiturn: bool | None = None  # default as lm-eval's CLI: on with apply_chat_template
    system_instruction: str | None = None
    fewshot_seed: int = 1234  # lm-eval's default fewshot_random_seed
    add_bos_token: bool | None = None  # lm-eval's HF model argument; None lets lm-eval decide
    max_length: int | None = Field(default=None, ge=2)  # lm-eval's HF max_length (rolling-window size)

    @model_validator(mode="after")
    def _task_xor_data(self) -> LmEvalSpec:
        if (self.task is None) == (self.data is None):
            raise ValueError("give exactly one of `task` (an lm-eval task name or YAML) or `data` (one per split)")
        return self


class PythonSpec(_Generating):
    """A user's scoring function over the candidate's generations (or choice log-likelihoods) and the examples.

    ``function``: ``package.module:callable`` or ``path/to/file.py:callable`` (relative to the YAML);
    it is called as ``fn(generations=[...], examples=[...], **args)`` (or ``loglikelihoods=`` with
    ``inputs: loglikelihoods``: per example, one value per entry of its ``choices``) and returns one
    score per example, higher is better.
    """

    kind: Literal["python"]
    data: DataFiles
    function: str
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: Literal["generations", "loglikelihoods"] = "generations"
    delimiter: str = " "  # between the prompt and each choice (loglikelihoods), as in multiple_choice
    # [low, high] every score lies in: racing's bound rule needs it (a score outside fails the candidate)
    score_range: tuple[float, float] | None = None

    @field_validator("score_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"score_range must be [low, high] with low < high, got {list(v)}")
        return v

    @field_validator("function")
    @classmethod
    def _module_colon_callable(cls, v: str) -> str:
        target, sep, attr = v.rpartition(":")
        if not sep or not target or not attr.isidentifier():
            raise ValueError(f"function must be 'module:callable' or 'file.py:callable', got {v!r}")
        return v


class WeightDistanceSpec(_TaskBase):
    """Mean |θ − θ₀| of the candidate's parameters to a ``base`` checkpoint: MM-MO's sparsity objective
    (arXiv 2407.00487). It reads the model, not the recipe, and has no data: every split scores the same."""

    kind: Literal["weight_distance"]
    base: str = Field(min_length=1)  # checkpoint folder or .safetensors file, relative to the YAML


TaskSpec = Annotated[
    GenerationSpec | MultipleChoiceSpec | PerplexitySpec | ClassificationSpec | HttpSpec | LmEvalSpec
    | WeightDistanceSpec | PythonSpec,
    Field(discriminator="kind"),
]


class TaskFile(BaseModel):
    """Wrapper so one TypeAdapter validates any kind with a discriminated union."""

    spec: TaskSpec
