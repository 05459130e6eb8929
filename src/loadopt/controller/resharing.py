"""Re-sharing and pilots on a :class:`~loadopt.controller.Controller`: undrawn capacity of a
vehicle drawing less than its limit goes to others (and comes back when it draws up to it), and
the limits handed out are in the pilots each EVSE can signal (IEC 61851-1 steps and minimum).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace

import numpy as np

from ..options import AutoOptions, LpOptions
from ..problem import Problem
from ..safety import violations
from ..schedule import Schedule, ScheduleStatus
from ..site import Evse
from .state import _ControllerState


class _Resharing(_ControllerState):
    """Re-sharing caps and the schedule in pilot steps."""

    def _update_caps(self) -> None:
        """Re-sharing: lower the plan of vehicles that draw less than allowed, lift it again
        when they draw up to it."""
        if not self.reshare:
            return
        thr_a, head_a = self.reshare_threshold_a, self.reshare_headroom_a
        evses = self.site.evses
        got_steps = self.__dict__.get("_evse_steps")
        if got_steps is None or got_steps[0] is not evses:  # once per ``site.evses``
            got_steps = (
                evses,
                {
                    e.id: (
                        _sorted_steps(e.allowed_currents) if e.allowed_currents else None,
                        e.min_current,
                    )
                    for e in evses
                },
            )
            self.__dict__["_evse_steps"] = got_steps
        steps_of = got_steps[1]
        for st in self._state.values():
            lim, got = st.last_limit_a, st.measured_a
            if lim is None or got is None or st.measured_at is None or st.limit_at is None:
                continue
            if st.measured_at <= st.limit_at:  # no reading since the last limit was handed out
                continue
            got_evse = steps_of.get(st.session.evse)
            if got_evse is None:  # an EVSE the site no longer has: its InputError, named
                self.site.evse(st.session.evse)
                continue
            steps, min_a = got_evse
            if st.session.min_current is not None:
                min_a = st.session.min_current
            # compare with the pilot the EVSE signals (its step at or below the limit), not
            # the limit: on a stepped EVSE a car drawing its full step draws all it is given
            given = _at_most(steps, lim)
            if st.cap_a is not None and got >= _at_most(steps, st.cap_a) - thr_a:
                st.cap_a = None  # it draws what it is given: give it its maximum again
            elif given >= min_a and got < given - thr_a:
                st.cap_a = _at_least(steps, max(got + head_a, min_a))

    def _in_pilot_steps(self, problem: Problem, sched: Schedule) -> Schedule:
        """The schedule in the pilots the EVSEs can signal — the *rounding-aware LP*:

        1. :func:`loadopt.pilots.round_to_pilots`: every period rounded down to a pilot; what
           rounding takes from period 0 is given back a step at a time, earliest departure
           first, where every row has room after the sessions *and* the batteries' charging
           (a discharge is never counted as room);
        2. ``pilots="resolve"`` (the default) with an LP planner: where that give-back left a
           session below the pilot its plan was nearer to (a 4.6 A plan under a 6 A minimum, a
           13 A plan between 8 and 16 A steps), :func:`loadopt.pilots.pilot_fixings` holds
           those sessions at their pilot in period 0 (as far as the rows allow), the others at
           their step below, and the LP is solved again (cold) so everyone else is re-planned
           around the decisions; that plan is rounded the same way (1).

        Checked with the schedule's battery and discharge flows (defence in depth): should the
        result break a limit, the rounded-down plan (safe whenever the plan was) is used; so it is
        should any of this fail (and 0 A where even that fails): the control loop goes on."""
        if sched.n_phases is not None or problem.n_sessions == 0:
            return sched
        try:
            return self._pilot_step(problem, sched)
        except Exception as exc:  # a control loop never dies from one bad step
            from ..pilots import rounded_down

            note = f"pilot step failed ({exc!r}): "
            try:
                cur, note = rounded_down(problem, sched.current), note + "plan rounded down"
            except Exception as exc2:
                cur, note = np.zeros_like(sched.current), note + f"{exc2!r}: every limit is 0 A"
            msg = (sched.message + "; " if sched.message else "") + note
            return replace(sched, current=cur, message=msg)

    def _pilot_step(self, problem: Problem, sched: Schedule) -> Schedule:
        """:meth:`_in_pilot_steps` without its guard."""
        from ..pilots import pilot_fixings, round_to_pilots, rounded_down

        plan = sched
        cur = round_to_pilots(problem, plan.current, battery_a=plan.battery_a)
        lp = self._pilot_lp_options(sched) if self.pilots in (True, "resolve") else None
        if lp is not None:
            fx = pilot_fixings(problem, plan.current, cur, battery_a=plan.battery_a)
            if fx is not None:
                again = self._resolve_period0(problem, fx, lp)
                if again.status is ScheduleStatus.OPTIMAL:
                    plan = replace(
                        again,
                        problem=problem,
                        method=f"{sched.method}+pilots",
                        solve_time_s=sched.solve_time_s + again.solve_time_s,
                        message=(sched.message + "; " if sched.message else "")
                        + "period 0 re-solved in pilot steps",
                    )
                    cur = round_to_pilots(problem, plan.current, battery_a=plan.battery_a)
        if violations(problem, cur, 1, discharge=plan.discharge, battery_a=plan.battery_a):
            plan = sched
            cur = rounded_down(problem, sched.current)
        return replace(plan, current=cur)

    def _resolve_period0(
        self, problem: Problem, fx: tuple[np.ndarray, np.ndarray, np.ndarray], lp: LpOptions
    ) -> Schedule:
        """The rounding-aware re-solve with the fixings ``fx`` (``(floor_a, ub_a, h)``): hot on
        the planner's kept HiGHS model where it can
        (:meth:`loadopt.planner.SolvePlanner.resolve_tightened`: the main solve's optimal basis,
        only the changed bounds handed over), else built and solved cold as its own problem."""
        from ..planner import SolvePlanner
        from ..solve import solve

        planner = self.planner
        if isinstance(planner, SolvePlanner):
            hot = planner.resolve_tightened(problem, *fx)
            if hot is not None:
                return hot
        return solve(replace(problem, var_floor_a=fx[0], var_ub=fx[1], h=fx[2]), lp)

    def _pilot_lp_options(self, sched: Schedule) -> LpOptions | None:
        """The LP options of the planner when ``sched`` came from its LP (``"lp"``, or
        ``"auto"`` that chose the LP), else None."""
        from ..planner import SolvePlanner

        planner = self.planner
        if not isinstance(planner, SolvePlanner) or not sched.method.startswith("lp"):
            return None
        opts = planner.options
        if isinstance(opts, LpOptions):
            return opts
        if isinstance(opts, AutoOptions):  # the LP was chosen for this step (method "lp-…")
            return opts.lp
        return None


def _sorted_steps(steps: tuple[float, ...]) -> tuple[float, ...]:
    """The distinct allowed steps (A) in increasing order; of equal values (``0.0`` and
    ``-0.0``) the first given is kept, the one ``max``/``min`` over ``steps`` would return.
    (The controller keeps them per ``site.evses``: :meth:`_Resharing._update_caps`.)"""
    return tuple(sorted(dict.fromkeys(steps)))


def _step_at_most(evse: Evse, a: float) -> float:
    """The pilot ``evse`` signals for a limit of ``a`` A: its largest allowed step ≤ ``a``."""
    steps = evse.allowed_currents
    return _at_most(_sorted_steps(steps) if steps else None, a)


def _step_at_least(evse: Evse, a: float) -> float:
    """The smallest allowed step of ``evse`` ≥ ``a`` A (``a`` without steps, or above them)."""
    steps = evse.allowed_currents
    return _at_least(_sorted_steps(steps) if steps else None, a)


def _at_most(s: tuple[float, ...] | None, a: float) -> float:
    """:func:`_step_at_most` with the EVSE's :func:`_sorted_steps` (None: no steps)."""
    if s is None:
        return a
    if a != a:  # NaN: no step is at or below it
        return 0.0
    i = bisect_right(s, a + 1e-9)
    return s[i - 1] if i else 0.0


def _at_least(s: tuple[float, ...] | None, a: float) -> float:
    """:func:`_step_at_least` with the EVSE's :func:`_sorted_steps` (None: no steps)."""
    if s is None or a != a:  # no steps; NaN: no step is at or above it
        return a
    i = bisect_left(s, a - 1e-9)
    return s[i] if i < len(s) else a
