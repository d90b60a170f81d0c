"""The synthetic languages and task generators: B re-encodes A exactly, everything is seeded."""

from __future__ import annotations

import random
import re

from evomerge.zoo import languages as L
from evomerge.zoo.tasks import TINYLM_TASKS, held_out_keys, tinylm_splits
from evomerge.zoo.tinylm import TinyLMRecipe, base_document, expert_item

SIZES = {"train": 10, "validation": 10, "test": 20}


def test_b_is_a_word_by_word_reencoding_that_inverts_exactly():
    text = "context : tom has 3 ball . question : how many ball does tom have ? answer : 3"
    b = L.to_b(text)
    assert len(b.split()) == len(text.split())
    assert all(w not in L.A_WORDS for w in b.split() if w not in L.PUNCTUATION and not w.isdigit())
    assert [w for w in b.split() if w.isdigit() or w in L.PUNCTUATION] == \
        [w for w in text.split() if w.isdigit() or w in L.PUNCTUATION]
    assert L.to_a(b) == text


def test_b_lexicon_is_one_to_one_and_fixed():
    assert len(set(L.A_TO_B.values())) == len(L.A_WORDS)
    assert not set(L.B_WORDS) & set(L.A_WORDS)
    # Pinned: a change here changes every zoo byte, so it must come with a ZOO_VERSION bump.
    assert (L.A_TO_B["question"], L.A_TO_B["answer"], L.A_TO_B["plus"]) == ("vila", "bebu", "sura")


def test_generators_are_deterministic_given_a_seed():
    recipe = TinyLMRecipe()
    a = [base_document(random.Random(7), recipe, frozenset()) for _ in range(3)]
    b = [base_document(random.Random(7), recipe, frozenset()) for _ in range(3)]
    assert a == b
    assert tinylm_splits(SIZES, 3) == tinylm_splits(SIZES, 3)
    assert tinylm_splits(SIZES, 3) != tinylm_splits(SIZES, 4)


def test_split_items_are_distinct_across_every_task_and_split():
    splits = tinylm_splits(SIZES, 1)
    keys = [i.key for t in splits.values() for s in t.values() for i in s]
    assert len(keys) == len(set(keys)) == len(TINYLM_TASKS) * sum(SIZES.values())


def test_math_b_is_math_a_asked_in_b():
    splits = tinylm_splits(SIZES, 1)
    item = splits["math_b"]["test"][0]
    assert L.to_a(item.prompt).startswith("question : what is ")
    assert item.answer.isdigit()


def test_no_training_document_contains_a_held_out_arithmetic_problem():
    splits = tinylm_splits(SIZES, 1)
    held = held_out_keys(splits)
    rng, recipe = random.Random(0), TinyLMRecipe()
    pattern = re.compile(r"(\d+) (plus|minus|" + L.A_TO_B["plus"] + "|" + L.A_TO_B["minus"] + r") (\d+)")
    seen = 0
    for _ in range(3000):
        for x, op, y in pattern.findall(base_document(rng, recipe, held)):
            seen += 1
            assert L.math_key(int(x), L.B_TO_A.get(op, op), int(y)) not in held
    assert seen > 100
    for name in ("math_a", "lang_b", "list_a"):
        assert all(expert_item(rng, name, held).key not in held for _ in range(200))
