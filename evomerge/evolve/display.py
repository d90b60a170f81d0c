"""Rich rendering of an evolution: the live progress line and the summary table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from evomerge.evolve.driver import EvolveProgress
from evomerge.study.display import progress_columns, status_tail


@contextmanager
def evolve_progress(console: Console, total: int | None, min_interval_s: float = 0.2) -> Iterator:
    """Yields an ``on_progress`` callback: children done/budget, best mean child score, children/s, ETA.

    Redraws at most every ``min_interval_s`` (a digits child takes about a millisecond).
    """
    state: dict[str, Any] = {"best": None, "drawn": 0.0}
    with Progress(*progress_columns("evolve"), console=console, transient=False) as bar:
        task = bar.add_task("", total=total, info="")

        def update(p: EvolveProgress) -> None:
            if p.last_scores is not None:
                mean = float(p.last_scores.mean())
                state["best"] = mean if state["best"] is None else max(state["best"], mean)
            if p.elapsed_s - state["drawn"] < min_interval_s and p.children != total:
                return
            state["drawn"] = p.elapsed_s
            best = "-" if state["best"] is None else f"{state['best']:.4f}"
            info = f"best child {best} · {p.children / max(p.elapsed_s, 1e-9):.1f} children/s"
            info += status_tail(p.failed, p.replayed, "replayed", p.workers)
            bar.update(task, completed=p.children, info=info)

        yield update


def summary_table(summary: dict[str, Any]) -> Table:
    """Each split's objectives for the evolved model and every starting model."""
    rows = summary["models"]
    first = next(iter(rows.values()))
    names = list(first[summary["splits"][0]])
    table = Table(title=f"{summary['algorithm']}: {summary['children']} children, {summary['failed']} failed, "
                        f"{summary['elapsed_s']:.0f} s")
    table.add_column("model")
    for split in summary["splits"]:
        for n in names:
            table.add_column(f"{n} ({split})", justify="right")
    for label, scores in rows.items():
        table.add_row(label, *(f"{scores[s][n]:.4f}" for s in summary["splits"] for n in names),
                      style="green" if label == "evolved" else None)
    return table
