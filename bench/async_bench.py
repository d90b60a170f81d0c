"""Asynchronous evaluation end to end: how busy Ray workers are kept by a whole search, not a fixed batch.

Part A (search, tinylm zoo, task-arithmetic weights of the three experts): one Study per
strategy on the same Ray pool, ``random`` and ``tpe`` streamed (a new candidate the moment a
result arrives) and ``cma`` generational (a generation is told whole). Reported: evaluations per
minute and the **worker busy share** = Σ (merge + fitness seconds) / (workers × wall), i.e. how
much of the pool the loop kept working; the rest is dispatch, transfer, the strategy's own time
and workers idling at generation boundaries.

Part B (M2N2 on digits from four random inits): children per second scored in this process vs on
Ray with 1 and 2 workers (each holds one model; the driver asks, tells and keeps the pool full).

Ray start-up (workers loading their sources) is excluded. The machine is shared: the load
average before and after is printed.

    .venv/bin/python bench/async_bench.py [--evaluations 60] [--children 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def search_rows(evaluations: int, workers: int) -> list[tuple]:
    from evomerge.study.config import RunConfig
    from evomerge.study.study import Study

    rows = []
    zoo = ROOT / "zoo" / "tinylm"
    for strategy in ("random", "tpe", "cma"):
        with tempfile.TemporaryDirectory(prefix="async-bench-") as tmp:
            config = RunConfig.from_dict({
                "name": f"async-{strategy}", "output": str(Path(tmp) / "run"),
                "sources": {"base": str(zoo / "base"), "models": [str(zoo / m) for m in ("math_a", "lang_b",
                                                                                        "list_a")]},
                "space": str(ROOT / "search_spaces" / "ps_task_arithmetic.yaml"),
                "strategy": {"name": strategy},
                "objectives": [{"task": str(ROOT / "fitness" / "tinylm" / f"{t}.yaml")}
                               for t in ("math_a", "lang_b", "list_a")],
                "budget": {"evaluations": evaluations}, "seed": 0, "test_split": None,
                "runner": {"type": "ray", "workers": workers, "threads": 1},
            })
            study = Study.create(config)
            try:
                study.runner.wait_ready(120)
                t0 = time.perf_counter()
                study.run()
                wall = time.perf_counter() - t0
                records = study.store.records()
                busy = sum(r.user_attrs["merge_seconds"] + r.user_attrs["fitness_seconds"] for r in records)
                mode = "streamed" if study.strategy.supports_async else "generational"
                rows.append((strategy, mode, workers, len(records), wall, 60 * len(records) / wall,
                             busy / (workers * wall)))
            finally:
                study.close()
    return rows


def m2n2_rows(children: int) -> list[tuple]:
    from evomerge.evolve.config import EvolveConfig
    from evomerge.evolve.driver import evolve
    from evomerge.evolve.evaluators import OnRunner
    from evomerge.evolve.registry import child_scorer
    from evomerge.evolve.session import build
    from evomerge.exec.ray_runner import RayRunner

    def config(out: str) -> EvolveConfig:
        return EvolveConfig.model_validate({
            "name": "m2n2-bench", "algorithm": "m2n2", "options": {"archive_size": 20, "mutation_std": 0.01},
            "init": {"models": [str(ROOT / f"zoo/digits/random/init_0{i}") for i in range(4)]},
            "tasks": [str(ROOT / "fitness/digits/digits_all.yaml")], "budget": {"children": children},
            "seed": 0, "threads": 1, "output": out})

    rows = []
    for workers in (0, 1, 2):
        with tempfile.TemporaryDirectory(prefix="async-bench-") as tmp:
            cfg = config(str(Path(tmp) / "run"))
            setup = build(cfg)
            if workers == 0:
                t0 = time.perf_counter()
                evolve(setup.algorithm, setup.evaluate, Path(tmp) / "run", children=children)
                rows.append(("in process", children, time.perf_counter() - t0))
                continue
            with RayRunner(target=child_scorer(cfg, str(setup.problem.reference)), workers=workers,
                           threads=1) as runner:
                runner.wait_ready(120)
                evaluator = OnRunner(runner)
                warm = setup.algorithm.ask()
                evaluator.submit(warm)
                while not (done := evaluator.poll(30)):
                    pass
                setup.algorithm.tell(warm, done[0].scores)  # the first initial genome, untimed
                t0 = time.perf_counter()
                evolve(setup.algorithm, evaluator, Path(tmp) / "run", children=children)
                rows.append((f"Ray, {workers} worker{'s' * (workers > 1)}", children - 1, time.perf_counter() - t0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=60, help="per search (part A)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for part A")
    parser.add_argument("--children", type=int, default=3000, help="M2N2 children per run (part B)")
    parser.add_argument("--parts", default="a,b")
    args = parser.parse_args()
    import torch

    from evomerge.exec.ray_setup import connect

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    connect(None, num_cpus=max(2, args.workers), object_store_memory=512 * MIB, log_to_driver=False)
    a = search_rows(args.evaluations, args.workers) if "a" in args.parts else []
    b = m2n2_rows(args.children) if "b" in args.parts else []
    load1 = os.getloadavg()
    print(f"\n## Asynchronous evaluation ({os.cpu_count()} cores; load average before {load0[0]:.1f}, "
          f"after {load1[0]:.1f})\n")
    if a:
        print("| strategy | loop | Ray workers | evaluations | wall s | evaluations/min | worker busy share |")
        print("|---|---|---|---|---|---|---|")
        for strategy, mode, workers, n, wall, per_min, busy in a:
            print(f"| {strategy} | {mode} | {workers} | {n} | {wall:.1f} | {per_min:.1f} | {busy:.1%} |")
    if b:
        base = b[0][1] / b[0][2]
        print("\n| M2N2 on digits, scored | children | wall s | children/s | vs in process |\n|---|---|---|---|---|")
        for label, n, wall in b:
            print(f"| {label} | {n} | {wall:.2f} | {n / wall:.0f} | {n / wall / base:.2f}x |")
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
