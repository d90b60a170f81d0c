"""Build the tinylm zoo: a small Llama pre-trained on languages A and B, and three gently tuned experts.

The design follows the third feasibility probe in DESIGN.md ("The tiny zoo"),
the one in which merges keep every skill: the base already knows the
question/answer format in both languages, does Q/A math only weakly, and sees
much parallel A ||| B text; each expert is a short, low learning-rate
fine-tune, so its task vector is a small move from the base (as real
fine-tunes are) and task arithmetic can add the experts' skills together
(Ilharco et al., arXiv 2212.04089).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evomerge.zoo import languages as L
from evomerge.zoo.tasks import EXPERT_TASKS, TINYLM_TASKS, tinylm_splits, write_tinylm_tasks
from evomerge.zoo.tokenizer import BOS, EOS, PAD, build_tokenizer, to_transformers

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class TinyLMRecipe:
    """Everything that determines the tinylm zoo's bytes; its hash is the build stamp."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 256
    seed: int = 0
    split_seed: int = 1234
    split_sizes: dict[str, int] = field(default_factory=lambda: {"train": 120, "validation": 120, "test": 300})
    # base pre-training
    base_steps: int = 4000
    base_batch: int = 48
    base_lr: float = 1e-3
    base_min_lr: float = 1e-4
    base_warmup: int = 100
    base_weight_decay: float = 0.01
    # shares of the base's documents (normalised); see base_document()
    mix: dict[str, float] = field(default_factory=lambda: {
        "parallel": 0.25, "equations": 0.28, "qa_a": 0.20, "qa_math_a": 0.03, "qa_math_b": 0.01,
        "lists": 0.05, "narrative": 0.18,
    })
    weak_math_max_first: int = 19  # Q/A math in the base only asks about numbers below 20
    # expert fine-tunes
    expert_steps: int = 300
    expert_batch: int = 32
    expert_lr: float = 3e-4
    expert_warmup: int = 20
    expert_replay: float = 0.25  # share of base documents in each expert's batches, against forgetting
    length_group: int = 8  # batches drawn together and sorted by length, to pad less

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def tiny(cls) -> TinyLMRecipe:
        """A seconds-long build with the same code paths, for tests."""
        return cls(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, base_steps=4, base_batch=8,
                   expert_steps=2, expert_batch=8, split_sizes={"train": 4, "validation": 4, "test": 8})


# ------------------------------------------------------------------ data
def base_document(rng: random.Random, recipe: TinyLMRecipe, held_out: frozenset[str]) -> str:
    """One pre-training document, drawn from the recipe's mix; no held-out item ever appears."""
    kinds, weights = zip(*recipe.mix.items(), strict=True)
    kind = rng.choices(kinds, weights)[0]
    lang = rng.choice("ab")

    def fresh(make: Callable[[], L.Item]) -> L.Item:
        while True:
            item = make()
            if item.key not in held_out:
                return item

    def weak_math() -> L.Item:
        return L.math_item(*L.math_triple(rng, recipe.weak_math_max_first))

    def list_op() -> L.Item:
        return (L.list_item(rng, "copy", rng.randint(2, 5)) if rng.random() < 0.7
                else L.list_item(rng, "reverse", 2))

    if kind == "parallel":
        # Narrative and list Q/A in both directions; never in-context QA (the B expert's skill)
        # and never Q/A math (its B share is the qa_math_b knob).
        text = L.narrative_text(rng, rng.randint(1, 3)) if rng.random() < 0.65 else fresh(list_op).text
        a, b = text, L.to_b(text)
        return f"{a} ||| {b}" if lang == "a" else f"{b} ||| {a}"
    if kind == "equations":
        eqs = []
        for _ in range(rng.randint(2, 4)):
            triple = L.math_triple(rng)
            while L.math_key(*triple) in held_out:
                triple = L.math_triple(rng)
            eqs.append(L.equation_text(*triple))
        return L.in_lang(" ".join(eqs), lang)
    if kind == "qa_a":  # in-context QA is only ever seen in A by the base
        return fresh(lambda: L.qa_item(rng, rng.randint(1, 3))).text
    if kind == "qa_math_a":
        return fresh(weak_math).text
    if kind == "qa_math_b":
        return fresh(weak_math).in_lang("b").text
    if kind == "lists":
        return fresh(list_op).in_lang(lang).text
    return L.in_lang(L.narrative_text(rng, rng.randint(2, 5)), lang)


def expert_item(rng: random.Random, expert: str, held_out: frozenset[str]) -> L.Item:
    """One fine-tuning item for an expert: its task's distribution, minus every held-out item."""
    task = TINYLM_TASKS[expert]
    while True:
        item = task.make(rng)
        if item.key not in held_out:
            return item.in_lang(task.lang)


def expert_example_source(rng: random.Random, expert: str, recipe: TinyLMRecipe, held_out: frozenset[str],
                          encode: Callable[[list[str]], list[list[int]]], bos: int, eos: int, *,
                          replay: float) -> Callable[[int], list[tuple[list[int], int]]]:
    """``n -> examples`` for fine-tuning on ``expert``'s skill: (ids, number of leading ids the loss skips).

    A ``replay`` share of each draw is base documents (loss on every token), against forgetting; the
    task items are scored on their answers only. Shared by the full experts and the LoRA adapters, so
    both see the same data stream for the same ``rng`` seed.
    """

    def make(n: int) -> list[tuple[list[int], int]]:
        n_replay = round(n * replay)
        items = [expert_item(rng, expert, held_out) for _ in range(n - n_replay)]
        prompts, answers = encode([i.prompt for i in items]), encode([i.answer for i in items])
        task = [([bos, *p, *a, eos], 1 + len(p)) for p, a in zip(prompts, answers, strict=True)]
        docs = encode([base_document(rng, recipe, held_out) for _ in range(n_replay)])
        return task + [([bos, *ids, eos], 0) for ids in docs]

    return make


# ------------------------------------------------------------------ training
def _model_config(recipe: TinyLMRecipe, vocab_size: int, ids: dict[str, int]):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads, max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=False, bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
    )


def _batches(examples: list[tuple[list[int], int]], batch: int, pad_id: int,
             rng: random.Random) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Length-grouped, right-padded batches; labels are -100 on padding and on the first ``n_masked`` ids."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    out = []
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (ids, n_masked) in enumerate(chunk):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            labels[r, n_masked:len(ids)] = torch.tensor(ids[n_masked:])
            mask[r, :len(ids)] = 1
        out.append((input_ids, mask, labels))
    rng.shuffle(out)
    return out


def _lr_at(step: int, total: int, peak: float, floor: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * frac))


def _train(model, make_examples: Callable[[int], list[tuple[list[int], int]]], *, steps: int, batch: int,
           lr: float, min_lr: float, warmup: int, weight_decay: float, group: int, pad_id: int,
           rng: random.Random, stage: str, progress: Progress | None,
           params: list[torch.nn.Parameter] | None = None) -> list[float]:
    """AdamW with warmup + cosine decay; returns the loss curve (mean per 50 steps).

    ``params``: what to train (a LoRA's A and B matrices); default every parameter of ``model``.
    """
    params = list(model.parameters()) if params is None else params
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    model.train()
    queue: list = []
    losses, window = [], []
    for step in range(steps):
        if not queue:
            queue = _batches(make_examples(batch * group), batch, pad_id, rng)
        input_ids, mask, labels = queue.pop()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, min_lr, warmup)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        window.append(loss.item())
        if len(window) == 50 or step == steps - 1:
            losses.append(sum(window) / len(window))
            window = []
        if progress is not None:
            progress(stage, step + 1, steps)
    model.eval()
    return losses


def build_tinylm(out_dir: str | Path, recipe: TinyLMRecipe | None = None, *, tasks_dir: str | Path | None = None,
                 progress: Progress | None = None) -> dict:
    """Write ``base/``, ``math_a/``, ``lang_b/``, ``list_a/`` (HF folders) and ``tasks/`` under ``out_dir``.

    Returns build facts (loss curves, task-vector norms) for the build log.
    """
    from transformers import LlamaForCausalLM

    recipe = recipe or TinyLMRecipe()
    out = Path(out_dir)
    torch.set_num_threads(1)
    splits = tinylm_splits(recipe.split_sizes, recipe.split_seed)
    held_out = frozenset(i.key for t in splits.values() for s in t.values() for i in s)
    write_tinylm_tasks(out / "tasks", splits)
    if tasks_dir is not None:
        write_tinylm_tasks(tasks_dir, splits)

    raw_tok = build_tokenizer(L.vocabulary_words())
    hf_tok = to_transformers(raw_tok)
    vocab = raw_tok.get_vocab()
    bos, eos, pad = vocab[BOS], vocab[EOS], vocab[PAD]

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in raw_tok.encode_batch(texts, add_special_tokens=False)]

    facts: dict = {"recipe": recipe.to_dict()}
    # base
    data_rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(_model_config(recipe, len(vocab), vocab))

    def base_examples(n: int) -> list[tuple[list[int], int]]:
        docs = [base_document(data_rng, recipe, held_out) for _ in range(n)]
        return [([bos, *ids, eos], 0) for ids in encode(docs)]

    facts["base_loss"] = _train(
        model, base_examples, steps=recipe.base_steps, batch=recipe.base_batch, lr=recipe.base_lr,
        min_lr=recipe.base_min_lr, warmup=recipe.base_warmup, weight_decay=recipe.base_weight_decay,
        group=recipe.length_group, pad_id=pad, rng=data_rng, stage="base", progress=progress)
    _save(model, hf_tok, out / "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base_norm = math.sqrt(sum(float(v.float().pow(2).sum()) for v in base_state.values()))

    for k, expert in enumerate(EXPERT_TASKS):
        model.load_state_dict(base_state)
        rng = random.Random(recipe.seed * 1000 + 17 + k)
        torch.manual_seed(recipe.seed * 1000 + 17 + k)

        expert_examples = expert_example_source(rng, expert, recipe, held_out, encode, bos, eos,
                                                replay=recipe.expert_replay)
        facts[f"{expert}_loss"] = _train(
            model, expert_examples, steps=recipe.expert_steps, batch=recipe.expert_batch, lr=recipe.expert_lr,
            min_lr=recipe.expert_lr, warmup=recipe.expert_warmup, weight_decay=0.0, group=recipe.length_group,
            pad_id=pad, rng=rng, stage=expert, progress=progress)
        delta = math.sqrt(sum(float((v.float() - base_state[n].float()).pow(2).sum())
                              for n, v in model.state_dict().items()))
        facts[f"{expert}_tv_rel_norm"] = delta / base_norm
        _save(model, hf_tok, out / expert)
    return facts


def _save(model, tokenizer, path: Path) -> None:
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
