"""Seconds per evaluation: evomerge's search against mergekit-evolve on the same local lm-eval task (CPU).

Both search task arithmetic over the tinylm zoo (base + math_a, lang_b, list_a; one weight per
expert) with CMA-ES, and score every candidate with lm-evaluation-harness on one custom local task
(a YAML and a JSONL written here: the math_a train prompts as ``generate_until``, exact match).

- evomerge: ``evomerge run`` with ``kind: lm_eval`` (in-place merge into one model instance, lm-eval's
  HFLM around it); per evaluation = the trial's ``merge_seconds + fitness_seconds`` from the run's
  Optuna storage.
- mergekit-evolve 0.1.5 (``--no-vllm --no-merge-cuda --no-in-memory``, pool strategy): it schedules
  its merge/eval actors with ``num_gpus=1``, so on a CPU machine it waits forever for a GPU; this
  script starts Ray itself with one *logical* GPU (``ray.init(num_gpus=1)``) and times
  ``ActorPoolEvaluationStrategy.evaluate_genotypes`` (one actor, so one genotype after the other):
  per evaluation = a batch's wall time / its size. mergekit scores in bfloat16 (hardcoded in
  mergekit-evolve), evomerge in the sources' float32. On CPU, without vllm, mergekit 0.1.5 needs
  three small edits (``bench/mergekit_evolve_0.1.5_without_vllm.patch``: it evaluates an annotation
  naming lm-eval's vllm module, which lm-eval 0.4.13 imports only with vllm installed; it calls
  ``torch.cpu.empty_cache``, which does not exist; it leaves lm-eval's HF model on its default
  device, ``cuda``). ``--in-memory`` fails inside mergekit 0.1.5 itself on any device
  (``plan_in_memory``: "Can't instantiate abstract class Task[Tensor]"), so it is not measured by default.

Run (lm-eval in both interpreters; mergekit[evolve]==0.1.5 in the second):
    python bench/evolve_vs_mergekit.py --evals 14 --mergekit-python /work/mkvenv/bin/python
``--threads`` applies to both tools; on a shared machine one thread per evaluation is much faster for the
tinylm model than two (a second OpenMP thread waits for a busy core): the README gives both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo" / "tinylm"
EXPERTS = ("math_a", "lang_b", "list_a")
TASK = "evm_bench_math"

MERGEKIT_DRIVER = textwrap.dedent("""
    import json, sys, time
    import ray
    ray.init(num_cpus=int(sys.argv[2]), num_gpus=1, include_dashboard=False)  # one logical GPU: see the docstring
    from mergekit.evo import strategy
    times = []
    original = strategy.ActorPoolEvaluationStrategy.evaluate_genotypes
    def timed(self, genotypes):
        t0 = time.perf_counter()
        out = original(self, genotypes)
        times.append([len(genotypes), time.perf_counter() - t0])
        return out
    strategy.ActorPoolEvaluationStrategy.evaluate_genotypes = timed
    from mergekit.scripts.evolve import main
    try:
        main(sys.argv[3:], standalone_mode=False)
    finally:
        with open(sys.argv[1], "w") as f:
            json.dump(times, f)
""")


def write_task(work: Path, rows: int) -> Path:
    """The local lm-eval task both tools score: math_a train prompts, greedy, exact match."""
    data = work / f"{TASK}.jsonl"
    lines = (REPO / "fitness" / "tinylm" / "math_a.train.jsonl").read_text().splitlines()[:rows]
    data.write_text("\n".join(lines) + "\n")
    spec = {"task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"train": str(data)}},
            "test_split": "train", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["?"], "max_gen_toks": 6, "do_sample": False},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    path = work / "tasks" / f"{TASK}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def offline_env(work: Path, threads: int) -> dict[str, str]:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str(work / "hf_datasets"), "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_evomerge(python: str, work: Path, task_yaml: Path, evals: int, threads: int, batch: int) -> list[float]:
    lm_task = work / "lm_task.yaml"
    lm_task.write_text(yaml.safe_dump({"name": "math", "kind": "lm_eval", "task": str(task_yaml),
                                       "metric": "exact_match", "batch_size": batch}))
    cfg = {"name": "bench", "sources": {"base": str(ZOO / "base"), "models": [str(ZOO / e) for e in EXPERTS]},
           "space": str(REPO / "search_spaces" / "ps_task_arithmetic.yaml"), "strategy": {"name": "cma"},
           "objectives": [{"task": str(lm_task)}], "budget": {"evaluations": evals}, "seed": 0,
           "output": str(work / "evomerge_run"), "runner": {"type": "local", "threads": threads},
           "test_split": None}
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "evomerge", "run", str(work / "run.yaml"), "--no-test"],
                          env=offline_env(work, threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"evomerge run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    script = ("import json, sys, optuna; s = optuna.load_study(study_name='bench', storage=sys.argv[1]); "
              "print(json.dumps([[t.user_attrs.get('merge_seconds'), t.user_attrs.get('fitness_seconds'), "
              "t.state.name] for t in s.trials]))")
    out = subprocess.run([python, "-c", script, f"sqlite:///{work / 'evomerge_run' / 'study.db'}"],
                         capture_output=True, text=True, check=True)
    trials = json.loads(out.stdout.strip().splitlines()[-1])
    failed = [t for t in trials if t[2] != "COMPLETE"]
    if failed:
        sys.exit(f"evomerge: {len(failed)} of {len(trials)} trials did not complete")
    merge, fitness = [t[0] for t in trials], [t[1] for t in trials]
    print(f"evomerge: {len(trials)} evaluations, run wall {wall:.1f} s (start-up included); merge median "
          f"{statistics.median(merge):.3f} s, fitness median {statistics.median(fitness):.2f} s")
    best = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "best" in line.lower()]
    if best:
        print(f"evomerge: {best[-1].strip()}")
    return [m + f for m, f in zip(merge, fitness, strict=True)]


def run_mergekit(python: str, work: Path, task_yaml: Path, evals: int, threads: int, batch: int,
                 in_memory: bool) -> list[float]:
    genome = {"genome": {"models": [str(ZOO / e) for e in EXPERTS], "base_model": str(ZOO / "base"),
                         "merge_method": "task_arithmetic", "layer_granularity": 0, "normalize": False},
              "tasks": [{"name": TASK, "metric": "exact_match,none"}],
              "apply_chat_template": False, "fewshot_as_multiturn": False}  # the tinylm tokenizer has no template
    (work / "genome.yaml").write_text(yaml.safe_dump(genome))
    times_file = work / f"mergekit_times_{int(in_memory)}.json"
    args = [str(work / "genome.yaml"), "--max-fevals", str(evals), "--no-vllm", "--no-merge-cuda",
            "--in-memory" if in_memory else "--no-in-memory", "--storage-path", str(work / "mk_storage"),
            "--num-gpus", "1", "--strategy", "pool", "--batch-size", str(batch), "--task-search-path",
            str(task_yaml.parent), "--no-save-final-model", "--no-wandb", "--random-seed", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", MERGEKIT_DRIVER, str(times_file), str(threads), *args],
                          env=offline_env(work, threads), capture_output=True, text=True,
                          cwd=work)  # cma.fmin2 writes its outcmaes/ folder into the working directory
    wall = time.perf_counter() - t0
    if not times_file.is_file() or proc.returncode != 0:
        sys.exit(f"mergekit-evolve failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    batches = json.loads(times_file.read_text())
    best = [line for line in proc.stdout.splitlines() if line.startswith("New best score")]
    print(f"mergekit-evolve: {best[-1] if best else 'no score reported'}")
    print(f"mergekit-evolve ({'in-memory' if in_memory else 'on-disk'}): {sum(n for n, _ in batches)} "
          f"evaluations in {len(batches)} batches, run wall {wall:.1f} s (start-up included)")
    return [dt / n for n, dt in batches for _ in range(n)]


def summary(name: str, per_eval: list[float]) -> str:
    return (f"{name:<32} n={len(per_eval):3d}  mean {statistics.mean(per_eval):7.2f} s  median "
            f"{statistics.median(per_eval):7.2f} s  min {min(per_eval):7.2f} s  max {max(per_eval):7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=int, default=14, help="evaluations per tool (CMA-ES popsize is 7 for 3 weights)")
    ap.add_argument("--rows", type=int, default=120, help="prompts in the lm-eval task")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--evomerge-python", default=sys.executable, help="an interpreter with evomerge and lm-eval")
    ap.add_argument("--mergekit-python", default="/work/mkvenv/bin/python",
                    help="an interpreter with mergekit[evolve]==0.1.5")
    ap.add_argument("--mergekit-mode", choices=["in-memory", "on-disk", "both"], default="on-disk")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="evolve_vs_mergekit."))
    work.mkdir(parents=True, exist_ok=True)
    task_yaml = write_task(work, args.rows)
    print(f"work folder {work}; load average {os.getloadavg()}")
    ours = run_evomerge(args.evomerge_python, work, task_yaml, args.evals, args.threads, args.batch_size)
    rows = [summary("evomerge", ours)]
    modes = {"in-memory": [True], "on-disk": [False], "both": [True, False]}[args.mergekit_mode]
    theirs = {}
    for in_memory in modes:
        label = f"mergekit-evolve {'in-memory' if in_memory else 'on-disk'}"
        theirs[label] = run_mergekit(args.mergekit_python, work, task_yaml, args.evals, args.threads,
                                     args.batch_size, in_memory)
        rows.append(summary(label, theirs[label]))
    print(f"load average {os.getloadavg()}")
    print("\n".join(rows))
    for label, per_eval in theirs.items():
        print(f"{label} / evomerge, median seconds per evaluation: "
              f"{statistics.median(per_eval) / statistics.median(ours):.2f}x")


if __name__ == "__main__":
    main()
