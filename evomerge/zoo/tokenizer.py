"""The tinylm tokenizer: word level, digits split one per token, saved as a plain fast tokenizer.

Numbers are spelt digit by digit (``▁3`` starts a number, ``4`` continues it)
so arithmetic can generalise to unseen operand pairs, and the Metaspace decoder
turns generated ids back into clean text ("34", not "3 4"). Saved as
``tokenizer.json`` + ``tokenizer_config.json``, it loads with ``AutoTokenizer``
and no custom code.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = SPECIAL_TOKENS
SPACE = "▁"


def build_tokenizer(words: Iterable[str]) -> Tokenizer:
    """A word-level tokenizer over ``words`` (whole words) plus the 20 digit tokens."""
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *(SPACE + w for w in words), *(SPACE + str(d) for d in range(10)),
                *(str(d) for d in range(10))):
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # same ids; marks them special so decode skips them
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(SPACE + r"?\d"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return tok


def to_transformers(tok: Tokenizer):
    """Wrap for ``save_pretrained``: left padding (for batched generation), no space clean-up."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False, model_max_length=256,
    )
