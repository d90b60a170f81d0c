"""Peak memory of a copy through Checkpoint -> ShardedWriter grows with the largest tensor, not the model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from pathlib import Path
    from evomerge.io import Checkpoint, ShardedWriter
    torch.set_num_threads(1)
    root = Path(sys.argv[1]); n, numel = int(sys.argv[2]), int(sys.argv[3])
    layout = [(f"layers.{k}.w", (numel,), torch.float32) for k in range(n)]

    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    base = rss()
    with ShardedWriter(root / "src", layout, max_shard_bytes=numel * 4 * 4) as w:   # generate a source
        for name, shape, dtype in layout:
            w.write(name, torch.full(shape, 1.5, dtype=dtype))
    src = Checkpoint.open(root / "src")
    with ShardedWriter(root / "out", [(k, s, torch.bfloat16) for k, s, _ in layout],
                       max_shard_bytes=numel * 2 * 3) as w:                          # stream a cast copy
        for name in src.names:
            w.write(name, src.get(name) * 2)
    out = Checkpoint.open(root / "out")
    assert all(torch.equal(out.get(k), torch.full((numel,), 3.0, dtype=torch.bfloat16)) for k in out.names)
    print(base, rss())  # peak RSS counts the memory-mapped pages of the tensor being read, too
    """
)


def _peak_over_baseline(tmp_path: Path, n: int, numel: int) -> int:
    """Peak RSS of generating then stream-copying an ``n``-tensor model, over the RSS after imports.

    A fixed malloc mmap threshold makes freed tensors go back to the OS at once, so the peak
    measures what evomerge holds, not what glibc's allocator chose to cache.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), str(n), str(numel)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2], env=env,
    )
    base, peak = map(int, result.stdout.split())
    return peak - base


def test_streaming_a_128_mib_model_peaks_at_a_few_tensors_of_memory(tmp_path: Path) -> None:
    n, numel = 32, 2**20  # 32 tensors of 4 MiB: 128 MiB of float32
    extra = _peak_over_baseline(tmp_path, n, numel)
    # reading one tensor (mapped) + the merged result + its bf16 cast ~ 2.5 tensors, whatever n is
    assert extra < 4 * numel * 4 + 8 * 2**20, f"peak grew {extra / 2**20:.0f} MiB for 128 MiB of 4 MiB tensors"


@pytest.mark.slow
def test_streaming_a_512_mib_model_peaks_at_a_few_tensors_of_memory(tmp_path: Path) -> None:
    n, numel = 32, 4 * 2**20  # 32 tensors of 16 MiB: 512 MiB of float32
    extra = _peak_over_baseline(tmp_path, n, numel)
    assert extra < 4 * numel * 4 + 8 * 2**20, f"peak grew {extra / 2**20:.0f} MiB for 512 MiB of 16 MiB tensors"
