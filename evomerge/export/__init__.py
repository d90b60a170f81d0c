"""Export a run: recipe, mergekit YAML, merged checkpoint and model card per trial; the front as CSV/JSON."""

from evomerge.export.card import card_metadata, model_card, read_front_matter
from evomerge.export.run import ExportedTrial, ExportReport, export_run, front_rows, open_run

__all__ = ["ExportReport", "ExportedTrial", "card_metadata", "export_run", "front_rows", "model_card", "open_run",
           "read_front_matter"]
