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


LOG_LINE_EVERY_S = 2.0  # a redirected log gets at most one trial line per this many seconds (and the last one)


def fmt(x: float | None) -> str:
    """A score or objective with the digits a reader compares (4 significant), '-' for none."""
    return "-" if x is None else f"{x:.4g}"


@contextmanager
def live_progress(console: Console, total: int | None) -> Iterator:
    """Yields an ``on_progress`` callback drawing evaluations done/budget, best so far, evals/min and ETA.

    When the console is not a terminal (a cluster job's log file) a bar cannot redraw: one plain line
    per finished trial is printed instead, at most one every ``LOG_LINE_EVERY_S`` seconds.
    """
    if not console.is_terminal:
        yield trial_lines(console, total)
        return
    with Progress(*progress_columns("search"), console=console, transient=False) as bar:
        task = bar.add_task("", total=total, info="")

        def update(p: StudyProgress) -> None:
            best = "-" if p.best is None else f"{p.best:.4f}"
            info = f"best {best} · {p.evals_per_min:.1f} evals/min"
            info += status_tail(p.failed, p.reused, "restored", p.workers)
            bar.update(task, completed=p.done, info=info)

        yield update


def trial_lines(console: Console, total: int | None, every_s: float = LOG_LINE_EVERY_S):
    """``on_progress`` printing ``trial N: score … · best … · F failed · R evals/min · done/total`` lines."""
    import time

    last_print = [float("-inf")]

    def update(p: StudyProgress) -> None:
        if p.last is None or p.last_trial is None:
            return
        now = time.monotonic()
        final = total is not None and p.done >= total
        if now - last_print[0] < every_s and not final:
            return
        last_print[0] = now
        score = fmt(p.last_score) if p.last_score is not None else "failed"
        if p.last.status == "pruned":  # stopped by racing: not a failure, and its running score is partial
            score = f"pruned after {p.last.racing.get('examples_scored', '?')} examples"
        line = (f"trial {p.last_trial}: score {score} · best {fmt(p.best)} · {p.failed} failed · "
                f"{p.evals_per_min:.1f} evals/min · {p.done}/{total if total is not None else '?'}")
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    return update


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
    """The front, best first; print ``hypervolume_text`` beside it (a title that long would wrap)."""
    _, ok = study.archive()
    by_number = {r.number: r for r in ok}
    names = [o.name for o in study.objectives]
    test = summary.test_results.get("trials", {})
    table = Table(title=f"{study.config.name}: Pareto front ({len(summary.front)} of {summary.n_trials} trials)")
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


def hypervolume_text(study: Study, summary: StudySummary) -> str:
    """The hypervolume with 4 significant digits and where its reference point comes from."""
    ref = "[" + ", ".join(fmt(x) for x in summary.reference_point) + "]"
    source = ("reference_point from the config" if study.config.reference_point is not None
              else "reference 10 % beyond the worst value seen per objective")
    return f"hypervolume {fmt(summary.hypervolume)}, {source}: {ref}"


def baselines_table(study: Study, summary: StudySummary) -> Table | None:
    """Searched vs configured baselines (sources, untuned merges) on train and the test split; None without any."""
    results = summary.test_results or {}
    baselines = results.get("baselines") or {}
    if not baselines:
        return None
    split = results.get("split") or "test"
    names = [o.name for o in study.objectives]
    table = Table(title=f"{study.config.name}: searched vs baselines (train and {split})")
    table.add_column("model")
    table.add_column("score (train)", justify="right")
    table.add_column(f"score ({split})", justify="right")
    for n in names:
        table.add_column(f"{n} ({split})", justify="right")

    def row(label: str, train: dict | None, test: dict | None) -> None:
        def score(e: dict | None) -> str:
            if not e:
                return "-"
            return fmt(e.get("score")) if e.get("status") == "ok" else "failed"

        t = (test or {}).get("objectives", {}) if (test or {}).get("status") == "ok" else {}
        table.add_row(label, score(train), score(test), *(fmt(t.get(n)) for n in names))

    _, ok = study.archive()
    by_number = {r.number: r for r in ok}
    tests = results.get("trials") or {}
    for number in sorted(summary.front, key=lambda k: -study.score(by_number[k].objectives)):
        r = by_number[number]
        row(f"trial {number} (searched)", {"status": "ok", "score": study.score(r.objectives)}, tests.get(str(number)))
    for name, by_split in baselines.items():
        row(name, by_split.get("train"), by_split.get(split))
    return table
