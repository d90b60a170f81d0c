"""PNG figures of a run for papers and terminals (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

from evomerge.report.data import ReportData
from evomerge.report.html import PALETTE


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pareto_png(data: ReportData, path: Path) -> Path:
    plt = _plt()
    names = data.objectives
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    rest = [p for p in data.points if not p.on_front]
    front = data.front
    if len(names) == 1:
        n = names[0]
        ax.scatter([p.trial for p in rest], [p.objectives[n] for p in rest], s=12, c=PALETTE["all"], label="trials")
        ax.scatter([p.trial for p in front], [p.objectives[n] for p in front], s=30, c=PALETTE["front"], label="best")
        for b, v in data.baselines.items():
            ax.axhline(v[n], ls="--", c=PALETTE["baseline"])
            ax.annotate(b, (0, v[n]), fontsize=8, color=PALETTE["baseline"])
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{n} ({data.directions[0]})")
    else:  # the first two objectives; the HTML report has the full scatter matrix
        x, y = names[:2]
        ax.scatter([p.objectives[x] for p in rest], [p.objectives[y] for p in rest], s=12, c=PALETTE["all"],
                   label="trials")
        ordered = sorted(front, key=lambda p: (p.objectives[x], p.objectives[y]))
        ax.step([p.objectives[x] for p in ordered], [p.objectives[y] for p in ordered], where="post",
                c=PALETTE["front"], marker="o", label="Pareto front")
        for b, v in data.baselines.items():
            ax.scatter([v[x]], [v[y]], marker="*", s=150, c=PALETTE["baseline"])
            ax.annotate(b, (v[x], v[y]), fontsize=8, textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel(f"{x} ({data.directions[0]})")
        ax.set_ylabel(f"{y} ({data.directions[1]})")
    ax.set_title(f"{data.run}: Pareto front")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def convergence_png(data: ReportData, path: Path) -> Path:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 5), dpi=120, sharex=True)
    a1.plot(data.curve_evals, [float("nan") if v is None else v for v in data.curve_best], c=PALETTE["front"])
    a1.set_ylabel("best score")
    a2.plot(data.curve_evals, data.curve_hv, c=PALETTE["baseline"])
    a2.set_ylabel("hypervolume")
    a2.set_xlabel("evaluations")
    a1.set_title(f"{data.run}: convergence")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def front_scores_png(data: ReportData, path: Path) -> Path:
    import numpy as np

    plt = _plt()
    front = sorted(data.front, key=lambda p: -p.score)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(front) * len(data.objectives)), 4), dpi=120)
    series = [(f"{n} (train)", [p.objectives[n] for p in front]) for n in data.objectives]
    for n in data.objectives:
        if any(p.test and n in p.test for p in front):
            series.append((f"{n} (test)", [(p.test or {}).get(n, float("nan")) for p in front]))
    x = np.arange(len(front))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series):
        ax.bar(x + i * width, values, width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, [f"trial {p.trial}" for p in front], rotation=45, ha="right", fontsize=8)
    ax.set_title(f"{data.run}: front members per objective")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
