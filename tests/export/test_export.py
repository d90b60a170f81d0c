"""`evomerge export`: recipe.json round-trips, mergekit YAML reloads as the same recipe, the model card's
front matter holds the scores, the front index lists every objective, and merged checkpoints load."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.export import export_run, read_front_matter
from evomerge.recipe.model import Recipe

from .conftest import ps_run


def records(study):
    return {r.number: r for r in study.store.records()}


def test_front_export_writes_recipe_mergekit_and_card_per_member(ps_study, tmp_path):
    study, tests = ps_study
    report = export_run(study.run_dir, tmp_path / "out")
    archive, _ = study.archive()
    assert sorted(t.number for t in report.trials) == sorted(archive.front)
    by_number = records(study)
    for t in report.trials:
        rec = by_number[t.number]
        recipe = Recipe.load(t.folder / "recipe.json")
        assert recipe.to_dict() == rec.recipe  # exact JSON round trip
        assert t.mergekit
        assert Recipe.load(t.folder / "mergekit.yml").to_dict() == recipe.to_dict()
        meta = read_front_matter((t.folder / "README.md").read_text())
        ev = meta["evomerge"]
        assert ev["scores"]["train"] == rec.objectives
        assert ev["scores"]["test"] == pytest.approx(tests[t.number])
        assert ev["run"] == "ps" and ev["trial"] == t.number and ev["strategy"] == "nsga2"
        assert ev["budget"] == {"evaluations": 12, "stop_after_first_failures": 5}  # the breaker default
        assert ev["merge"]["method"] == "ties"
        assert set(meta["base_model"]) == set(recipe.referenced_models())
        assert not (t.folder / "model").exists()


def test_the_front_index_lists_every_objective_on_train_and_test(ps_study, tmp_path):
    study, tests = ps_study
    export_run(study.run_dir, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "front.csv").open()))
    doc = json.loads((tmp_path / "out" / "front.json").read_text())
    by_number = records(study)
    assert {int(r["trial"]) for r in rows} == set(tests) == {r["trial"] for r in doc["front"]}
    for row in doc["front"]:
        n = row["trial"]
        assert row["f1_train"] == by_number[n].objectives["f1"] and row["f2_train"] == by_number[n].objectives["f2"]
        assert row["f1_test"] == pytest.approx(tests[n]["f1"]) and row["f2_test"] == pytest.approx(tests[n]["f2"])
    assert [o["name"] for o in doc["objectives"]] == ["f1", "f2"]


def test_an_exported_checkpoint_loads_and_matches_a_merge_of_the_same_recipe(ps_study, tmp_path):
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.streaming import merge_to_disk

    study, _ = ps_study
    number = study.archive()[0].front[0]
    report = export_run(study.run_dir, tmp_path / "out", trials=[number], checkpoints=True)
    folder = report.trials[0].checkpoint
    assert folder is not None and (folder / "README.md").is_file()
    reference = merge_to_disk(Recipe.load(report.trials[0].folder / "recipe.json"), tmp_path / "ref").out_dir
    ids = torch.arange(12).reshape(2, 6) % 64
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        want = AutoModelForCausalLM.from_pretrained(reference)(ids).logits
    assert torch.equal(got, want)


def test_a_data_flow_recipe_exports_reasons_for_mergekit_and_a_folded_checkpoint(family, tmp_path):
    from transformers import AutoModelForCausalLM

    from evomerge.materialize.streaming import merge_to_disk

    _, experts = family
    study = ps_run(tmp_path, family, name="dfs", evaluations=4, space={"kind": "dfs", "repeats": 1},
                   sources={"models": [str(experts[0]), str(experts[1])]}, strategy={"name": "random"},
                   objectives=[{"name": "sphere", "direction": "minimize"}],
                   runner={"type": "function", "target": "evomerge.exec.synthetic:sphere"})
    report = export_run(study.run_dir, tmp_path / "out", checkpoints=True)
    (t,) = report.trials
    assert not t.mergekit and not (t.folder / "mergekit.yml").exists()
    why = (t.folder / "MERGEKIT.txt").read_text()
    assert "mergekit cannot express" in why and "layer_path" in why
    assert "mergekit" not in read_front_matter((t.folder / "README.md").read_text())["tags"]
    recipe = Recipe.load(t.folder / "recipe.json")
    assert recipe.layer_path
    reference = merge_to_disk(recipe, tmp_path / "ref").out_dir
    ids = torch.arange(12).reshape(2, 6) % 64
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(t.checkpoint)(ids).logits  # a plain model: no custom code
        want = AutoModelForCausalLM.from_pretrained(reference)(ids).logits
    assert torch.equal(got, want)


def test_unknown_trials_are_refused_by_number(ps_study, tmp_path):
    from evomerge.errors import ConfigError

    study, _ = ps_study
    with pytest.raises(ConfigError, match="no finished trial"):
        export_run(study.run_dir, tmp_path / "out", trials=[999])


def test_the_cli_exports_chosen_trials(ps_study, tmp_path):
    study, _ = ps_study
    result = CliRunner().invoke(app, ["export", str(study.run_dir), str(tmp_path / "cli"), "--trial", "0",
                                      "--trial", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "trial-00000" / "recipe.json").is_file()
    assert (tmp_path / "cli" / "trial-00001" / "README.md").is_file()
    assert (tmp_path / "cli" / "front.csv").is_file()


def test_a_study_made_by_the_server_exports_like_a_run(tmp_path):
    from evomerge.server.studies import RemoteStudy

    remote = RemoteStudy.create(tmp_path, {
        "name": "remote", "space": {"kind": "ps", "method": "ties"},
        "sources": {"base": "org/base", "models": ["org/a", "org/b"]},
        "strategy": {"name": "random"}, "objectives": [{"name": "acc", "direction": "maximize"}],
        "budget": {"evaluations": 3}}, {"num_layers": 2}, None)
    for i, cand in enumerate(remote.ask(3)):
        remote.tell(cand.trial, cand.ticket, {"acc": 0.1 * i})
    report = export_run(tmp_path / "remote", tmp_path / "out")
    assert [t.number for t in report.trials] == [2]
    card = read_front_matter((report.trials[0].folder / "README.md").read_text())
    assert card["evomerge"]["scores"]["train"] == {"acc": pytest.approx(0.2)}
    assert yaml.safe_load((report.trials[0].folder / "mergekit.yml").read_text())["merge_method"] == "ties"
