"""Evo-Merging (arXiv 2509.12951) on the tiny zoo's LoRA experts: searched fusion vs adapters and untuned merges.

Runs (or resumes, or reuses when finished) the two-stage search of
``configs/lora_evo_tinylm.yaml`` — α for 400 evaluations with β = 1/N, then β
for 800, CMA-ES λ = 20, σ0 = 0.05, L1 0.05, fitness = answer LM loss on 300
mixed train examples — then scores on the test splits (greedy exact match,
fitness/tinylm/*.yaml; math_b, math asked in language B, is the skill no
adapter was tuned on):

* the base; each adapter alone (α = 1, β = 1);
* the uniform average: the paper's fusion at β = 1/N, α = 1 (stage one's start);
* Σ β_i·B_i·A_i with equal weights (task arithmetic on the adapters' updates,
  no cross terms) at β = 1/N and β = 1;
* the evolved fusion (best α, β of the run).

Writes the markdown table to bench/results/lora_evo.md and prints it.

    nice -n 5 .venv/bin/python bench/lora_evo.py [--alpha-evals 400 --total 1200] [--out runs/bench_lora_evo]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import optuna
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evomerge.fitness import load_task  # noqa: E402
from evomerge.lora.apply import ResidentLoraMerge  # noqa: E402
from evomerge.lora.evo_merging import read_result, run_evo_merging  # noqa: E402
from evomerge.lora.fitness import AnswerLoss  # noqa: E402
from evomerge.study.config import RunConfig  # noqa: E402

TASKS = ("math_a", "lang_b", "list_a", "math_b")
SKILLS = ("math_a", "lang_b", "list_a")


def search(config_path: Path, out: Path, alpha_evals: int, total: int) -> tuple[dict, float]:
    raw = yaml.safe_load(config_path.read_text())
    raw["output"] = str(out)
    raw["name"] = "bench_lora_evo"
    raw["space"]["alpha_evaluations"] = alpha_evals
    raw["budget"] = {"evaluations": total}
    config = RunConfig.from_dict(raw, source=str(config_path))
    t0 = time.perf_counter()
    last = {"stage": ""}

    def on_stage(msg: str) -> None:
        last["stage"] = msg
        print(msg, flush=True)

    def on_progress(p) -> None:
        if p.last is not None and p.done % 100 == 0:
            print(f"  {p.done} evaluations, best scalarised {p.best:.4f}, {p.evals_per_min:.0f}/min", flush=True)

    study, summary = run_evo_merging(config, on_progress=on_progress, on_stage=on_stage)
    study.close()
    if summary.stopped_early:
        raise SystemExit("interrupted; rerun the same command to resume")
    return read_result(out), time.perf_counter() - t0


def score(merge: ResidentLoraMerge, tasks: dict, loss: AnswerLoss) -> dict[str, float]:
    with torch.inference_mode():
        row = {name: t.evaluate(merge.model, merge.tokenizer, split="test").objectives[name]
               for name, t in tasks.items()}
        row["loss_train"] = loss.evaluate(merge.model, merge.tokenizer, split="train").objectives["loss"]
        row["loss_test"] = loss.evaluate(merge.model, merge.tokenizer, split="test").objectives["loss"]
    row["avg"] = sum(row[s] for s in SKILLS) / len(SKILLS)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "lora_evo_tinylm.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_lora_evo")
    ap.add_argument("--alpha-evals", type=int, default=400)
    ap.add_argument("--total", type=int, default=1200)
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "lora_evo.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    result, wall = search(args.config, args.out, args.alpha_evals, args.total)
    cfg = yaml.safe_load(args.config.read_text())
    base, adapters = cfg["sources"]["base"], cfg["sources"]["models"]
    n = len(adapters)
    merge = ResidentLoraMerge(REPO / base, [REPO / a for a in adapters])
    tasks = {t: load_task(REPO / "fitness" / "tinylm" / f"{t}.yaml") for t in TASKS}
    fit = cfg["space"]["fitness"]
    loss = AnswerLoss([REPO / t for t in fit["tasks"]], examples=fit["examples"])
    one = [1.0] * n
    rows: list[tuple[str, dict]] = []
    t0 = time.perf_counter()
    merge.apply(one, [0.0] * n)
    rows.append(("base", score(merge, tasks, loss)))
    for i, a in enumerate(adapters):
        merge.apply(one, [1.0 if j == i else 0.0 for j in range(n)])
        rows.append((f"adapter {Path(a).name}", score(merge, tasks, loss)))
    merge.apply(one, [1.0 / n] * n)
    rows.append((f"uniform average (fusion, β = 1/{n}, α = 1)", score(merge, tasks, loss)))
    merge.apply_update_sum([1.0 / n] * n)
    rows.append((f"Σ β·B_i·A_i, β = 1/{n} (update average)", score(merge, tasks, loss)))
    merge.apply_update_sum(one)
    rows.append(("Σ β·B_i·A_i, β = 1 (update sum)", score(merge, tasks, loss)))
    merge.apply(result["alpha"], result["beta"])
    rows.append(("**evolved (Evo-Merging)**", score(merge, tasks, loss)))
    scoring = time.perf_counter() - t0

    fmt = ", ".join(f"{x:.3f}" for x in result["alpha"])
    fmtb = ", ".join(f"{x:+.3f}" for x in result["beta"])
    lines = [
        "# Evo-Merging on the tinylm LoRA experts",
        "",
        f"Two-stage CMA-ES (λ = 20, σ0 = 0.05 in genome units, L1 0.05): α for {args.alpha_evals} evaluations "
        f"(β = 1/{n}), then β ∈ [−1.5, 1.5] for {args.total - args.alpha_evals}; fitness = answer LM loss on "
        f"{cfg['space']['fitness']['examples']} mixed train examples. Search wall time {wall / 60:.1f} min "
        f"(evaluations reused from a previous run count as instant), scoring {scoring:.0f} s; nice -n 5, one "
        "torch thread, 2 shared CPU cores.",
        "",
        f"Evolved: α = [{fmt}], β = [{fmtb}] (stage 1 trial {result['stage1']['trial']}, stage 2 trial "
        f"{result['stage2']['trial']}; order: {', '.join(Path(a).name for a in adapters)}).",
        "",
        "Greedy exact match on the test splits (n = 300 per task); avg = mean of the three adapters' skills; "
        "math_b (math asked in B) is the skill no adapter was tuned on; LM loss = mean answer NLL on the 300-example "
        "mix (train: the search's set; test: the same tasks' test splits).",
        "",
        "| model | math_a | lang_b | list_a | avg | math_b | LM loss train | LM loss test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['math_a']:.3f} | {r['lang_b']:.3f} | {r['list_a']:.3f} | {r['avg']:.3f} | "
                     f"{r['math_b']:.3f} | {r['loss_train']:.3f} | {r['loss_test']:.3f} |")
    lines += ["", f"Command: `nice -n 5 .venv/bin/python bench/lora_evo.py --alpha-evals {args.alpha_evals} "
              f"--total {args.total}`", ""]
    text = "\n".join(lines)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    (args.results.with_suffix(".json")).write_text(json.dumps({"result": result, "rows": dict(rows),
                                                               "search_wall_s": wall}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
