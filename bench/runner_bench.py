"""Runner throughput: local vs Ray (1 and 2 workers), overhead per candidate, memory per worker, merge paths.

For each zoo (``zoo/tinylm`` when built, else a tiny Llama family with a
generation task; ``zoo/digits`` when built, else skipped) the same random
task-arithmetic recipes are evaluated by

* the local runner (one EvalWorker in this process),
* the Ray runner with 1 worker and with 2 workers (CPU, one torch thread each,
  sources shared through the object store), and 2 workers with private sources
  (the memory comparison),

and reported as candidates per minute, the share of worker time spent in the
fitness compute and in the in-place merge, the overhead share
``1 - fitness / (workers x wall)`` (what the runner and the merge cost on top of
the fitness tasks) and the runner's own share ``1 - (fitness + merge) / (workers x wall)``,
the speed-up of 2 workers over 1, and the memory per worker
(USS: private pages; PSS: private + a fair share of shared ones). Ray start-up
and one warm-up candidate per worker are excluded from the timed part. Last, the
time to materialize one recipe in place vs with the streaming merge to disk.

The machine is shared: the load average before and after is printed, and per
run the cores our processes actually got (driver + workers CPU seconds / wall);
a 2-worker speed-up can only be read against that. Rerun when the load is high.

    .venv/bin/python bench/runner_bench.py [--candidates 40] [--zoos tinylm,digits] [--no-memory]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evomerge.exec.base import Candidate, EvalResult, Runner
from evomerge.exec.local import LocalRunner
from evomerge.exec.ray_runner import RayRunner, WorkerState
from evomerge.exec.ray_setup import connect
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import load_task
from evomerge.materialize.inplace import materialize_into
from evomerge.materialize.streaming import merge_to_disk
from evomerge.recipe.model import Recipe

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


@dataclass
class Zoo:
    name: str
    base: str
    experts: list[str]
    tasks: list[str]


@dataclass
class Row:
    zoo: str
    runner: str
    workers: int
    n: int
    wall: float
    fitness: float
    merge: float
    uss: float | None = None
    pss: float | None = None
    failed: int = 0
    cores: float = 0.0  # CPU seconds our processes (driver + workers) got per wall second

    @property
    def per_min(self) -> float:
        return 60 * self.n / self.wall

    @property
    def overhead(self) -> float:
        """What is not fitness compute: the merge and the runner."""
        return 1 - self.fitness / (self.workers * self.wall)

    @property
    def runner_overhead(self) -> float:
        """What is neither fitness nor merge: the runner's own cost (dispatch, transfer, idle workers)."""
        return 1 - (self.fitness + self.merge) / (self.workers * self.wall)


def tinylm_zoo(tmp: Path) -> Zoo:
    root = ROOT / "zoo" / "tinylm"
    experts = [root / e for e in ("math_a", "lang_b", "list_a") if (root / e / "model.safetensors").is_file()]
    tasks = sorted(str(t) for t in (root / "tasks").glob("*.yaml"))
    if (root / "base" / "model.safetensors").is_file() and len(experts) >= 2 and tasks:
        return Zoo("tinylm", str(root / "base"), [str(e) for e in experts], tasks)
    return tiny_llama_zoo(tmp, "tiny-llama (zoo/tinylm not built)")


def tiny_llama_zoo(tmp: Path, name: str, *, hidden: int = 128, layers: int = 4, vocab: int = 64) -> Zoo:
    """A tiny Llama family with a word tokenizer and a greedy-generation task (also the memory test's sources)."""
    import json

    import yaml

    from evomerge.testing import save_word_tokenizer, tiny_llama_config, tiny_llama_family

    words = [str(i) for i in range(20)] + ["plus", "is", "what"]
    config = tiny_llama_config(hidden_size=hidden, intermediate_size=2 * hidden, num_layers=layers, vocab_size=vocab)
    base, experts = tiny_llama_family(tmp / name, n_experts=3, config=config)
    save_word_tokenizer(base, words)
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"what is {a} plus {b}", "answer": str(a + b)}
            for a, b in rng.integers(0, 10, size=(128, 2))]
    (tmp / "gen.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "gen.yaml").write_text(yaml.safe_dump({"name": "gen", "kind": "generation", "max_new_tokens": 6,
                                                  "batch_size": 64, "data": {"train": "gen.train.jsonl"}}))
    return Zoo(name, str(base), [str(e) for e in experts], [str(tmp / "gen.yaml")])


def digits_zoo() -> Zoo | None:
    root = ROOT / "zoo" / "digits"
    experts = [root / "expert_0_4", root / "expert_5_9"]
    if not all((p / "model.safetensors").is_file() for p in [root / "init", *experts]):
        print("zoo/digits is not built: skipping it (evomerge zoo build digits)")
        return None
    return Zoo("digits", str(root / "init"), [str(e) for e in experts], [str(root / "tasks" / "digits_all.yaml")])


def candidates(zoo: Zoo, n: int, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        weights = rng.uniform(0.2, 1.2, size=len(zoo.experts))
        recipe = Recipe.model_validate({
            "models": [{"model": e, "parameters": {"weight": float(w)}} for e, w in zip(zoo.experts, weights,
                                                                                       strict=True)],
            "base_model": zoo.base, "merge_method": "task_arithmetic", "dtype": "float32"})
        out.append(Candidate(key=f"{zoo.name}-{i}", recipe=recipe, genome=weights))
    return out


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def timed(runner: Runner, cands: list[Candidate]) -> tuple[float, list[EvalResult], float]:
    """Wall time, results, and the cores our processes got meanwhile (a shared machine gives fewer)."""
    pids = [os.getpid()]
    if isinstance(runner, RayRunner):
        pids += [s.pid for s in runner.worker_states() if s.pid]
    cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
    results = list(runner.evaluate(cands))
    wall = time.perf_counter() - t0
    return wall, results, (_cpu_seconds(pids) - cpu0) / wall


def row(zoo: Zoo, name: str, workers: int, timing: tuple[float, list[EvalResult], float],
        runner: Runner | None) -> Row:
    wall, results, cores = timing
    r = Row(zoo.name, name, workers, len(results), wall, sum(x.fitness_seconds for x in results),
            sum(x.merge_seconds for x in results), failed=sum(not x.ok for x in results), cores=cores)
    if isinstance(runner, RayRunner):
        states = runner.memory_report()
        r.uss = statistics.mean(s.memory["uss"] for s in states) / MIB
        r.pss = statistics.mean(s.memory["pss"] for s in states) / MIB
    return r


def bench_zoo(zoo: Zoo, n: int) -> tuple[list[Row], tuple[float, float]]:
    tasks = [load_task(t) for t in zoo.tasks]
    cands = candidates(zoo, n)
    warm = candidates(zoo, 2, seed=99)
    rows = []
    worker = EvalWorker(zoo.base, zoo.experts, tasks, threads=1)
    local = LocalRunner(worker)
    list(local.evaluate(warm[:1]))
    rows.append(row(zoo, "local", 1, timed(local, cands), None))
    from evomerge.exec.shared_sources import process_memory

    mem = process_memory()
    rows[-1].uss, rows[-1].pss = mem["uss"] / MIB, mem["pss"] / MIB
    for workers in (1, 2):
        with RayRunner(base=zoo.base, models=zoo.experts, tasks=tasks, workers=workers, threads=1) as runner:
            list(runner.evaluate(warm[:workers]))
            rows.append(row(zoo, "ray", workers, timed(runner, cands), runner))
    # one in-place merge vs one streaming merge to disk of the same recipe
    recipe = cands[0].recipe
    inplace = []
    for _ in range(21):
        t0 = time.perf_counter()
        materialize_into(worker.model, recipe, worker.resident)
        inplace.append(time.perf_counter() - t0)
    streaming = []
    for _ in range(7):
        out = Path(tempfile.mkdtemp(prefix="runner-bench-"))
        try:
            t0 = time.perf_counter()
            merge_to_disk(recipe, out / "merged")
            streaming.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return rows, (statistics.median(inplace), statistics.median(streaming))


def bench_memory(tmp: Path) -> list[tuple[str, WorkerState, int]]:
    """USS/PSS per worker with the sources shared through the object store vs loaded by each worker."""
    zoo = tiny_llama_zoo(tmp, "memory-llama", hidden=512, layers=8, vocab=8192)
    tasks = [load_task(t) for t in zoo.tasks]
    out = []
    for share in (True, False):
        with RayRunner(base=zoo.base, models=zoo.experts, tasks=tasks, workers=2, threads=1,
                       share_sources=share) as runner:
            results = list(runner.evaluate(candidates(zoo, 4)))
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            for st in runner.memory_report():
                out.append(("shared (object store)" if share else "private (each worker loads)", st,
                            st.resident_bytes))
    return out


def bench_tiered(tmp: Path, n: int, share: float = 0.25) -> dict[str, float]:
    """Sources larger than the memory budget (``share`` of them held, the rest read from the mapped files).

    Per-candidate in-place merge (task arithmetic, 3 bf16 experts + base, float32 storage) against that tier's
    floor measured in the same run: copying every streamed tensor once out of its mapped file into a reused
    float32 buffer (the merge must at least do that; it also subtracts the base and merges).
    """
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.io.mapped import MappedFiles
    from evomerge.testing import tiny_llama_config, tiny_llama_family

    config = tiny_llama_config(hidden_size=512, intermediate_size=1376, num_layers=8, num_heads=8, num_kv_heads=8,
                               vocab_size=16000)
    base, experts = tiny_llama_family(tmp / "tiered", n_experts=3, config=config, dtype=torch.bfloat16)
    zoo = Zoo("tiered", str(base), [str(e) for e in experts], [])
    full = sum(4 * math.prod(info.shape) for p in (base, *experts)
               for ckpt in [Checkpoint.open(p)] for info in map(ckpt.info, ckpt.names))
    budget = int(share * full)
    worker = EvalWorker(zoo.base, zoo.experts, [], threads=1, source_memory=budget)
    resident = worker.resident
    streamed = [(k, name) for (k, name), tier in resident.tiers.items() if tier == "files"]
    cands = candidates(zoo, n + 1)
    materialize_into(worker.model, cands[0].recipe, resident)  # warm: page cache, allocator
    merge, merge_cpu = [], []  # CPU: both threads (the merge and the fetch), what a loaded machine cannot inflate
    for c in cands[1:]:
        t0, c0 = time.perf_counter(), time.process_time()
        materialize_into(worker.model, c.recipe, resident)
        merge.append(time.perf_counter() - t0)
        merge_cpu.append(time.process_time() - c0)
    # the floor: every streamed tensor copied once out of its (already mapped, warm) file into a float32 buffer
    files = MappedFiles()
    views = [files.view(resident.checkpoints[k], name) for k, name in streamed]
    buf = torch.empty(max(v.numel() for v in views), dtype=torch.float32)
    floors, floors_cpu = [], []
    for _ in range(4):
        t0, c0 = time.perf_counter(), time.process_time()
        for v in views:
            buf[:v.numel()].view(v.shape).copy_(v)
        floors.append(time.perf_counter() - t0)
        floors_cpu.append(time.process_time() - c0)
    floors, floors_cpu = floors[1:], floors_cpu[1:]  # the first pass maps the pages in
    held = EvalWorker(zoo.base, zoo.experts, [], threads=1, source_memory=None)
    materialize_into(held.model, cands[0].recipe, held.resident)
    resident_s = []
    for c in cands[1:]:
        t0 = time.perf_counter()
        materialize_into(held.model, c.recipe, held.resident)
        resident_s.append(time.perf_counter() - t0)
    streamed_bytes = sum(resident.checkpoints[k].info(name).nbytes for k, name in streamed)
    return {"sources_mib": full / MIB, "budget_mib": budget / MIB, "held_mib": resident.nbytes / MIB,
            "streamed_mib": streamed_bytes / MIB, "merge_s": statistics.median(merge),
            "floor_s": statistics.median(floors), "resident_s": statistics.median(resident_s),
            "merge_cpu_s": statistics.median(merge_cpu), "floor_cpu_s": statistics.median(floors_cpu),
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=40, help="per run on tinylm (x10 on digits: ~1 ms each)")
    parser.add_argument("--zoos", default="tinylm,digits")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory-per-worker section")
    parser.add_argument("--tiered-only", action="store_true",
                        help="only the sources-larger-than-memory section (no Ray)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tiered_only:
        with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
            print_tiered(bench_tiered(Path(tmp), 5))
        print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
        return
    load0 = os.getloadavg()
    connect(None, num_cpus=2, object_store_memory=1024 * MIB, log_to_driver=False)
    rows: list[Row] = []
    merges: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        zoos = []
        if "tinylm" in args.zoos:
            zoos.append(tinylm_zoo(Path(tmp)))
        if "digits" in args.zoos and (d := digits_zoo()) is not None:
            zoos.append(d)
        for zoo in zoos:
            r, m = bench_zoo(zoo, args.candidates * (10 if zoo.name == "digits" else 1))
            rows += r
            merges[zoo.name] = m
        memory = [] if args.no_memory else bench_memory(Path(tmp))
        tiered = bench_tiered(Path(tmp), 5)
    import ray

    ray.shutdown()
    load1 = os.getloadavg()
    print(f"\n## Runner benchmark ({os.cpu_count()} cores; load average before {load0[0]:.1f}, after "
          f"{load1[0]:.1f}: the machine is shared, numbers under load are pessimistic)\n")
    print("| zoo | runner | workers | candidates | wall s | candidates/min | fitness share | merge share | "
          "overhead (1 - fitness) | runner overhead (1 - fitness - merge) | speed-up vs 1 worker | cores we got | "
          "USS/worker MiB | PSS/worker MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        one = next((x for x in rows if x.zoo == r.zoo and x.runner == r.runner and x.workers == 1), None)
        speed = f"{one.wall / r.wall:.2f}x" if one is not None and r.workers > 1 else ""
        mem = (f"{r.uss:.0f}", f"{r.pss:.0f}") if r.uss is not None else ("", "")
        share = r.fitness / (r.workers * r.wall)
        merge = r.merge / (r.workers * r.wall)
        failed = f" ({r.failed} failed)" if r.failed else ""
        print(f"| {r.zoo} | {r.runner} | {r.workers} | {r.n}{failed} | {r.wall:.2f} | {r.per_min:.1f} | "
              f"{share:.1%} | {merge:.1%} | {r.overhead:.1%} | {r.runner_overhead:.1%} | {speed} | "
              f"{r.cores:.2f} | {mem[0]} | {mem[1]} |")
    print("\n| zoo | in-place merge ms | streaming merge to disk ms | ratio |\n|---|---|---|---|")
    for name, (inplace, streaming) in merges.items():
        print(f"| {name} | {1000 * inplace:.1f} | {1000 * streaming:.1f} | {streaming / inplace:.0f}x |")
    if memory:
        print("\n| sources (2 CPU workers; base + 3 experts, float32) | worker | resident sources MiB | "
              "RSS MiB | USS MiB | PSS MiB |\n|---|---|---|---|---|---|")
        for label, st, resident in memory:
            print(f"| {label} | {st.name} | {resident / MIB:.0f} | {st.memory['rss'] / MIB:.0f} | "
                  f"{st.memory['uss'] / MIB:.0f} | {st.memory['pss'] / MIB:.0f} |")
    print_tiered(tiered)
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")


def print_tiered(r: dict[str, float]) -> None:
    print("\n| sources (float32 resident) MiB | source_memory MiB | held MiB | read per candidate MiB | "
          "in-place merge s/candidate | floor: read the streamed bytes once, s | ratio | all held, s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['sources_mib']:.0f} | {r['budget_mib']:.0f} | {r['held_mib']:.0f} | {r['streamed_mib']:.0f} | "
          f"{r['merge_s']:.3f} | {r['floor_s']:.3f} | {r['merge_s'] / r['floor_s']:.2f}x | {r['resident_s']:.3f} |")
    print(f"\nCPU seconds (both threads; load average {r['load']:.1f}): in-place merge {r['merge_cpu_s']:.3f} per "
          f"candidate, floor {r['floor_cpu_s']:.3f}, ratio {r['merge_cpu_s'] / r['floor_cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
