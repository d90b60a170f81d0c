"""Show that the tiny zoo is shaped so that merging matters: a markdown table on the test splits.

For tinylm and digits: the base (or shared init), each expert, and three
simple merges of all experts — linear (equal weights), task arithmetic
(weight 1 each, arXiv 2212.04089) and DARE-TIES (density 0.5, weight 1 each,
mergekit's defaults otherwise: rescale on, normalize off, lambda 1, sign
election; arXiv 2311.03099 + 2306.01708; seed 0) — scored on every task and on the
multi-task average of the experts' skills. The acceptance criterion of the zoo:
each expert is best on its own skill, and some merge beats every expert on the
average.

    .venv/bin/python bench/zoo_table.py [--zoo zoo/] [--split test]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evomerge.zoo.digits import DigitsMLP, digits_split  # noqa: E402
from evomerge.zoo.score import accuracy, exact_match, load_jsonl  # noqa: E402

DARE_DENSITY = 0.5
SEED = 0
State = dict[str, torch.Tensor]


# ---------------------------------------------------------------- merges
def _registry_merge(method: str, base: State, sources: list[State], params: dict) -> State | None:
    """Merge through evomerge.merge's registry when it is installed; None when it is not (yet)."""
    try:
        from evomerge.merge.base import MergeInputs
        from evomerge.merge.registry import get_method

        fn = get_method(method)
    except Exception:
        return None
    return {name: fn(MergeInputs(name, base[name], sources=[s[name] for s in sources]), params, seed=SEED)
            .to(base[name].dtype) for name in base}


def _inline(method: str, base: State, sources: list[State], params: dict) -> State:
    """A few-line fallback with the same semantics, for when the registry is not there."""
    gen = torch.Generator().manual_seed(SEED)
    out = {}
    for name, b in base.items():
        b = b.float()
        deltas = [s[name].float() - b for s in sources]
        w = params.get("weight", [1.0] * len(sources))
        if method == "linear":
            out[name] = sum(wk * (b + d) for wk, d in zip(w, deltas, strict=True)) / sum(w)
        elif method == "task_arithmetic":
            out[name] = b + sum(wk * d for wk, d in zip(w, deltas, strict=True))
        elif method == "dare_ties":
            p = params["density"]
            kept = [wk * d * (torch.rand(d.shape, generator=gen) < p) / p for wk, d in zip(w, deltas, strict=True)]
            stack = torch.stack(kept)
            sign = torch.sign(stack.sum(0))
            agree = (torch.sign(stack) == sign) & (stack != 0)
            out[name] = b + (stack * agree).sum(0)  # mergekit default for dare_ties: normalize false
        else:
            raise ValueError(method)
    return out


def merge(method: str, base: State, sources: list[State]) -> tuple[State, str]:
    n = len(sources)
    params: dict = {"linear": {"weight": [1.0] * n}, "task_arithmetic": {"weight": [1.0] * n},
                    "dare_ties": {"weight": [1.0] * n, "density": DARE_DENSITY},
                    "ties": {"weight": [1.0] * n, "density": TIES_DENSITY},
                    "tsv_m": {}, "iso_c": {}, "iso_cts": {}}[method]
    merged = _registry_merge(method, base, sources, params)
    if merged is not None:
        return merged, "registry"
    return _inline(method, base, sources, params), "inline"


MERGES = {"linear": "linear (1/n each)", "task_arithmetic": "task arithmetic (w=1)",
          "dare_ties": f"DARE-TIES (d={DARE_DENSITY}, w=1)"}
TIES_DENSITY = 0.2  # the TIES paper's default top-k
# --subspace: the data-free subspace methods beside TIES, untuned (lambda 1: the papers' alpha untuned)
SUBSPACE_MERGES = {"ties": f"TIES (d={TIES_DENSITY}, w=1)", "tsv_m": "TSV-M (lambda 1)",
                   "iso_c": "Iso-C (lambda 1)", "iso_cts": "Iso-CTS (f=0.8, lambda 1)"}


# ---------------------------------------------------------------- table
def table(title: str, rows: dict[str, dict[str, float]], skills: list[str], extra: list[str], n: dict[str, int]) -> str:
    cols = [*skills, "avg", *extra]
    lines = [f"### {title}", "", "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, s in rows.items():
        s = {**s, "avg": sum(s[k] for k in skills) / len(skills)}
        rows[model] = s
        lines.append(f"| {model} | " + " | ".join(f"{100 * s[c]:.1f}" for c in cols) + " |")
    lines.append("")
    lines.append("n (test items): " + ", ".join(f"{k} {v}" for k, v in n.items()))
    return "\n".join(lines)


def _se(p: float, n: int) -> float:
    return (p * (1 - p) / n) ** 0.5


def verdict(rows: dict[str, dict[str, float]], experts: dict[str, str], merges: list[str],
            n: dict[str, int], n_avg: int) -> str:
    """The acceptance facts, stated with margins and a binomial standard error of each difference."""
    out = []
    for expert, skill in experts.items():
        best_other = max((m for m in rows if m != expert), key=lambda m: rows[m][skill])
        gap = rows[expert][skill] - rows[best_other][skill]
        se = (_se(rows[expert][skill], n[skill]) ** 2 + _se(rows[best_other][skill], n[skill]) ** 2) ** 0.5
        out.append(f"- {expert} on {skill}: {100 * rows[expert][skill]:.1f} vs best other "
                   f"({best_other}) {100 * rows[best_other][skill]:.1f} ({100 * gap:+.1f} ± {100 * se:.1f} "
                   f"points, n = {n[skill]})")
    best_expert = max(experts, key=lambda m: rows[m]["avg"])
    best_merge = max(merges, key=lambda m: rows[m]["avg"])
    margin = rows[best_merge]["avg"] - rows[best_expert]["avg"]
    se = (_se(rows[best_merge]["avg"], n_avg) ** 2 + _se(rows[best_expert]["avg"], n_avg) ** 2) ** 0.5
    out.append(f"- multi-task average: best merge {best_merge} {100 * rows[best_merge]['avg']:.1f} vs best expert "
               f"{best_expert} {100 * rows[best_expert]['avg']:.1f} ({100 * margin:+.1f} ± {100 * se:.1f} points)")
    return "\n".join(out)


def tinylm_table(zoo: Path, split: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = zoo / "tinylm"
    tasks = {}
    for name in ("math_a", "lang_b", "list_a", "math_b"):
        spec = yaml.safe_load((root / "tasks" / f"{name}.yaml").read_text())
        tasks[name] = (load_jsonl(root / "tasks" / spec["data"][split]), spec["max_new_tokens"])
    tok = AutoTokenizer.from_pretrained(root / "base")
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32).eval()
    states = {m: AutoModelForCausalLM.from_pretrained(root / m, dtype=torch.float32).state_dict()
              for m in ("base", "math_a", "lang_b", "list_a")}
    experts = {"math_a": "math_a", "lang_b": "lang_b", "list_a": "list_a"}
    candidates: dict[str, Callable[[], State]] = {m: (lambda m=m: states[m]) for m in states}
    how = {}
    for method, label in MERGES.items():
        def make(method: str = method) -> State:
            merged, how[method] = merge(method, states["base"], [states[e] for e in experts])
            return merged
        candidates[label] = make
    rows = {}
    for label, make in candidates.items():
        model.load_state_dict(make())
        rows[label] = {t: exact_match(model, tok, items, mnt) for t, (items, mnt) in tasks.items()}
    n = {t: len(items) for t, (items, _) in tasks.items()}
    text = table(f"tinylm ({split} split, greedy exact match, %)", rows, list(experts), ["math_b"], n)
    n_avg = sum(n[t] for t in experts)
    return text + f"\n\nmerges via: {how}\n\n" + verdict(rows, experts, list(MERGES.values()), n, n_avg)


def digits_table(zoo: Path) -> str:
    root = zoo / "digits"
    _, _, x_test, y_test = digits_split()
    states = {m: DigitsMLP.from_pretrained(root / m).state_dict() for m in ("init", "expert_0_4", "expert_5_9")}
    experts = {"expert_0_4": "digits_0_4", "expert_5_9": "digits_5_9"}
    model = DigitsMLP().eval()
    candidates = dict(states)
    how = {}
    for method, label in MERGES.items():
        candidates[label], how[method] = merge(method, states["init"], [states[e] for e in experts])
    labels = {"digits_0_4": [0, 1, 2, 3, 4], "digits_5_9": [5, 6, 7, 8, 9], "digits_all": None}
    rows = {}
    for label, state in candidates.items():
        model.load_state_dict(state)
        rows[label] = {t: accuracy(model, x_test, y_test, lab) for t, lab in labels.items()}
    n = {t: int((torch.isin(torch.from_numpy(y_test), torch.tensor(lab)).sum()) if lab else len(y_test))
         for t, lab in labels.items()}
    text = table("digits (test split, accuracy %; avg = mean of the three tasks)", rows, list(labels), [], n)
    # The three digits tasks share items, so the average is over 360 images, not 720.
    return text + f"\n\nmerges via: {how}\n\n" + verdict(rows, experts, list(MERGES.values()), n, len(y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, default=REPO / "zoo")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--only", choices=["tinylm", "digits"], default=None)
    parser.add_argument("--subspace", action="store_true",
                        help="also TIES, TSV-M, Iso-C and Iso-CTS (arXiv 2412.00081, 2502.04959), untuned")
    args = parser.parse_args()
    if args.subspace:
        MERGES.update(SUBSPACE_MERGES)
    torch.set_num_threads(1)
    if args.only in (None, "tinylm"):
        print(tinylm_table(args.zoo, args.split), end="\n\n")
    if args.only in (None, "digits"):
        print(digits_table(args.zoo))


if __name__ == "__main__":
    main()
