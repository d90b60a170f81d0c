"""ShardedWriter: streamed, sharded safetensors that every reader agrees on, bit for bit."""

from __future__ import annotations

import json
import struct
import weakref
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from evomerge.errors import CheckpointError
from evomerge.io import Checkpoint, ShardedWriter, copy_model_files
from evomerge.io.writer import assign_shards


def _layout(ck: Checkpoint, dtype: torch.dtype | None = None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(n, ck.info(n).shape, dtype or ck.info(n).dtype) for n in ck.names]


def _all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def test_round_trip_across_several_shards_is_bit_exact_in_any_write_order(tmp_path: Path, llama: Path) -> None:
    src = Checkpoint.open(llama)
    writer = ShardedWriter(tmp_path, _layout(src), max_shard_bytes=10_000)
    for name in reversed(src.names):
        writer.write(name, src.get(name))
    files = writer.close()
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and files == [*shards, tmp_path / "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == src.total_bytes
    assert list(index["weight_map"]) == src.names
    out = Checkpoint.open(tmp_path)
    assert out.names == src.names
    loaded = _all_tensors(tmp_path)
    for name in src.names:
        assert out.get(name).dtype == torch.float32
        assert torch.equal(out.get(name), src.get(name))
        assert torch.equal(loaded[name], src.get(name))
        with safe_open(str(out.info(name).file), framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert torch.equal(f.get_tensor(name), src.get(name))


def test_one_shard_is_written_as_model_safetensors_without_index(tmp_path: Path, llama: Path) -> None:
    src = Checkpoint.open(llama)
    with ShardedWriter(tmp_path, _layout(src)) as writer:
        for name in src.names:
            writer.write(name, src.get(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    out = Checkpoint.open(tmp_path)
    assert out.names == src.names and out.files == [tmp_path / "model.safetensors"]


def test_fp32_to_bf16_equals_torch_cast(tmp_path: Path, llama: Path) -> None:
    src = Checkpoint.open(llama)
    with ShardedWriter(tmp_path, _layout(src, torch.bfloat16), max_shard_bytes=20_000) as writer:
        for name in src.names:
            writer.write(name, src.get(name))
    out = Checkpoint.open(tmp_path)
    for name in src.names:
        got = out.get(name)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got.view(torch.int16), src.get(name).to(torch.bfloat16).view(torch.int16))


def test_every_shard_header_is_8_byte_aligned_and_tensors_are_aligned(tmp_path: Path) -> None:
    layout = [("a", (3,), torch.bfloat16), ("b", (5,), torch.float32), ("c", (1,), torch.float64),
              ("d", (7,), torch.uint8), ("e", (2, 2), torch.float16)]
    with ShardedWriter(tmp_path, layout, max_shard_bytes=24) as writer:
        for name, shape, dtype in layout:
            writer.write(name, torch.ones(shape, dtype=dtype))
    for file in tmp_path.glob("*.safetensors"):
        raw = file.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        assert (8 + n) % 8 == 0
        header = json.loads(raw[8 : 8 + n])
        assert header.pop("__metadata__") == {"format": "pt"}
        for spec in header.values():
            itemsize = {"BF16": 2, "F32": 4, "F64": 8, "U8": 1, "F16": 2}[spec["dtype"]]
            assert (8 + n + spec["data_offsets"][0]) % itemsize == 0


def test_shards_respect_the_size_limit_and_an_oversized_tensor_gets_its_own() -> None:
    layout = [("a", (10,), torch.float32), ("b", (10,), torch.float32), ("big", (100,), torch.float32),
              ("c", (5,), torch.float32)]
    shards = assign_shards(layout, max_shard_bytes=80)
    assert [[name for name, _, _ in shard] for shard in shards] == [["a", "b"], ["big"], ["c"]]


def test_writer_keeps_no_reference_to_written_tensors(tmp_path: Path) -> None:
    """What makes peak memory one tensor, not one model: nothing written stays alive in the writer."""
    layout = [(f"t{k}", (256, 256), torch.float32) for k in range(4)]
    refs = []
    with ShardedWriter(tmp_path, layout, max_shard_bytes=300_000) as writer:
        for name, shape, dtype in layout:
            tensor = torch.randn(shape, dtype=dtype)
            refs.append(weakref.ref(tensor))
            writer.write(name, tensor)
            del tensor
            assert all(ref() is None for ref in refs)


def test_write_refuses_wrong_shape_unknown_name_and_duplicates_naming_the_tensor(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path, [("w", (2, 3), torch.float32)])
    with pytest.raises(CheckpointError, match=r"'w' has shape \(3, 2\) but the output layout says \(2, 3\)"):
        writer.write("w", torch.zeros(3, 2))
    with pytest.raises(CheckpointError, match="'v' is not in the output layout"):
        writer.write("v", torch.zeros(2, 3))
    writer.write("w", torch.zeros(2, 3))
    with pytest.raises(CheckpointError, match="'w' was already written"):
        writer.write("w", torch.zeros(2, 3))
    writer.close()


def test_close_names_the_tensors_never_written(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path, [("a", (2,), torch.float32), ("b", (2,), torch.float32)])
    writer.write("a", torch.zeros(2))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) .* never written, e\.g\. \['b'\]"):
        writer.close()


def test_layout_errors_are_caught_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="'a' twice"):
        ShardedWriter(tmp_path / "x", [("a", (1,), torch.float32), ("a", (1,), torch.float32)])
    with pytest.raises(CheckpointError, match="'z'.*complex64"):
        ShardedWriter(tmp_path / "y", [("z", (1,), torch.complex64)])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformers_loads_the_written_checkpoint_with_identical_logits(
    tmp_path: Path, llama: Path, dtype: torch.dtype
) -> None:
    from transformers import AutoModelForCausalLM

    src = Checkpoint.open(llama)
    out = tmp_path / "out"
    with ShardedWriter(out, _layout(src, dtype), max_shard_bytes=30_000) as writer:
        for name in src.names:
            writer.write(name, src.get(name))
    copy_model_files(llama, out, torch_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    reference = AutoModelForCausalLM.from_pretrained(llama, dtype=dtype)
    assert model.dtype == dtype
    ids = torch.tensor([[1, 5, 9, 2, 33]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_copy_model_files_sets_the_output_dtype_and_copies_tokenizer_files(tmp_path: Path, llama: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.json", "generation_config.json"):
        (src / name).write_bytes((llama / name).read_bytes())
    (src / "tokenizer.json").write_text('{"model": {}}')
    (src / "chat_template.jinja").write_text("{{ messages }}")
    (src / "model.safetensors").write_bytes(b"weights are not copied")
    out = tmp_path / "out"
    copy_model_files(src, out, torch_dtype=torch.bfloat16)
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "tokenizer.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["model_type"] == "llama"
    assert (out / "chat_template.jinja").read_text() == "{{ messages }}"


_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int8, torch.uint8,
           torch.bool]


def _random_tensor(data: st.DataObject, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    seed = data.draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 1e3).to(dtype)
    return torch.randint(0, 100, shape, generator=gen).to(dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_tensors_of_mixed_dtypes_round_trip_exactly_at_any_shard_size(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 8))
    shapes = data.draw(st.lists(st.lists(st.integers(0, 5), max_size=3).map(tuple), min_size=count, max_size=count))
    dtypes = data.draw(st.lists(st.sampled_from(_DTYPES), min_size=count, max_size=count))
    tensors = {f"t.{k}": _random_tensor(data, shape, dtype) for k, (shape, dtype) in enumerate(zip(shapes, dtypes,
                                                                                                  strict=True))}
    max_shard_bytes = data.draw(st.integers(1, 2_000))
    folder = tmp_path_factory.mktemp("prop")
    layout = [(name, tuple(t.shape), t.dtype) for name, t in tensors.items()]
    order = data.draw(st.permutations(list(tensors)))
    with ShardedWriter(folder, layout, max_shard_bytes=max_shard_bytes) as writer:
        for name in order:
            writer.write(name, tensors[name])
    ck = Checkpoint.open(folder)
    assert ck.names == list(tensors)
    loaded = _all_tensors(folder)
    for name, tensor in tensors.items():
        for got in (ck.get(name), loaded[name]):
            assert got.dtype == tensor.dtype and got.shape == tensor.shape
            assert torch.equal(got.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"torch_dtype": "float32"}, {"torch_dtype": "float16"}),  # written by transformers < 4.56
        ({"dtype": "float32"}, {"dtype": "float16"}),
        ({}, {"dtype": "float16", "torch_dtype": "float16"}),
    ],
)
def test_copy_model_files_updates_whichever_dtype_key_the_config_uses(
    tmp_path: Path, config: dict, expected: dict
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    (src / "model.safetensors").write_bytes(b"")
    copy_model_files(src / "model.safetensors", tmp_path / "out", torch_dtype=torch.float16)  # a file path works
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"model_type": "llama", **expected}


def test_an_empty_layout_writes_a_valid_empty_checkpoint(tmp_path: Path) -> None:
    with ShardedWriter(tmp_path, []):
        pass
    assert len(Checkpoint.open(tmp_path)) == 0 and load_file(tmp_path / "model.safetensors") == {}
