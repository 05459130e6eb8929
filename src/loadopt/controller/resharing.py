"""Re-sharing and pilots on a :class:`~loadopt.controller.Controller`: undrawn capacity of a
vehicle drawing less than its limit goes to others (and comes back when it draws up to it), and
the limits handed out are in the pilots each EVSE can signal (IEC 61851-1 steps and minimum).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..problem import Problem
from ..safety import violations
from ..schedule import Schedule
from ..site import Evse
from .state import _ControllerState


class _Resharing(_ControllerState):
    """Re-sharing caps and the schedule in pilot steps."""

    def _update_caps(self) -> None:
        """Re-sharing: lower the plan of vehicles that draw less than allowed, lift it again
        when they draw up to it."""
        if not self.reshare:
            return
        for st in self._state.values():
            lim, got = st.last_limit_a, st.measured_a
            if lim is None or got is None or st.measured_at is None or st.limit_at is None:
                continue
            if st.measured_at <= st.limit_at:  # no reading since the last limit was handed out
                continue
            min_a = st.session.min_current
            if min_a is None:
                min_a = self.site.evse(st.session.evse).min_current
            # compare with the pilot the EVSE signals (its step at or below the limit), not
            # the limit: on a stepped EVSE a car drawing its full step draws all it is given
            evse = self.site.evse(st.session.evse)
            given = _step_at_most(evse, lim)
            if (
                st.cap_a is not None
                and got >= _step_at_most(evse, st.cap_a) - self.reshare_threshold_a
            ):
                st.cap_a = None  # it draws what it is given: give it its maximum again
            elif given >= min_a and got < given - self.reshare_threshold_a:
                st.cap_a = _step_at_least(evse, max(got + self.reshare_headroom_a, min_a))

    def _in_pilot_steps(self, problem: Problem, sched: Schedule) -> Schedule:
        """The schedule in the pilots the EVSEs can signal (:func:`loadopt.pilots.round_to_pilots`:
        steps and minimum currents; what rounding takes from period 0 is given back where the
        limits allow). Checked with the schedule's battery and discharge flows: should the result
        break a limit, the rounded-down schedule (safe whenever the plan was) is used."""
        from ..pilots import down_to_pilot, pilot_grid, round_to_pilots

        if sched.n_phases is not None or problem.n_sessions == 0:
            return sched
        cur = round_to_pilots(problem, sched.current)
        # round_to_pilots sees session rows only: check against battery and V2G flows too
        if violations(problem, cur, 1, discharge=sched.discharge, battery_a=sched.battery_a):
            grid, stepped = pilot_grid(problem)
            cur = down_to_pilot(sched.current, grid, stepped, problem.session_min_current)
            cur = np.floor(cur * 10.0 + 1e-6) / 10.0
        return replace(sched, current=cur)


def _step_at_most(evse: Evse, a: float) -> float:
    """The pilot ``evse`` signals for a limit of ``a`` A: its largest allowed step ≤ ``a``."""
    steps = evse.allowed_currents
    if not steps:
        return a
    below = [x for x in steps if x <= a + 1e-9]
    return max(below) if below else 0.0


def _step_at_least(evse: Evse, a: float) -> float:
    """The smallest allowed step of ``evse`` ≥ ``a`` A (``a`` without steps, or above them)."""
    steps = evse.allowed_currents
    if not steps:
        return a
    above = [x for x in steps if x >= a - 1e-9]
    return min(above) if above else a
