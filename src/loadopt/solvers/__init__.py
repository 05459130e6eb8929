"""Solver backends. Each takes a :class:`~loadopt.lp.LinearProgram` and returns a
:class:`SolverResult`; none of them decides what is safe to emit (that is :mod:`loadopt.safety`)."""

from .result import SolverResult, SolverStatus

__all__ = ["SolverResult", "SolverStatus"]
