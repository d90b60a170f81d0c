"""In-place sparsifying merges per candidate against the in-place floor, measured in the same run (issue 16 item 6).

A bf16 Llama base and three experts of ``bench/merge_bench.py``'s layout (134M by
default) are held by one resident worker (float32 task vectors, the model instance
in the checkpoints' bf16, as a search holds them). The floor is what any in-place
merge must do per candidate: read every resident tensor once (a sum over each) and
write the model once (each parameter overwritten from the resident base). Then, per
method, a few candidates with new densities and weights each (the first one builds
the source-only tables and is reported apart), median seconds and the ratio to the
floor. The floor is re-measured after every method and the median of all its runs
is used, so load that comes and goes during the run lands on both sides.

    python bench/inplace_floor.py [--size 134m] [--methods ties,dare_ties,breadcrumbs_ties,della] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_bench import build_family

from evomerge.materialize.inplace import ResidentSources, materialize_into
from evomerge.recipe.model import Recipe

PARAMS = {  # per method: the search's per-source parameters for candidate i of source k
    "ties": lambda i, k: {"weight": 0.6 + 0.1 * k + 0.01 * i, "density": 0.3 + 0.1 * k + 0.02 * i},
    "dare_ties": lambda i, k: {"weight": 0.6 + 0.1 * k + 0.01 * i, "density": 0.3 + 0.1 * k + 0.02 * i},
    "breadcrumbs_ties": lambda i, k: {"weight": 0.6 + 0.1 * k, "density": 0.8 + 0.02 * i, "gamma": 0.01 + 0.002 * k},
    "breadcrumbs": lambda i, k: {"weight": 0.6 + 0.1 * k, "density": 0.8 + 0.02 * i, "gamma": 0.01 + 0.002 * k},
    "della": lambda i, k: {"weight": 0.6 + 0.1 * k, "density": 0.3 + 0.1 * k + 0.02 * i, "epsilon": 0.1},
    "task_arithmetic": lambda i, k: {"weight": 0.6 + 0.1 * k + 0.01 * i},
}


def floor_seconds(model: torch.nn.Module, resident: ResidentSources) -> tuple[float, float]:
    """One read of every resident tensor and one write of every model parameter (from the resident base):
    wall and CPU seconds."""
    params = dict(model.named_parameters())
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for store in resident._tensors.values():
            for t in store.values():
                t.sum()
        for name, base in resident._base.items():
            p = params.get(name)
            if p is not None and p.shape == base.shape:
                p.copy_(base)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="134m")
    parser.add_argument("--methods", default="ties,dare_ties,breadcrumbs_ties,della")
    parser.add_argument("--repeats", type=int, default=3, help="timed candidates per method (after the first)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench/merge"))
    args = parser.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM

    load0 = os.getloadavg()
    base, experts = build_family(args.workdir / "models", args.size)
    resident = ResidentSources.from_paths([str(e) for e in experts], str(base))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base), dtype=torch.bfloat16)
    floors = [floor_seconds(model, resident) for _ in range(3)][1:]
    rows = []
    for method in args.methods.split(","):
        times, cpu = [], []
        for i in range(args.repeats + 1):
            recipe = Recipe.model_validate({
                "models": [{"model": str(e), "parameters": PARAMS[method](i, k)} for k, e in enumerate(experts)],
                "base_model": str(base), "merge_method": method, "dtype": "bfloat16", "seed": i})
            t0, c0 = time.perf_counter(), time.process_time()
            materialize_into(model, recipe, resident)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        floors += [floor_seconds(model, resident) for _ in range(2)]
        rows.append((method, times[0], statistics.median(times[1:]), statistics.median(cpu[1:])))
        print(f"{method}: first {times[0]:.2f} s, then {[round(t, 2) for t in times[1:]]} "
              f"(CPU {[round(t, 2) for t in cpu[1:]]})", flush=True)
    floor = statistics.median(f[0] for f in floors)
    floor_cpu = statistics.median(f[1] for f in floors)
    load1 = os.getloadavg()
    held = resident.nbytes / 2**30
    print(f"\n{args.size}: 3 experts + base, float32 task vectors ({held:.2f} GiB held), bf16 model instance, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores; load average before {load0[0]:.1f}, "
          f"after {load1[0]:.1f}; tables {resident.order_bytes / 2**30:.2f} GiB")
    walls = [f[0] for f in floors]
    print(f"in-place floor (read every resident tensor once, write the model once): {floor:.3f} s wall, "
          f"{floor_cpu:.3f} s CPU (median of {len(floors)}, wall range {min(walls):.3f}-{max(walls):.3f})\n")
    print("| method | first candidate s (builds the tables) | per candidate s (median) | x floor | "
          "per candidate CPU s | x floor CPU |\n|---|---|---|---|---|---|")
    for method, first, median, cpu_s in rows:
        print(f"| {method} | {first:.2f} | {median:.2f} | {median / floor:.1f}x | {cpu_s:.2f} | "
              f"{cpu_s / floor_cpu:.1f}x |")
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
