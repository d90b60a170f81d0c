"""Search efficiency on the digits zoo: best test accuracy after N evaluations, per strategy, over seeds.

Merges the digits 0-4 and 5-9 experts (same initialisation) with TIES over
(weight, density) per expert — a 4-D parameter-space search — for the
objective "accuracy on all ten digits" on the training split. For each
strategy and seed it records the best-so-far trial (by train accuracy) after
N evaluations and reports that trial's **test** accuracy: mean ± std over seeds.
Baselines (each expert, untuned merges) are measured in the same run.

    python bench/search_efficiency.py --seeds 5 --budget 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evomerge.exec.base import Candidate
from evomerge.exec.local import LocalRunner
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import load_task
from evomerge.recipe.model import Recipe
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

ZOO = Path("zoo/digits")
TASK = Path("fitness/digits/digits_all.yaml")


def recipe(method: str, params: list[dict], **extra) -> Recipe:
    return Recipe.model_validate({
        "models": [{"model": str(ZOO / e), "parameters": p} for e, p in zip(("expert_0_4", "expert_5_9"), params,
                                                                              strict=True)],
        # linear has no base role: a base_model would join the average as a third model (as in mergekit)
        **({} if method == "linear" else {"base_model": str(ZOO / "init")}), "merge_method": method, **extra})


def test_accuracy(worker: EvalWorker, rec: Recipe) -> float:
    res = worker.evaluate(Candidate(key="x", recipe=rec, split="test"))
    assert res.ok, res.error
    return res.objectives["digits_all"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default="cma,tpe,nsga2,random")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--checkpoints", default="10,20,40,60")
    ap.add_argument("--method", default="ties", help="merge method of the PS space (ties: weight and density "
                                                      "per expert; task_arithmetic: weight per expert)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    marks = [int(x) for x in args.checkpoints.split(",") if int(x) <= args.budget]
    task = load_task(TASK)
    worker = EvalWorker(str(ZOO / "init"), [str(ZOO / "expert_0_4"), str(ZOO / "expert_5_9")], [task])
    runner = LocalRunner(worker)

    print("baselines (test accuracy on all digits):")
    for name, rec in {
        "expert 0-4": Recipe.model_validate({"models": [{"model": str(ZOO / "expert_0_4")}],
                                             "merge_method": "passthrough"}),
        "expert 5-9": Recipe.model_validate({"models": [{"model": str(ZOO / "expert_5_9")}],
                                             "merge_method": "passthrough"}),
        "linear 50/50": recipe("linear", [{"weight": 1.0}, {"weight": 1.0}]),
        "task arithmetic (1, 1)": recipe("task_arithmetic", [{"weight": 1.0}, {"weight": 1.0}]),
        "ties (w 1, d 0.5)": recipe("ties", [{"weight": 1.0, "density": 0.5}] * 2),
    }.items():
        print(f"  {name}: {test_accuracy(worker, rec):.4f}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            curves, seconds = [], []
            for seed in range(args.seeds):
                cfg = RunConfig.from_dict({
                    "name": f"{strategy}-{seed}", "output": f"{tmp}/{strategy}-{seed}",
                    "sources": {"base": str(ZOO / "init"), "models": [str(ZOO / "expert_0_4"),
                                                                      str(ZOO / "expert_5_9")]},
                    "space": {"kind": "ps", "method": args.method, "ranges": {"weight": [0.0, 2.0]}},
                    "strategy": {"name": strategy, "batch_size": 4}, "objectives": [{"task": str(TASK)}],
                    "budget": {"evaluations": args.budget}, "seed": seed,
                })
                t0 = time.perf_counter()
                study = Study.create(cfg, runner=runner)
                study.run()
                seconds.append(time.perf_counter() - t0)
                records = sorted((r for r in study.store.records()), key=lambda r: r.number)
                best, best_train, cache, curve = None, -np.inf, {}, []
                for i, r in enumerate(records, start=1):
                    if r.status == "ok" and r.objectives["digits_all"] > best_train:
                        best, best_train = r, r.objectives["digits_all"]
                    if i in marks:
                        if best.number not in cache:
                            cache[best.number] = test_accuracy(worker, Recipe.model_validate(best.recipe))
                        curve.append(cache[best.number])
                curves.append(curve)
            arr = np.array(curves)
            rows.append((strategy, arr.mean(0), arr.std(0), np.mean(seconds)))
            print(f"{strategy}: " + ", ".join(f"N={n}: {m:.4f}±{s:.4f}" for n, m, s in
                                              zip(marks, arr.mean(0), arr.std(0), strict=True)), flush=True)
    print(f"\n| strategy | {' | '.join(f'best test acc @ {n} evals' for n in marks)} | s per run |")
    print(f"|---|{'---|' * len(marks)}---|")
    for strategy, mean, std, sec in rows:
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std, strict=True))
        print(f"| {strategy} | {cells} | {sec:.1f} |")
    print(f"\n({args.seeds} seeds; {args.method} over the PS space of two experts; objective: train accuracy on all "
          f"digits; reported: test accuracy of the best-so-far trial)")


if __name__ == "__main__":
    main()
