"""Cost of one in-place merge (``materialize_into``) per candidate on the zoo: median wall and CPU time.

The in-place path of ``bench/runner_bench.py`` alone, timed with the thread's
CPU clock as well as the wall clock, so that a before/after comparison on a
shared, loaded machine compares work done rather than the share of a core the
scheduler gave us. Compare two trees by running it with each one on
PYTHONPATH, alternating, in the same session:

    PYTHONPATH=/path/to/tree python bench/inplace_cost.py [--repeats 80]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import evomerge
from evomerge.exec.worker import EvalWorker
from evomerge.materialize.inplace import materialize_into
from evomerge.recipe.model import Recipe

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "tinylm": ("zoo/tinylm/base", ("zoo/tinylm/math_a", "zoo/tinylm/lang_b", "zoo/tinylm/list_a"),
               [("task_arithmetic", {"weight": 0.7}), ("linear", {"weight": 1.0}),
                ("dare_ties", {"weight": 1.0, "density": 0.5})]),
    "digits": ("zoo/digits/init", ("zoo/digits/expert_0_4", "zoo/digits/expert_5_9"),
               [("task_arithmetic", {"weight": 0.5})]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"evomerge from {Path(evomerge.__file__).parent}\n")
    print("| zoo | method | in-place wall ms | in-place CPU ms |\n|---|---|---|---|")
    for zoo, (base, experts, methods) in CASES.items():
        base, experts = str(ROOT / base), [str(ROOT / e) for e in experts]
        if not Path(base, "config.json").is_file():
            continue
        worker = EvalWorker(base, experts, [], threads=1)
        for method, params in methods:
            wall, cpu = [], []
            for i in range(args.repeats):  # a new recipe each time, as in a search
                recipe = Recipe.model_validate({
                    "models": [{"model": e, "parameters": {k: v * (1 + 0.01 * i) for k, v in params.items()}}
                               for e in experts],
                    "base_model": base, "merge_method": method, "seed": i})
                t0, c0 = time.perf_counter(), time.thread_time()
                materialize_into(worker.model, recipe, worker.resident)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            skip = min(5, args.repeats // 10)
            print(f"| {zoo} | {method} | {1000 * statistics.median(wall[skip:]):.2f} | "
                  f"{1000 * statistics.median(cpu[skip:]):.2f} |")


if __name__ == "__main__":
    main()
