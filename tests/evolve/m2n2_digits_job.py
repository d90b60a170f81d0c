"""A digits M2N2 run for the kill -9 test: ``python m2n2_digits_job.py RUN_DIR CHILDREN CALLS_FILE``.

Every evaluation appends the child's index to CALLS_FILE once it is computed, so the test can count
evaluations across a SIGKILL and the resume.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from evomerge.evolve.digits_fast import DigitsScorer
from evomerge.evolve.driver import evolve
from evomerge.evolve.m2n2 import M2N2

SNAPSHOT_EVERY_S = 0.2


def build(calls_file: Path | None = None):
    """(algorithm, evaluate): M2N2 from two N(0, 0.01²) genomes with σ = 0.01 mutation, as in the paper."""
    torch.set_num_threads(1)
    scorer = DigitsScorer.from_split()
    rng = np.random.default_rng(42)
    initial = [(rng.standard_normal(scorer.layout.size) * 0.01).astype(np.float32) for _ in range(2)]
    algo = M2N2(initial, scorer.n_examples(), seed=5, archive_size=8, mutation_std=0.01)

    def evaluate(child):
        scores = scorer.correct(child.genome)
        if calls_file is not None:
            with open(calls_file, "a", encoding="utf-8") as fh:
                fh.write(f"{child.index}\n")
        return scores

    return algo, evaluate


def main() -> None:
    run_dir, children, calls = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    algo, evaluate = build(calls)
    evolve(algo, evaluate, run_dir, children=children, snapshot_every_s=SNAPSHOT_EVERY_S)


if __name__ == "__main__":
    main()
