"""Prompt formats: text templates, chat templates (the tokenizer's, named, literal), few-shot, preflight."""

from __future__ import annotations

import pytest
from fitness_models import VOCAB, make_tokenizer

from evomerge.errors import ConfigError, FitnessError
from evomerge.fitness import check_tokenizer, load_task
from evomerge.fitness.tokens import encode

CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
TRAIN = [{"prompt": "what is a", "answer": "1"}, {"prompt": "what is b", "answer": "2"},
         {"prompt": "what is c", "answer": "3"}]
TEST = [{"prompt": "what is x", "answer": "7"}]


@pytest.fixture(scope="module")
def chat_tokenizer():
    """The word-level test tokenizer plus four chat markers and a chat template that uses them."""
    tok = make_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tok.chat_template = CHAT
    return tok


def _ids(words: str, tok) -> list[int]:
    ids = {w: i for i, w in enumerate(VOCAB)} | {w: tok.convert_tokens_to_ids(w) for w in CHAT_TOKENS}
    return [ids[w] for w in words.split()]


def _prompt_ids(task, split: str, tok) -> list[list[int]]:
    gen = task.generator
    return encode(tok, gen.texts(split, tok), add_special_tokens=gen.add_special_tokens)


def test_chat_few_shot_as_multiturn_gives_these_exact_token_ids(write_task, chat_tokenizer):
    # train has 3 examples, so 2 shots for the test example are drawn from them (seeded), shown in file order
    path = write_task({"name": "t", "kind": "generation", "chat_template": True, "system_prompt": "the a",
                       "few_shot": 3, "few_shot_as_multiturn": True}, {"train": TRAIN, "test": TEST})
    task = load_task(path)
    (ids,) = _prompt_ids(task, "test", chat_tokenizer)
    want = ("<|system|> the a <|end|> "
            "<|user|> what is a <|end|> <|assistant|> 1 <|end|> "
            "<|user|> what is b <|end|> <|assistant|> 2 <|end|> "
            "<|user|> what is c <|end|> <|assistant|> 3 <|end|> "
            "<|user|> what is x <|end|> <|assistant|>")
    assert ids == _ids(want, chat_tokenizer)  # no BOS added twice: the rendered chat is encoded as it is


def test_chat_few_shot_in_one_user_turn_and_template(write_task, chat_tokenizer):
    path = write_task({"name": "t", "kind": "generation", "chat_template": True, "few_shot": 3,
                       "template": "the {prompt}", "fewshot_delimiter": " "}, {"train": TRAIN, "test": TEST})
    (ids,) = _prompt_ids(load_task(path), "test", chat_tokenizer)
    want = "<|user|> the what is a 1 the what is b 2 the what is c 3 the what is x <|end|> <|assistant|>"
    assert ids == _ids(want, chat_tokenizer)


def test_plain_few_shot_never_shows_an_example_its_own_answer(write_task, tokenizer):
    path = write_task({"name": "t", "kind": "generation", "few_shot": 2, "template": "{prompt} is"},
                      {"train": TRAIN, "test": TEST})
    task = load_task(path)
    train = task.generator.texts("train", tokenizer)
    # scoring train: each example's 2 shots are the two other train examples
    assert train == ["what is b is 2\n\nwhat is c is 3\n\nwhat is a is",
                     "what is a is 1\n\nwhat is c is 3\n\nwhat is b is",
                     "what is a is 1\n\nwhat is b is 2\n\nwhat is c is"]
    assert task.generator.add_special_tokens  # plain text: the tokenizer adds BOS as usual
    assert _prompt_ids(task, "test", tokenizer)[0][0] == tokenizer.bos_token_id
    assert task.generator.texts("test", tokenizer) == task.generator.texts("test", tokenizer)  # deterministic


def test_few_shot_draws_are_seeded_and_differ_between_examples(write_task, tokenizer):
    train = [{"prompt": f"what is {c}", "answer": str(i)} for i, c in enumerate("abcdefgh")]
    path = write_task({"name": "t", "kind": "generation", "few_shot": 2}, {"train": train, "test": TEST * 4})
    task = load_task(path)
    first = task.generator.texts("test", tokenizer)
    assert first == load_task(path).generator.texts("test", tokenizer)
    assert len(set(first)) > 1  # the same test prompt four times, different shots
    assert all("what is x" not in p.split("\n\n")[0] for p in first)  # shots come from train only


def test_named_chat_template_renders_chatml(write_task, tokenizer):
    path = write_task({"name": "t", "kind": "generation", "chat_template": "chatml", "system_prompt": "be brief"},
                      {"train": TRAIN})
    text = load_task(path).generator.texts("train", tokenizer)[0]
    assert text == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nwhat is a<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_chat_template_true_without_one_in_the_tokenizer_fails_at_preflight(write_task, tokenizer):
    path = write_task({"name": "chatty", "kind": "generation", "chat_template": True}, {"train": TRAIN})
    task = load_task(path)
    with pytest.raises(FitnessError, match=r"task 'chatty' asks for chat_template: true, but the tokenizer of "
                                           r"/models/base has no chat template"):
        check_tokenizer([task], tokenizer, "/models/base")


@pytest.mark.parametrize(("extra", "message"), [
    ({"system_prompt": "x"}, "system_prompt needs chat_template"),
    ({"few_shot_as_multiturn": True}, "few_shot_as_multiturn needs chat_template"),
    ({"chat_template": "vicuna"}, "neither true, a Jinja template, nor one of the named"),
    ({"template": "{0} and {prompt"}, "not a valid format string"),
    ({"few_shot": -1}, "few_shot"),
    ({"stop": [""]}, "stop strings must be non-empty"),
])
def test_bad_prompt_keys_are_config_errors_naming_the_key(write_task, extra, message):
    path = write_task({"name": "t", "kind": "generation", **extra}, {"train": TRAIN})
    with pytest.raises(ConfigError, match=message):
        load_task(path)


def test_template_field_missing_from_an_example_names_it(write_task):
    path = write_task({"name": "t", "kind": "generation", "template": "{prompt} {hint}"}, {"train": TRAIN})
    with pytest.raises(FitnessError, match=r"uses '\{hint\}' but example 0 of split 'train' has no key 'hint'"):
        load_task(path)


def test_too_few_train_examples_for_the_shots(write_task, tokenizer):
    path = write_task({"name": "t", "kind": "generation", "few_shot": 4}, {"train": TRAIN})
    with pytest.raises(FitnessError, match="few_shot: 4 needs at least 4 train examples"):
        load_task(path)
    task = load_task(write_task({"name": "t", "kind": "generation", "few_shot": 3}, {"train": TRAIN}))
    with pytest.raises(FitnessError, match=r"needs 4 train examples \(an example is never its own shot\), it has 3"):
        task.generator.texts("train", tokenizer)


# ---- multiple choice: the same prompt formats; the choices are the continuations ---------------------------

MC_TRAIN = [{"prompt": "what is a", "choices": ["1", "2"], "answer": 0},
            {"prompt": "what is b", "choices": ["1", "2"], "answer": 1},
            {"prompt": "what is c", "choices": ["3", "7"], "answer": 0}]
MC_TEST = [{"prompt": "what is x", "choices": ["7", "the y"], "answer": 0}]


def _choice_ids(task, split: str, tok) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per choice, as the task scores them."""
    seqs, spans = task._encode(split, tok)
    return [(seq[:start + 1], seq[start + 1:start + 1 + n]) for seq, (_, _, start, n) in zip(seqs, spans, strict=True)]


def test_multiple_choice_chat_multiturn_shots_give_these_exact_token_ids(write_task, chat_tokenizer):
    path = write_task({"name": "t", "kind": "multiple_choice", "chat_template": True, "system_prompt": "the a",
                       "few_shot": 3, "few_shot_as_multiturn": True}, {"train": MC_TRAIN, "test": MC_TEST})
    task = load_task(path)
    ctx = ("<|system|> the a <|end|> "
           "<|user|> what is a <|end|> <|assistant|> 1 <|end|> "  # a shot's assistant turn: its correct choice
           "<|user|> what is b <|end|> <|assistant|> 2 <|end|> "
           "<|user|> what is c <|end|> <|assistant|> 3 <|end|> "
           "<|user|> what is x <|end|> <|assistant|>")
    assert _choice_ids(task, "test", chat_tokenizer) == [(_ids(ctx, chat_tokenizer), _ids("7", chat_tokenizer)),
                                                         (_ids(ctx, chat_tokenizer), _ids("the y", chat_tokenizer))]
    # lm-eval's rule: the choice follows the generation prompt directly (no delimiter), no BOS added to a chat
    assert [task.continuation("test", 0, j) for j in range(2)] == ["7", "the y"]
    assert task.add_special_tokens is False


def test_multiple_choice_chat_shots_in_one_user_turn(write_task, chat_tokenizer):
    path = write_task({"name": "t", "kind": "multiple_choice", "chat_template": True, "few_shot": 2,
                       "template": "the {prompt}", "fewshot_delimiter": " "}, {"train": MC_TRAIN, "test": MC_TEST})
    task = load_task(path)
    # the test example's 2 shots, drawn with the fixed seed from the 3 train examples, in file order
    shots = task.prompts.shots("test", 0)
    solved = " ".join(f"the {s['prompt']} {s['choices'][s['answer']]}" for s in shots)
    ctx = f"<|user|> {solved} the what is x <|end|> <|assistant|>"
    assert [c for c, _ in _choice_ids(task, "test", chat_tokenizer)] == [_ids(ctx, chat_tokenizer)] * 2


def test_multiple_choice_plain_few_shot_shows_the_correct_choice(write_task, tokenizer):
    path = write_task({"name": "t", "kind": "multiple_choice", "few_shot": 2, "delimiter": " plus "},
                      {"train": MC_TRAIN, "test": MC_TEST})
    task = load_task(path)
    (ctx, cont), _ = _choice_ids(task, "train", tokenizer)[:2]
    # train example 0's shots are examples 1 and 2: prompt, the delimiter, the correct choice
    assert ctx == [tokenizer.bos_token_id, *_ids("what is b plus 2 what is c plus 3 what is a", tokenizer)]
    assert cont == _ids("plus 1", tokenizer)
    assert task.continuation("train", 0, 0) == " plus 1"


def test_multiple_choice_named_template_and_a_misplaced_delimiter_key(write_task, tokenizer):
    path = write_task({"name": "t", "kind": "multiple_choice", "chat_template": "chatml"}, {"train": MC_TRAIN})
    assert load_task(path).prompts.render("train", tokenizer)[0] == \
        "<|im_start|>user\nwhat is a<|im_end|>\n<|im_start|>assistant\n"
    bad = write_task({"name": "t", "kind": "multiple_choice", "target_delimiter": ": "}, {"train": MC_TRAIN})
    with pytest.raises(ConfigError, match="multiple_choice puts `delimiter` between a prompt and its choice"):
        load_task(bad)


def test_multiple_choice_chat_template_true_without_one_fails_at_preflight(write_task, tokenizer):
    task = load_task(write_task({"name": "mc", "kind": "multiple_choice", "chat_template": True}, {"train": MC_TRAIN}))
    with pytest.raises(FitnessError, match=r"task 'mc' asks for chat_template: true, but the tokenizer of /m/b"):
        check_tokenizer([task], tokenizer, "/m/b")
