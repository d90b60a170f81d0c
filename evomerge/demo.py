"""`evomerge demo`: the README's main job — a real search on the tiny zoo, end to end, in minutes.

Runs ``configs/demo.yaml``: DARE-TIES over (weight, density) per source with
CMA-ES on the tinylm zoo (math in language A, QA in language B, list
reversal), maximising the mean accuracy of the three skills on their training
splits; then re-scores the best recipe and the baselines (each source, untuned
merges) on the held-out test split and prints them side by side.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evomerge.errors import ConfigError
from evomerge.study.config import RunConfig
from evomerge.study.display import live_progress
from evomerge.study.study import Study


def demo_table(study: Study, results: dict) -> Table:
    """Test-split scores of the baselines and the searched recipe, one row each."""
    optimised = [o for o in study.objectives if o.weight != 0]
    tracked = [o for o in study.objectives if o.weight == 0]
    split = results.get("split", "test")
    table = Table(title=f"{study.config.name}: scores on the {split} split "
                        f"(objective: mean of {', '.join(o.name for o in optimised)})")
    table.add_column("model")
    for o in optimised:
        table.add_column(o.name, justify="right")
    table.add_column("mean (objective)", justify="right", style="bold")
    for o in tracked:
        table.add_column(f"{o.name} (tracked)", justify="right")
    table.add_column("mean on train", justify="right")

    def row(name: str, test: dict | None, train_score: float | None, style: str | None = None) -> None:
        if not test or test.get("status") != "ok":
            table.add_row(name, *["failed"] * (len(optimised) + len(tracked) + 1), "-", style=style)
            return
        obj = test["objectives"]
        table.add_row(name, *(f"{obj[o.name]:.3f}" for o in optimised), f"{study.score(obj):.3f}",
                      *(f"{obj[o.name]:.3f}" for o in tracked),
                      "-" if train_score is None else f"{train_score:.3f}", style=style)

    for name, entry in results.get("baselines", {}).items():
        train = entry.get("train")
        row(name, entry.get(split), train.get("score") if train else None)
    summary = study.summary()
    if summary.best_number is not None:
        test = results.get("trials", {}).get(str(summary.best_number))
        row(f"searched: trial {summary.best_number}", test, summary.best_score, style="green")
    return table


def run_demo(config_path: Path, console: Console, err: Console, *, fresh: bool = False) -> None:
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: demo config not found; run `evomerge demo` from the repository root "
                          "(or pass --config)")
    config = RunConfig.load(config_path)
    if fresh and config.run_dir().exists():
        from evomerge import runlock

        runlock.acquire(config.run_dir())  # never delete a run another process is writing
        for child in config.run_dir().iterdir():
            if child.name != runlock.LOCK_FILE:  # the held lock file stays (see evomerge.runlock)
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    study = Study.create(config)
    try:
        with live_progress(err, config.budget.evaluations) as on_progress:
            summary = study.run(on_progress=on_progress)
        if summary.stopped_early:
            err.print(f"[yellow]stopped[/]: resume with `evomerge resume {study.run_dir}`")
            return
        err.print("re-scoring the best recipe and the baselines on the test split ...")
        results = study.finalize()
    finally:
        study.close()
    console.print(demo_table(study, results))
    sizes = {t.name: _n_examples(t, results.get("split", "test")) for t in study.tasks}
    console.print(f"test examples per task: {sizes}; best recipe: {study.run_dir / 'best_recipe.json'}; "
                  f"front: {study.run_dir / 'front.json'}; storage: {study.run_dir / 'study.db'}")


def _n_examples(task, split: str) -> int | str:
    examples = getattr(task, "examples", None)
    return len(examples[split]) if isinstance(examples, dict) and split in examples else "?"
