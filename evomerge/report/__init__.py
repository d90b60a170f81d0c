"""`evomerge report RUN`: one offline HTML page (front, convergence, per-objective scores) and PNG figures.

The page embeds plotly.js (no CDN) so it opens from a laptop, a cluster's file browser or an e-mail.
``optuna-dashboard sqlite:///RUN/study.db`` opens the same storage for live browsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evomerge.report.data import ReportData, collect

__all__ = ["ReportData", "ReportFiles", "collect", "write_report"]


@dataclass
class ReportFiles:
    html: Path
    pngs: list[Path]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, png: bool = True) -> ReportFiles:
    """Write ``report.html`` (and ``pareto.png``, ``convergence.png``, ``front_scores.png``) to ``out_dir``.

    ``out_dir`` defaults to ``RUN/report``.
    """
    from evomerge.report.html import render_html
    from evomerge.study.checkpoint import atomic_write_bytes, make_output_dir

    data = collect(run_dir)
    out = make_output_dir(Path(out_dir) if out_dir is not None else Path(run_dir) / "report", "report folder")
    page = out / "report.html"
    atomic_write_bytes(page, render_html(data).encode())
    pngs: list[Path] = []
    if png:
        from evomerge.report.figures import convergence_png, front_scores_png, pareto_png

        pngs = [pareto_png(data, out / "pareto.png"), convergence_png(data, out / "convergence.png")]
        if data.front:
            pngs.append(front_scores_png(data, out / "front_scores.png"))
    return ReportFiles(html=page, pngs=pngs)
