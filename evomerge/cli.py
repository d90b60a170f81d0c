"""The `evomerge` command line. Thin: each command parses, calls one library function, prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evomerge.errors import ConfigError, EvomergeError
from evomerge.interrupt import stop_on_interrupt

app = typer.Typer(
    name="evomerge",
    help="Search model-merge recipes automatically, and merge models with them.\n\n"
    "Start with `evomerge demo`, or merge two models with a mergekit YAML: `evomerge merge config.yml out/`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Inspect and convert recipes (evomerge JSON/YAML and mergekit YAML).",
                         no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
console = Console(stderr=True)
# Tables stay readable in CI logs and pipes, where rich would otherwise assume 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)


def _quiet_optuna() -> None:
    """Optuna logs every study it opens at INFO; the progress display says what matters."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _size(text: str) -> int:
    """'5GB', '500MB', '1.5G', '1000000' -> bytes."""
    units = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}
    t = text.strip().upper()
    num = t.rstrip("KMGB")
    unit = t[len(num):]
    try:
        return int(float(num) * units[unit])
    except (KeyError, ValueError):
        raise typer.BadParameter(f"'{text}' is not a size like 5GB or 500MB") from None


@app.command()
def merge(
    config: Annotated[Path, typer.Argument(help="Recipe: a mergekit YAML or an evomerge recipe (YAML/JSON).")],
    out_dir: Annotated[Path, typer.Argument(help="Output model folder (created only when the merge completes).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 5GB, 500MB.")] = "5GB",
    device: Annotated[str, typer.Option(help="Where to compute: cpu, cuda, cuda:1 ...")] = "cpu",
    out_dtype: Annotated[str | None, typer.Option(help="Output dtype: float32, bfloat16, float16.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for DARE/DELLA (overrides the recipe's).")] = None,
) -> None:
    """Merge models tensor by tensor into OUT_DIR (the mergekit-yaml equivalent).

    Reads each source by memory map, one tensor at a time, so peak memory stays
    near one tensor per source whatever the model size. Example:

        evomerge merge examples/ties.yml merged/ --out-dtype bfloat16
    """
    from evomerge.materialize.streaming import merge_to_disk
    from evomerge.recipe.model import Recipe

    recipe = Recipe.load(config)
    updates = {k: v for k, v in {"out_dtype": out_dtype, "seed": seed}.items() if v is not None}
    if updates:
        recipe = Recipe.model_validate({**recipe.to_dict(), **updates})
    with Progress(TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task("", total=None)

        def tick(done: int, total: int, name: str) -> None:
            progress.update(bar, completed=done, total=total, description=name)

        report = merge_to_disk(recipe, out_dir, overwrite=overwrite, max_shard_bytes=_size(max_shard_size),
                               device=device, on_tensor=tick)
    gb = report.bytes_read / 2**30
    out.print(f"merged {report.tensors} tensors into [bold]{report.out_dir}[/] in {report.seconds:.1f}s "
              f"({gb:.2f} GiB read, {gb / max(report.seconds, 1e-9):.2f} GiB/s)")


@app.command()
def convert(
    gguf_file: Annotated[Path, typer.Argument(help="A .gguf model file.")],
    out_dir: Annotated[Path, typer.Argument(help="Output model folder (safetensors, config, tokenizer).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Convert a GGUF model into a safetensors folder evomerge can merge (dequantized by transformers).

        evomerge convert SmolLM2-135M-Instruct-Q8_0.gguf smollm2-135m/
    """
    from evomerge.io.gguf_source import convert_gguf

    out.print(f"converted [bold]{gguf_file}[/] into [bold]{convert_gguf(gguf_file, out_dir, overwrite=overwrite)}[/]")


@recipe_app.command("export")
def recipe_export(
    config: Annotated[Path, typer.Argument(help="Recipe to convert (evomerge or mergekit format).")],
    format: Annotated[str, typer.Option("--format", "-f", help="mergekit, yaml or json.")] = "mergekit",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a recipe as a mergekit YAML (or evomerge YAML/JSON).

    For mergekit, refuses with the list of reasons when the recipe uses
    something mergekit cannot express (per-group methods, evomerge-only methods).
    """
    from evomerge.recipe.mergekit import to_mergekit
    from evomerge.recipe.model import Recipe

    recipe = Recipe.load(config)
    if format == "mergekit":
        export = to_mergekit(recipe)
        for warning in export.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        text = export.to_yaml()
    elif format == "yaml":
        text = recipe.to_yaml()
    elif format == "json":
        text = recipe.to_json() + "\n"
    else:
        raise typer.BadParameter(f"unknown format '{format}' (mergekit, yaml, json)", param_hint="--format")
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@recipe_app.command("check")
def recipe_check(config: Annotated[Path, typer.Argument(help="Recipe to validate against its models.")]) -> None:
    """Validate a recipe and plan it against its models' indexes, reading no weights."""
    from evomerge.materialize.plan import plan_merge
    from evomerge.materialize.streaming import open_checkpoints
    from evomerge.recipe.model import Recipe

    recipe = Recipe.load(config)
    plan = plan_merge(recipe, open_checkpoints(recipe))
    methods = sorted({t.method for t in plan.tasks})
    out.print(f"ok: {len(plan.tasks)} tensors, {plan.num_layers} layers, method(s) {', '.join(methods)}")


@app.command()
def methods() -> None:
    """List the merge methods with their parameters, ranges and defaults."""
    from evomerge.merge.registry import all_methods

    table = Table("method", "parameters", "base", "sources", "mergekit", "paper",
                  caption="* per model; (lo,hi] range; =default (no default: required); "
                          "(no effect): accepted as mergekit accepts it, recorded, changes no number (below)")
    inert: dict[str, str] = {}
    for m in all_methods():
        params = []
        for p in m.params:
            lo = "" if p.low is None else ("(" if p.low_open else "[") + f"{p.low:g}"
            hi = "" if p.high is None else f"{p.high:g}]"
            rng = f"{lo or '(-inf'},{hi or 'inf)'}" if (lo or hi) else ""
            default = "" if p.default is None else f"={p.default}"
            params.append(f"{p.name}{'*' if p.scope == 'per_source' else ''}{rng}{default}"
                          f"{' (no effect)' if p.inert else ''}")
            if p.inert:
                inert.setdefault(f"{p.name} ({m.name})" if p.name != "int8_mask" else p.name, p.help)
        n = f"{m.min_sources}+" if m.max_sources is None else (
            str(m.min_sources) if m.min_sources == m.max_sources else f"{m.min_sources}-{m.max_sources}")
        base = "yes" if m.needs_base else "optional" if m.optional_base else ""
        table.add_row(m.name, ", ".join(params), base, n, m.mergekit_name or "-", m.reference)
    out.print(table)
    for name, why in inert.items():
        out.print(f"{name}: {why}")


def _search(config, run_dir: Path | None, finalize: bool) -> None:
    """Run or resume (``run_dir``) a search, one- or two-stage, with a live progress display."""
    _quiet_optuna()
    from evomerge.study.display import baselines_table, front_table, hypervolume_text, live_progress
    from evomerge.study.stages import is_two_stage, run_two_stages, space_kind
    from evomerge.study.study import Study

    with stop_on_interrupt():
        if is_two_stage(config):
            # PS+DFS halves the budget; LoRA Evo-Merging splits it unevenly: counts without a bar then
            halves = space_kind(config) == "ps_dfs" and config.budget.evaluations
            total = config.budget.evaluations // 2 if halves else None
            with live_progress(console, total) as on_progress:
                study, summary = run_two_stages(config, on_progress, on_stage=lambda msg: console.print(msg))
        else:
            if run_dir is not None:
                from evomerge import runlock

                runlock.acquire(run_dir)  # one writer per run folder, taken before anything is opened for writing
            study = Study.open(run_dir) if run_dir is not None else Study.create(config)
            try:
                with live_progress(console, config.budget.evaluations) as on_progress:
                    summary = study.run(on_progress=on_progress)
            except BaseException:
                study.close()  # e.g. stopped by the breaker: release Ray workers before the error is shown
                raise
    try:
        if summary.stopped_early:
            console.print(f"[yellow]stopped[/]: {summary.n_trials} trials are recorded; continue with "
                          f"`evomerge resume {study.run_dir}`")
            raise typer.Exit(130)
        study.require_success()  # every trial failed: say so (exit 2), rather than a front of nothing
        if finalize:
            study.finalize()
            summary = study.summary()
    finally:
        study.close()
    out.print(front_table(study, summary))
    out.print(hypervolume_text(study, summary), soft_wrap=True)
    table = baselines_table(study, summary)
    if table is not None:
        out.print(table)
    out.print(f"run folder: {study.run_dir} (storage, checkpoint, front.json, best_recipe.json)")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Run config YAML (sources, space, strategy, objectives, budget).")],
    test: Annotated[bool, typer.Option(help="Re-evaluate the front and baselines on the test split at the end.")]
    = True,
) -> None:
    """Run a search. Every trial is recorded as it finishes; Ctrl-C or a crash leaves a resumable run.

    Re-running the same config continues the run in its folder; a changed
    config is refused with a diff (use a new `output`).
    """
    from evomerge.study.config import RunConfig

    _search(RunConfig.load(config), None, test)


@app.command("plan")
def plan_cmd(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    device_memory: Annotated[str | None, typer.Option(help="Memory of one GPU, e.g. 80GiB (default: this GPU's).")]
    = None,
    host_memory: Annotated[str | None, typer.Option(help="Host memory per machine, e.g. 512GiB (default: what "
                                                          "this machine has available).")] = None,
    machines: Annotated[int, typer.Option(help="Machines the Ray workers are spread over.")] = 1,
    reserve: Annotated[str | None, typer.Option(help="Memory kept free per worker for activations / KV cache "
                                                      "(default: 10% of a GPU, 5% of the host, at least 1 GiB).")]
    = None,
) -> None:
    """Print where a search's weights will live, per worker, from checkpoint headers only.

    Per worker: the model instance, each source's bytes on the device / in pinned
    host memory / read from the memory-mapped files, the headroom left for
    activations, and the bytes moved per candidate. Exits 1, with the numbers,
    when the model instance does not fit. Example:

        evomerge plan configs/search-7b.yaml --device-memory 80GiB --host-memory 512GiB
    """
    from evomerge.exec.memory_plan import parse_bytes, plan_for_file

    plan, lines = plan_for_file(
        config, machines=machines,
        device_memory=parse_bytes(device_memory, what="--device-memory") if device_memory else None,
        host_memory=parse_bytes(host_memory, what="--host-memory") if host_memory else None,
        reserve=parse_bytes(reserve, what="--reserve") if reserve else None)
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if not plan.fits:
        raise typer.Exit(1)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `evomerge run`.")],
    test: Annotated[bool, typer.Option(help="Re-evaluate the front on the test split at the end.")] = True,
) -> None:
    """Continue a stopped or crashed run exactly where its records end (no evaluation lost or repeated)."""
    from evomerge.study.config import RunConfig
    from evomerge.study.study import CONFIG_FILE

    stored = run_dir / CONFIG_FILE
    if not stored.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no {CONFIG_FILE}); start one with `evomerge run CONFIG`")
    _search(RunConfig.load(stored), run_dir, test)


@app.command()
def evolve(
    config: Annotated[Path | None, typer.Argument(help="Evolve config YAML (algorithm, init models, tasks, budget).")]
    = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder (its stored config).")] = None,
) -> None:
    """Evolve whole models (M2N2) or task vectors (CycleQD) with per-example / per-task scores.

    Every child's scores are journaled as it finishes and the population is
    snapshotted every `snapshot_every_s`: a crashed or Ctrl-C'd run continues
    with `--resume RUN` (or the same config) without evaluating any child twice.
    Writes RUN/best/ (a loadable checkpoint) and RUN/summary.json.
    """
    from evomerge.evolve.config import CONFIG_FILE, EvolveConfig
    from evomerge.evolve.display import evolve_progress, summary_table
    from evomerge.evolve.session import run_evolution

    if (config is None) == (resume is None):
        raise typer.BadParameter("give a CONFIG, or --resume RUN_FOLDER")
    if resume is not None:
        stored = resume / CONFIG_FILE
        if not stored.is_file():
            raise ConfigError(f"{resume}: not an evolve run folder (no {CONFIG_FILE})")
        cfg, run_dir = EvolveConfig.load(stored), resume
    else:
        cfg, run_dir = EvolveConfig.load(config), None
    with stop_on_interrupt("stopping after the current child (Ctrl-C again to abort now)"), \
            evolve_progress(console, cfg.budget.children) as on_progress:
        try:
            progress, summary = run_evolution(cfg, run_dir=run_dir, on_progress=on_progress)
        except KeyboardInterrupt:
            progress, summary = None, None
    if summary is None:
        done = "" if progress is None else f"{progress.children} children are saved; "
        console.print(f"[yellow]stopped[/]: {done}continue with `evomerge evolve --resume {run_dir or cfg.run_dir()}`")
        raise typer.Exit(130)
    out.print(summary_table(summary))
    out.print(f"run folder: {run_dir or cfg.run_dir()} (best/, summary.json, evolution.pkl, journal.bin)")


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Show a run's progress and its Pareto front (reads the storage; safe while the run is going)."""
    from evomerge.study.display import baselines_table, fmt, front_table, hypervolume_text
    from evomerge.study.study import Study

    _quiet_optuna()
    study = Study.open(run_dir, runner=None)
    summary = study.summary()
    budget = study.config.budget.evaluations
    done = f"{summary.n_trials} trials{f' of {budget}' if budget else ''}, {summary.n_failed} failed"
    if study.config.racing is not None:  # racing: how many were stopped early, and what scoring cost
        done += f", {summary.n_pruned} pruned by racing, {summary.examples_scored} examples scored"
    reason = study.no_success_reason()
    if reason is not None:
        out.print(f"{done}; {reason.partition(': ')[2]}", soft_wrap=True)  # the reason, not a front of nothing
        return
    out.print(f"{done}; best score {fmt(summary.best_score)} (trial {summary.best_number})")
    out.print(front_table(study, summary))
    out.print(hypervolume_text(study, summary), soft_wrap=True)
    table = baselines_table(study, summary)
    if table is not None:
        out.print(table)


@app.command()
def demo(
    config: Annotated[Path, typer.Option(help="The demo's run config.")] = Path("configs/demo.yaml"),
    fresh: Annotated[bool, typer.Option(help="Delete the previous demo run and search again.")] = False,
) -> None:
    """Search a merge of the tiny zoo's three experts (DARE-TIES, CMA-ES) and compare it on held-out data.

    Runs in a few minutes on 2 CPU cores; writes runs/demo/ (storage, checkpoint, best recipe, front).
    Running it again shows the finished run's table; --fresh searches again.
    """
    from evomerge.demo import run_demo

    _quiet_optuna()
    run_demo(config, out, console, fresh=fresh)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (made by `evomerge run` or `evomerge serve`).")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write one folder per trial plus front.csv/front.json.")],
    front: Annotated[bool, typer.Option("--front", help="Export every Pareto-front member (the default).")] = False,
    trial: Annotated[list[int] | None, typer.Option("--trial", "-t", help="Export this trial (repeatable).")] = None,
    checkpoints: Annotated[bool, typer.Option("--checkpoints", help="Also write each merged model (model/).")]
    = False,
    device: Annotated[str, typer.Option(help="Where to merge checkpoints: cpu, cuda ...")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="Replace existing merged model folders.")] = False,
) -> None:
    """Export recipes, mergekit YAMLs, model cards (and merged checkpoints) of a run's front or chosen trials."""
    from evomerge.export import export_run

    _quiet_optuna()
    if front and trial:
        raise typer.BadParameter("give --front or --trial N, not both")
    report = export_run(run_dir, out_dir, trials=list(trial) if trial else None, checkpoints=checkpoints,
                        device=device, overwrite=overwrite)
    for t in report.trials:
        extra = ("mergekit.yml" if t.mergekit else "MERGEKIT.txt") + (", model/" if t.checkpoint else "")
        out.print(f"trial {t.number}: {t.folder} (recipe.json, README.md, {extra})")
    out.print(f"front index: {report.out_dir / 'front.csv'}, {report.out_dir / 'front.json'}")


@app.command("eval")
def eval_cmd(
    model: Annotated[Path, typer.Argument(help="A checkpoint folder, an exported trial folder, or a recipe file.")],
    tasks: Annotated[list[Path], typer.Argument(help="Fitness task YAMLs (as in a run config's objectives).")],
    split: Annotated[str, typer.Option(help="Split to score: train, validation or test.")] = "test",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (objectives, n, per-example scores).")]
    = False,
) -> None:
    """Score one model on fitness tasks with the search's own scoring code, and print a table.

        evomerge eval zoo/tinylm/base fitness/tinylm/math_a.yaml fitness/tinylm/math_b.yaml --split test
    """
    import json

    from evomerge.fitness.evaluate import evaluate_model

    report = evaluate_model(model, tasks, split=split, device=device)
    if as_json:
        print(json.dumps({
            "model": str(report.model), "source": report.source, "split": report.split,
            "tasks": {name: {"objectives": r.objectives, "n": r.n, "seconds": round(r.seconds, 4),
                             "per_example": r.per_example.tolist()} for name, r in report.results.items()},
        }, indent=2))
        return
    table = Table(title=f"{report.model} ({report.source}), split {report.split}")
    for col in ("task", "objective", "value", "n", "seconds"):
        table.add_column(col, justify="left" if col in ("task", "objective") else "right")
    for name, r in report.results.items():
        for objective, value in r.objectives.items():
            table.add_row(name, objective, f"{value:.4f}", str(r.n), f"{r.seconds:.2f}")
    out.print(table)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default RUN/report).")] = None,
    png: Annotated[bool, typer.Option(help="Also write PNG figures (matplotlib).")] = True,
) -> None:
    """Write an offline HTML report (front, convergence, per-objective scores) and PNG figures of a run."""
    from evomerge.report import write_report

    _quiet_optuna()
    files = write_report(run_dir, out_dir, png=png)
    out.print(f"report: {files.html}")
    for p in files.pngs:
        out.print(f"figure: {p}")
    out.print(f"browse the storage live: optuna-dashboard sqlite:///{Path(run_dir) / 'study.db'}")


@app.command("serve")
def serve_cmd(
    storage: Annotated[Path, typer.Option(help="Storage root: one folder per study.")] = Path("runs/server"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[str | None, typer.Option(envvar="EVOMERGE_TOKEN", help="Bearer token clients must send.")]
    = None,
    models_root: Annotated[Path | None, typer.Option(help="Allow reading source checkpoints under this folder.")]
    = None,
    max_body_bytes: Annotated[str, typer.Option(help="Largest request body, e.g. 1MB.")] = "1MB",
    database: Annotated[str | None, typer.Option(envvar="EVOMERGE_DATABASE", help="SQLAlchemy URL holding the "
                                                  "studies' trials, e.g. postgresql+psycopg2://user@host/db "
                                                  "(default: a sqlite file per study folder).")] = None,
) -> None:
    """Serve the ask/tell API: clients create studies, ask candidate recipes, score them anywhere, tell scores."""
    from evomerge.server import serve

    def banner() -> None:  # only once every refusal (token, a root another server holds) is behind us
        out.print(f"evomerge API on http://{host}:{port} (OpenAPI: /docs), studies under {storage}")

    serve(storage, host=host, port=port, token=token, models_root=models_root, max_body_bytes=_size(max_body_bytes),
          on_ready=banner, database=database)


def _mount_optional_subapps() -> None:
    try:
        from evomerge.zoo.cli import app as zoo_app
    except ImportError:
        return
    app.add_typer(zoo_app, name="zoo")


_mount_optional_subapps()


def main() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="Could not import matplotlib")  # pycma's optional plotting
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        app()
    except EvomergeError as exc:
        detail = getattr(exc, "detail", "")  # e.g. the traceback behind a search stopped for failing alike
        if detail:
            console.print(detail.rstrip(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # one line a log grep finds whole
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
