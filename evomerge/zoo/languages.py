"""Two synthetic languages and the generators of every document and task item of the tinylm zoo.

Language A is a small English-like language; language B is A re-encoded word by
word (same order, digits and punctuation shared), so "math asked in B" needs
both the math skill and the B vocabulary — the cross-composition setting of
Akiba et al. (arXiv 2403.13187). Every generator takes a ``random.Random`` and
is a pure function of it, so a seed fixes every byte of the zoo's data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

NAMES = ("tom", "mia", "sam", "ana", "leo", "eva", "max", "zoe", "ben", "ivy", "kim", "dan")
OBJECTS = ("ball", "cup", "hat", "book", "box", "key", "pen", "bag", "lamp", "coin", "shoe", "map")
COLORS = ("red", "blue", "green", "black", "white", "pink", "brown", "gray")
PLACES = ("park", "house", "school", "shop", "lake", "farm", "garden", "city")
ANIMALS = ("cat", "dog", "bird", "fish", "cow", "fox", "frog", "horse")
VERBS = ("sees", "likes", "wants", "finds", "holds")
FUNCTION_WORDS = (
    "the", "a", "is", "of", "and", "in", "has", "have", "does", "what", "who", "where", "how", "many",
    "color", "question", "answer", "context", "plus", "minus", "equals", "reverse", "copy", "list",
)
# Shared by both languages: punctuation and the parallel-text separator.
PUNCTUATION = (":", "?", ".", "|||")
DIGITS = tuple(str(d) for d in range(10))
LIST_WORDS = ANIMALS + OBJECTS + COLORS + PLACES

A_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(NAMES + OBJECTS + COLORS + PLACES + ANIMALS + VERBS + FUNCTION_WORDS)
)
B_SEED = 20240
OPS = ("plus", "minus")
# Arithmetic is "a number below 200 plus or minus a digit": the first probe-sized model (4 layers,
# hidden 128) learnt two-digit + two-digit arithmetic only to ~25 % in a 5,000-step base, so the
# carry structure is kept but the second operand is one digit.
MAX_FIRST = 199
MAX_SECOND = 9


def _make_b_lexicon() -> dict[str, str]:
    """A fixed one-to-one map from A words to consonant-vowel pseudo-words (seeded, order-independent)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    pool = sorted(c1 + v1 + c2 + v2 for c1 in consonants for v1 in vowels for c2 in consonants for v2 in vowels)
    pool = [w for w in pool if w not in A_WORDS]
    random.Random(B_SEED).shuffle(pool)
    return {a: pool[i] for i, a in enumerate(sorted(A_WORDS))}


A_TO_B: dict[str, str] = _make_b_lexicon()
B_TO_A: dict[str, str] = {b: a for a, b in A_TO_B.items()}
B_WORDS: tuple[str, ...] = tuple(A_TO_B[a] for a in A_WORDS)


def _map_words(text: str, table: dict[str, str]) -> str:
    return " ".join(table.get(w, w) for w in text.split())


def to_b(text: str) -> str:
    """Re-encode A text in language B: each A word to its B word; digits and punctuation unchanged."""
    return _map_words(text, A_TO_B)


def to_a(text: str) -> str:
    """Inverse of :func:`to_b`."""
    return _map_words(text, B_TO_A)


def in_lang(text: str, lang: str) -> str:
    return to_b(text) if lang == "b" else text


# ---------------------------------------------------------------- task items
@dataclass(frozen=True)
class Item:
    """One question/answer item in language A; ``key`` names it across formats and languages."""

    prompt: str
    answer: str
    key: str

    def in_lang(self, lang: str) -> Item:
        return Item(in_lang(self.prompt, lang), in_lang(self.answer, lang), self.key)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"


def math_triple(rng: random.Random, max_first: int = MAX_FIRST) -> tuple[int, str, int]:
    """A random (x, op, y) with a non-negative result; ``max_first`` bounds x (weak math in the base)."""
    op = rng.choice(OPS)
    x = rng.randint(0, max_first)
    y = rng.randint(0, min(MAX_SECOND, x) if op == "minus" else MAX_SECOND)
    return x, op, y


def math_value(x: int, op: str, y: int) -> int:
    return x + y if op == "plus" else x - y


def math_key(x: int, op: str, y: int) -> str:
    return f"math:{x} {op} {y}"


def math_item(x: int, op: str, y: int) -> Item:
    """Q/A-format arithmetic: the format the experts are tuned and scored on."""
    return Item(f"question : what is {x} {op} {y} ? answer :", str(math_value(x, op, y)), math_key(x, op, y))


def equation_text(x: int, op: str, y: int) -> str:
    """Plain-equation arithmetic: what the base learns arithmetic from."""
    return f"{x} {op} {y} equals {math_value(x, op, y)} ."


def qa_item(rng: random.Random, n_facts: int, numeric_share: float = 0.25) -> Item:
    """In-context question answering over ``n_facts`` facts about distinct people."""
    people = rng.sample(NAMES, n_facts)
    facts: list[str] = []
    questions: list[tuple[str, str]] = []
    numeric: list[tuple[str, str]] = []
    used_pairs: set[tuple[str, str]] = set()
    for name in people:
        kind = rng.randrange(3)
        if kind == 0:
            color, obj = rng.choice(COLORS), rng.choice(OBJECTS)
            while (color, obj) in used_pairs:
                color, obj = rng.choice(COLORS), rng.choice(OBJECTS)
            used_pairs.add((color, obj))
            facts.append(f"{name} has a {color} {obj} .")
            questions.append(
                rng.choice([(f"what color is the {obj} of {name} ?", color), (f"who has the {color} {obj} ?", name)])
            )
        elif kind == 1:
            place = rng.choice(PLACES)
            facts.append(f"{name} is in the {place} .")
            questions.append((f"where is {name} ?", place))
        else:
            n, obj = rng.randint(2, 9), rng.choice(OBJECTS)
            facts.append(f"{name} has {n} {obj} .")
            numeric.append((f"how many {obj} does {name} have ?", str(n)))
    if numeric and (not questions or rng.random() < numeric_share):
        question, answer = rng.choice(numeric)
    else:
        question, answer = rng.choice(questions)
    prompt = f"context : {' '.join(facts)} question : {question} answer :"
    return Item(prompt, answer, "qa:" + prompt)


def list_item(rng: random.Random, op: str, n_words: int) -> Item:
    """List manipulation: copy or reverse a list of distinct words."""
    words = rng.sample(LIST_WORDS, n_words)
    out = words[::-1] if op == "reverse" else words
    prompt = f"question : {op} the list {' '.join(words)} ? answer :"
    return Item(prompt, " ".join(out), f"list:{op} {' '.join(words)}")


def narrative_text(rng: random.Random, n_sentences: int) -> str:
    """Plain monolingual sentences: the "language" a base model learns before any task."""
    out = []
    for _ in range(n_sentences):
        kind = rng.randrange(5)
        name = rng.choice(NAMES)
        if kind == 0:
            out.append(f"{name} has a {rng.choice(COLORS)} {rng.choice(OBJECTS)} .")
        elif kind == 1:
            out.append(f"{name} is in the {rng.choice(PLACES)} .")
        elif kind == 2:
            out.append(f"the {rng.choice(ANIMALS)} is in the {rng.choice(PLACES)} .")
        elif kind == 3:
            out.append(f"{name} {rng.choice(VERBS)} the {rng.choice(COLORS)} {rng.choice(ANIMALS)} .")
        else:
            out.append(f"{name} has {rng.randint(2, 9)} {rng.choice(OBJECTS)} .")
    return " ".join(out)


def unique_items(make: Callable[[random.Random], Item], rng: random.Random, n: int,
                 exclude: Iterable[str] = ()) -> list[Item]:
    """``n`` items with distinct keys, none of them in ``exclude``."""
    seen = set(exclude)
    out: list[Item] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct items (got {len(out)})")
        item = make(rng)
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


def vocabulary_words() -> list[str]:
    """Every whole word either language uses (digits are separate tokens)."""
    return list(A_WORDS) + list(B_WORDS) + list(PUNCTUATION)
