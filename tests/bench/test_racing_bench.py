"""bench/racing.py's pure part: a run's trials -> the best-so-far trajectory indexed by examples scored."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("racing_bench", Path(__file__).parents[2] / "bench" / "racing.py")
rb = importlib.util.module_from_spec(_spec)
sys.modules["racing_bench"] = rb  # dataclasses look their module up there
_spec.loader.exec_module(rb)
Trial, Point = rb.Trial, rb.Point


def test_trajectory_counts_every_trials_examples_and_moves_only_on_strictly_better_complete_trials():
    trials = [
        Trial(0, "complete", 100, 0.5, "a", 1.0),
        Trial(1, "pruned", 25, None, "b", 1.5),     # cost only, never the answer
        Trial(2, "complete", 100, 0.5, "c", 2.5),   # a tie keeps the earlier candidate
        Trial(3, "fail", 0, None, "d", 2.6),
        Trial(4, "complete", 100, 0.7, "e", 3.6),
        Trial(5, "pruned", 50, None, "f", 4.0),
    ]
    assert rb.trajectory(list(reversed(trials))) == [  # trial order, not list order
        Point(100, 1.0, "a"), Point(325, 3.6, "e"), Point(375, 4.0, "e")]


def test_trajectory_of_a_run_with_nothing_fully_scored_is_empty():
    assert rb.trajectory([Trial(0, "pruned", 10, None, "a", 0.1), Trial(1, "fail", 0, None, "b", 0.2)]) == []


def test_trajectory_ends_on_the_last_change_without_a_duplicate_point():
    pts = rb.trajectory([Trial(0, "complete", 10, 0.1, "a", 1.0), Trial(1, "complete", 10, 0.2, "b", 2.0)])
    assert pts == [Point(10, 1.0, "a"), Point(20, 2.0, "b")]


def test_at_cost_is_the_best_so_far_after_that_many_examples():
    pts = [Point(100, 1.0, "a", 0.4), Point(325, 3.6, "e", 0.6), Point(375, 4.0, "e", 0.6)]
    assert rb.at_cost(pts, 99) is None
    assert rb.at_cost(pts, 100).key == "a"
    assert rb.at_cost(pts, 324.9).key == "a"
    assert rb.at_cost(pts, 325).key == "e"
    assert rb.at_cost(pts, 10_000) == pts[-1]


def test_first_reaching_the_target_reads_test_scores_not_train_order():
    pts = [Point(100, 1.0, "a", 0.4), Point(325, 3.6, "e", 0.62), Point(500, 5.0, "g", 0.61)]
    assert rb.first_reaching(pts, 0.6) == pts[1]
    assert rb.first_reaching(pts, 0.62).examples == 325
    assert rb.first_reaching(pts, 0.63) is None


def test_mean_std_is_population_std_and_zero_for_one_seed():
    assert rb.mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert rb.mean_std([5.0]) == (5.0, 0.0)
    m, s = rb.mean_std([])
    assert m != m and s != s


def test_summarise_reads_target_from_the_no_racing_median_and_cuts_at_equal_examples():
    setting = rb.Setting("s", "b", ["m"], {}, "tpe", [], evaluations=3, rules=["none", "bound"], full_cost=100)
    run = rb.Run
    runs = [  # E = 3 evaluations x 100 examples = 300
        run("none", 0, [Point(100, 1.0, "a", 0.5), Point(300, 3.0, "b", 0.8)], 3, 0, 3.0),
        run("none", 1, [Point(100, 1.0, "a", 0.5), Point(200, 2.0, "c", 0.6), Point(300, 3.0, "c", 0.6)], 3, 0, 3.0),
        run("none", 2, [Point(100, 1.0, "d", 0.7), Point(300, 3.0, "d", 0.7)], 3, 0, 3.0),
        run("bound", 0, [Point(60, 0.5, "a", 0.5), Point(90, 0.9, "b", 0.8)], 3, 2, 1.0),
        run("bound", 1, [Point(100, 1.0, "d", 0.7), Point(150, 1.4, "d", 0.7)], 3, 1, 1.4),
        run("bound", 2, [Point(100, 1.0, "a", 0.5), Point(180, 1.6, "a", 0.5)], 3, 1, 1.6),
    ]
    rows, target, budget = rb.summarise(setting, runs, tolerance=0.05)
    assert target == pytest.approx(0.65) and budget == 300
    none, bound = rows
    assert none[2] == "2/3" and none[3] == "200 ± 100"      # seeds 0 (at 300) and 2 (at 100)
    assert none[5] == "0.567 ± 0.094"                       # @E/3 = 100 examples: 0.5, 0.5, 0.7
    assert none[6] == "0.700 ± 0.082"                       # @E: 0.8, 0.6, 0.7
    assert bound[2] == "2/3" and bound[3] == "95 ± 5"       # 90 and 100
    assert bound[5] == "0.667 ± 0.125 *"                    # @100: 0.8, 0.7, 0.5 (seed 0 spent only 90)
    assert bound[6] == "0.667 ± 0.125 *"                    # spent < E: read at their end, marked
    assert bound[8] == "3 ± 0 (1 ± 0)"
