"""atomic_output_dir: a merge that fails leaves the old output or nothing, never half a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.errors import CheckpointError, ConfigError
from evomerge.io import ShardedWriter, atomic_output_dir


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


def test_output_appears_only_when_the_block_completes(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        (tmp / "model.safetensors").write_text("x")
        assert not out.exists()
    assert (out / "model.safetensors").read_text() == "x"
    assert _siblings(out) == ["merged"]


@pytest.mark.parametrize("error", [RuntimeError("merge failed"), KeyboardInterrupt()])
def test_failure_leaves_nothing_behind(tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "merged"
    with pytest.raises(type(error)), atomic_output_dir(out) as tmp:
        (tmp / "model-00001-of-00002.safetensors").write_text("half")
        raise error
    assert not out.exists()
    assert _siblings(out) == []


def test_incomplete_writer_inside_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with pytest.raises(CheckpointError, match="never written"), atomic_output_dir(out) as tmp:
        writer = ShardedWriter(tmp, [("a", (4,), torch.float32), ("b", (4,), torch.float32)], max_shard_bytes=16)
        writer.write("a", torch.ones(4))
        writer.close()
    assert _siblings(out) == []


def test_existing_non_empty_output_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ConfigError, match="not empty") as err, atomic_output_dir(out):
        pass
    assert str(out) in str(err.value)
    assert (out / "keep.txt").read_text() == "old" and _siblings(out) == ["merged"]


def test_existing_empty_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    with atomic_output_dir(out) as tmp:
        (tmp / "a").write_text("new")
    assert (out / "a").read_text() == "new"


def test_overwrite_replaces_the_old_output_only_after_success(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and _siblings(out) == ["merged"]
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and _siblings(out) == ["merged"]


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.write_text("not a folder")
    with pytest.raises(ConfigError, match="not a folder"), atomic_output_dir(out, overwrite=True):
        pass


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "a" / "merged"
    with atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("1")
    assert (out / "f").exists()
