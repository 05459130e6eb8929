"""What a :class:`~loadopt.controller.Controller` keeps between steps: the records it hands out
(:class:`StepRecord`, :class:`PendingStep`, :class:`RejectedReading`, :class:`Reservation`), the
per-session state, and the controller's attributes as one declared base the other parts of the
controller (sessions, metering, limits, re-sharing, the step) are written against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ..compile.tree import _site_evse_arrays
from ..errors import InputError
from ..objective import Objective
from ..planner import Planner
from ..problem import Problem
from ..schedule import Schedule
from ..session import Session
from ..signals import Signals
from ..site import Site

_KEEP: Any = object()  # "argument not given" (None means "no limit")


@dataclass
class StepRecord:
    """What one :meth:`Controller.step` did (for logs, tests and benchmarks).

    Attributes
    ----------
    now
        The step's time, as given.
    mode
        ``"cold"`` (no starting basis), ``"warm"`` (mapped previous basis), ``"empty"``,
        ``"fast"``, ``"fallback"``.
    reason
        Why this path was taken.
    status, method
        The schedule's status and method.
    n_sessions
        Sessions in the problem.
    build_s, solve_s, total_s
        Compile + LP build, solver, and the whole step (s).
    events
        What happened since the previous step that the plan reacts to.
    """

    now: datetime
    mode: str  #: "cold" (no starting basis), "warm" (mapped previous basis), "empty", "fast"
    reason: str  #: why this path was taken
    status: str  #: the schedule status
    method: str  #: the schedule method
    n_sessions: int
    build_s: float  #: compile + LP build (s)
    solve_s: float  #: solver time (s)
    total_s: float  #: the whole step (s)
    #: What happened since the previous step that the plan reacts to: a vehicle budgeted at
    #: what it draws, a reservation lifted, readings rejected, the clock going backwards, the
    #: trigger of a :meth:`Controller.replan`.
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PendingStep:
    """A step between :meth:`Controller.begin_step` and :meth:`Controller.end_step`.

    Attributes
    ----------
    now
        The step's time as given; ``now_utc`` in UTC.
    problem
        The compiled problem the planner must solve.
    events
        For the step record.
    t0, t1
        ``perf_counter`` at the start and after compiling (s).
    """

    now: datetime  #: as given
    now_utc: datetime
    problem: Problem  #: the compiled problem the planner must solve
    events: list[str]
    t0: float  #: perf_counter at the start
    t1: float  #: perf_counter after compiling


@dataclass(frozen=True)
class RejectedReading:
    """A meter reading :meth:`Controller.meter` did not apply, and why.

    Attributes
    ----------
    session_id
        The session.
    at
        When it was measured (UTC).
    energy_kwh
        Cumulative energy (kWh), if given.
    current_a
        Current per line (A), if given.
    reason
        Why it was not applied (stale, from the future, out of order, below the last reading).
    """

    session_id: str
    at: datetime
    energy_kwh: float | None
    current_a: tuple[float, ...] | None
    reason: str


@dataclass(frozen=True)
class Reservation:
    """Current an EVSE may draw whatever the plan says: see :meth:`Controller.reserve`.

    Attributes
    ----------
    current_a
        A per EVSE line L1, L2, L3.
    until
        End (UTC); ``None``: until released.
    reason
        Why.
    """

    current_a: tuple[float, float, float]
    until: datetime | None = None
    reason: str = ""


@dataclass
class _SessionState:
    session: Session
    delivered_kwh: float = 0.0  #: cumulative energy metered (or estimated) at ``delivered_at``
    delivered_at: datetime | None = None
    measured_a: float | None = None  #: last measured current (A, max over phases)
    measured_lines_a: tuple[float, float, float] | None = None  #: per EVSE line (A)
    measured_at: datetime | None = None
    read_at: datetime | None = None  #: time of the last energy reading applied
    read_kwh: float | None = None  #: its value
    over_limit_a: float | None = None  #: the limit it was metered above (observed reality)
    last_limit_a: float | None = None  #: limit of period 0 handed out at the last step
    limit_at: datetime | None = None  #: when it was handed out
    cap_a: float | None = None  #: re-sharing cap (A), None = none
    departure: datetime | None = None  #: current departure estimate
    #: V2G: grid kWh the vehicle may have given back, counted at the discharge it was told
    #: (an upper bound: its energy floor is then never overestimated), up to ``discharge_at``
    discharged_kwh: float = 0.0
    last_discharge_a: float = 0.0  #: discharge of period 0 handed out at the last step
    discharge_at: datetime | None = None
    export_read_at: datetime | None = None  #: time of the last exported-energy reading applied
    export_read_kwh: float | None = None  #: its value (grid kWh given back since plug-in)


class _ControllerState:
    """The attributes of a :class:`~loadopt.controller.Controller` (set in its ``__init__``) and
    the two helpers every part uses."""

    site: Site
    step_s: int
    n_periods: int
    coarse_step_s: int | None
    fine_s: int
    align_to_grid: bool
    signals: Signals
    objective: Objective
    time_limit_s: float | None
    planner: Planner
    default_dwell_h: float
    default_energy_kwh: float
    pilots: bool | str
    reshare: bool
    reshare_threshold_a: float
    reshare_headroom_a: float
    overstay_extension_h: float
    expected_grace_h: float
    overdraw_tolerance_a: float
    meter_max_age_s: float
    meter_max_lead_s: float
    rejected_readings: list[RejectedReading]
    _clock: datetime | None
    _last_now: datetime | None
    _observed: set[str]
    _events: list[str]
    sessions: dict[str, Session]
    expected: dict[str, Session]
    _state: dict[str, _SessionState]
    _evse_ids: set[str]
    _busy: dict[str, str]
    _evse_index: dict[str, int]
    reservations: dict[str, Reservation]
    log: list[StepRecord]
    last_schedule: Schedule | None

    def _evse_draw(self, session: Session) -> tuple[float, int]:
        """``(voltage V, phases drawn)`` of ``session`` on its EVSE, from the site's per-EVSE
        arrays (:func:`loadopt.compile.evse_arrays`, built once per ``site.evses``)."""
        evses = self.site.evses
        got = self.__dict__.get("_evse_volt_phases")
        if got is None or got[0] is not evses:  # as Python numbers, once per ``site.evses``
            ea = _site_evse_arrays(self.site)
            got = (evses, ea["evse_voltage_v"].tolist(), ea["evse_phases"].tolist())
            self.__dict__["_evse_volt_phases"] = got
        k = self._evse_index[session.evse]
        return got[1][k], min(got[2][k], session.phases)

    def _tick(self, t: datetime) -> None:
        if self._clock is None or t > self._clock:
            self._clock = t

    def _get(self, session_id: str) -> Session:
        _check_id(session_id, "session id")
        try:
            return self.sessions[session_id]
        except KeyError:
            raise InputError(
                f"unknown session {session_id!r} (not started or already stopped)"
            ) from None


def _check_id(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise InputError(f"{what} must be a string, got {type(v).__name__} {v!r:.60}")
    return v


def _finite_nonneg(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(f) or f < 0:
        raise InputError(f"{what} must be finite and >= 0, got {v!r}")
    return f
