"""MAP's amortized Pareto fronts (Li et al., arXiv 2406.07529) against a brute-force grid front, and NSGA-II.

Two task-arithmetic problems over the zoo, every objective measured on the train split, genome =
one coefficient per expert in the box of ``search_spaces/ps_task_arithmetic.yaml`` ([-1, 3]^d):

* digits: c = (c_0_4, c_5_9) on the two digit experts vs ``zoo/digits/init``; objectives accuracy on
  0-4 and on 5-9. Reference: the non-dominated set of a dense grid (default 41 x 41 over the box).
* tinylm: c for math_a, lang_b, list_a vs ``zoo/tinylm/base``; objectives the three tasks. A 0.8 s
  evaluation makes a dense 3-D grid costly: default 7^3 over [-0.5, 2.5]^3 (steps of 0.5, holding
  0, 1 and the experts). Points found outside the grid box may beat the grid front (HV ratio > 1).

Each strategy runs as an ordinary Study (in-process runner, sources resident once) for each seed:
``map`` and ``bayes-map`` / ``nested-map`` stop by themselves; ``nsga2`` gets the same number of real
evaluations as ``map`` used with that seed (population = budget / 4, i.e. four generations). MAP runs
as published (NSGA-III on the surrogates over [-3, 3] ∩ box) and with ``coef_range: [0, 1]``, the hull
of its initial design, where the surrogates were fitted.
Reported, mean ± std over seeds: real evaluations; IGD from the grid front to the non-dominated set
of everything the run evaluated, objectives scaled by the grid front's range (lower is better); the
same for the amortized front alone (the re-evaluated surrogate front, MAP variants only); the
hypervolume ratio HV(found) / HV(grid front), reference point 0 (accuracies); the best mean accuracy
found, beside the grid's.

    nice -n 5 .venv/bin/python bench/map_front.py --seeds 5 --tinylm-seeds 3

(``--problems digits`` or ``--tinylm-grid 5`` for a quicker look.) The table is printed and written
to ``bench/results/map_front.md``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evomerge.exec.base import Candidate
from evomerge.exec.local import LocalRunner
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import load_task
from evomerge.spaces import Sources, build_space, load_space
from evomerge.strategies import genome_key
from evomerge.study.archive import hypervolume, non_dominated
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

SPACE = "search_spaces/ps_task_arithmetic.yaml"
RESULTS = Path("bench/results/map_front.md")


@dataclass(frozen=True)
class Setup:
    name: str
    base: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    strategies: tuple[tuple[str, str, dict], ...]  # (label, strategy, options)


# MAP as published searches its surrogates over c in [-3, 3] (here the box, [-1, 3]); "c in [0, 1]" trusts
# them only inside the hull of the initial design, where they were fitted.
TRUSTED = {"coef_range": [0.0, 1.0]}
SETUPS = {
    "digits": Setup("digits", "zoo/digits/init", ("zoo/digits/expert_0_4", "zoo/digits/expert_5_9"),
                    ("fitness/digits/digits_0_4.yaml", "fitness/digits/digits_5_9.yaml"),
                    (("map", "map", {}), ("map, c in [0, 1]", "map", TRUSTED), ("bayes-map", "bayes-map", {}),
                     ("bayes-map, c in [0, 1]", "bayes-map", TRUSTED), ("nsga2", "nsga2", {}))),
    "tinylm": Setup("tinylm", "zoo/tinylm/base", ("zoo/tinylm/math_a", "zoo/tinylm/lang_b", "zoo/tinylm/list_a"),
                    ("fitness/tinylm/math_a.yaml", "fitness/tinylm/lang_b.yaml", "fitness/tinylm/list_a.yaml"),
                    (("map", "map", {}), ("map, c in [0, 1]", "map", TRUSTED), ("nested-map", "nested-map", {}),
                     ("nsga2", "nsga2", {}))),
}


def igd(reference: np.ndarray, found: np.ndarray, scale: np.ndarray) -> float:
    """Mean over the reference front of the distance to the nearest found point (range-scaled objectives)."""
    d = np.linalg.norm((reference[:, None, :] - found[None, :, :]) / scale, axis=2)
    return float(d.min(axis=1).mean())


def front_of(values: np.ndarray, directions: list[str]) -> np.ndarray:
    return values[non_dominated(values, directions)]


def grid_values(setup: Setup, worker: EvalWorker, space, levels: int, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """Every genome of the ``levels``^d grid over [lo, hi]^d evaluated; returns values and seconds per eval."""
    axes = np.linspace(lo, hi, levels)
    genomes = [np.array(g) for g in itertools.product(axes, repeat=len(setup.models))]
    names = [t.objective_name for t in worker.tasks]
    t0 = time.perf_counter()
    out = []
    for g in genomes:
        res = worker.evaluate(Candidate(key="grid", recipe=space.decode(g), genome=g, split="train"))
        assert res.ok, res.error
        out.append([res.objectives[n] for n in names])
    return np.array(out), (time.perf_counter() - t0) / len(genomes)


def run_strategy(setup: Setup, runner: LocalRunner, tmp: str, label: str, strategy: str, options: dict, seed: int,
                 budget: int | None) -> tuple[np.ndarray, np.ndarray | None, int, float]:
    """One Study: (values of every ok trial, values of the amortized-front trials or None, n trials, seconds)."""
    if strategy == "nsga2":
        assert budget is not None
        options = {**options, "population_size": max(4, budget // 4)}
    run = f"{setup.name}-{label}-{seed}".replace(" ", "_").replace(",", "").replace("[", "").replace("]", "")
    cfg = RunConfig.from_dict({
        "name": run, "output": f"{tmp}/{run}",
        "sources": {"base": setup.base, "models": list(setup.models)}, "space": SPACE,
        "strategy": {"name": strategy, "options": options}, "objectives": [{"task": t} for t in setup.tasks],
        "budget": {"evaluations": budget if strategy == "nsga2" else 500}, "seed": seed,
    })
    t0 = time.perf_counter()
    study = Study.create(cfg, runner=runner)
    study.run()
    seconds = time.perf_counter() - t0
    names = [o.name for o in study.objectives]
    records = [r for r in study.store.records() if r.status == "ok"]
    values = np.array([[r.objectives[n] for n in names] for r in records])
    amortized = None
    predicted = getattr(study.strategy, "predicted", None)
    if predicted is not None:
        keys = {genome_key(g) for g in predicted[0]}
        rows = [i for i, r in enumerate(records) if genome_key(np.asarray(r.genome)) in keys]
        amortized = values[rows] if rows else None
    return values, amortized, len(study.store.records()), seconds


def pm(xs: list[float], fmt: str = ".3f") -> str:
    a = np.array([x for x in xs if x is not None and np.isfinite(x)], dtype=float)
    if a.size == 0:
        return "n/a"
    return f"{a.mean():{fmt}} ± {a.std():{fmt}}"


def bench(setup: Setup, seeds: int, levels: int, box: tuple[float, float], tmp: str) -> tuple[list[str], str]:
    tasks = [load_task(t) for t in setup.tasks]
    worker = EvalWorker(setup.base, list(setup.models), tasks)
    space = build_space(load_space(SPACE), Sources(base=setup.base, models=list(setup.models)))
    directions = [t.direction for t in tasks]
    grid, per_eval = grid_values(setup, worker, space, levels, *box)
    ref = front_of(grid, directions)
    scale = np.where(ref.max(0) > ref.min(0), ref.max(0) - ref.min(0), 1.0)
    origin = np.zeros(len(tasks))
    hv_ref = hypervolume(ref, directions, origin)
    print(f"{setup.name}: grid {levels}^{len(setup.models)} over [{box[0]:g}, {box[1]:g}] = {len(grid)} evals "
          f"({per_eval * 1000:.0f} ms each), grid front {len(ref)} points, best mean {grid.mean(1).max():.3f}",
          flush=True)
    runner = LocalRunner(worker)
    rows = []
    map_budget: dict[int, int] = {}
    for label, strategy, options in setup.strategies:
        stats: dict[str, list] = {"n": [], "igd": [], "igd_am": [], "hv": [], "best": [], "s": []}
        for seed in range(seeds):
            values, amortized, n, seconds = run_strategy(setup, runner, tmp, label, strategy, options, seed,
                                                         map_budget.get(seed))
            if label == "map":
                map_budget[seed] = n
            found = front_of(values, directions)
            stats["n"].append(n)
            stats["igd"].append(igd(ref, found, scale))
            stats["igd_am"].append(None if amortized is None else igd(ref, front_of(amortized, directions), scale))
            stats["hv"].append(hypervolume(found, directions, origin) / hv_ref)
            stats["best"].append(float(values.mean(1).max()))
            stats["s"].append(seconds)
            print(f"  {label} seed {seed}: {n} evals, IGD {stats['igd'][-1]:.4f}, HV ratio {stats['hv'][-1]:.3f}, "
                  f"best mean {stats['best'][-1]:.3f} ({seconds:.0f} s)", flush=True)
        rows.append(f"| {setup.name} | {label} | {pm(stats['n'], '.1f')} | {pm(stats['igd'])} | "
                    f"{pm(stats['igd_am'])} | {pm(stats['hv'])} | {pm(stats['best'])} | {pm(stats['s'], '.0f')} |")
    rows.append(f"| {setup.name} | grid {levels}^{len(setup.models)} (reference) | {len(grid)} | 0 | | 1 | "
                f"{grid.mean(1).max():.3f} | {per_eval * len(grid):.0f} |")
    note = (f"{setup.name}: {seeds} seeds (mean ± std); grid over [{box[0]:g}, {box[1]:g}]^{len(setup.models)}, "
            f"{per_eval * 1000:.0f} ms per evaluation, grid front of {len(ref)} points.")
    return rows, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="digits,tinylm")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the digits runs (cheap)")
    ap.add_argument("--tinylm-seeds", type=int, default=3)
    ap.add_argument("--digits-grid", type=int, default=41, help="levels per axis of the digits grid")
    ap.add_argument("--tinylm-grid", type=int, default=7, help="levels per axis of the tinylm grid")
    ap.add_argument("--tinylm-box", type=float, nargs=2, default=(-0.5, 2.5), help="the tinylm grid's box")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    table = ["| problem | method | real evals | IGD to grid front ↓ | IGD, amortized front only ↓ | "
             "HV / HV(grid) ↑ | best mean acc | s per run |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems.split(","):
            levels, box, seeds = ((args.digits_grid, (-1.0, 3.0), args.seeds) if name == "digits"
                                  else (args.tinylm_grid, tuple(args.tinylm_box), args.tinylm_seeds))
            rows, note = bench(SETUPS[name], seeds, levels, box, tmp)
            table += rows
            notes.append(note)
    text = "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + (
        f"\n- train split; nsga2 gets map's evaluation count per seed, population = count / 4; map and bayes-map "
        f"with c in [0, 1]: NSGA-III searches the surrogates only inside the initial design's hull."
        f"\n- total {time.perf_counter() - t0:.0f} s on this machine.\n")
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# MAP fronts vs a grid front\n\n`nice -n 5 .venv/bin/python bench/map_front.py "
                        f"--seeds {args.seeds} --tinylm-seeds {args.tinylm_seeds} --problems {args.problems} "
                        f"--digits-grid {args.digits_grid} "
                        f"--tinylm-grid {args.tinylm_grid} --tinylm-box {args.tinylm_box[0]:g} "
                        f"{args.tinylm_box[1]:g}`\n\n{text}")


if __name__ == "__main__":
    main()
