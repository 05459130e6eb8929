"""Planners: what a :class:`~loadopt.controller.Controller` calls each step to turn the problem it
compiled into a schedule.

A planner is any callable ``Problem -> Schedule``. :func:`as_planner` makes one from what a user
passes: a method name (``"lp"``, ``"milp"``, ``"auto"``, ``"fast"``), an options object of
:mod:`loadopt.options`, a ready planner, or a user's own callable. The optimising planner
(:class:`SolvePlanner`) runs :func:`loadopt.solve` with a :class:`~loadopt.solvers.warm.WarmStart`
kept from step to step; baselines and custom policies plug in the same way
(:mod:`loadopt.simulate` does).

A planner may also say how its last call went (``last_mode``, ``last_reason``, ``last_solve_s``),
which the controller records in its :class:`~loadopt.controller.StepRecord`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .errors import InputError
from .options import AutoOptions, FastOptions, LpOptions, MilpOptions, SolveOptions, as_options
from .problem import Problem
from .schedule import Schedule
from .solve import solve
from .solvers.warm import MIN_WARM_ROWS, WarmStart


@runtime_checkable
class Planner(Protocol):
    """``Problem -> Schedule``: what a :class:`~loadopt.controller.Controller` calls each step.

    Whatever it returns, the controller hands out only what is safe: a planner's schedule is
    checked against the problem's limits (see :meth:`loadopt.controller.Controller.step`).

    Parameters
    ----------
    problem
        The step's compiled problem (a call argument).

    Returns
    -------
    Schedule
        A schedule of ``problem``.
    """

    def __call__(self, problem: Problem, /) -> Schedule: ...


class SolvePlanner:
    """:func:`loadopt.solve` with ``options``, warm-started across calls (the HiGHS LP only).

    Parameters
    ----------
    options
        An options object of :mod:`loadopt.options`, a method name (``"lp"``, ``"milp"``,
        ``"auto"``, ``"fast"``) or ``None`` (the LP).
    warm, warm_min_mapped, alien_basis, cold_after_limit_cut, warm_min_rows
        See :class:`~loadopt.solvers.warm.WarmStart` (``enabled``, ``min_mapped`` (fraction),
        ``alien``, ``cold_after_limit_cut``, ``min_rows``).
    """

    def __init__(
        self,
        options: SolveOptions | str | None = None,
        *,
        warm: bool = True,
        warm_min_mapped: float = 0.5,
        alien_basis: bool = False,
        cold_after_limit_cut: bool = True,
        warm_min_rows: int = MIN_WARM_ROWS,
    ) -> None:
        self.options: SolveOptions = as_options(options)
        self.warm_start = WarmStart(
            enabled=warm,
            min_mapped=warm_min_mapped,
            alien=alien_basis,
            cold_after_limit_cut=cold_after_limit_cut,
            min_rows=warm_min_rows,
        )
        self.last_mode = ""
        self.last_reason = ""
        self.last_solve_s = 0.0

    @property
    def method(self) -> str:
        return self.options.method

    def __call__(self, problem: Problem) -> Schedule:
        opts = self.options
        uses_warm = (isinstance(opts, LpOptions) and opts.backend == "highs") or (
            isinstance(opts, AutoOptions) and opts.lp.backend == "highs"
        )
        ws = self.warm_start if uses_warm else None
        if ws is not None:
            ws.mode, ws.reason = "", ""
        sched = solve(problem, opts, warm_start=ws)
        if ws is not None and ws.mode:
            self.last_mode, self.last_reason, self.last_solve_s = ws.mode, ws.reason, ws.solve_s
        else:
            self.last_mode = sched.method.split("->")[0]
            self.last_reason = f"method={opts.method!r}"
            self.last_solve_s = sched.solve_time_s
        return sched

    def __repr__(self) -> str:
        return f"SolvePlanner({self.options!r})"


def as_planner(planner: Any = None, *, time_limit_s: float | None = None) -> Planner:
    """The planner for ``planner``: ``None`` (the LP), a method name, an options object, or a
    callable ``Problem -> Schedule`` (returned as is). ``time_limit_s`` applies to a method name
    or ``None`` (not to an options object, which carries its own)."""
    if planner is None or isinstance(planner, str):
        method = planner or "lp"
        if method == "fast":
            return SolvePlanner(FastOptions())
        return SolvePlanner(as_options(method, time_limit_s=time_limit_s))
    if isinstance(planner, LpOptions | MilpOptions | AutoOptions | FastOptions):
        return SolvePlanner(planner)
    if callable(planner):
        return planner
    raise InputError(
        f"a planner must be a method name, an options object or a callable "
        f"Problem -> Schedule, got {type(planner).__name__}"
    )


def describe(planner: Callable[[Problem], Schedule], sched: Schedule) -> tuple[str, str, float]:
    """``(mode, reason, solve_s)`` of the planner's last call, for the controller's log."""
    mode = getattr(planner, "last_mode", None)
    if mode:
        return (
            mode,
            str(getattr(planner, "last_reason", "")),
            float(getattr(planner, "last_solve_s", sched.solve_time_s)),
        )
    return "planner", getattr(planner, "__name__", type(planner).__name__), sched.solve_time_s
