"""Pareto fronts found by MM-MO vs NSGA-II, random search and TPE on the digits merge problem, same budgets.

The problem of ``configs/mmmo_digits.yaml``: DARE-TIES (weight, density) of the digits 0-4 and 5-9
experts against their shared initialisation (4 dimensions), three objectives on the training split --
accuracy on 0-4 (max), accuracy on 5-9 (max), sparsity = mean |theta - theta_0| (min).

Quality: hypervolume of the first N evaluations, objectives normalised with the fixed reference point
``(digits_0_4 = 0, digits_5_9 = 0, sparsity = 0.2)``: HV / (1 x 1 x 0.2), so 1.0 would be a model
with both accuracies 1 and sparsity 0 (the corner (w = 2, d = 1) of the box has sparsity 0.14).
The N = 30 figures are the first 30 evaluations of the N = 60 runs, which is exactly what a run
with budget 30 evaluates (every strategy is deterministic given its seed). Cost: wall seconds spent
in the strategy's ask and tell (evaluation excluded), divided by N.

Candidates are merged in place and scored in-process (``EvalWorker``, as ``bench/search_efficiency.py``).
NSGA-II runs with a population of 10 (the default 50 would be random search at these budgets).
``mm-mo/no-fisher`` is MM-MO without its last step (keeps the first 5 DE-mixed EHVI candidates instead
of the 5 most uncertain): an ablation that shows what the screening does on this problem.

    nice -n 5 .venv/bin/python bench/mobo_front.py --seeds 3 --budgets 30,60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evomerge.exec.base import Candidate
from evomerge.exec.worker import EvalWorker
from evomerge.strategies import Problem, make_strategy
from evomerge.study.archive import hypervolume
from evomerge.study.config import RunConfig
from evomerge.study.objectives import load_objectives
from evomerge.study.study import build_space

CONFIG = Path("configs/mmmo_digits.yaml")
REFERENCE = {"digits_0_4": 0.0, "digits_5_9": 0.0, "sparsity": 0.2}
# name -> (registered strategy, options); "mm-mo/no-fisher" is the ablation without step 4 (Fisher screening)
STRATEGIES: dict[str, tuple[str, dict]] = {
    "mm-mo": ("mm-mo", {}), "mm-mo/no-fisher": ("mm-mo", {"screening": "none"}),
    "nsga2": ("nsga2", {"population_size": 10}), "random": ("random", {}), "tpe": ("tpe", {}),
}


def run_one(name: str, options: dict, seed: int, budget: int, worker: EvalWorker, space, names: list[str],
            directions: list[str]) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """(values of the first ``budget`` evaluations, failed rows NaN; [(evaluations done, strategy seconds so far)])."""
    problem = Problem(lower=space.lower, upper=space.upper, directions=tuple(directions), x0=space.x0(),
                      names=tuple(space.names))
    strategy = make_strategy(name, problem, seed=seed, **options)
    values: list[list[float]] = []
    spent, marks = 0.0, []
    while len(values) < budget:
        t0 = time.perf_counter()
        genomes = strategy.ask(None)
        spent += time.perf_counter() - t0
        genomes = genomes[: budget - len(values)]
        scored = []
        for g in genomes:
            res = worker.evaluate(Candidate(key="x", recipe=space.decode(g), genome=g))
            scored.append([res.objectives[n] for n in names] if res.ok else None)
        values += [v if v is not None else [float("nan")] * len(names) for v in scored]
        t0 = time.perf_counter()
        strategy.tell(genomes, scored)
        spent += time.perf_counter() - t0
        marks.append((len(values), spent))
    return np.array(values), marks


def normalised_hv(values: np.ndarray, names: list[str], directions: list[str]) -> float:
    ok = values[np.all(np.isfinite(values), axis=1)]
    ref = [REFERENCE[n] for n in names]
    box = float(np.prod([1.0 if d == "maximize" else r for d, r in zip(directions, ref, strict=True)]))
    return hypervolume(ok, directions, ref) / box if len(ok) else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default="mm-mo,mm-mo/no-fisher,nsga2,random,tpe")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default="30,60")
    ap.add_argument("--mmmo-options", default="{}", help="JSON options for mm-mo (default: the paper's)")
    ap.add_argument("--out", default="bench/results/mobo_front.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    extra = json.loads(args.mmmo_options)
    for key in ("mm-mo", "mm-mo/no-fisher"):
        STRATEGIES[key] = ("mm-mo", {**STRATEGIES[key][1], **extra})
    budgets = sorted(int(b) for b in args.budgets.split(","))
    config = RunConfig.load(CONFIG)
    assert config.sources is not None
    space = build_space(config)
    objectives, tasks = load_objectives(config)
    names, directions = [o.name for o in objectives], [o.direction for o in objectives]
    worker = EvalWorker(config.sources.base, config.sources.models, tasks, threads=1)

    rows = []
    started = time.perf_counter()
    for name in args.strategies.split(","):
        hv = {b: [] for b in budgets}
        sec = {b: [] for b in budgets}
        for seed in range(args.seeds):
            strategy, options = STRATEGIES[name]
            values, marks = run_one(strategy, options, seed, budgets[-1], worker, space, names, directions)
            for b in budgets:
                hv[b].append(normalised_hv(values[:b], names, directions))
                sec[b].append(next(s for n, s in marks if n >= b) / b)
            print(f"{name} seed {seed}: " + ", ".join(f"HV@{b} {hv[b][-1]:.4f} ({1e3 * sec[b][-1]:.1f} ms/eval)"
                                                      for b in budgets), flush=True)
        rows.append((name, hv, sec))

    head = " | ".join(f"HV @ {b} evals" for b in budgets) + " | " + " | ".join(
        f"strategy ms/eval @ {b}" for b in budgets)
    lines = [f"| strategy | {head} |", "|---|" + "---|" * (2 * len(budgets))]
    for name, hv, sec in rows:
        cells = [f"{np.mean(hv[b]):.4f} ± {np.std(hv[b]):.4f}" for b in budgets]
        cells += [f"{1e3 * np.mean(sec[b]):.1f} ± {1e3 * np.std(sec[b]):.1f}" for b in budgets]
        label = name + (" (population 10)" if name == "nsga2" else "")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    note = (f"\n{args.seeds} seeds (mean ± std); digits DARE-TIES (weight, density) x 2 experts; objectives "
            f"digits_0_4 (max), digits_5_9 (max), sparsity (min) on the train split; hypervolume normalised to "
            f"the reference point {REFERENCE} (1.0 = both accuracies 1 at sparsity 0); strategy ms/eval: ask + "
            f"tell wall milliseconds per evaluation, evaluation excluded; mm-mo options {extra or 'the defaults'} "
            f"(mm-mo/no-fisher: the same without the Fisher-information screening, an ablation); "
            f"total wall {time.perf_counter() - started:.0f} s.")
    table = "\n".join(lines) + "\n" + note + "\n"
    print("\n" + table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# MM-MO vs NSGA-II / random / TPE on the digits front\n\n`nice -n 5 .venv/bin/python "
                   f"bench/mobo_front.py --seeds {args.seeds} --budgets {args.budgets}`\n\n{table}", encoding="utf-8")


if __name__ == "__main__":
    main()
