"""Fitness throughput: examples/s and generated tokens/s per task, and where one candidate's time goes.

Scoring throughput bounds the search, so this prints, per task on one split:
- examples/s and generated tokens/s with encodings cached (every candidate after the first),
- the first (cold) call, which also tokenizes the prompts,
- the share of time in model forward passes vs tokenization/decoding vs bookkeeping,
- the hand-written KV-cache loop against ``model.generate`` on the same batches (same run),
and the total time to score one candidate on every task.

    .venv/bin/python bench/fitness_bench.py                          # zoo/tinylm/base + fitness/tinylm/*.yaml
    .venv/bin/python bench/fitness_bench.py --model DIR --tasks fitness/tinylm/*.yaml --threads 2
    .venv/bin/python bench/fitness_bench.py --llama135m                # + decoding tokens/s, 135M Llama shape

Without a built zoo it builds a random model of the tinylm shape (4 layers, hidden 128) with the
tinylm tokenizer and tasks, and says so. An untrained model never emits EOS, so every answer runs to
max_new_tokens: an upper bound on the trained model's decoding time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evomerge.fitness import load_task  # noqa: E402
from evomerge.fitness.decoding import greedy_hf, greedy_loop  # noqa: E402
from evomerge.fitness.generation import GenerationTask  # noqa: E402


def random_tinylm(out: Path) -> tuple[Any, Any, list[Path]]:
    """A random-init model of the tinylm recipe's shape, the tinylm tokenizer, and the tinylm task files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from evomerge.zoo import languages as L
    from evomerge.zoo.tasks import tinylm_splits, write_tinylm_tasks
    from evomerge.zoo.tinylm import TinyLMRecipe
    from evomerge.zoo.tokenizer import BOS, EOS, PAD, build_tokenizer, to_transformers

    recipe = TinyLMRecipe()
    raw = build_tokenizer(L.vocabulary_words())
    vocab = raw.get_vocab()
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=recipe.hidden_size,
                      intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.num_layers,
                      num_attention_heads=recipe.num_heads, num_key_value_heads=recipe.num_heads,
                      max_position_embeddings=recipe.max_positions, bos_token_id=vocab[BOS],
                      eos_token_id=vocab[EOS], pad_token_id=vocab[PAD], tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    paths = write_tinylm_tasks(out, tinylm_splits(recipe.split_sizes, recipe.split_seed))
    return model, to_transformers(raw), paths


def llama135m_decoding(*, n_prompts: int, batch_size: int, max_new_tokens: int, repeats: int) -> None:
    """Tokens/s of the hand-written loop and of ``model.generate`` on a random 135M-parameter Llama
    (SmolLM-135M's shape: 30 layers, hidden 576, 9 heads / 3 KV heads, vocabulary 49152), prompts of
    8-96 random tokens batched by length; no EOS, so every row decodes ``max_new_tokens``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from evomerge.fitness.decoding import make_batches

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 97, (n_prompts,), generator=g).tolist()
    prompts = [torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
    batches = make_batches(prompts, batch_size, pad_id=0, left=True)
    print(f"\n135M-shaped random Llama: {n_params / 1e6:.1f} M parameters, {n_prompts} prompts of 8-96 tokens, "
          f"batch {batch_size} (sorted by length), {max_new_tokens} new tokens each; best of {repeats}")
    decoders = {"loop": greedy_loop, "generate": greedy_hf}
    best = dict.fromkeys(decoders, float("inf"))
    outs: dict[str, list[torch.Tensor]] = {}
    for _ in range(repeats):  # interleaved, so that a busy machine slows both alike
        for name, fn in decoders.items():
            t0 = time.perf_counter()
            outs[name] = [fn(model, b.input_ids, b.attention_mask, max_new_tokens=max_new_tokens, eos_ids=[],
                             pad_id=0) for b in batches]
            best[name] = min(best[name], time.perf_counter() - t0)
    for name, seconds in best.items():
        print(f"  {name:<9} {seconds:7.2f} s  {n_prompts * max_new_tokens / seconds:8.1f} tokens/s")
    results = {name: (best[name], outs[name]) for name in decoders}
    same = all(torch.equal(a, b) for a, b in zip(results["loop"][1], results["generate"][1], strict=True))
    print(f"  loop / generate speed-up: {results['generate'][0] / results['loop'][0]:.2f}x; "
          f"tokens identical: {same}")


def timed(fn, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "zoo" / "tinylm" / "base")
    ap.add_argument("--tasks", type=Path, nargs="*", default=None, help="task YAMLs (default fitness/tinylm/*.yaml)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="also time these batch sizes")
    ap.add_argument("--llama135m", action="store_true", help="also time decoding on a random 135M Llama")
    ap.add_argument("--llama-prompts", type=int, default=32)
    ap.add_argument("--llama-batch", type=int, default=16)
    ap.add_argument("--llama-new-tokens", type=int, default=32)
    ap.add_argument("--skip-tasks", action="store_true", help="only the --llama135m decoding figures")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    if args.llama135m:
        llama135m_decoding(n_prompts=args.llama_prompts, batch_size=args.llama_batch,
                           max_new_tokens=args.llama_new_tokens, repeats=args.repeats)
    if args.skip_tasks:
        return
    tmp = tempfile.TemporaryDirectory()
    task_paths = args.tasks or sorted((REPO / "fitness" / "tinylm").glob("*.yaml"))
    if (args.model / "config.json").is_file() and task_paths:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        print(f"model: {args.model}")
    else:
        model, tokenizer, built = random_tinylm(Path(tmp.name))
        task_paths = args.tasks or built
        print(f"model: RANDOM init of the tinylm shape (no built zoo at {args.model}); tasks generated by "
              "evomerge.zoo.tasks; answers never end early (no EOS)")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params / 1e6:.2f} M; split: {args.split}; best of {args.repeats}\n")

    tasks = [load_task(p) for p in task_paths]
    head = (f"{'task':<10}{'n':>5}{'cold s':>8}{'warm s':>8}{'ex/s':>8}{'gen tok/s':>10}"
            f"{'forward':>9}{'tokenize':>9}{'other':>7}{'generate() s':>13}{'loop speed-up':>14}")
    print(head)
    total_cold = total_warm = 0.0
    for task in tasks:
        t0 = time.perf_counter()
        cold = task.evaluate(model, tokenizer, split=args.split)
        t_cold = time.perf_counter() - t0
        t_warm, res = timed(lambda task=task: task.evaluate(model, tokenizer, split=args.split), args.repeats)
        total_cold += t_cold
        total_warm += t_warm
        d = res.details
        fwd = d.get("seconds_generate", d.get("seconds_forward", 0.0))
        tok = d.get("seconds_tokenize", 0.0)
        gen_tok = d.get("generated_tokens", 0)
        line = (f"{task.name:<10}{res.n:>5}{t_cold:>8.3f}{t_warm:>8.3f}{res.n / t_warm:>8.0f}"
                f"{gen_tok / t_warm:>10.0f}{fwd / res.seconds:>9.0%}{tok / res.seconds:>9.0%}"
                f"{max(res.seconds - fwd - tok, 0) / res.seconds:>7.0%}")
        if isinstance(task, GenerationTask):
            gen = task.generator
            gen.decoder = greedy_hf
            t_hf, res_hf = timed(lambda task=task: task.evaluate(model, tokenizer, split=args.split), args.repeats)
            gen.decoder = greedy_loop
            same = res_hf.details["generations"] == res.details["generations"] == cold.details["generations"]
            line += f"{t_hf:>13.3f}{t_hf / t_warm:>13.2f}x" + ("" if same else "  (GENERATIONS DIFFER!)")
        print(line)
    print(f"\none candidate, all {len(tasks)} tasks on '{args.split}': {total_warm:.2f} s warm "
          f"(first candidate, with tokenization: {total_cold:.2f} s)")

    for bs in args.batch_sizes:
        total = 0.0
        for task in tasks:
            if isinstance(task, GenerationTask):
                task.generator.batch_size = bs
                task.generator._cache = type(task.generator._cache)()
            task.evaluate(model, tokenizer, split=args.split)
            total += timed(lambda task=task: task.evaluate(model, tokenizer, split=args.split), args.repeats)[0]
        print(f"batch_size {bs:>4}: one candidate {total:.2f} s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
