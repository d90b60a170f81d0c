"""`evomerge report`: one offline HTML page whose plots render in a real (headless) browser, plus PNG figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.report import collect, write_report
from evomerge.study.config import RunConfig
from evomerge.study.study import Study

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """ZDT1 searched by NSGA-II with two baselines, scored as ``Study.finalize`` would record them."""
    out = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.from_dict({
        "name": "zdt", "space": {"kind": "box", "dim": 4},
        "strategy": {"name": "nsga2", "options": {"population_size": 8}},
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "budget": {"evaluations": 40}, "seed": 1, "output": str(out / "zdt"),
        "runner": {"type": "function", "target": "evomerge.exec.synthetic:zdt1"},
        "baselines": [{"name": "source_a", "recipe": {"merge_method": "linear", "models": [{"model": "a"}]}},
                      {"name": "task_arithmetic_1_1", "recipe": {"merge_method": "linear", "models": [{"model": "b"}]}},
                      {"name": "unscored", "recipe": {"merge_method": "linear", "models": [{"model": "c"}]}}],
    })
    study = Study.create(cfg)
    study.run()
    archive, _ = study.archive()
    study.store.study.set_user_attr("test_results", {
        "split": "test",
        "trials": {str(n): {"status": "ok", "objectives": {"f1": 0.5, "f2": 3.0}} for n in archive.front},
        "baselines": {"source_a": {"train": {"status": "ok", "objectives": {"f1": 0.0, "f2": 6.0}}},
                      "task_arithmetic_1_1": {"test": {"status": "ok", "objectives": {"f1": 0.6, "f2": 2.5}}}},
    })
    return study


def staircase_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume (both minimised) by hand: sweep by f1, add each non-dominated point's rectangle."""
    hv, best_f2 = 0.0, ref[1]
    for f1, f2 in sorted(map(tuple, points)):
        if f1 < ref[0] and f2 < best_f2:
            hv += (ref[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return hv


def test_the_report_data_are_the_runs_numbers(run):
    import optuna

    data = collect(run.run_dir)
    _, ok = run.archive()
    # independent truth: the trials as Optuna stored them, the front and hypervolume computed by hand
    stored = optuna.load_study(study_name="zdt", storage=f"sqlite:///{run.run_dir / 'study.db'}").trials
    done = sorted((t for t in stored if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    values = np.array([t.values for t in done])
    assert len(done) == 40
    front = {t.number for t, v in zip(done, values, strict=True)
             if not any(np.all(w <= v) and np.any(w < v) for w in values)}
    ref = values.max(axis=0) + 0.1 * (values.max(axis=0) - values.min(axis=0))  # the documented default
    assert {p.trial for p in data.front} == front
    assert data.reference_point == pytest.approx(ref.tolist())
    assert data.curve_evals == list(range(1, 41))
    for k in (1, 10, 25, 40):  # the curve after k evaluations is the hand hypervolume of the first k trials
        assert data.curve_hv[k - 1] == pytest.approx(staircase_hv(values[:k], ref), rel=1e-9, abs=1e-12)
    assert data.hypervolume == pytest.approx(staircase_hv(values, ref), rel=1e-9) and data.hypervolume > 0
    assert np.all(np.diff(data.curve_hv) >= -1e-12)
    assert data.curve_best[-1] == pytest.approx(max(run.score(r.objectives) for r in ok))
    assert data.baselines == {"source_a": {"f1": 0.0, "f2": 6.0}, "task_arithmetic_1_1": {"f1": 0.6, "f2": 2.5}}
    assert data.baseline_split == {"source_a": "train", "task_arithmetic_1_1": "test"}
    assert data.unscored_baselines == ["unscored"]
    assert all(p.test == {"f1": 0.5, "f2": 3.0} for p in data.front)


def test_the_page_is_self_contained_and_the_pngs_are_drawn(run, tmp_path):
    files = write_report(run.run_dir, tmp_path / "rep")
    page = files.html.read_text()
    assert not re.search(r"<script[^>]+src=", page), "no external script: plotly.js is inlined"
    from plotly.offline import get_plotlyjs

    plotlyjs = get_plotlyjs()
    assert plotlyjs in page  # inlined whole (it only names its CDN for geo maps, which a report never draws)
    ours = page.replace(plotlyjs, "")
    assert "cdn" not in ours and "http://" not in ours and "https://" not in ours
    assert "optuna-dashboard sqlite:///RUN/study.db" in page
    assert "source_a" in page and "Pareto front" in page and "Convergence" in page
    assert sorted(p.name for p in files.pngs) == ["convergence.png", "front_scores.png", "pareto.png"]
    for png in files.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pixel_std(png) > 0.02, f"{png.name} looks blank"


def test_one_and_three_objectives_render_too(tmp_path):
    from evomerge.server.studies import RemoteStudy

    for k in (1, 3):
        names = [f"o{i}" for i in range(k)]
        remote = RemoteStudy.create(tmp_path, {
            "name": f"m{k}", "space": {"kind": "box", "dim": 3}, "strategy": {"name": "random"},
            "objectives": [{"name": n, "direction": "maximize"} for n in names], "budget": {"evaluations": 10}},
            {}, None)
        told = {}
        for cand in remote.ask(10):
            g = np.asarray(cand.genome)
            told[cand.trial] = [float(np.roll(g, i)[0] - g[1] * i) for i in range(k)]
            remote.tell(cand.trial, cand.ticket, dict(zip(names, told[cand.trial], strict=True)))
        # the front by hand (every objective maximised): no other told point is at least as good everywhere
        front = {t for t, v in told.items()
                 if not any(all(a >= b for a, b in zip(w, v, strict=True)) and w != v for w in told.values())}
        files = write_report(tmp_path / f"m{k}")
        assert {p.trial for p in collect(tmp_path / f"m{k}").front} == front
        page = files.html.read_text()
        assert all(f'id="fig{i}"' in page for i in range(3))  # the three figures are on the page
        table = page[page.index("<table>"):page.index("</table>")]
        assert set(map(int, re.findall(r"<tr><td>(\d+)</td>", table))) == front  # the front table lists the front
        assert ('"type":"splom"' in page) == (k == 3)  # three objectives: a scatter-plot matrix
        assert sorted(p.name for p in files.pngs) == ["convergence.png", "front_scores.png", "pareto.png"]
        for png in files.pngs:
            assert pixel_std(png) > 0.02, f"{png.name} looks blank"


def test_the_cli_writes_the_report_into_the_run_folder(run):
    result = CliRunner().invoke(app, ["report", str(run.run_dir), "--no-png"])
    assert result.exit_code == 0, result.output
    assert (run.run_dir / "report" / "report.html").is_file()
    assert "optuna-dashboard sqlite:///" in result.output


def pixel_std(png: Path) -> float:
    import matplotlib.image

    return float(np.asarray(matplotlib.image.imread(png))[..., :3].std())


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine: `apt-get install -y chromium` to run the browser check")


def test_the_report_renders_its_plots_in_headless_chromium(run, tmp_path):
    browser = chromium()
    files = write_report(run.run_dir, tmp_path / "rep", png=False)
    url = files.html.resolve().as_uri()

    def launch(*args: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
        try:
            return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                   "--virtual-time-budget=15000", *args, url],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"Chromium at {browser} cannot be launched here: {exc}")

    dom = launch("--dump-dom")
    if dom.returncode != 0 or "<html" not in dom.stdout:
        pytest.skip(f"Chromium at {browser} did not run (exit {dom.returncode}): {dom.stderr[-500:]}")
    html = dom.stdout
    assert html.count('class="main-svg"') >= 6, "plotly drew no figure"  # 2 svg layers per plot, 3 plots
    data = collect(run.run_dir)
    pareto = html[html.index('id="fig0"'):html.index('id="fig1"')]
    drawn = len(re.findall(r'<path class="point[" ]', pareto))
    assert drawn >= len(data.points) + len(data.baselines), "the Pareto plot's points were not drawn"
    assert 'class="scatterlayer' in html and 'class="barlayer' in html
    shot = tmp_path / "shot.png"
    launch("--window-size=1280,1800", f"--screenshot={shot}")
    assert shot.is_file(), "no screenshot was written"
    assert pixel_std(shot) > 0.05, "the screenshot is blank"
