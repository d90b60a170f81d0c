"""Prompt formats: a text template, the tokenizer's chat template (or a named/literal one), few-shot examples.

Instruct and chat models are scored on the prompts they were trained on, so a task
can wrap every example in a chat template (system prompt first, generation prompt
added) and prepend ``few_shot`` solved examples, either inside the one user turn
(plain text, lm-evaluation-harness's default) or as earlier user/assistant turns
(``few_shot_as_multiturn``, lm-eval's ``fewshot_as_multiturn``).

Few-shot examples come from the ``train`` split only, drawn deterministically per
example: for the validation and test splits they never come from the split being
scored; when the train split itself is scored (the search), an example is never
its own shot (lm-eval's rule when the few-shot split is the evaluated one).
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.errors import FitnessError

# Chat templates by name, for tokenizers that ship none (a literal Jinja template works as well).
NAMED_CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
        "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}"
    ),
}


class PromptFormat(BaseModel):
    """How one example becomes the text the model reads (keys on the task, next to ``data``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = "{prompt}"  # Python format string over the example's fields
    chat_template: bool | str = False  # true: the tokenizer's; or a name in NAMED_CHAT_TEMPLATES; or Jinja text
    system_prompt: str | None = None  # the chat's first (system) message
    few_shot: int = Field(default=0, ge=0)  # solved train examples shown before each example
    few_shot_as_multiturn: bool = False  # each shot as a user turn and an assistant turn
    few_shot_seed: int = 1234
    shot_answer: str = "answer"  # the example field a shot shows as its answer (e.g. a worked solution)
    target_delimiter: str = " "  # between a shot's prompt and its answer (plain text)
    fewshot_delimiter: str = "\n\n"  # between shots, and between the last shot and the example

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, v: bool | str) -> bool | str:
        if isinstance(v, str) and v not in NAMED_CHAT_TEMPLATES and "{{" not in v and "{%" not in v:
            raise ValueError(f"chat_template {v!r} is neither true, a Jinja template, nor one of the named "
                             f"templates ({', '.join(NAMED_CHAT_TEMPLATES)})")
        return v

    @field_validator("template")
    @classmethod
    def _valid_template(cls, v: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"template {v!r} is not a valid format string: {exc}") from None
        if any(not f or not f.isidentifier() for f in fields):
            raise ValueError(f"template {v!r}: placeholders must name example fields, like {{prompt}}")
        return v

    @model_validator(mode="after")
    def _chat_only_options(self) -> PromptFormat:
        if not self.chat_template and self.system_prompt is not None:
            raise ValueError("system_prompt needs chat_template")
        if not self.chat_template and self.few_shot_as_multiturn:
            raise ValueError("few_shot_as_multiturn needs chat_template")
        return self

    @property
    def uses_chat(self) -> bool:
        return self.chat_template is not False


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


class PromptBuilder:
    """Renders the prompts of one task's examples; chat rendering needs the tokenizer, so it is per tokenizer."""

    def __init__(self, fmt: PromptFormat, examples: Mapping[str, Sequence[Mapping[str, Any]]], *,
                 task: str, answer_indexes_choices: bool = False) -> None:
        """``answer_indexes_choices``: a shot's ``shot_answer`` field is an index into its ``choices`` and the
        shot shows that choice (multiple choice); otherwise it shows the field as text."""
        self.fmt = fmt
        self.examples = examples
        self.task = task
        self.answer_key = fmt.shot_answer
        self.answer_indexes_choices = answer_indexes_choices
        missing = [(split, i, f) for split, recs in examples.items() for i, r in enumerate(recs)
                   for f in template_fields(fmt.template) if f not in r]
        if missing:
            split, i, f = missing[0]
            raise FitnessError(f"task '{task}': template {fmt.template!r} uses '{{{f}}}' but example {i} of split "
                               f"'{split}' has no key '{f}'")
        if fmt.few_shot:
            pool = examples.get("train", [])
            lacking = next((i for i, r in enumerate(pool) if self.answer_key not in r), None)
            if lacking is not None:
                raise FitnessError(f"task '{task}': few-shot needs '{self.answer_key}' in every train example; "
                                   f"example {lacking} has none (set shot_answer to the field to show)")
            if len(pool) < fmt.few_shot:
                raise FitnessError(f"task '{task}': few_shot: {fmt.few_shot} needs at least {fmt.few_shot} "
                                   f"train examples, the train split has {len(pool)}")

    def check_tokenizer(self, tokenizer: Any, source: str = "the model") -> None:
        """Preflight: ``chat_template: true`` needs a tokenizer that has one."""
        if self.fmt.chat_template is True and not getattr(tokenizer, "chat_template", None):
            raise FitnessError(f"task '{self.task}' asks for chat_template: true, but the tokenizer of {source} "
                               "has no chat template; name one (chat_template: chatml) or give a Jinja template")

    def shots(self, split: str, index: int) -> list[Mapping[str, Any]]:
        """The ``few_shot`` train examples shown before example ``index`` of ``split`` (fixed per example)."""
        pool = list(range(len(self.examples["train"])))
        if split == "train":
            pool.remove(index)
            if len(pool) < self.fmt.few_shot:
                raise FitnessError(f"task '{self.task}': scoring the train split with few_shot: {self.fmt.few_shot} "
                                   f"needs {self.fmt.few_shot + 1} train examples (an example is never its own "
                                   f"shot), it has {len(pool) + 1}")
        rng = random.Random(f"{self.fmt.few_shot_seed}:{split}:{index}")
        return [self.examples["train"][j] for j in sorted(rng.sample(pool, self.fmt.few_shot))]  # in file order

    def shot_text(self, rec: Mapping[str, Any]) -> str:
        """What a shot shows as its answer."""
        value = rec[self.answer_key]
        return str(rec["choices"][value]) if self.answer_indexes_choices else str(value)

    def _text(self, rec: Mapping[str, Any]) -> str:
        return self.fmt.template.format_map(rec)

    def _solved(self, rec: Mapping[str, Any]) -> str:
        return self._text(rec) + self.fmt.target_delimiter + self.shot_text(rec)

    def render(self, split: str, tokenizer: Any) -> list[str]:
        """Every prompt of ``split`` as the model will read it (chat-rendered text included)."""
        out = []
        for i, rec in enumerate(self.examples[split]):
            shots = self.shots(split, i) if self.fmt.few_shot else []
            if not self.fmt.uses_chat:
                out.append("".join(self._solved(s) + self.fmt.fewshot_delimiter for s in shots) + self._text(rec))
                continue
            messages: list[dict[str, str]] = []
            if self.fmt.system_prompt is not None:
                messages.append({"role": "system", "content": self.fmt.system_prompt})
            if self.fmt.few_shot_as_multiturn:
                for s in shots:
                    messages += [{"role": "user", "content": self._text(s)},
                                 {"role": "assistant", "content": self.shot_text(s)}]
                messages.append({"role": "user", "content": self._text(rec)})
            else:
                body = "".join(self._solved(s) + self.fmt.fewshot_delimiter for s in shots) + self._text(rec)
                messages.append({"role": "user", "content": body})
            out.append(self.apply_chat(tokenizer, messages))
        return out

    def apply_chat(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        tmpl = self.fmt.chat_template
        kwargs: dict[str, Any] = {}
        if isinstance(tmpl, str):
            kwargs["chat_template"] = NAMED_CHAT_TEMPLATES.get(tmpl, tmpl)
        else:
            self.check_tokenizer(tokenizer)
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        except Exception as exc:  # a Jinja error in a user template names the task, not a stack of Jinja frames
            raise FitnessError(f"task '{self.task}': the chat template failed to render: {exc}") from exc

    def add_special_tokens(self, configured: bool | None) -> bool:
        """A rendered chat already holds its special tokens (BOS included when the template writes one)."""
        return (not self.fmt.uses_chat) if configured is None else configured
