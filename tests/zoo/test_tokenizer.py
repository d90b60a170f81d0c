"""The word-level tinylm tokenizer round-trips text in both languages and decodes numbers cleanly."""

from __future__ import annotations

from evomerge.zoo import languages as L
from evomerge.zoo.tokenizer import UNK, build_tokenizer, to_transformers


def test_tokenizer_round_trips_both_languages_and_spells_numbers_by_digit():
    tok = build_tokenizer(L.vocabulary_words())
    text = "question : what is 34 plus 105 ? answer : 139"
    for t in (text, L.to_b(text)):
        enc = tok.encode(t)
        assert UNK not in enc.tokens
        assert tok.decode(enc.ids) == t
    assert tok.encode("105", add_special_tokens=False).tokens == ["▁1", "0", "5"]


def test_transformers_tokenizer_pads_left_and_decodes_generated_ids_cleanly(tmp_path):
    from transformers import AutoTokenizer

    to_transformers(build_tokenizer(L.vocabulary_words())).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    batch = tok(["what is 3", "what is 34 plus 21 ?"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["input_ids"][0][-1] != tok.pad_token_id
    answer = tok("55", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(answer, skip_special_tokens=True).strip() == "55"
