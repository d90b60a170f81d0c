"""The Runner's streaming interface: the defaults on top of evaluate() that every in-process runner inherits."""

from __future__ import annotations

import numpy as np

from evomerge.exec.base import Candidate
from evomerge.exec.function import FunctionRunner
from evomerge.exec.synthetic import sphere


def test_default_submit_and_poll_return_each_result_once_one_per_poll():
    runner = FunctionRunner(sphere)
    assert runner.capacity == 1 and runner.pending == 0 and runner.poll(timeout=0) == []
    runner.submit([Candidate(key=f"k{i}", recipe=None, genome=np.full(2, i / 10)) for i in range(3)])
    assert runner.pending == 3
    got = []
    while runner.pending:
        batch = runner.poll()
        assert len(batch) == 1
        got += batch
    assert [r.key for r in got] == ["k0", "k1", "k2"] and runner.poll() == []
    assert got[2].objectives["sphere"] == sphere(np.full(2, 0.2))["sphere"]
