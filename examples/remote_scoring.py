"""Drive an evomerge study with scores computed outside evomerge (a lab harness, human raters, a service).

Start the server, then run this script (twice at once, if you like: asks never hand a trial twice):

    evomerge serve --storage runs/server            # binds 127.0.0.1:8765
    python examples/remote_scoring.py               # or: --url http://127.0.0.1:8765 --study my-study

The study searches a parameter-space (TIES) merge of two experts known to the server by *name* only;
this "harness" scores each candidate recipe with a made-up function of its weights and densities.
Replace ``score`` with your evaluation (merge the recipe with `evomerge merge`/mergekit, run your
benchmark) and tell the real numbers. Afterwards: `evomerge export runs/server/STUDY OUT/` and
`evomerge report runs/server/STUDY`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from evomerge.client import APIError, EvomergeClient


def study_config(name: str, budget: int) -> dict[str, Any]:
    return {
        "name": name,
        "space": {"kind": "ps", "method": "ties"},
        "sources": {"base": "org/base-7b", "models": ["org/math-7b", "org/code-7b"], "num_layers": 32},
        "strategy": {"name": "nsga2", "options": {"population_size": 8}},
        "objectives": [{"name": "math", "direction": "maximize"}, {"name": "code", "direction": "maximize"}],
        "budget": {"evaluations": budget},
        "lease_s": 600,  # a candidate not told within 10 minutes is handed to another client
    }


def score(candidate: dict[str, Any]) -> dict[str, float]:
    """A stand-in benchmark: each skill peaks at its own expert's weight near 1 and moderate density."""
    params = {m["model"]: m["parameters"] for m in candidate["recipe"]["models"]}
    math_w, code_w = params["org/math-7b"]["weight"], params["org/code-7b"]["weight"]
    dens = (params["org/math-7b"]["density"] + params["org/code-7b"]["density"]) / 2
    interference = 0.15 * math_w * code_w
    return {"math": math.exp(-((math_w - 1.0) ** 2)) - interference - 0.2 * abs(dens - 0.5),
            "code": math.exp(-((code_w - 1.0) ** 2)) - interference - 0.2 * abs(dens - 0.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--token", default=None, help="the server's bearer token, if it has one")
    parser.add_argument("--study", default="remote-ties")
    parser.add_argument("--budget", type=int, default=48)
    args = parser.parse_args()
    client = EvomergeClient(args.url, token=args.token)
    try:
        client.create_study(study_config(args.study, args.budget))
    except APIError as exc:
        if exc.status != 409:  # 409: it exists (another client created it): join it
            raise
    status = client.optimize(args.study, score, n=4, worker="example-harness")
    print(f"{status['finished']} evaluations ({status['failed']} failed); best trial {status['best_trial']}")
    front = client.front(args.study)
    for member in front["front"]:
        print(f"  trial {member['trial']}: " + ", ".join(f"{k}={v:.3f}" for k, v in member["objectives"].items()))
    best = status["best_trial"]
    if best is not None:
        print("\nmergekit YAML of the best trial:\n" + client.mergekit_yaml(args.study, best))


if __name__ == "__main__":
    main()
