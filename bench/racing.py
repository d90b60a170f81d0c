"""Racing (issue 17): what stopping hopeless candidates early saves, measured against the same search without it.

For each setting, each racing rule (``none`` is today's full evaluation) and
each seed it runs a whole search through the Study API, then reads the
trials back from the run's Optuna storage: in trial order, every trial costs
``user_attrs["examples_scored"]`` train examples (a trial without it was
scored on every train example); the best-so-far candidate (the best fully
scored train objective so far, the one a user would take) is re-scored on
the **test** split with evomerge's own evaluation (the worker ``finalize``
uses). Reported per setting and rule, mean ± std over seeds:

- examples scored (and wall seconds) until the best-so-far reaches the
  target test score: the ``none`` rule's median final test score minus
  ``--tolerance`` (a seed that never reaches it is counted in the ``reached``
  column and left out of the mean);
- the test score at equal examples scored: at E/3 and E, where E is what the
  ``none`` rule spends on its budget (a run that spent less than that is read
  at its end, and marked ``*``);
- what the run spent in all: examples, evaluations (of them stopped early).

The goal (issue 17): the same final test score within the seeds' noise at
≤ 1/3 of the examples: a racing rule's final test score ≈ ``none``'s at E
while it spends ≤ E/3 (every rule gets the same number of evaluations, a
stopped candidate counting as one), or its ``test @ E/3`` ≈ ``none``'s
``test @ E``. Rules (``RULES``): ``bound`` (racing's default test,
empirical Bernstein–Serfling), ``normal`` (the paired normal approximation),
and Optuna's pruners on Optuna strategies.

    python bench/racing.py                 # every setting, 5 seeds
    python bench/racing.py --quick         # smoke test, < 2 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

TINYLM = Path("zoo/tinylm")
DIGITS = Path("zoo/digits")
TINYLM_TASKS = [Path(f"fitness/tinylm/{t}.yaml") for t in ("math_a", "lang_b", "list_a")]
DIGITS_TASK = Path("fitness/digits/digits_all.yaml")
OPTUNA_STRATEGIES = {"tpe", "nsga2", "gp", "random"}


# ---- the pure part: a run's trials -> a cost-indexed best-so-far trajectory -----------------------------------

@dataclass(frozen=True)
class Trial:
    """One evaluation as the benchmark needs it: in trial order, what it cost and (if fully scored) its score."""

    number: int
    state: str                 # "complete" | "pruned" | "fail"
    examples: int              # train examples scored for it
    score: float | None        # scalar train objective (maximised), fully scored trials only
    key: str                   # the candidate's identity (genome key), for re-scoring on test
    end_s: float               # seconds from the start of the search to the trial's record


@dataclass(frozen=True)
class Point:
    """The best-so-far candidate changed (or the run ended): at this cost, this candidate is the answer."""

    examples: int              # cumulative examples scored, this trial included
    seconds: float
    key: str                   # the best-so-far candidate
    test: float | None = None  # its test score, once re-scored


def trajectory(trials: Sequence[Trial]) -> list[Point]:
    """Best-so-far by fully scored train score, one point per change; pruned and failed trials only add cost.

    Ties keep the earlier candidate (what an archive that admits only strict
    improvements answers). A last point is added at the run's total cost when
    the best did not change on the last trial, so the trajectory spans the run.
    """
    points: list[Point] = []
    examples, best, best_key = 0, None, None
    for t in sorted(trials, key=lambda t: t.number):
        examples += t.examples
        if t.state == "complete" and t.score is not None and (best is None or t.score > best):
            best, best_key = t.score, t.key
            points.append(Point(examples, t.end_s, t.key))
    if points and trials:
        last = max(trials, key=lambda t: t.number)
        if points[-1].examples != examples:
            points.append(Point(examples, last.end_s, best_key))  # type: ignore[arg-type]
    return points


def at_cost(points: Sequence[Point], examples: float) -> Point | None:
    """The best-so-far at ``examples`` scored: the last point at or below it (None before the first answer)."""
    found = None
    for p in points:
        if p.examples > examples:
            break
        found = p
    return found


def first_reaching(points: Sequence[Point], target: float) -> Point | None:
    """The first point whose best-so-far test score is at least ``target`` (None: never reached)."""
    for p in points:
        if p.test is not None and p.test >= target:
            return p
    return None


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value); NaN for none."""
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.pstdev(xs) if len(xs) > 1 else 0.0


# ---- settings -------------------------------------------------------------------------------------------------

@dataclass
class Setting:
    """One search problem: sources, space, strategy, tasks, evaluations per run, and the rules raced on it."""

    name: str
    base: str
    models: list[str]
    space: str | dict
    strategy: str
    tasks: list[Path]
    evaluations: int
    rules: list[str]
    note: str = ""
    full_cost: int = 0         # train examples of one full evaluation, measured by the first run
    strategy_options: dict[str, Any] = field(default_factory=dict)


def rules_for(strategy: str, wanted: Sequence[str]) -> list[str]:
    """Optuna's pruners only for Optuna strategies; the bound rule for every strategy."""
    return [r for r in wanted if r in ("none", "bound", "normal") or strategy in OPTUNA_STRATEGIES]


def settings(quick: bool, wanted_rules: Sequence[str], larger_tasks: list[Path]) -> list[Setting]:
    n_tiny, n_digits, n_large = (10, 16, 6) if quick else (30, 60, 30)
    tiny = dict(base=str(TINYLM / "base"), models=[str(TINYLM / m) for m in ("math_a", "lang_b", "list_a")],
                space="search_spaces/ps_dare_ties.yaml")
    digits = dict(base=str(DIGITS / "init"), models=[str(DIGITS / "expert_0_4"), str(DIGITS / "expert_5_9")])
    out = [
        Setting("tinylm demo, DARE-TIES, CMA-ES", **tiny, strategy="cma", tasks=TINYLM_TASKS, evaluations=n_tiny,
                rules=rules_for("cma", wanted_rules), note="3 tasks × 120 train examples"),
        Setting("tinylm demo, DARE-TIES, TPE", **tiny, strategy="tpe", tasks=TINYLM_TASKS, evaluations=n_tiny,
                rules=rules_for("tpe", wanted_rules), note="3 tasks × 120 train examples"),
    ]
    for method in ("task_arithmetic", "ties"):
        space = {"kind": "ps", "method": method, "ranges": {"weight": [0.0, 2.0]}}
        for strategy in ("cma", "tpe"):
            out.append(Setting(f"digits, {method}, {strategy.upper() if strategy == 'tpe' else 'CMA-ES'}", **digits,
                               space=space, strategy=strategy, tasks=[DIGITS_TASK], evaluations=n_digits,
                               rules=rules_for(strategy, wanted_rules), note="1,437 train images"))
    out.append(Setting("tinylm demo ×2 examples, DARE-TIES, CMA-ES", **tiny, strategy="cma", tasks=larger_tasks,
                       evaluations=n_large, rules=rules_for("cma", wanted_rules),
                       note="3 tasks × 240 train examples (train + validation)"))
    if quick:  # one setting of each kind
        out = [s for s in out if s.name in ("tinylm demo, DARE-TIES, CMA-ES", "digits, task_arithmetic, TPE")
               or "×2" in s.name]
    return out


def larger_tasks(folder: Path) -> list[Path]:
    """The demo's three tasks with twice the scored examples: train + validation as the train split."""
    import yaml

    out = []
    for path in TINYLM_TASKS:
        spec = yaml.safe_load(path.read_text())
        data = spec["data"]
        rows = [line for split in ("train", "validation") for line in
                (path.parent / data[split]).read_text().splitlines() if line.strip()]
        (folder / f"{spec['name']}.train.jsonl").write_text("\n".join(rows) + "\n")
        spec["data"] = {"train": f"{spec['name']}.train.jsonl", "test": str((path.parent / data["test"]).resolve())}
        (folder / path.name).write_text(yaml.safe_dump(spec))
        out.append(folder / path.name)
    return out


RULES = {  # the bench's rule names -> the run config's racing block (None: no block, every candidate fully scored)
    "none": None,
    "bound": {"rule": "bound"},                       # the default test: empirical Bernstein–Serfling
    "normal": {"rule": "bound", "test": "normal"},    # the paired normal approximation with the fpc
    "median": {"rule": "median"},
    "successive_halving": {"rule": "successive_halving"},
    "hyperband": {"rule": "hyperband"},
}


def racing_block(rule: str) -> dict | None:
    """The run config's ``racing`` block for a rule (None: the block is absent, today's full evaluation)."""
    return dict(RULES[rule]) if RULES[rule] is not None else None


# ---- running ------------------------------------------------------------------------------------------------

def run_config(setting: Setting, rule: str, seed: int, out: Path, factor: float = 1.0) -> dict:
    """The run config of one search; a racing rule gets ``factor`` times the evaluations (stopped ones count)."""
    block = racing_block(rule)
    evaluations = setting.evaluations if block is None else round(setting.evaluations * factor)
    return {
        "name": f"{rule}-{seed}", "output": str(out),
        "sources": {"base": setting.base, "models": setting.models},
        "space": setting.space, "strategy": {"name": setting.strategy, **setting.strategy_options},
        "objectives": [{"task": str(t)} for t in setting.tasks],
        "budget": {"evaluations": evaluations}, "seed": seed, "test_split": "test",
        "runner": {"type": "local", "device": "cpu", "threads": 1},
        **({"racing": block} if block is not None else {}),
    }


def trials_of(study, full_cost: int, started: datetime) -> tuple[list[Trial], dict[str, dict]]:
    """The run's trials as the benchmark reads them (states, ``examples_scored``), and each key's recipe."""
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "fail"}
    trials, recipes = [], {}
    for t in study.store.study.get_trials(deepcopy=False):
        if t.state not in states:
            continue
        attrs = t.user_attrs
        state = states[t.state]
        examples = attrs.get("examples_scored", full_cost if state == "complete" else 0)
        score = study.score(attrs["objectives"]) if state == "complete" else None
        end = (t.datetime_complete - started).total_seconds() if t.datetime_complete else 0.0
        trials.append(Trial(t.number, state, int(examples), score, attrs.get("key", str(t.number)), end))
        if attrs.get("recipe") is not None:
            recipes[attrs.get("key", str(t.number))] = attrs["recipe"]
    return trials, recipes


@dataclass
class Run:
    rule: str
    seed: int
    points: list[Point]
    evaluations: int
    pruned: int
    seconds: float


def run_setting(setting: Setting, seeds: int, work: Path, log: Callable[[str], None], factor: float = 1.0
                ) -> list[Run]:
    """Every rule × seed of one setting, one worker for all (sources loaded once, test scores cached by key)."""
    import torch

    from evomerge.errors import ConfigError
    from evomerge.exec.base import Candidate
    from evomerge.exec.local import LocalRunner
    from evomerge.exec.worker import EvalWorker
    from evomerge.fitness import load_task
    from evomerge.recipe.model import Recipe
    from evomerge.study.config import RunConfig
    from evomerge.study.study import Study

    torch.set_num_threads(1)
    tasks = [load_task(t) for t in setting.tasks]
    worker = EvalWorker(setting.base, setting.models, tasks, threads=1)
    runner = LocalRunner(worker)
    test_cache: dict[str, float] = {}

    def test_score(study, key: str, recipe: dict) -> float:
        if key not in test_cache:
            res = worker.evaluate(Candidate(key=key, recipe=Recipe.model_validate(recipe), split="test"))
            if not res.ok:
                raise RuntimeError(f"{setting.name}: test scoring of {key} failed: {res.error}")
            test_cache[key] = study.score(res.objectives)
        return test_cache[key]

    runs = []
    for rule in list(setting.rules):
        for seed in range(seeds):
            folder = work / f"{rule}-{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            try:
                study = Study.create(RunConfig.from_dict(run_config(setting, rule, seed, folder, factor)),
                                     runner=runner)
            except ConfigError as exc:
                if rule == "none":
                    raise
                log(f"  {setting.name} | {rule}: refused by this evomerge, left out: {exc}")
                setting.rules.remove(rule)
                break
            if not setting.full_cost:  # every train example of every task: what a trial without racing costs
                probe = worker.evaluate(Candidate(key="probe", recipe=study.space.decode(study.space.x0()),
                                                  split="train"))
                setting.full_cost = sum(len(v) for v in probe.per_example.values())
            if rule != "none" and seed == 0:
                log(f"  {setting.name} | {rule}: racing {getattr(study.config, 'racing', None)}")
            started = datetime.now()
            t0 = time.perf_counter()
            study.run()
            seconds = time.perf_counter() - t0
            trials, recipes = trials_of(study, setting.full_cost, started)
            points = [Point(p.examples, p.seconds, p.key, test_score(study, p.key, recipes[p.key]))
                      for p in trajectory(trials)]
            pruned = sum(t.state == "pruned" for t in trials)
            runs.append(Run(rule, seed, points, len(trials), pruned, seconds))
            log(f"  {setting.name} | {rule} seed {seed}: {len(trials)} evaluations ({pruned} pruned), "
                f"{points[-1].examples if points else 0} examples, {seconds:.1f} s, final test "
                f"{points[-1].test if points else float('nan'):.4f}")
    return runs


# ---- the table ----------------------------------------------------------------------------------------------

def _fmt(xs: Sequence[float], digits: int) -> str:
    m, s = mean_std(xs)
    return "–" if m != m else f"{m:,.{digits}f} ± {s:,.{digits}f}"


def summarise(setting: Setting, runs: list[Run], tolerance: float) -> tuple[list[list[str]], float, float]:
    """Table rows for one setting, the target test score and E (the ``none`` rule's examples per run)."""
    base = [r for r in runs if r.rule == "none"]
    finals = [r.points[-1].test for r in base if r.points]
    target = statistics.median(finals) - tolerance
    budget = setting.evaluations * setting.full_cost
    rows = []
    for rule in setting.rules:
        mine = [r for r in runs if r.rule == rule]
        hits = [first_reaching(r.points, target) for r in mine]
        reached = [h for h in hits if h is not None]
        cells = []
        for frac in (1 / 3, 1.0):
            at = [at_cost(r.points, budget * frac) for r in mine]
            short = any(r.points and r.points[-1].examples < budget * frac for r in mine)
            vals = [p.test for p in at if p is not None and p.test is not None]
            cell = _fmt(vals, 3) + (" *" if short else "")
            cells.append(cell if len(vals) == len(mine) else f"{cell} ({len(vals)}/{len(mine)} runs)")
        spent = [r.points[-1].examples for r in mine if r.points]
        rows.append([setting.name, rule, f"{len(reached)}/{len(mine)}", _fmt([h.examples for h in reached], 0),
                     _fmt([h.seconds for h in reached], 1), *cells, _fmt(spent, 0),
                     _fmt([r.evaluations for r in mine], 0) + f" ({_fmt([r.pruned for r in mine], 0)})"])
    return rows, target, budget


HEADER = ["setting", "rule", "reached", "examples to target", "seconds to target", "test @ E/3", "test @ E",
          "examples spent", "evaluations (pruned)"]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: small budgets, 2 seeds, fewer settings")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per setting and rule (default 5; quick: 2)")
    ap.add_argument("--rules", default=None,
                    help="racing rules to compare, comma-separated, from: " + ", ".join(RULES) + " (default: all; "
                         "quick: none,normal); Optuna's pruners run on Optuna strategies only")
    ap.add_argument("--only", default=None, help="run only settings whose name contains this text")
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="target = the no-racing rule's median final test score minus this")
    ap.add_argument("--racing-budget", type=float, default=1.0,
                    help="a racing rule's evaluations as a multiple of the no-racing budget (stopped ones count)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's trajectory here")
    args = ap.parse_args(argv)
    wanted = args.rules if args.rules is not None else "none,normal" if args.quick else ",".join(RULES)
    rules = [r.strip() for r in wanted.split(",") if r.strip()]
    if unknown := [r for r in rules if r not in RULES]:
        ap.error(f"--rules: unknown {unknown}; known: {', '.join(RULES)}")
    if "none" not in rules:
        rules.insert(0, "none")
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    from evomerge.study.config import RunConfig

    if "racing" not in RunConfig.model_fields and rules != ["none"]:
        print(f"this evomerge has no racing block in its run config: running only rule 'none' (not {rules[1:]})")
        rules = ["none"]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, notes, dump = [], [], {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="racing-bench-") as tmp:
        large = Path(tmp) / "tasks-x2"
        large.mkdir()
        for i, setting in enumerate(settings(args.quick, rules, larger_tasks(large))):
            if args.only and args.only not in setting.name:
                continue
            runs = run_setting(setting, seeds, Path(tmp) / f"s{i}", lambda s: print(s, flush=True),
                               args.racing_budget)
            r, target, budget = summarise(setting, runs, args.tolerance)
            rows += r
            notes.append(f"{setting.name}: {setting.note}, {setting.evaluations} evaluations per run "
                         f"(racing rules: {round(setting.evaluations * args.racing_budget)}), "
                         f"E = {budget:,.0f} examples, target test score {target:.3f}")
            dump[setting.name] = {"target": target, "E": budget, "runs": [
                {"rule": x.rule, "seed": x.seed, "evaluations": x.evaluations, "pruned": x.pruned,
                 "seconds": x.seconds, "points": [p.__dict__ for p in x.points]} for x in runs]}
            print(markdown(r), flush=True)
    print("\n" + markdown(rows))
    print(f"\n({seeds} seeds; mean ± std over seeds; target = the no-racing rule's median final test score "
          f"- {args.tolerance}; * = some runs spent less than that and are read at their end; "
          f"total {time.perf_counter() - t_all:.0f} s)")
    for n in notes:
        print(f"- {n}")
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
