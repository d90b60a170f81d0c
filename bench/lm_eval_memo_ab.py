"""Seconds per candidate of ``kind: lm_eval``, with and without the adapter's per-worker memos, in one process.

The memos (``evomerge/fitness/lm_eval_adapter.py``): each document's ``doc_to_target``/``doc_to_choice``
(lm-eval compiles the task's Jinja template on every call) and HFLM's ``_encode_pair`` token ids of
``loglikelihood`` requests. Two tasks on the tinylm base, both built from the math_a train prompts: the
``generate_until`` task of ``bench/evolve_vs_mergekit.py`` and a two-choice ``multiple_choice`` task
(right answer, answer + 1). The two adapters are evaluated alternately (same load), after one warm-up each;
the objectives must be equal.

Run: python bench/lm_eval_memo_ab.py [--rows 120] [--repeats 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evolve_vs_mergekit as bench


def mc_task(work: Path, rows: int) -> Path:
    lines = (bench.REPO / "fitness" / "tinylm" / "math_a.train.jsonl").read_text().splitlines()[:rows]
    docs = [json.loads(line) for line in lines]
    mc = [{"prompt": d["prompt"], "choices": [d["answer"], str(int(d["answer"]) + 1)], "answer": 0} for d in docs]
    data = work / "evm_bench_mc.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    spec = {"task": "evm_bench_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]}
    path = work / "mc_tasks" / "evm_bench_mc.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import evomerge.fitness.lm_eval_adapter as adapter
    from evomerge.fitness import load_task

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lm_eval_memo_ab."))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets"))
    model = AutoModelForCausalLM.from_pretrained(bench.ZOO / "base", dtype="float32")
    tok = AutoTokenizer.from_pretrained(bench.ZOO / "base")
    tasks = {"generate_until": bench.write_task(work, args.rows), "multiple_choice": mc_task(work, args.rows)}
    memo_fields, memo_pairs = adapter._memo_doc_fields, adapter._memo_encode_pair
    print(f"load average {os.getloadavg()}; torch threads {args.threads}; {args.rows} documents")
    for kind, yaml_path in tasks.items():
        spec = work / f"{kind}.yaml"
        spec.write_text(yaml.safe_dump({"name": kind, "kind": "lm_eval", "task": str(yaml_path), "batch_size": 32}))
        adapter._memo_doc_fields, adapter._memo_encode_pair = (lambda task: None), (lambda lm: None)
        without = load_task(spec)
        first = without.evaluate(model, tok)
        adapter._memo_doc_fields, adapter._memo_encode_pair = memo_fields, memo_pairs
        memo = load_task(spec)
        memo.evaluate(model, tok)
        seconds: dict[str, list[float]] = {"without memos": [], "with memos": []}
        for _ in range(args.repeats):
            for label, task in (("without memos", without), ("with memos", memo)):
                res = task.evaluate(model, tok)
                assert res.objectives == first.objectives, (res.objectives, first.objectives)
                seconds[label].append(res.seconds)
        med = {k: statistics.median(v) for k, v in seconds.items()}
        print(f"{kind:<16} median s/candidate: without memos {med['without memos']:.3f}, with memos "
              f"{med['with memos']:.3f} ({med['without memos'] / med['with memos']:.2f}x); objective "
              f"{first.objectives[kind]}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
