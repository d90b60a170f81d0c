"""``chat_template``: a named template, ``auto``, or a literal Jinja template, as mergekit 0.1.5 reads it.

mergekit's rule: ``auto`` takes the template most of the source models share;
a short single-line value without ``{`` names a bundled template; anything
else must look like a template (``{`` and at least 20 characters) or is
refused. The named templates here are evomerge's own Jinja for the same
well-known prompt formats (mergekit ships chatml, llama3, mistral, alpaca and
exaone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from evomerge.errors import ConfigError

NAMED_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
        " + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + eos_token }}"
        "{% elif message['role'] == 'system' %}{{ message['content'] | trim + '\\n\\n' }}"
        "{% endif %}{% endfor %}"
    ),
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'user_context' %}{{ '### Input:\\n' + message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] | trim + '\\n\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "exaone": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ '[|system|]' + message['content'] | trim + '[|endofturn|]\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '[|user|]' + message['content'] | trim + '\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '[|assistant|]' + message['content'] | trim"
        " + '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
    ),
}


def check_chat_template(value: str) -> None:
    """Refuse at load time what mergekit would refuse at write time (an unknown name, a non-template)."""
    if value == "auto" or _is_name(value):
        if value != "auto" and value not in NAMED_TEMPLATES:
            raise ValueError(f"chat_template {value!r} is neither a template nor one of the named templates "
                             f"({', '.join(sorted(NAMED_TEMPLATES))}, auto)")
        return
    if len(value) < 20 or "{" not in value:
        raise ValueError(f"chat_template {value[:40]!r} is not a Jinja template (mergekit: 'Invalid chat template')")


def _is_name(value: str) -> bool:
    return len(value) < 256 and "\n" not in value and "{" not in value


def resolve_chat_template(value: str, folders: Iterable[Path]) -> str | None:
    """The template text for ``value``; for ``auto`` the one most source models share (None if none has one)."""
    if value != "auto":
        check_chat_template(value)
        return NAMED_TEMPLATES.get(value, value)
    from evomerge.vocab.build import load_tokenizer

    found = []
    for folder in folders:
        try:
            template = load_tokenizer(folder).chat_template
        except ConfigError:
            continue  # mergekit skips a model whose tokenizer does not load
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            found.append(template.strip())
    return Counter(found).most_common(1)[0][0] if found else None
