"""Generation tasks: greedy answers against hand-computed decoding and independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fitness_models import EOS, PAD, bigram_table, make_table_llama, walk

from evomerge.fitness import TaskResult, load_task
from evomerge.fitness.decoding import greedy_hf, greedy_loop, make_batches

TRANSITIONS = {"a": "1", "b": "2", "2": "3", "c": "4", "4": "4", "e": "5", "5": "6", "f": "x", "x": "7"}
# prompts of different lengths (left padding in one batch); their last word decides the answer
PROMPTS = ["what is a", "b", "what is the c", "d", "is e", "the f", "what is b"]
ANSWERS = ["1", "2 3", "4 4 4 4", "", "5 6", "7", "2 4"]  # "d" -> EOS at once; last one is wrong on purpose
MAX_NEW = 4


def _rows(prompts: list[str], answers: list[str]) -> list[dict]:
    return [{"prompt": p, "answer": a} for p, a in zip(prompts, answers, strict=True)]


@pytest.fixture
def table_model():
    return make_table_llama(bigram_table(TRANSITIONS))


def test_greedy_answers_equal_the_hand_walk_over_the_table(write_task, tokenizer, table_model):
    path = write_task({"name": "t", "kind": "generation", "max_new_tokens": MAX_NEW, "batch_size": 64},
                      {"train": _rows(PROMPTS, ANSWERS)})
    res = load_task(path).evaluate(table_model, tokenizer, split="train")
    expected = [" ".join(walk(TRANSITIONS, p.split()[-1], MAX_NEW)) for p in PROMPTS]
    assert expected == ["1", "2 3", "4 4 4 4", "", "5 6", "x 7", "2 3"]
    assert res.details["generations"] == expected
    np.testing.assert_array_equal(res.per_example, [1, 1, 1, 1, 1, 0, 0])
    assert res.per_example.dtype == np.float64
    assert res.objectives == {"t": pytest.approx(5 / 7)}
    assert (res.task, res.split, res.n) == ("t", "train", 7)
    # tokens generated: each answer plus its EOS, except "4 4 4 4" which hits max_new_tokens
    assert res.details["generated_tokens"] == sum(min(len(e.split()) + 1, MAX_NEW) for e in expected)


@pytest.mark.filterwarnings("ignore:.*matches none")
def test_extractors_cut_the_answer_out_of_the_generation(write_task, tokenizer, table_model):
    cases = [({"type": "last_number"}, ["1", "3", "4", "", "6", "7", "3"]),
             ({"type": "first_line"}, ["1", "2 3", "4 4 4 4", "", "5 6", "x 7", "2 3"]),
             ({"type": "regex", "pattern": r"(\d) \d"}, ["", "2", "4", "", "5", "", "2"])]
    for i, (extract, want) in enumerate(cases):
        path = write_task({"name": f"t{i}", "kind": "generation", "max_new_tokens": MAX_NEW, "extract": extract},
                          {"train": _rows(PROMPTS, ["3"] * len(PROMPTS))}, name=f"t{i}")
        res = load_task(path).evaluate(table_model, tokenizer)
        assert res.details["predictions"] == want, extract
        np.testing.assert_array_equal(res.per_example, [float(w == "3") for w in want])


def test_answers_match_after_whitespace_normalisation(write_task, tokenizer, table_model):
    path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 3},
                      {"train": [{"prompt": "b", "answer": "  2   3 "}, {"prompt": "a", "answer": 1}]})
    res = load_task(path).evaluate(table_model, tokenizer)
    np.testing.assert_array_equal(res.per_example, [1.0, 1.0])


def _naive_greedy(model, ids: list[int], n: int) -> list[int]:
    """Reference: one unpadded sequence, full forward pass per step, no cache."""
    seq = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == EOS:
                break
            seq.append(nxt)
    return out


def _prompt_ids(tokenizer) -> list[list[int]]:
    words = ["what", "is", "the", "a", "b", "c", "plus", "x", "y", "3", "7"]
    g = torch.Generator().manual_seed(3)
    prompts = [" ".join(words[int(k)] for k in torch.randint(0, len(words), (int(n),), generator=g))
               for n in torch.randint(1, 9, (24,), generator=g)]
    return tokenizer(prompts, add_special_tokens=True)["input_ids"]


def test_batched_cached_loop_equals_naive_unbatched_decoding(random_llama, tokenizer):
    seqs = _prompt_ids(tokenizer)
    for b in make_batches(seqs, 64, pad_id=PAD, left=True):
        out = greedy_loop(random_llama, b.input_ids, b.attention_mask, max_new_tokens=6, eos_ids=[EOS], pad_id=PAD)
        for row, i in zip(out.tolist(), b.index.tolist(), strict=True):
            ref = _naive_greedy(random_llama, seqs[i], 6)
            assert row[: len(ref)] == ref
            assert all(t == PAD for t in row[len(ref):])


def test_hand_loop_and_hf_generate_produce_identical_tokens(random_llama, tokenizer):
    seqs = _prompt_ids(tokenizer)
    table = make_table_llama(bigram_table(TRANSITIONS))  # this one stops at EOS at different steps per row
    for model in (random_llama, table):
        for b in make_batches(seqs, 8, pad_id=PAD, left=True):
            kw = {"max_new_tokens": 7, "eos_ids": [EOS], "pad_id": PAD}
            ours = greedy_loop(model, b.input_ids, b.attention_mask, **kw)
            ref = greedy_hf(model, b.input_ids, b.attention_mask, **kw)
            assert torch.equal(ours, ref[:, : ours.shape[1]])
            assert (ref[:, ours.shape[1]:] == PAD).all()  # generate may run further only on finished rows


def test_decoder_hf_option_scores_like_the_loop(write_task, tokenizer, random_llama):
    rows = [{"prompt": p, "answer": "3"} for p in ["what is", "a b c", "x", "the 7 plus"]]
    res = {}
    for dec in ("loop", "hf"):
        path = write_task({"name": dec, "kind": "generation", "decoder": dec, "max_new_tokens": 5},
                          {"train": rows}, name=dec)
        res[dec] = load_task(path).evaluate(random_llama, tokenizer)
    assert res["loop"].details["generations"] == res["hf"].details["generations"]


def test_batch_size_one_and_sixty_four_give_identical_scores(write_task, tokenizer, random_llama):
    seqs = _prompt_ids(tokenizer)
    prompts = tokenizer.batch_decode([s[1:] for s in seqs])
    # answers: what the model says for half of them, so the per-example vector is not constant
    first = {}
    for bs in (1, 64):
        path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 5, "batch_size": bs},
                          {"train": _rows(prompts, ["0"] * len(prompts))}, name=f"b{bs}")
        first[bs] = load_task(path).evaluate(random_llama, tokenizer)
    gens = first[1].details["generations"]
    assert gens == first[64].details["generations"]
    answers = [g if i % 2 == 0 else "nope" for i, g in enumerate(gens)]
    res: dict[int, TaskResult] = {}
    for bs in (1, 64):
        path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 5, "batch_size": bs},
                          {"train": _rows(prompts, answers)}, name=f"c{bs}")
        res[bs] = load_task(path).evaluate(random_llama, tokenizer)
    np.testing.assert_array_equal(res[1].per_example, res[64].per_example)
    np.testing.assert_array_equal(res[1].per_example, [float(i % 2 == 0) for i in range(len(prompts))])


def test_generation_leaves_the_model_in_its_training_mode(write_task, tokenizer, table_model):
    path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 2}, {"train": _rows(["a"], ["1"])})
    table_model.train()
    load_task(path).evaluate(table_model, tokenizer)
    assert table_model.training


def test_regex_matching_no_reference_answer_warns_at_load(write_task):
    path = write_task({"name": "t", "kind": "generation", "extract": {"type": "regex", "pattern": r"#### (\d+)"}},
                      {"train": _rows(["a"], ["1"]), "test": _rows(["b"], ["2 3"])})
    with pytest.warns(UserWarning, match=r"matches none of the 2 reference answers"):
        load_task(path)


def test_encoded_prompts_are_reused_for_the_same_tokenizer(write_task, tokenizer, table_model):
    path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 2}, {"train": _rows(["a"], ["1"])})
    task = load_task(path)
    task.evaluate(table_model, tokenizer)
    cached = task.generator._cache._entries["train"][1]
    task.evaluate(table_model, tokenizer)
    assert task.generator._cache._entries["train"][1] is cached


def test_tinylm_tokenizer_digits_decode_back_to_the_number(write_task):
    """The zoo's Metaspace tokenizer spells 34 as '▁3' '4'; the generation must read back as "34"."""
    from evomerge.zoo import languages
    from evomerge.zoo import tokenizer as zoo_tok  # our own module: an import error must fail, not skip

    raw = zoo_tok.build_tokenizer(languages.vocabulary_words())
    tok = zoo_tok.to_transformers(raw)
    vocab = raw.get_vocab()
    table = torch.rand(len(vocab), len(vocab), generator=torch.Generator().manual_seed(0))
    for prev, nxt in (("▁:", "▁3"), ("▁3", "4"), ("4", zoo_tok.EOS)):
        table[vocab[prev], vocab[nxt]] = 5.0
    model = make_table_llama(table)
    model.generation_config.eos_token_id = vocab[zoo_tok.EOS]
    rows = [{"prompt": "question : what is 30 plus 4 ? answer :", "answer": "34"},
            {"prompt": "question : what is 1 plus 2 ? answer :", "answer": "3"}]
    res = load_task(write_task({"name": "m", "kind": "generation", "max_new_tokens": 6},
                               {"train": rows})).evaluate(model, tok)
    assert res.details["generations"] == ["34", "34"]
    np.testing.assert_array_equal(res.per_example, [1.0, 0.0])


def test_stop_strings_end_rows_early_and_cut_the_text(write_task, tokenizer, table_model):
    # by hand: "c" -> 4 4 4 4 4 4 (no stop met); "b" -> 2 3 (stops at "3"); "f" -> x (stops at once)
    prompts = ["what is the c", "b", "the f", "a"]
    path = write_task({"name": "t", "kind": "generation", "max_new_tokens": 6, "stop": ["3", "x"]},
                      {"train": _rows(prompts, ["4 4 4 4 4 4", "2", "", "1"])})
    res = load_task(path).evaluate(table_model, tokenizer)
    assert res.details["generations"] == ["4 4 4 4 4 4", "2 ", "", "1"]
    np.testing.assert_array_equal(res.per_example, [1, 1, 1, 1])
    assert res.details["generated_tokens"] == 6 + 2 + 1 + 2  # "a": "1" then EOS


def test_loop_with_stop_strings_is_the_plain_loop_cut_after_the_stop(tokenizer, table_model):
    seqs = tokenizer(["what is the c", "b", "the f", "is e", "d"], add_special_tokens=True)["input_ids"]
    kw = {"max_new_tokens": 6, "eos_ids": [EOS], "pad_id": PAD}
    for b in make_batches(seqs, 8, pad_id=PAD, left=True):
        plain = greedy_loop(table_model, b.input_ids, b.attention_mask, **kw)
        ours = greedy_loop(table_model, b.input_ids, b.attention_mask, stop=["3", "7"], tokenizer=tokenizer, **kw)
        assert ours.shape[1] == 6  # "c" runs to the limit
        for r, p in zip(ours.tolist(), plain.tolist(), strict=True):
            words = tokenizer.convert_ids_to_tokens(p)
            end = next((i + 1 for i, w in enumerate(words) if w in ("3", "7")), len(p))
            assert r == p[:end] + [PAD] * (len(p) - end)


def test_loop_uses_the_public_cache_api_without_deprecation_warnings(random_llama, tokenizer):
    import warnings

    seqs = _prompt_ids(tokenizer)
    b = make_batches(seqs, 64, pad_id=PAD, left=True)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers' deprecations (past_key_values -> cache) are FutureWarnings
        greedy_loop(random_llama, b.input_ids, b.attention_mask, max_new_tokens=3, eos_ids=[EOS], pad_id=PAD)
