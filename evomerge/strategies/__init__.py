"""Search strategies: ask/tell optimisers over a box of genomes (see ``base`` for the contract).

``make_strategy(name, problem, seed=..., **options)`` builds one from the registry:
``cma``, ``sep-cma`` (arXiv 2403.13187 defaults), ``nsga2``, ``nsga3``, ``tpe``, ``gp`` (Optuna
samplers), ``random``, ``mm-mo`` (multi-objective BO, arXiv 2407.00487), and MAP's surrogate fronts
``map``, ``bayes-map``, ``nested-map`` (arXiv 2406.07529).
"""

from __future__ import annotations

import inspect
from typing import Any

from evomerge.errors import ConfigError
from evomerge.strategies.base import Evaluated, Genome, Problem, Strategy, StrategyError, default_popsize, genome_key
from evomerge.strategies.bayes_map import BayesianMAPStrategy
from evomerge.strategies.cmaes import CMAStrategy, SepCMAStrategy
from evomerge.strategies.map_surrogate import MAPStrategy
from evomerge.strategies.mobo import MMMOStrategy
from evomerge.strategies.nested_map import NestedMAPStrategy
from evomerge.strategies.optuna_based import GPStrategy, NSGAIIIStrategy, NSGAIIStrategy, OptunaStrategy, TPEStrategy
from evomerge.strategies.preference import select_by_preference
from evomerge.strategies.random_search import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a Strategy class to the registry under ``cls.name`` (duplicate names are refused)."""
    if cls.name in STRATEGIES:
        other = STRATEGIES[cls.name].__name__
        raise ConfigError(f"strategy name {cls.name!r} is registered twice ({other}, {cls.__name__})")
    STRATEGIES[cls.name] = cls
    return cls


for _cls in (CMAStrategy, SepCMAStrategy, NSGAIIStrategy, NSGAIIIStrategy, TPEStrategy, GPStrategy, RandomStrategy,
             MAPStrategy, BayesianMAPStrategy, NestedMAPStrategy, MMMOStrategy):
    register(_cls)


def make_strategy(name: str, problem: Problem, *, seed: int, **options: Any) -> Strategy:
    """Build the strategy registered as ``name``; unknown names or options raise ``ConfigError``."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    check_options(cls, options, ("problem", "seed"), f"strategy {name!r}")
    return cls(problem, seed=seed, **options)


def check_options(cls: type, options: dict[str, Any], fixed: tuple[str, ...], what: str) -> None:
    """Refuse config options ``cls.__init__`` does not take (``fixed`` ones are the caller's), listing the valid."""
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *fixed)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{what} has no option(s) {unknown}; its options are {allowed}")


__all__ = [
    "STRATEGIES",
    "BayesianMAPStrategy",
    "CMAStrategy",
    "Evaluated",
    "GPStrategy",
    "Genome",
    "MAPStrategy",
    "MMMOStrategy",
    "NSGAIIIStrategy",
    "NSGAIIStrategy",
    "NestedMAPStrategy",
    "OptunaStrategy",
    "Problem",
    "RandomStrategy",
    "SepCMAStrategy",
    "Strategy",
    "StrategyError",
    "TPEStrategy",
    "check_options",
    "default_popsize",
    "genome_key",
    "make_strategy",
    "register",
    "select_by_preference",
]
