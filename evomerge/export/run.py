"""`evomerge export RUN OUT/`: the front (or chosen trials) of a run as files a user can ship.

Per trial a folder with ``recipe.json``, ``mergekit.yml`` when mergekit can express the recipe (else
``MERGEKIT.txt`` with the reasons), a model card (``README.md``) and, on request, the merged
checkpoint in ``model/`` (data-flow recipes fold into a plain transformers model). ``front.csv`` and
``front.json`` index the front with every objective, train and (when the run was finalized) test.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.export.card import card_metadata, model_card
from evomerge.study.checkpoint import atomic_write_bytes, make_output_dir
from evomerge.study.record import TrialRecord
from evomerge.study.study import Study


@dataclass
class ExportedTrial:
    number: int
    folder: Path
    mergekit: bool
    checkpoint: Path | None = None


@dataclass
class ExportReport:
    out_dir: Path
    trials: list[ExportedTrial] = field(default_factory=list)
    front: list[int] = field(default_factory=list)


def open_run(run_dir: str | Path) -> Study:
    """Any run folder as a Study: made by `evomerge run` or by `evomerge serve` (remote-scored)."""
    from evomerge.server.studies import SERVER_FILE, open_remote_study

    run_dir = Path(run_dir)
    if (run_dir / SERVER_FILE).is_file():
        return open_remote_study(run_dir, trusted=True)  # a local command: it may read the sources' headers
    return Study.open(run_dir)


def test_scores(study: Study) -> dict[str, dict[str, float]]:
    """Trial number (as str) → its held-out objectives, from what ``Study.finalize`` recorded."""
    results = study.store.study.user_attrs.get("test_results", {}) or {}
    return {k: v.get("objectives", {}) for k, v in results.get("trials", {}).items()
            if isinstance(v, dict) and v.get("status") == "ok"}


def front_rows(study: Study) -> list[dict[str, Any]]:
    """One row per front member: trial, scalarised score, each objective on train and test."""
    archive, ok = study.archive()
    by_number = {r.number: r for r in ok}
    tests = test_scores(study)
    rows = []
    for n in sorted(archive.front, key=lambda k: -study.score(by_number[k].objectives)):
        r = by_number[n]
        row: dict[str, Any] = {"trial": n, "score": study.score(r.objectives)}
        for o in study.objectives:
            row[f"{o.name}_train"] = r.objectives.get(o.name)
        for o in study.objectives:
            row[f"{o.name}_test"] = tests.get(str(n), {}).get(o.name)
        rows.append(row)
    return rows


def export_run(run_dir: str | Path, out_dir: str | Path, *, trials: list[int] | None = None,
               checkpoints: bool = False, device: str = "cpu", overwrite: bool = False) -> ExportReport:
    """Export the front (``trials=None``) or the given trial numbers of the run in ``run_dir`` into ``out_dir``."""
    study = open_run(run_dir)
    if trials is None:
        study.require_success()  # an empty front.csv with exit 0 would look like a result
    out = Path(out_dir)
    archive, _ = study.archive()
    finished = {r.number: r for r in study.store.records()}
    if trials is None:
        selected = sorted(archive.front)
    else:
        missing = [n for n in trials if n not in finished]
        if missing:
            raise ConfigError(f"{run_dir}: no finished trial {missing} (trials run 0..{max(finished, default=-1)})")
        selected = list(dict.fromkeys(trials))
        pruned = [n for n in selected if finished[n].status == "pruned"]
        if pruned:  # its objectives are running means over part of the examples: no model card may show them
            n = pruned[0]
            raise ConfigError(f"{run_dir}: trial {n} was stopped by racing after "
                              f"{finished[n].user_attrs.get('examples_scored', '?')} examples (partial scores only); "
                              "export fully scored trials")
    make_output_dir(out, "export folder")
    report = ExportReport(out_dir=out, front=sorted(archive.front))
    for n in selected:
        report.trials.append(_export_trial(study, finished[n], out, checkpoints=checkpoints, device=device,
                                           overwrite=overwrite))
    _write_index(study, out, {t.number: t for t in report.trials})
    return report


def _export_trial(study: Study, record: TrialRecord, out: Path, *, checkpoints: bool, device: str,
                  overwrite: bool) -> ExportedTrial:
    from evomerge.recipe.mergekit import NotExpressibleError, to_mergekit
    from evomerge.recipe.model import Recipe

    folder = out / f"trial-{record.number:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = Recipe.model_validate(record.recipe) if record.recipe is not None else None
    expressible = False
    if recipe is None:
        atomic_write_bytes(folder / "genome.json", json.dumps(
            {"names": list(study.space.names), "genome": None if record.genome is None else
             [float(x) for x in record.genome]}, indent=2).encode())
        atomic_write_bytes(folder / "MERGEKIT.txt", b"This run's space is a plain box: its trials are genomes "
                           b"scored directly, with no merge recipe.\n")
    else:
        atomic_write_bytes(folder / "recipe.json", (recipe.to_json() + "\n").encode())
        try:
            export = to_mergekit(recipe)
        except NotExpressibleError as exc:
            text = "mergekit cannot express this recipe:\n" + "".join(f"- {r}\n" for r in exc.reasons)
            text += "\nUse `evomerge merge recipe.json OUT/` (or the exported model/ folder) instead.\n"
            atomic_write_bytes(folder / "MERGEKIT.txt", text.encode())
        else:
            expressible = True
            header = "".join(f"# warning: {w}\n" for w in export.warnings)
            atomic_write_bytes(folder / "mergekit.yml", (header + export.to_yaml()).encode())
    test = test_scores(study).get(str(record.number))
    meta = card_metadata(run=study.config.name, trial=record.number, strategy=study.config.strategy.name,
                         budget=study.config.budget.model_dump(exclude_none=True), recipe=record.recipe,
                         train=record.objectives, test=test,
                         directions={o.name: o.direction for o in study.objectives},
                         score=study.score(record.objectives) if record.status == "ok" else None,
                         mergekit=expressible,
                         genome=None if recipe is not None or record.genome is None else
                         [float(x) for x in record.genome])
    card = model_card(meta)
    atomic_write_bytes(folder / "README.md", card.encode())
    checkpoint = None
    if checkpoints and recipe is not None:
        from evomerge.materialize.streaming import merge_to_disk

        checkpoint = merge_to_disk(recipe, folder / "model", overwrite=overwrite, device=device).out_dir
        (checkpoint / "README.md").write_text(card)
    return ExportedTrial(number=record.number, folder=folder, mergekit=expressible, checkpoint=checkpoint)


def _write_index(study: Study, out: Path, exported: dict[int, ExportedTrial]) -> None:
    rows = front_rows(study)
    for row in rows:
        t = exported.get(row["trial"])
        row["folder"] = t.folder.name if t else ""
        row["mergekit"] = t.mergekit if t else ""
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["trial", "score"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_bytes(out / "front.csv", buf.getvalue().encode())
    doc = {"run": study.config.name, "objectives": [{"name": o.name, "direction": o.direction, "weight": o.weight}
                                                   for o in study.objectives],
           "front": rows}
    atomic_write_bytes(out / "front.json", json.dumps(doc, indent=2).encode())
