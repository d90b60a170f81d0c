"""Model-space evolution: strategies whose genomes are whole models or task vectors (M2N2, CycleQD).

Unlike the recipe strategies in ``evomerge.strategies`` (a few coefficients in a box, scored through
the Study and its Optuna storage), these keep a population of flat parameter vectors and learn from
per-example or per-task scores, one child at a time. ``driver.evolve`` runs any of them with a
snapshot + journal so a killed run resumes without re-evaluating a single child.
"""

from evomerge.evolve.base import Child, ModelEvolution
from evomerge.evolve.cycleqd import CycleQD
from evomerge.evolve.flat import FlatLayout
from evomerge.evolve.m2n2 import M2N2

__all__ = ["M2N2", "Child", "CycleQD", "FlatLayout", "ModelEvolution"]
