"""M2N2 on 8x8 digits: the miniature experiments of arXiv 2508.16204 (Abrantes, Lange & Tang), on our code.

Three parts, markdown tables on stdout and in bench/results/m2n2_digits.md (``--out``):

a. **Speed** — seconds per 1,000 child evaluations of M2N2 from scratch through ``evolve`` (crossover,
   mutation, evaluation, competition, journal; snapshots every 30 s), and the same with a test-split
   forward of the best model after every child (what the official loop also does). With
   ``--official-python``/``--official-repo`` it times the official JAX code on this machine too:
   ``run_natural_niches`` for 500 and 3,000 children, (t_3000 − t_500) / 2.5 (JIT compile and
   start-up cancel out).
b. **From scratch**, equal child-evaluation budgets, ``--seeds`` seeds: M2N2, M2N2 without crossover,
   GA (α = 0, no attraction), sep-CMA-ES (σ0 0.01, λ 20, x0 ~ N(0, 0.01²), fitness = train accuracy).
   The M2N2 family starts, as the official code does, from two N(0, 0.01²) genomes (their two
   evaluations count in the budget) with σ = 0.01 mutation. Reported: test accuracy of the archive
   member with the best train accuracy (CMA: of the best genome evaluated so far), mean ± std over
   seeds, at each budget of ``--budgets``; and wall seconds per 1,000 evaluations.
c. **From the two experts** (digits 0-4 and 5-9): M2N2 with the experts as the initial archive (no
   mutation) vs brute-force SLERP over ``--slerp-points`` values of w (best by train accuracy).

``--data zoo`` (default) scores exactly the project's fitness task fitness/digits/digits_all.yaml
(inputs / 16, seeded split) and merges zoo/digits/expert_*; ``--data paper`` uses the official data
(raw pixels 0-16, the first 80 % of the images for training) and experts trained as the official
code does (two different N(0, 0.01²) inits, 10 full-batch Adam steps at lr 3e-3 on their five digits).

    nice -n 5 .venv/bin/python bench/m2n2_digits.py \\
        --official-python /tmp/jaxvenv/bin/python --official-repo /tmp/natural_niches
    nice -n 5 .venv/bin/python bench/m2n2_digits.py --data paper --skip-speed \\
        --out bench/results/m2n2_digits_paper.md

(/tmp/jaxvenv: ``python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install 'jax[cpu]' optax
scikit-learn tqdm``; /tmp/natural_niches: a checkout of github.com/SakanaAI/natural_niches with an
empty ``results/`` folder.)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evomerge.evolve.digits_fast import DigitsScorer  # noqa: E402
from evomerge.evolve.driver import evolve  # noqa: E402
from evomerge.evolve.flat import flatten_checkpoint  # noqa: E402
from evomerge.evolve.m2n2 import M2N2, slerp_split  # noqa: E402
from evomerge.strategies import make_strategy  # noqa: E402
from evomerge.strategies.base import Problem  # noqa: E402
from evomerge.zoo.digits import DigitsMLP  # noqa: E402

ZOO = ROOT / "zoo" / "digits"
SCRATCH_STD = 0.01  # N(0, 0.01²) initial genomes, σ = 0.01 mutation, CMA σ0 = 0.01 (official code)

M2N2_VARIANTS: dict[str, dict] = {
    "M2N2": {"alpha": 1.0, "attraction": True, "crossover": True},
    "M2N2 without crossover": {"alpha": 1.0, "attraction": True, "crossover": False},
    "GA (α = 0)": {"alpha": 0.0, "attraction": False, "crossover": True},
}


# -- data ---------------------------------------------------------------------------------------------

def paper_scorer() -> DigitsScorer:
    """The official data.py: raw pixels, no shuffle, first 80 % train (1,437) / last 20 % test (360)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = int(len(x) * 0.8)
    return DigitsScorer({"train": (x[:n], y[:n]), "test": (x[n:], y[n:])})


def paper_experts(scorer: DigitsScorer) -> list[np.ndarray]:
    """helper_fn.get_pre_trained_models in torch: two different N(0, 0.01²) inits, 10 full-batch Adam steps."""
    x, y = (t.numpy() for t in scorer._split("train"))
    experts = []
    for k, keep in enumerate((y < 5, y >= 5)):
        gen = torch.Generator().manual_seed(42 + k)
        model = DigitsMLP()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * SCRATCH_STD)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
        for _ in range(10):
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        experts.append(scorer.layout.flatten(model))
    return experts


def zoo_experts(scorer: DigitsScorer) -> list[np.ndarray]:
    return [flatten_checkpoint(ZOO / name, scorer.layout)[0] for name in ("expert_0_4", "expert_5_9")]


def scratch_genomes(dim: int, seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(10_000 + seed)
    return [(rng.standard_normal(dim) * SCRATCH_STD).astype(np.float32) for _ in range(n)]


# -- runs -----------------------------------------------------------------------------------------------

def run_m2n2(scorer: DigitsScorer, initial: list[np.ndarray], budgets: list[int], seed: int,
             **options) -> tuple[dict[int, float], float]:
    """Test accuracy of the best-by-train archive member at each budget (evaluations, initial ones included)."""
    algo = M2N2(initial, scorer.n_examples(), seed=seed, **options)
    marks, start = {}, time.perf_counter()
    for n in range(1, max(budgets) + 1):
        child = algo.ask()
        algo.tell(child, scorer.correct(child.genome))
        if n in budgets:
            marks[n] = scorer.accuracy(algo.best_genome())
    return marks, time.perf_counter() - start


def run_sep_cma(scorer: DigitsScorer, budgets: list[int], seed: int, popsize: int = 20) -> tuple[dict[int, float],
                                                                                                 float]:
    """sep-CMA-ES on the whole genome in a ±1 box (σ0 = 0.01 in parameter units); fitness = train accuracy."""
    dim = scorer.layout.size
    x0 = scratch_genomes(dim, seed, 1)[0].astype(np.float64)
    problem = Problem(-np.ones(dim), np.ones(dim), directions=("maximize",), x0=x0)
    # maxstd = inf: cma would otherwise cap stds at 1/3 of the box with a per-coordinate Python loop each
    # generation (≈ 4 ms per evaluation at 19,210 dims); the cap is never reached here (σ ≈ 0.005 of the box)
    strategy = make_strategy("sep-cma", problem, seed=seed, sigma0=SCRATCH_STD / 2.0, popsize=popsize,
                             cma_options={"maxstd": float("inf")})
    marks, n, start = {}, 0, time.perf_counter()
    while n < max(budgets):
        genomes = strategy.ask()
        values = [[scorer.correct(g.astype(np.float32)).mean()] for g in genomes]
        strategy.tell(genomes, values)
        for _ in genomes:
            n += 1
            if n in budgets:
                marks[n] = scorer.accuracy(strategy.best()[0].genome.astype(np.float32))
    return marks, time.perf_counter() - start


def brute_force_slerp(scorer: DigitsScorer, x: np.ndarray, y: np.ndarray, points: int) -> tuple[float, float, float]:
    """(w, train, test) of the best-by-train SLERP(w) over ``points`` values of w in [0, 1] (first best wins)."""
    best = (-1.0, 0.0)
    for w in np.linspace(0.0, 1.0, points):
        train = scorer.correct(slerp_split(x, y, float(w), x.size)).mean()
        if train > best[0]:
            best = (train, float(w))
    train, w = best
    return w, train, scorer.accuracy(slerp_split(x, y, w, x.size))


def speed(scorer: DigitsScorer, children: int, with_test: bool) -> float:
    """Seconds per 1,000 children of the whole ``evolve`` loop from scratch (journal and snapshots included)."""
    algo = M2N2(scratch_genomes(scorer.layout.size, 0, 2), scorer.n_examples(), seed=0, mutation_std=SCRATCH_STD)
    on_progress: Callable | None = None
    if with_test:
        def on_progress(_progress) -> None:
            if algo.size:  # the driver also reports once before the first child
                scorer.accuracy(algo.best_genome())
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        evolve(algo, lambda child: scorer.correct(child.genome), run_dir, children=children, on_progress=on_progress)
        return (time.perf_counter() - start) / children * 1000


def official_speed(python: str, repo: str) -> float:
    """Seconds per 1,000 children of the official run_natural_niches, from two run lengths."""
    code = ("import os,sys,time; os.environ['JAX_PLATFORM_NAME']='cpu'; sys.path.insert(0, {repo!r}); "
            "from natural_niches_fn import run_natural_niches; t=time.perf_counter(); "
            "run_natural_niches(runs=1, pop_size=20, total_forward_passes={n}, store_train_results=False, "
            "no_matchmaker=False, no_crossover=False, no_splitpoint=False, use_pre_trained=False); "
            "print('SECONDS', time.perf_counter()-t)")
    seconds = {}
    for n in (500, 3000):
        out = subprocess.run([python, "-c", code.format(repo=repo, n=n)], capture_output=True, text=True, cwd=repo,
                             check=True).stdout
        seconds[n] = float(re.findall(r"SECONDS (\S+)", out)[-1])
    return (seconds[3000] - seconds[500]) / 2.5


# -- report -------------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["zoo", "paper"], default="zoo")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of part b")
    ap.add_argument("--budgets", default="1000,5000,15000", help="child-evaluation budgets of part b")
    ap.add_argument("--methods", default="M2N2,M2N2 without crossover,GA (α = 0),sep-CMA-ES")
    ap.add_argument("--expert-seeds", type=int, default=3)
    ap.add_argument("--expert-budgets", default="1000,5000,20000")
    ap.add_argument("--slerp-points", type=int, default=101)
    ap.add_argument("--speed-children", type=int, default=3000)
    ap.add_argument("--parts", default="a,b,c", help="a: speed, b: from scratch, c: from the experts")
    ap.add_argument("--skip-speed", action="store_true", help="same as leaving a out of --parts")
    ap.add_argument("--speed-rounds", type=int, default=1)
    ap.add_argument("--official-python", help="python of a venv with jax (times the official code when given)")
    ap.add_argument("--official-repo", help="checkout of SakanaAI/natural_niches")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "m2n2_digits.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    expert_budgets = [int(b) for b in args.expert_budgets.split(",")]
    scorer = DigitsScorer.from_split() if args.data == "zoo" else paper_scorer()
    lines = [f"# M2N2 on digits (arXiv 2508.16204), data = {args.data}", "",
             f"`{' '.join(sys.argv[1:]) or '(defaults)'}`; torch threads 1; test accuracy in %.", ""]

    def emit(*rows: str) -> None:
        for row in rows:
            print(row, flush=True)
            lines.append(row)

    parts = set(args.parts.split(",")) - ({"a"} if args.skip_speed else set())
    if "a" in parts:
        # rounds alternate the implementations so that the machine's load (shared cores) hits them alike
        timings: dict[str, list[float]] = {}
        official = args.official_python and args.official_repo
        for _ in range(args.speed_rounds):
            timings.setdefault("ours", []).append(speed(scorer, args.speed_children, with_test=False))
            timings.setdefault("ours_test", []).append(speed(scorer, args.speed_children, with_test=True))
            if official:
                timings.setdefault("official", []).append(official_speed(args.official_python, args.official_repo))
            print(f"  speed round: { {k: round(v[-1], 2) for k, v in timings.items()} }", flush=True)

        def cell(key: str) -> str:
            values = timings[key]
            return f"{np.median(values):.2f}" + (f" ({', '.join(f'{v:.2f}' for v in values)})" if len(values) > 1
                                                 else "")

        emit(f"## a. Speed, from scratch (s per 1,000 child evaluations, whole loop; median of "
             f"{args.speed_rounds} alternating rounds)", "",
             "| implementation | s / 1,000 |", "|---|---|",
             f"| evomerge M2N2 (`evolve`: crossover, mutation, eval, competition, journal) | {cell('ours')} |",
             f"| evomerge M2N2, + test accuracy of the best after every child (as the official loop) | "
             f"{cell('ours_test')} |")
        if official:
            emit(f"| official natural_niches (JAX CPU, `run_natural_niches`, test accuracy every child) | "
                 f"{cell('official')} |")
        emit("")

    table: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for method in args.methods.split(",") if "b" in parts else []:
        for seed in range(args.seeds):
            if method == "sep-CMA-ES":
                marks, wall = run_sep_cma(scorer, budgets, seed)
            else:
                marks, wall = run_m2n2(scorer, scratch_genomes(scorer.layout.size, seed, 2), budgets, seed,
                                       mutation_std=SCRATCH_STD, **M2N2_VARIANTS[method])
            for b, acc in marks.items():
                table.setdefault(method, {}).setdefault(b, []).append(acc)
            seconds.setdefault(method, []).append(wall / max(budgets) * 1000)
            print(f"  {method} seed {seed}: {marks} ({wall:.0f} s)", flush=True)
    if "b" in parts:
        emit(f"## b. From scratch, test accuracy (mean ± std over {args.seeds} seeds) at equal evaluation budgets",
             "", "| method | " + " | ".join(f"{b:,} evals" for b in budgets) + " | s / 1,000 evals |",
             "|---|" + "---|" * (len(budgets) + 1))
        for method, by_budget in table.items():
            emit(f"| {method} | " + " | ".join(mean_std(by_budget[b]) for b in budgets)
                 + f" | {np.mean(seconds[method]):.2f} |")
        emit("")
    if "c" in parts:
        experts_part(args, scorer, expert_budgets, emit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written {out}")


def experts_part(args: argparse.Namespace, scorer: DigitsScorer, expert_budgets: list[int],
                 emit: Callable[..., None]) -> None:
    experts = zoo_experts(scorer) if args.data == "zoo" else paper_experts(scorer)
    w, train, test = brute_force_slerp(scorer, *experts, args.slerp_points)
    runs = [run_m2n2(scorer, experts, expert_budgets, seed)[0] for seed in range(args.expert_seeds)]
    emit("## c. From the two experts (digits 0-4, 5-9), test accuracy", "", "| model | test accuracy |", "|---|---|",
         f"| expert 0-4 | {100 * scorer.accuracy(experts[0]):.1f} |",
         f"| expert 5-9 | {100 * scorer.accuracy(experts[1]):.1f} |",
         f"| brute-force SLERP, {args.slerp_points} values of w (best w = {w:.3f}, train {100 * train:.1f}) | "
         f"{100 * test:.1f} |")
    for b in expert_budgets:
        emit(f"| M2N2 from the experts, {b:,} evals ({args.expert_seeds} seeds) | "
             f"{mean_std([r[b] for r in runs])} |")
    emit("")


if __name__ == "__main__":
    main()
