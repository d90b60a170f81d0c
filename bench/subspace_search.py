"""Searched TSV-M / Iso-C / Iso-CTS vs searched task arithmetic and TIES on the tinylm zoo (issue 14, item 5).

Each method gets the same small search, the demo's objectives (math_a, lang_b, list_a on their train
splits; TPE, 20 evaluations, seed 0): task arithmetic over lambda (weights 1), TIES over lambda and density
(weights 1), TSV-M and Iso-C over lambda, Iso-CTS over lambda and common_space_fraction. The table gives,
per method, the trial with the best mean train score and its test-split scores (n = 300 per task).
A run folder that already holds a front.json is reused (delete it to rerun).

    python bench/subspace_search.py [--workdir runs/bench/subspace] [--evaluations 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPACES = {
    "task_arithmetic": {"kind": "ps", "method": "task_arithmetic", "search": ["lambda"], "fixed": {"weight": 1.0},
                        "ranges": {"lambda": [0.0, 2.0]}},
    "ties": {"kind": "ps", "method": "ties", "search": ["lambda", "density"], "fixed": {"weight": 1.0},
             "ranges": {"lambda": [0.0, 2.0]}},
    "tsv_m": {"kind": "ps", "method": "tsv_m", "search": ["lambda"], "ranges": {"lambda": [0.0, 4.0]}},
    "iso_c": {"kind": "ps", "method": "iso_c", "search": ["lambda"], "ranges": {"lambda": [0.0, 4.0]}},
    "iso_cts": {"kind": "ps", "method": "iso_cts", "search": ["lambda", "common_space_fraction"],
                "ranges": {"lambda": [0.0, 4.0]}},
}
TASKS = ["math_a", "lang_b", "list_a"]


def config(method: str, out: Path, evaluations: int) -> dict:
    zoo = REPO / "zoo" / "tinylm"
    return {
        "name": f"subspace_{method}", "output": str(out),
        "sources": {"base": str(zoo / "base"), "models": [str(zoo / t) for t in TASKS]},
        "space": SPACES[method], "strategy": {"name": "tpe"},
        "objectives": [{"task": str(REPO / "fitness" / "tinylm" / f"{t}.yaml")} for t in TASKS],
        "budget": {"evaluations": evaluations}, "seed": 0,
        "runner": {"type": "local", "device": "cpu", "threads": 1}, "test_split": "test",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench" / "subspace")
    ap.add_argument("--evaluations", type=int, default=20)
    ap.add_argument("--methods", default=",".join(SPACES))
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        out = args.workdir / method
        cfg = config(method, out, args.evaluations)
        if not (out / "front.json").is_file():
            path = args.workdir / f"{method}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            subprocess.run([sys.executable, "-m", "evomerge", "run", str(path)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
        front = json.loads((out / "front.json").read_text())["front"]
        best = max(front, key=lambda m: m["score"])
        test = best["test"]["objectives"]
        rows.append((method, best["recipe"]["parameters"], best["score"], test))
    print("| method (searched) | global parameters found | mean train | " + " | ".join(f"{t} test" for t in TASKS)
          + " | mean test |")
    print("|---" * (len(TASKS) + 4) + "|")
    for method, params, train, test in rows:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in params.items() if isinstance(v, float))
        mean = sum(test[t] for t in TASKS) / len(TASKS)
        print(f"| {method} | {shown} | {train:.3f} | " + " | ".join(f"{test[t]:.3f}" for t in TASKS)
              + f" | {mean:.3f} |")


if __name__ == "__main__":
    main()
