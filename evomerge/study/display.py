"""Rich rendering of a study: the live progress line and the front as a table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from evomerge.study.study import Progress as StudyProgress
from evomerge.study.study import Study, StudySummary


def progress_columns(label: str) -> list:
    """label, bar, done/total, a free ``info`` field, elapsed and ETA: the one layout of every long job."""
    return [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]


@contextmanager
def live_progress(console: Console, total: int | None) -> Iterator:
    """Yields an ``on_progress`` callback drawing evaluations done/budget, best so far, evals/min and ETA."""
    with Progress(*progress_columns("search"), console=console, transient=False) as bar:
        task = bar.add_task("", total=total, info="")

        def update(p: StudyProgress) -> None:
            best = "-" if p.best is None else f"{p.best:.4f}"
            info = f"best {best} · {p.evals_per_min:.1f} evals/min"
            info += status_tail(p.failed, p.reused, "restored", p.workers)
            bar.update(task, completed=p.done, info=info)

        yield update


def status_tail(failed: int, resumed: int, resumed_word: str, workers: list) -> str:
    """The part every progress line shares: failures, work taken over from before a resume, the workers."""
    info = f" · {failed} failed" if failed else ""
    if resumed:
        info += f" · {resumed} {resumed_word}"
    if workers:
        info += f" · {worker_summary(workers)}"
    return info


def worker_summary(states: list, max_listed: int = 4) -> str:
    """Each worker as name:status/evaluated (a restart count when it has one); counts per status beyond a few."""
    if len(states) > max_listed:
        counts: dict[str, int] = {}
        for st in states:
            counts[st.status] = counts.get(st.status, 0) + 1
        return "workers " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    parts = []
    for st in states:
        part = f"{st.name}:{st.status}/{st.evaluated}"
        if st.restarts:
            part += f" ({st.restarts} restarts)"
        parts.append(part)
    return " ".join(parts)


def front_table(study: Study, summary: StudySummary) -> Table:
    _, ok = study.archive()
    by_number = {r.number: r for r in ok}
    names = [o.name for o in study.objectives]
    test = summary.test_results.get("trials", {})
    table = Table(title=f"{study.config.name}: Pareto front ({len(summary.front)} of {summary.n_trials} trials, "
                        f"hypervolume {summary.hypervolume:.4g} vs reference {summary.reference_point})")
    table.add_column("trial", justify="right")
    for n in names:
        table.add_column(f"{n} (train)", justify="right")
    table.add_column("score (train)", justify="right")
    if test:
        for n in names:
            table.add_column(f"{n} (test)", justify="right")
    for number in sorted(summary.front, key=lambda k: -study.score(by_number[k].objectives)):
        r = by_number[number]
        row = [str(number), *(f"{r.objectives[n]:.4f}" for n in names), f"{study.score(r.objectives):.4f}"]
        if test:
            t = test.get(str(number), {}).get("objectives", {})
            row += [f"{t[n]:.4f}" if n in t else "-" for n in names]
        table.add_row(*row)
    return table
