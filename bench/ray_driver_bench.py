"""The Ray runner's own cost: driver CPU per candidate, with candidates that take microseconds.

A function target (``evomerge.exec.synthetic:sphere``) on 2 workers, driven as a Study drives it
(``submit`` up to ``capacity``, ``poll``, refill), one candidate per call and adaptive batches.
Driver CPU (``time.process_time`` of this process) is what the runner's bookkeeping costs, and
much less sensitive to a shared machine's load than wall time; both are printed, with the load.

    .venv/bin/python bench/ray_driver_bench.py [--candidates 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from evomerge.exec.base import Candidate
    from evomerge.exec.ray_runner import RayRunner
    from evomerge.exec.ray_setup import connect

    connect(None, num_cpus=max(2, args.workers), object_store_memory=256 * 2**20, log_to_driver=False)
    rng = np.random.default_rng(0)
    n = args.candidates
    print("| batch | candidates | wall s | candidates/s | driver CPU ms/candidate | load |\n|---|---|---|---|---|---|")
    for batch in (1, None):
        with RayRunner(target="evomerge.exec.synthetic:sphere", workers=args.workers, batch_size=batch) as runner:
            list(runner.evaluate([Candidate(key=f"w{i}", recipe=None, genome=rng.uniform(-1, 1, 3))
                                  for i in range(50)]))  # warm: workers up, batch size adapted
            todo = iter([Candidate(key=f"k{i}", recipe=None, genome=rng.uniform(-1, 1, 3)) for i in range(n)])
            cpu0, t0 = time.process_time(), time.perf_counter()
            runner.submit([c for _, c in zip(range(runner.capacity), todo, strict=False)])
            done = 0
            while done < n:
                got = runner.poll(None)
                done += len(got)
                runner.submit([c for _, c in zip(range(len(got)), todo, strict=False)])
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        print(f"| {batch or 'adaptive'} | {n} | {wall:.2f} | {n / wall:.0f} | {cpu / n * 1e3:.3f} | "
              f"{os.getloadavg()[0]:.1f} |")
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
