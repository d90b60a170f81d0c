"""Per-candidate fitness time of the tinylm tasks with an older greedy loop vs the current one.

Both loops run interleaved in one process (best of N each), so that a busy machine slows both
alike; the older loop is read from a file, e.g. the one before issue 15:

    git show 25ed113:evomerge/fitness/decoding.py > /tmp/old_decoding.py
    .venv/bin/python bench/decoder_before_after.py /tmp/old_decoding.py --threads 2 --repeats 7
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evomerge.fitness import load_task  # noqa: E402
from evomerge.fitness.decoding import greedy_loop  # noqa: E402
from evomerge.fitness.generation import GenerationTask  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old_decoding", type=Path, help="an older evomerge/fitness/decoding.py")
    ap.add_argument("--model", type=Path, default=REPO / "zoo" / "tinylm" / "base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.spec_from_file_location("old_decoding", args.old_decoding)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

    def old_loop(model, ids, mask, *, max_new_tokens, eos_ids, pad_id, stop=(), tokenizer=None):
        return old.greedy_loop(model, ids, mask, max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id)

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    tasks = [load_task(p) for p in sorted((REPO / "fitness" / "tinylm").glob("*.yaml"))]
    best = {"before": float("inf"), "after": float("inf")}
    gens = {}
    for _ in range(args.repeats):
        for name, fn in (("before", old_loop), ("after", greedy_loop)):
            for t in tasks:
                if isinstance(t, GenerationTask):
                    t.generator.decoder = fn
            t0 = time.perf_counter()
            res = [t.evaluate(model, tok) for t in tasks]
            best[name] = min(best[name], time.perf_counter() - t0)
            gens[name] = [x.details.get("generations") for x in res]
    print(f"{args.model}, {len(tasks)} tasks (train split), {args.threads} threads, best of {args.repeats}: "
          f"before {best['before']:.3f} s, after {best['after']:.3f} s per candidate "
          f"({best['before'] / best['after']:.2f}x); generations identical: {gens['before'] == gens['after']}")


if __name__ == "__main__":
    main()
