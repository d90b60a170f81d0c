"""The self-contained HTML report: plotly figures with plotly.js inlined, so it opens offline (no CDN).

Figures: the Pareto front (a 2-D scatter; one objective: score per trial; three or more: a
scatter matrix) with the sources and untuned merges of the run's ``baselines`` marked; the
convergence curve (best scalarised score and hypervolume per evaluation); the scores of each
front member per objective (train and, when the run was finalized, test); for a raced run, the
examples each trial cost, the trials stopped early drawn as such. Hovering a point
shows its recipe in short; clicking it shows the whole recipe below the plot.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from evomerge.report.data import Point, ReportData, Stopped

PALETTE = {"all": "#b0b7c3", "front": "#d1495b", "baseline": "#2e86ab", "test": "#edae49", "stopped": "#8a5a00"}
MAX_STOPPED_ROWS = 200  # the stopped-trials table lists the first this many


def recipe_summary(recipe: dict[str, Any] | None, width: int = 6) -> str:
    """A few hover lines: the method and each model's parameters (rounded)."""
    if not recipe:
        return "(no recipe: box space)"
    lines = [f"method: {recipe.get('merge_method')}"]
    for spec in (recipe.get("models") or [])[:width]:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in (spec.get("parameters") or {}).items())
        lines.append(f"{Path(spec['model']).name}: {params}")
    if recipe.get("layer_path"):
        lines.append(f"layer path: {len(recipe['layer_path'])} hops")
    if recipe.get("groups"):
        lines.append(f"{len(recipe['groups'])} layer group(s)")
    return "<br>".join(html.escape(s) for s in lines)


def _hover(p: Point, objectives: list[str]) -> str:
    vals = "<br>".join(f"{n}: {p.objectives[n]:.4g}" + (f" (test {p.test[n]:.4g})" if p.test and n in p.test
                                                         else "") for n in objectives)
    return f"<b>trial {p.trial}</b>{' · front' if p.on_front else ''}<br>{vals}<br>{recipe_summary(p.recipe)}"


def _hover_stopped(s: Stopped) -> str:
    value = "-" if s.value is None else f"{s.value:.4g}"
    stage = "" if s.stage is None else f" at stage {s.stage}"
    return (f"<b>trial {s.trial}</b> · stopped early{stage}<br>{s.examples:,} examples scored<br>running score "
            f"{value}<br>{html.escape(s.reason)}<br>{recipe_summary(s.recipe)}")


def pareto_figure(data: ReportData):
    import plotly.graph_objects as go

    names = data.objectives
    fig = go.Figure()
    rest = [p for p in data.points if not p.on_front]
    front = data.front
    if len(names) == 1:
        n = names[0]
        for pts, label, color in ((rest, "trials", PALETTE["all"]), (front, "best", PALETTE["front"])):
            fig.add_trace(go.Scatter(x=[p.trial for p in pts], y=[p.objectives[n] for p in pts], mode="markers",
                                     name=label, marker={"color": color, "size": 8 if label == "best" else 6},
                                     customdata=[p.trial for p in pts], hovertext=[_hover(p, names) for p in pts],
                                     hoverinfo="text"))
        shown = [st for st in data.stopped if st.value is not None]
        if shown:  # one objective: the running scalarised score is the objective, signed so larger is better
            sign = 1.0 if data.directions[0] == "maximize" else -1.0
            fig.add_trace(go.Scatter(x=[st.trial for st in shown], y=[sign * st.value for st in shown],
                                     mode="markers", name="stopped early (running score)",
                                     marker={"color": PALETTE["stopped"], "size": 7, "symbol": "x"},
                                     customdata=[st.trial for st in shown],
                                     hovertext=[_hover_stopped(st) for st in shown], hoverinfo="text"))
        for b, vals in data.baselines.items():
            fig.add_hline(y=vals[n], line_dash="dash", line_color=PALETTE["baseline"],
                          annotation_text=f"{b} ({data.baseline_split[b]})")
        fig.update_layout(xaxis_title="trial", yaxis_title=f"{n} ({data.directions[0]})")
    elif len(names) == 2:
        x, y = names
        fig.add_trace(go.Scatter(x=[p.objectives[x] for p in rest], y=[p.objectives[y] for p in rest],
                                 mode="markers", name="trials", marker={"color": PALETTE["all"], "size": 6},
                                 customdata=[p.trial for p in rest], hovertext=[_hover(p, names) for p in rest],
                                 hoverinfo="text"))
        ordered = sorted(front, key=lambda p: (p.objectives[x], p.objectives[y]))
        fig.add_trace(go.Scatter(x=[p.objectives[x] for p in ordered], y=[p.objectives[y] for p in ordered],
                                 mode="lines+markers", name="Pareto front", line={"shape": "hv"},
                                 marker={"color": PALETTE["front"], "size": 9},
                                 customdata=[p.trial for p in ordered], hovertext=[_hover(p, names) for p in ordered],
                                 hoverinfo="text"))
        if data.baselines:
            bs = list(data.baselines.items())
            fig.add_trace(go.Scatter(x=[v[x] for _, v in bs], y=[v[y] for _, v in bs], mode="markers+text",
                                     name="sources / untuned merges", text=[b for b, _ in bs],
                                     textposition="top center",
                                     marker={"symbol": "star", "size": 14, "color": PALETTE["baseline"]},
                                     hovertext=[f"<b>{html.escape(b)}</b> ({data.baseline_split[b]})<br>"
                                                + "<br>".join(f"{k}: {v[k]:.4g}" for k in names) for b, v in bs],
                                     hoverinfo="text"))
        fig.update_layout(xaxis_title=f"{x} ({data.directions[0]})", yaxis_title=f"{y} ({data.directions[1]})")
    else:
        def dims(pts: list[dict[str, float]]) -> list[dict]:
            return [{"label": n, "values": [v[n] for v in pts]} for n in names]

        for pts, label, color in ((rest, "trials", PALETTE["all"]), (front, "Pareto front", PALETTE["front"])):
            fig.add_trace(go.Splom(dimensions=dims([p.objectives for p in pts]), name=label,
                                   marker={"color": color, "size": 6}, customdata=[p.trial for p in pts],
                                   hovertext=[_hover(p, names) for p in pts], hoverinfo="text", diagonal_visible=False))
        if data.baselines:
            fig.add_trace(go.Splom(dimensions=dims(list(data.baselines.values())), name="sources / untuned merges",
                                   marker={"color": PALETTE["baseline"], "size": 12, "symbol": "star"},
                                   hovertext=list(data.baselines), hoverinfo="text", diagonal_visible=False))
    fig.update_layout(title="Pareto front", template="plotly_white", height=520, legend={"orientation": "h"})
    return fig


def convergence_figure(data: ReportData):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("best scalarised score", "hypervolume (reference "
                                        f"{[round(v, 4) for v in data.reference_point]})"))
    spent = ([f"{n} evaluations, {e:,} train examples" for n, e in zip(data.curve_evals, data.curve_examples,
                                                                       strict=True)]
             if data.stopped and len(data.curve_examples) == len(data.curve_evals) else None)
    fig.add_trace(go.Scatter(x=data.curve_evals, y=data.curve_best, mode="lines", name="best score",
                             line={"color": PALETTE["front"]}, text=spent), row=1, col=1)
    fig.add_trace(go.Scatter(x=data.curve_evals, y=data.curve_hv, mode="lines", name="hypervolume",
                             line={"color": PALETTE["baseline"]}), row=2, col=1)
    fig.update_xaxes(title_text="evaluations", row=2, col=1)
    fig.update_layout(title="Convergence", template="plotly_white", height=520, showlegend=False)
    return fig


def racing_figure(data: ReportData):
    """Train examples each trial cost: fully scored trials at a full evaluation, stopped ones at what they used."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if data.full_examples is not None:
        full = data.points
        fig.add_trace(go.Scatter(x=[p.trial for p in full], y=[data.full_examples] * len(full), mode="markers",
                                 name="fully scored", marker={"color": PALETTE["all"], "size": 6},
                                 customdata=[p.trial for p in full], hovertext=[_hover(p, data.objectives)
                                                                                for p in full], hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[s.trial for s in data.stopped], y=[s.examples for s in data.stopped],
                             mode="markers", name="stopped early", customdata=[s.trial for s in data.stopped],
                             marker={"color": PALETTE["stopped"], "size": 7, "symbol": "x"},
                             hovertext=[_hover_stopped(s) for s in data.stopped], hoverinfo="text"))
    fig.update_layout(title="Racing: train examples scored per trial", template="plotly_white", height=380,
                      xaxis_title="trial", yaxis_title="examples scored", legend={"orientation": "h"})
    return fig


def _racing_summary(data: ReportData) -> str:
    n, k = len(data.points) + len(data.stopped), len(data.stopped)
    cost = sum(s.examples for s in data.stopped)
    text = f"{k} of {n} evaluations were stopped early by racing; they scored {cost:,} train examples"
    saved = data.examples_saved
    if saved is not None and data.full_examples:
        total = data.curve_examples[-1] if data.curve_examples else 0
        text += (f" instead of {k * data.full_examples:,} (a full evaluation scores {data.full_examples:,}): "
                 f"<b>{saved:,} examples saved</b>; the run scored {total:,} in all, "
                 f"{total / (total + saved):.0%} of scoring every candidate fully")
    return text + "."


def _stopped_table(data: ReportData) -> str:
    rows = []
    for s in data.stopped[:MAX_STOPPED_ROWS]:
        value = "-" if s.value is None else f"{s.value:.4g}"
        stage = "-" if s.stage is None else str(s.stage)
        rows.append(f"<tr><td>{s.trial}</td><td>{stage}</td><td>{s.examples:,}</td><td>{value}</td>"
                    f"<td style='text-align:left'>{html.escape(s.reason)}</td></tr>")
    more = len(data.stopped) - MAX_STOPPED_ROWS
    tail = f"<p>... and {more} more stopped trials (all in the storage).</p>" if more > 0 else ""
    return ("<table class='stopped'><tr><th>trial</th><th>stage</th><th>examples scored</th><th>running score</th>"
            f"<th>why stopped</th></tr>{''.join(rows)}</table>{tail}")


def front_scores_figure(data: ReportData):
    import plotly.graph_objects as go

    front = sorted(data.front, key=lambda p: -p.score)
    labels = [f"trial {p.trial}" for p in front]
    fig = go.Figure()
    for n in data.objectives:
        fig.add_trace(go.Bar(x=labels, y=[p.objectives[n] for p in front], name=f"{n} (train)",
                             customdata=[p.trial for p in front]))
        if any(p.test and n in p.test for p in front):
            fig.add_trace(go.Bar(x=labels, y=[p.test.get(n) if p.test else None for p in front], name=f"{n} (test)",
                                 marker_pattern_shape="/", customdata=[p.trial for p in front]))
    fig.update_layout(title="Scores of the front members per objective", barmode="group", template="plotly_white",
                      height=420)
    return fig


_CLICK_JS = """
<script>
(function () {
  var recipes = %s;
  function show(trial) {
    var box = document.getElementById('recipe');
    box.textContent = 'trial ' + trial + '\\n' + JSON.stringify(recipes[String(trial)], null, 2);
  }
  document.querySelectorAll('.plotly-graph-div').forEach(function (div) {
    if (div.on) div.on('plotly_click', function (ev) {
      var p = ev.points && ev.points[0];
      if (p && p.customdata !== undefined && p.customdata !== null) show(p.customdata);
    });
  });
})();
</script>
"""


def _front_table(data: ReportData) -> str:
    head = "".join(f"<th>{html.escape(n)} (train)</th>" for n in data.objectives)
    has_test = any(p.test for p in data.front)
    if has_test:
        head += "".join(f"<th>{html.escape(n)} (test)</th>" for n in data.objectives)
    rows = []
    for p in sorted(data.front, key=lambda p: -p.score):
        cells = "".join(f"<td>{p.objectives[n]:.4g}</td>" for n in data.objectives)
        if has_test:
            cells += "".join(f"<td>{p.test[n]:.4g}</td>" if p.test and n in p.test else "<td>-</td>"
                             for n in data.objectives)
        rows.append(f"<tr><td>{p.trial}</td><td>{p.score:.4g}</td>{cells}</tr>")
    return f"<table><tr><th>trial</th><th>score</th>{head}</tr>{''.join(rows)}</table>"


def render_html(data: ReportData) -> str:
    """The whole page as one string; plotly.js is embedded once in the head."""
    from plotly.offline import get_plotlyjs

    figs = [pareto_figure(data), convergence_figure(data), front_scores_figure(data)]
    if data.stopped:
        figs.append(racing_figure(data))
    divs = [f.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}", config={"displaylogo": False})
            for i, f in enumerate(figs)]
    recipes = {str(p.trial): p.recipe for p in [*data.points, *data.stopped]}
    racing = (f"<h2>Racing</h2><p>{_racing_summary(data)}</p>{divs[3]}{_stopped_table(data)}"
              if data.stopped else "")
    notes = []
    if data.unscored_baselines:
        notes.append("Baselines not scored yet (run `evomerge resume RUN` with the test split, i.e. finalize): "
                     + ", ".join(html.escape(b) for b in data.unscored_baselines))
    click_js = _CLICK_JS % json.dumps(recipes).replace("</", "<\\/")
    note_html = "".join(f"<p class='note'>{n}</p>" for n in notes)
    title = f"evomerge report — {html.escape(data.run)}"
    stopped = f", {len(data.stopped)} stopped early by racing" if data.stopped else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} pre{{background:#f4f4f4;padding:1em;
max-height:30em;overflow:auto}} .note{{color:#8a5a00}}</style></head>
<body><h1>{title}</h1>
<p>strategy <b>{html.escape(data.strategy)}</b> · budget {html.escape(json.dumps(data.budget))} ·
{len(data.points)} scored trials, {data.failed} failed{stopped} · front of {len(data.front)} ·
hypervolume {data.hypervolume:.4g}</p>{note_html}
{divs[0]}
<h2>Recipe</h2><pre id="recipe">Click a point of the front or any trial to see its recipe.</pre>
{divs[1]}
{divs[2]}
<h2>Front</h2>{_front_table(data)}
{racing}
<p>The same storage opens in optuna-dashboard: <code>optuna-dashboard sqlite:///RUN/study.db</code>.</p>
{click_js}
</body></html>
"""
