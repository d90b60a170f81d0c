"""The Strategy protocol as every implementation must honour it: registry, Problem, bounds, tell contract."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.errors import ConfigError
from evomerge.strategies import STRATEGIES, Problem, Strategy, StrategyError, make_strategy

ALL = ["cma", "sep-cma", "nsga2", "nsga3", "tpe", "gp", "random"]
MULTI = ["nsga2", "nsga3", "tpe", "gp", "random"]
# Model-based multi-objective strategies with their own contracts and tests (test_map.py, test_mobo.py).
PLANNED = ["map", "bayes-map", "nested-map", "mm-mo"]
# a box with very different widths per dimension, off the origin
BOX = Problem(np.array([-3.0, 0.0, 100.0, -1e-3]), np.array([-1.0, 1e-3, 400.0, 1e-3]))
SMALL = {"nsga2": {"population_size": 6}, "nsga3": {"population_size": 6}, "gp": {"n_startup_trials": 3}}
GP_MO = {"n_startup_trials": 6}  # multi-objective GP asks cost about a second each on a shared core


def values_for(g: np.ndarray, n_objectives: int) -> list[float]:
    z = (g - BOX.lower) / (BOX.upper - BOX.lower)
    return [float(np.sum((z - 0.9) ** 2))] if n_objectives == 1 else [float(z[0]), float(np.sum((z - 1) ** 2))]


def test_registry_holds_every_strategy_with_its_flags() -> None:
    assert sorted(STRATEGIES) == sorted(ALL + PLANNED)
    for name, cls in STRATEGIES.items():
        assert cls.name == name and issubclass(cls, Strategy)
    assert not STRATEGIES["cma"].supports_async and not STRATEGIES["cma"].multi_objective
    assert all(STRATEGIES[n].supports_async and STRATEGIES[n].multi_objective for n in MULTI)
    assert all(STRATEGIES[n].multi_objective for n in PLANNED)


def test_unknown_names_and_options_are_config_errors_that_list_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        make_strategy("bayes", BOX, seed=0)
    with pytest.raises(ConfigError, match="population_size"):
        make_strategy("nsga2", BOX, seed=0, popsize=10)
    with pytest.raises(ConfigError, match="crossover"):
        make_strategy("nsga2", BOX, seed=0, crossover="one-point")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lower": [0.0, 1.0], "upper": [1.0, 1.0]}, "lower\\[1\\]"),
        ({"lower": [0.0], "upper": [1.0, 2.0]}, "shapes"),
        ({"lower": [0.0], "upper": [np.inf]}, "finite"),
        ({"lower": [0.0], "upper": [1.0], "x0": [2.0]}, "inside the box"),
        ({"lower": [0.0, 0.0], "upper": [1.0, 1.0], "names": ("a", "a")}, "distinct"),
        ({"lower": [0.0], "upper": [1.0], "directions": ("max",)}, "directions"),
    ],
)
def test_problem_rejects_inconsistent_definitions(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Problem(**kwargs)


def test_problem_defaults() -> None:
    p = Problem.box(3, -1.0, 3.0)
    assert p.directions == ("minimize",) and p.param_names == ("x0", "x1", "x2")
    assert np.array_equal(p.start, [1.0, 1.0, 1.0]) and p.lower.dtype == np.float64


@pytest.mark.parametrize("name", ALL)
def test_every_asked_genome_lies_in_the_box(name: str) -> None:
    s = make_strategy(name, BOX, seed=0, **SMALL.get(name, {}))
    rounds = 2 if name == "gp" else 25
    for _ in range(rounds):
        genomes = s.ask(None if name in ("cma", "sep-cma", "nsga2", "nsga3") else 3)
        for g in genomes:
            assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == (4,)
            assert np.all(g >= BOX.lower) and np.all(g <= BOX.upper), g
        s.tell(genomes, [values_for(g, 1) for g in genomes])


@pytest.mark.parametrize("name", ALL)
def test_wrong_number_of_values_or_genomes_is_refused(name: str) -> None:
    s = make_strategy(name, BOX, seed=0, **SMALL.get(name, {}))
    g = s.ask(1)
    with pytest.raises(StrategyError, match="objective values"):
        s.tell(g, [[1.0, 2.0]])
    with pytest.raises(StrategyError, match="genomes"):
        s.tell(g, [[1.0], [2.0]])
    with pytest.raises(StrategyError, match="entries"):
        s.tell([np.zeros(3)], [[1.0]])


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "gp"])
def test_optuna_strategies_refuse_genomes_they_did_not_ask(name: str) -> None:
    s = make_strategy(name, BOX, seed=0, **SMALL.get(name, {}))
    g = s.ask(1)[0]
    with pytest.raises(StrategyError, match="not pending"):
        s.tell([g * 0.5], [[1.0]])


def test_random_accepts_any_genome_and_ignores_failures() -> None:
    s = make_strategy("random", BOX, seed=0)
    s.tell([BOX.lower, BOX.upper], [[3.0], None])
    s.tell([BOX.start], [[float("nan")]])
    assert s.best()[0].values == (3.0,) and np.array_equal(s.best()[0].genome, BOX.lower)


@pytest.mark.parametrize("name", MULTI)
def test_best_of_a_multi_objective_strategy_is_the_non_dominated_set(name: str) -> None:
    p = Problem(BOX.lower, BOX.upper, ("minimize", "maximize"))
    s = make_strategy(name, p, seed=0, **(GP_MO if name == "gp" else SMALL.get(name, {})))
    told = []
    for _ in range(2 if name == "gp" else 5):
        genomes = s.ask(4)
        vals = [values_for(g, 2) for g in genomes]
        s.tell(genomes, vals)
        told += vals
    front = [e.values for e in s.best()]
    f = np.array([[a, -b] for a, b in told])  # minimisation form
    expected = {tuple(v) for v, x in zip(told, f, strict=True) if not any(np.all(y <= x) and np.any(y < x) for y in f)}
    assert set(front) == expected


def test_natural_batches() -> None:
    assert len(make_strategy("nsga2", BOX, seed=0, population_size=12).ask()) == 12
    assert len(make_strategy("tpe", BOX, seed=0).ask()) == 1
    assert len(make_strategy("random", BOX, seed=0, batch_size=5).ask()) == 5
    assert len(make_strategy("cma", BOX, seed=0).ask()) == 4 + int(3 * np.log(4))
    with pytest.raises(StrategyError, match="non-negative"):
        make_strategy("random", BOX, seed=0).ask(-1)


def test_two_strategies_with_the_same_seed_agree_and_do_not_interfere() -> None:
    for name in ALL:
        if name == "gp":
            continue
        a = make_strategy(name, BOX, seed=11, **SMALL.get(name, {}))
        b = make_strategy(name, BOX, seed=11, **SMALL.get(name, {}))
        for _ in range(3):
            ga = a.ask(None if name in ("cma", "sep-cma") else 4)
            np.random.rand(3)
            gb = b.ask(None if name in ("cma", "sep-cma") else 4)
            assert all(np.array_equal(x, y) for x, y in zip(ga, gb, strict=True)), name
            a.tell(ga, [values_for(g, 1) for g in ga])
            b.tell(gb, [values_for(g, 1) for g in gb])
