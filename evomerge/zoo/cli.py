"""``evomerge zoo``: build and list the tiny model zoo (thin: parse, call build_zoo, print)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evomerge.errors import EvomergeError

# The zoo's names, for the help text without importing the builders (they import torch); a test keeps
# this equal to ``evomerge.zoo.build.ZOO``.
ZOO_NAMES = ("tinylm", "digits", "tinylm-lora")
app = typer.Typer(help="Build the tiny model zoo (tinylm, tinylm-lora, digits) that evomerge's demos and tests "
                  "run on.", no_args_is_help=True)
console = Console()


@app.command()
def build(
    name: str = typer.Argument(..., help=f"which zoo: {', '.join(ZOO_NAMES)}"),
    out: Path | None = typer.Option(None, "--out", help="parent folder (default: zoo/ at the repo root)"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the stamp matches"),
) -> None:
    """Build NAME under OUT/NAME, deterministically on the CPU; instant when already built."""
    from evomerge.zoo.build import REPO_ROOT, ZOO, build_zoo, default_out_dir, is_built

    out_dir = out or default_out_dir()
    # The default build also refreshes the repository's task files (fitness/NAME).
    tasks_dir = REPO_ROOT / "fitness" / name if out is None and (REPO_ROOT / "fitness").exists() else None
    cached = name in ZOO and not force and is_built(name, out_dir)
    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            folder = build_zoo(name, out_dir, force=force, tasks_dir=tasks_dir, progress=progress)
        except EvomergeError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
    console.print(f"{folder} is up to date (stamp matches)" if cached else f"built [bold]{folder}[/]")


@app.command("list")
def list_(
    out: Path | None = typer.Option(None, "--out", help="parent folder (default: zoo/ at the repo root)"),
) -> None:
    """List the zoo's models and whether each is built under OUT."""
    from evomerge.zoo.build import ZOO, default_out_dir, is_built

    out_dir = out or default_out_dir()
    table = Table("name", "built", "folder", "what")
    for name, spec in ZOO.items():
        table.add_row(name, "yes" if is_built(name, out_dir) else "no", str(out_dir / spec.folder_name),
                      spec.description)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
