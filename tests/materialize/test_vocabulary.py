"""Vocabulary checks on every path, passthrough included, before any weight is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.errors import CheckpointError
from evomerge.materialize.plan import plan_merge
from evomerge.materialize.streaming import merge_to_disk, open_checkpoints
from evomerge.recipe.model import Recipe
from evomerge.testing import save_tiny_llama, tiny_llama_config


@pytest.fixture(scope="module")
def two_vocabularies(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vocab")
    return (save_tiny_llama(root / "v182", seed=0, config=tiny_llama_config(vocab_size=182)),
            save_tiny_llama(root / "v184", seed=1, config=tiny_llama_config(vocab_size=184)))


def _slices(a: Path, b: Path) -> Recipe:
    return Recipe.model_validate({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 1]}]},
        {"sources": [{"model": str(b), "layer_range": [1, 2]}]},
    ]})


def test_passthrough_mixing_two_vocabularies_is_refused_and_writes_nothing(two_vocabularies, tmp_path):
    a, b = two_vocabularies
    with pytest.raises(CheckpointError, match=r"vocabulary sizes differ.*182 tokens.*184"):
        merge_to_disk(_slices(a, b), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vocabulary_is_checked_from_headers_before_any_weight_is_read(two_vocabularies, monkeypatch):
    from evomerge.io.checkpoint import Checkpoint

    def no_reads(*args, **kwargs):
        raise AssertionError("a weight was read before the vocabulary check")

    monkeypatch.setattr(Checkpoint, "get", no_reads)
    recipe = _slices(*two_vocabularies)
    with pytest.raises(CheckpointError, match="vocabulary sizes differ"):
        plan_merge(recipe, open_checkpoints(recipe))


def test_embedding_rows_are_compared_when_configs_agree(two_vocabularies, tmp_path):
    """A config that lies about vocab_size does not hide a head of another size."""
    import json

    a, b = two_vocabularies
    liar = tmp_path / "liar"
    liar.mkdir()
    for f in b.iterdir():
        (liar / f.name).write_bytes(f.read_bytes())
    config = json.loads((liar / "config.json").read_text())
    config["vocab_size"] = 182
    (liar / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"rows of '(model.embed_tokens|lm_head).weight'.*182 tokens.*184"):
        merge_to_disk(_slices(a, liar), tmp_path / "out")


def test_a_tokenizer_source_lays_rows_out_from_tokenizers_and_names_a_model_without_one(family, two_vocabularies):
    """tokenizer_source: <model> of another vocabulary is mergekit's merge across vocabularies (tests/vocab):
    it needs every model's tokenizer, and a model without a loadable one is refused in the plan, by name."""
    from evomerge.errors import ConfigError

    _base, experts = family
    recipe = Recipe.model_validate({
        "models": [{"model": str(e), "parameters": {"weight": 1.0}} for e in experts[:2]],
        "merge_method": "linear", "tokenizer_source": str(two_vocabularies[0]),
    })
    checkpoints = open_checkpoints(recipe)
    checkpoints.update(open_checkpoints(Recipe.model_validate(
        {"models": [{"model": str(two_vocabularies[0])}], "merge_method": "passthrough"})))
    with pytest.raises(ConfigError, match=rf"{experts[0]}: cannot load its tokenizer for the merged vocabulary"):
        plan_merge(recipe, checkpoints)


def test_same_vocabulary_passthrough_still_merges(family, tmp_path):
    base, experts = family
    merge_to_disk(_slices(base, experts[0]), tmp_path / "out")
    assert (tmp_path / "out" / "config.json").is_file()
