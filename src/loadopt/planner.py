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

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError
from .options import AutoOptions, FastOptions, LpOptions, MilpOptions, SolveOptions, as_options
from .problem import Problem
from .schedule import Schedule, ScheduleStatus
from .solve import _finish, solve
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

    With :class:`~loadopt.options.AutoOptions` (``method="auto"`` in a controller) the method
    is chosen each call, by what measured better per millisecond on the JPL garage and on
    small sites (docs/benchmarks.md, "method='auto'"): the LP — whose plan a controller hands
    out in pilot steps, re-solving period 0 where rounding would starve a car (the
    *rounding-aware LP*, :meth:`loadopt.controller.Controller._in_pilot_steps`) — unless the
    step needs what rounding cannot give: integer rules asked for (``AutoOptions.milp.integer``:
    at most K cars charging, minimum run / pause lengths) or a session on an EVSE that switches
    phases. Then the MILP, when it fits the step budget: at most :attr:`max_milp_vars` problem
    variables, and no MILP call in the last :attr:`milp_cooldown_calls` that came back unproven
    or slower than :attr:`milp_budget_s` (its time limit here, at most the options' own);
    otherwise the LP. ``last_reason`` says which and why. Minimum currents and pilot steps
    alone do not call for the MILP: on JPL (5-minute steps, 12 h look-ahead, 32 cars on the
    first floor) the rounding-aware LP delivered 423.7 kWh and served 29 sessions at 31 ms per
    call, the MILP 422.1 kWh, 1 served, 575 ms (it draws no more than a car needs, so a car's
    last part below one pilot step is never delivered), and its time grows far faster with
    size (1,000 variables 0.56 s, 3,700 over 2 s and unproven).

    Parameters
    ----------
    options
        An options object of :mod:`loadopt.options`, a method name (``"lp"``, ``"milp"``,
        ``"auto"``, ``"fast"``) or ``None`` (the LP).
    warm, warm_min_mapped, alien_basis, cold_after_limit_cut, warm_min_rows
        See :class:`~loadopt.solvers.warm.WarmStart` (``enabled``, ``min_mapped`` (fraction),
        ``alien``, ``cold_after_limit_cut``, ``min_rows``).
    hot_resolve
        Let :meth:`resolve_tightened` re-solve the last LP hot (off: it always says None and
        the controller's pilot step re-solves cold).
    """

    #: Largest problem (variables) ``auto`` hands to the MILP.
    max_milp_vars: int = 1500
    #: The MILP's time limit under ``auto`` (s); a call over it or unproven sends the next
    #: :attr:`milp_cooldown_calls` calls to the LP.
    milp_budget_s: float = 1.0
    milp_cooldown_calls: int = 12

    def __init__(
        self,
        options: SolveOptions | str | None = None,
        *,
        warm: bool = True,
        warm_min_mapped: float = 0.5,
        alien_basis: bool = False,
        cold_after_limit_cut: bool = True,
        warm_min_rows: int = MIN_WARM_ROWS,
        hot_resolve: bool = True,
    ) -> None:
        self.options: SolveOptions = as_options(options)
        self.warm_start = WarmStart(
            enabled=warm,
            min_mapped=warm_min_mapped,
            alien=alien_basis,
            cold_after_limit_cut=cold_after_limit_cut,
            min_rows=warm_min_rows,
            keep_model=hot_resolve,
        )
        self.last_mode = ""
        self.last_reason = ""
        self.last_solve_s = 0.0
        self._milp_cool = 0

    @property
    def hot_resolve(self) -> bool:
        """Whether :meth:`resolve_tightened` may re-solve hot (the warm start then keeps the
        last solve's HiGHS model for it)."""
        return self.warm_start.keep_model

    @hot_resolve.setter
    def hot_resolve(self, on: bool) -> None:
        self.warm_start.keep_model = bool(on)
        if not on:
            self.warm_start.release_model()

    @property
    def method(self) -> str:
        return self.options.method

    def needs_milp(self, problem: Problem) -> str:
        """Under ``auto``: why ``problem`` needs the MILP.

        Parameters
        ----------
        problem
            The compiled problem of this call.

        Returns
        -------
        str
            The reason (integer rules asked for, phase switching), ``""`` when the
            rounding-aware LP serves it (or the options are not ``auto``).
        """
        opts = self.options
        if not isinstance(opts, AutoOptions):
            return ""
        if opts.milp.integer is not None:
            return "integer rules asked for"
        e = problem.session_evse
        if problem.n_sessions and bool(np.any(problem.evse_phase_switching[e])):
            return "phase switching"
        return ""

    def __call__(self, problem: Problem) -> Schedule:
        opts = self.options
        if isinstance(opts, AutoOptions):
            return self._auto(problem, opts)
        return self._solve(problem, opts)

    def _auto(self, problem: Problem, opts: AutoOptions) -> Schedule:
        need = self.needs_milp(problem)
        if not need:
            use, why = False, "pilots only: rounding-aware LP"
        elif problem.n_vars > self.max_milp_vars:
            use, why = False, f"{need}, but {problem.n_vars} variables > {self.max_milp_vars}: LP"
        elif self._milp_cool > 0:
            use, why = False, f"{need}, but the MILP went over its budget lately: LP"
        else:
            use, why = True, f"{need}: MILP"
        self._milp_cool = max(self._milp_cool - 1, 0)
        if use:
            tl = opts.milp.time_limit_s
            budget = self.milp_budget_s if tl is None else min(tl, self.milp_budget_s)
            sched = self._solve(problem, opts.milp.model_copy(update={"time_limit_s": budget}))
            if sched.status is not ScheduleStatus.OPTIMAL or sched.solve_time_s > budget:
                self._milp_cool = self.milp_cooldown_calls
                why += f" (unproven or over {budget:g} s: the LP for the next calls)"
        else:
            sched = self._solve(problem, opts.lp)
        self.last_reason = f"auto: {why}; {self.last_reason}"
        return sched

    def _solve(self, problem: Problem, opts: SolveOptions) -> Schedule:
        uses_warm = isinstance(opts, LpOptions) and opts.backend == "highs"
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

    def resolve_tightened(
        self, problem: Problem, floor_a: np.ndarray, ub_a: np.ndarray, h: np.ndarray
    ) -> Schedule | None:
        """The last call's LP re-solved *hot* with tighter bounds (the controller's pilot step,
        :meth:`loadopt.controller.Controller._in_pilot_steps`): the schedule of ``problem`` with
        ``var_floor_a=floor_a``, ``var_ub=ub_a`` and ``h=h``, from the optimal basis HiGHS kept
        (:meth:`loadopt.solvers.warm.WarmStart.resolve_tightened`), made safe for the tightened
        problem exactly as :func:`loadopt.solve` makes a cold solve.

        Parameters
        ----------
        problem
            The problem of this planner's last call (the same object).
        floor_a, ub_a
            ``(V,)`` the variables' new floors and upper bounds (A), at most ``problem``'s
            upper bounds.
        h
            ``(M,)`` the safety rows' new right-hand sides (A or kW), at most ``problem.h``.

        Returns
        -------
        Schedule or None
            An optimal schedule of the tightened problem (``method`` ``"lp-highs-hot"``), or
            None when it cannot be had hot (no LP of ``problem`` kept, a tightening the LP's
            reductions do not allow, not optimal, ``hot_resolve`` off): then solve the
            tightened problem cold.
        """
        if not self.hot_resolve:
            return None
        t0 = time.perf_counter()
        got = self.warm_start.resolve_tightened(problem, floor_a, ub_a, h)
        if got is None:
            return None
        res, lp = got
        tight = replace(problem, var_floor_a=floor_a, var_ub=ub_a, h=h)
        sched = _finish(tight, res, lambda x: lp.currents(tight, x), "lp-highs-hot", t0)
        return sched if sched.status is ScheduleStatus.OPTIMAL else None

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
