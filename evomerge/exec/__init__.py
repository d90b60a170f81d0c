"""Runners evaluate candidates: in-process (local) or on a Ray cluster, behind one interface."""

from evomerge.exec.base import Candidate, EvalResult, Runner

__all__ = ["Candidate", "EvalResult", "Runner"]
