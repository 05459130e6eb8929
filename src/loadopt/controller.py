"""The rolling-horizon controller: what a site controller calls every control interval.

It holds the site, the sessions as they arrive and leave, the energy each has received (from meter
readings) and the signals; ``step(now)`` returns the :class:`~loadopt.schedule.Schedule` for the
horizon ``[now, now + n_periods · step_s)``. Only period 0 of it is acted upon before the next
call; the rest is the plan.

Between calls it keeps:

- **energy still wanted** per session: the session's ``energy_kwh`` (wanted at plug-in) minus the
  cumulative energy metered (OCPP ``Energy.Active.Import.Register`` relative to the transaction
  start). Between meter readings it is estimated from the last measured current (or, without one,
  the last limit handed out).
- **departure estimates**: a session whose estimated departure has passed while it is still
  plugged in is extended by ``overstay_extension_h`` (the vehicle is still here: let it charge).
- **meter readings it can trust**: a reading is checked when it arrives (:meth:`Controller.meter`):
  a time that is not an aware datetime, or a value that is not a finite number ≥ 0, raises
  :class:`~loadopt.errors.InputError` at the call; a reading older than the last one applied (out
  of order), older than ``meter_max_age_s`` (stale), later than ``meter_max_lead_s`` ahead of the
  controller's clock (from the future), or with a cumulative energy below the last one is not
  applied and is recorded in :attr:`Controller.rejected_readings`. The estimate of energy drawn
  since the last reading only ever moves forward: a clock going backwards never counts the same
  interval twice.
- **observed reality**: a vehicle metered above the limit handed to it (by more than
  ``overdraw_tolerance_a``) is budgeted at what it draws (a reservation,
  :meth:`Controller.reserve`, on its EVSE lines) and the rest of the site is planned around it;
  its own limit is not raised while it does so, and the reservation is lifted when it is metered
  within its limit again. A vehicle plugged in since the last step has had no limit yet: what it
  is metered at beyond the tolerance is budgeted the same way. Both are reported in the step log
  (:attr:`StepRecord.events`).
- **re-sharing of undrawn capacity**: a vehicle whose measured current stays below its limit
  (tapering near full, a cold battery, a smaller on-board charger than announced) is planned at
  ``measured + reshare_headroom_a`` (never below its minimum current) from the next step on, so
  the rest goes to others; as soon as it draws within ``reshare_threshold_a`` of that reduced
  limit, the reduction is lifted and it may draw its full maximum again.
- **the planner** (``planner=``, :mod:`loadopt.planner`): what turns each step's problem into a
  schedule — the LP on HiGHS by default, warm-started from the previous step's optimal basis
  mapped by stable keys (:mod:`loadopt.solvers.warm`), or the MILP, the fast path with a policy,
  a baseline, or any callable ``Problem -> Schedule``. Every step records which path was taken
  and why (:attr:`Controller.log`).

All time arithmetic is in UTC (:func:`loadopt._base.to_utc` at every entry): Python adds and
subtracts ``ZoneInfo`` datetimes as wall-clock times, which is an hour off across a daylight-saving
change. :meth:`Controller.replan` / :meth:`Controller.on_signal` re-plan at once when a limit, a
grid signal or a session changes between steps.

Whatever the solver does, the schedule returned went through :func:`loadopt.safety.project` on the
problem compiled from the real sessions and signals: it never exceeds a limit. On solver failure or
time-out the fast path is used (status ``*_fallback``); a custom planner that raises, returns
something else than a schedule of the problem, or breaks a limit is replaced by (or projected
onto) what is safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ._base import as_model, to_utc
from .compile import compile_problem
from .errors import InputError, LoadoptError
from .horizon import Horizon
from .objective import Objective
from .planner import Planner, SolvePlanner, as_planner, describe
from .problem import Problem
from .safety import violations
from .schedule import Schedule, ScheduleStatus
from .session import Session
from .signals import GridSignal, Signals
from .site import Battery, Evse, Site

_KEEP: Any = object()  # "argument not given" (None means "no limit")


@dataclass
class StepRecord:
    """What one :meth:`Controller.step` did (for logs, tests and benchmarks)."""

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
    """A step between :meth:`Controller.begin_step` and :meth:`Controller.end_step`."""

    now: datetime  #: as given
    now_utc: datetime
    problem: Problem  #: the compiled problem the planner must solve
    events: list[str]
    t0: float  #: perf_counter at the start
    t1: float  #: perf_counter after compiling


@dataclass(frozen=True)
class RejectedReading:
    """A meter reading :meth:`Controller.meter` did not apply, and why."""

    session_id: str
    at: datetime
    energy_kwh: float | None
    current_a: tuple[float, ...] | None
    reason: str


@dataclass(frozen=True)
class Reservation:
    """Current (A per EVSE line L1, L2, L3) an EVSE may draw whatever the plan says, until
    ``until`` (``None``: until released): see :meth:`Controller.reserve`."""

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


class Controller:
    """Rolling-horizon scheduling for one site (see the module docstring).

    Parameters
    ----------
    site
        The site (its EVSEs and limits).
    step_s, n_periods
        The horizon of every step: period length (s) and number of periods; the horizon spans
        ``step_s · n_periods`` seconds.
    coarse_step_s, fine_s
        A non-uniform horizon (:meth:`loadopt.horizon.Horizon.tiered`): periods of ``step_s`` for
        the first ``fine_s`` seconds, then of ``coarse_step_s`` (aligned to UTC multiples of it)
        up to the same span. ``None`` (default): ``n_periods`` periods of ``step_s``. The plan
        beyond ``fine_s`` only has to be right in aggregate; docs/benchmarks.md measures speed and
        energy delivered both ways on the JPL week.
    align_to_grid
        Start every horizon at the last instant at or before ``now`` on a fixed UTC grid of
        ``step_s`` (epoch seconds divisible by ``step_s``) instead of at ``now``: period
        boundaries, and so OCPP ``startSchedule`` / ``startPeriod``, stay the same from tick to
        tick, so a CSMS re-sends a profile only when a limit changed (docs/ocpp.md). Period 0
        then has partly passed: limits and signals are sampled over all of it (by minimum: never
        less safe), energy planned in it is slightly optimistic until the next tick corrects it.
        Default ``False``: the horizon starts at ``now``.
    signals, objective
        Prices, base load, limits, DR events; objective weights (changeable later).
    planner
        What solves each step's problem (:func:`loadopt.planner.as_planner`): ``"lp"`` (HiGHS,
        warm-started, default), ``"milp"``, ``"auto"``, ``"fast"``, an options object of
        :mod:`loadopt.options`, or a callable ``Problem -> Schedule``.
    method
        ``planner`` by method name (``"lp"``, ``"fast"``, ``"milp"``, ``"auto"``).
    policy
        With ``method="fast"``: the fast path's policy, ``"edf"`` (earliest departure first),
        ``"llf"`` (least laxity first) or ``"fair"`` (max-min fair, the default).
    pilots
        Hand out limits in the pilots each EVSE can signal (``Evse.allowed_currents`` steps, 0
        below the minimum current; :func:`loadopt.pilots.round_to_pilots`), giving period 0 back
        what rounding takes where the limits allow. Re-sharing compares what a car draws with
        the *step* it was given, not the limit.
    time_limit_s
        The solver's time limit per step (s) for a planner given by method name (the fast path
        takes over when it runs out).
    default_dwell_h, default_energy_kwh
        What :meth:`new_session` assumes when the vehicle does not say (OCPP 1.6 transactions
        carry neither; 2.x ``ChargingNeeds`` may).
    reshare, reshare_threshold_a, reshare_headroom_a
        Re-sharing of undrawn capacity (A; module docstring), in the EVSE's steps.
    overstay_extension_h
        How long an overstaying vehicle is assumed to stay on (h).
    expected_grace_h
        An expected vehicle not plugged in this long after its arrival is forgotten (h).
    overdraw_tolerance_a
        A vehicle metered more than this above its limit (A) is budgeted at what it draws.
    meter_max_age_s, meter_max_lead_s
        A meter reading older than ``meter_max_age_s`` or more than ``meter_max_lead_s`` ahead of
        the controller's clock (the latest step; before the first one, the latest plug-in) is
        rejected (default: two steps each).
    warm, warm_min_mapped, alien_basis, cold_after_limit_cut
        Warm-start settings of the default planner (:class:`loadopt.solvers.warm.WarmStart`:
        ``enabled``, ``min_mapped``, ``alien``, ``cold_after_limit_cut``); also readable and
        settable as attributes.
    """

    def __init__(
        self,
        site: Site,
        *,
        step_s: int = 900,
        n_periods: int = 96,
        coarse_step_s: int | None = None,
        fine_s: int = 4 * 3600,
        align_to_grid: bool = False,
        signals: Signals | None = None,
        objective: Objective | None = None,
        planner: Any = None,
        method: str | None = None,
        time_limit_s: float | None = 5.0,
        default_dwell_h: float = 8.0,
        default_energy_kwh: float = 30.0,
        reshare: bool = True,
        reshare_threshold_a: float = 1.0,
        reshare_headroom_a: float = 2.0,
        overstay_extension_h: float = 1.0,
        expected_grace_h: float = 0.5,
        overdraw_tolerance_a: float = 1.0,
        meter_max_age_s: float | None = None,
        meter_max_lead_s: float | None = None,
        warm: bool = True,
        warm_min_mapped: float = 0.5,
        alien_basis: bool = False,
        cold_after_limit_cut: bool = True,
        policy: str | None = None,
        pilots: bool = True,
    ) -> None:
        if method is not None:
            if planner is not None:
                raise InputError("Controller: pass planner or method, not both")
            if method not in ("lp", "fast", "milp", "auto"):
                raise InputError(
                    f"unknown method {method!r}; use 'lp', 'fast', 'milp' or 'auto' (or planner=)"
                )
            planner = method
        if policy is not None:
            from .fast import POLICIES
            from .options import FastOptions

            if planner not in ("fast", None) or policy not in POLICIES:
                raise InputError(
                    f"policy {policy!r}: a fast-path policy ({', '.join(POLICIES)}) "
                    "with method='fast'"
                )
            planner = FastOptions(policy=policy)
        Horizon(start=datetime(2000, 1, 1, tzinfo=UTC), step_s=step_s, n_periods=n_periods)
        site = as_model(site, Site, "Controller: site")
        self.site = site
        self.step_s = int(step_s)
        self.n_periods = int(n_periods)
        self.coarse_step_s = coarse_step_s
        self.fine_s = fine_s
        if not isinstance(align_to_grid, bool):
            raise InputError(
                f"Controller: align_to_grid must be True or False, got {align_to_grid!r}"
            )
        self.align_to_grid = align_to_grid
        if coarse_step_s is not None:  # a bad combination fails here, not at the first step
            Horizon.tiered(
                datetime(2000, 1, 1, tzinfo=UTC),
                fine_step_s=self.step_s,
                fine_s=fine_s,
                coarse_step_s=coarse_step_s,
                span_s=self.step_s * self.n_periods,
            )
        self.signals = (
            Signals() if signals is None else as_model(signals, Signals, "Controller: signals")
        )
        self.objective = (
            Objective()
            if objective is None
            else as_model(objective, Objective, "Controller: objective")
        )
        self.time_limit_s = time_limit_s
        try:
            self.planner: Planner = as_planner(planner, time_limit_s=time_limit_s)
        except LoadoptError:
            raise
        except (ValueError, TypeError) as exc:
            raise InputError(f"Controller: planner {planner!r}: {exc}") from None
        if isinstance(self.planner, SolvePlanner):
            ws = self.planner.warm_start
            ws.enabled, ws.min_mapped = bool(warm), float(warm_min_mapped)
            ws.alien, ws.cold_after_limit_cut = bool(alien_basis), bool(cold_after_limit_cut)
        self.default_dwell_h = _finite_nonneg(default_dwell_h, "Controller: default_dwell_h")
        self.default_energy_kwh = _finite_nonneg(
            default_energy_kwh, "Controller: default_energy_kwh"
        )
        #: Hand out limits in the pilots the EVSEs can signal (steps, minimum current):
        #: :meth:`_in_pilot_steps`.
        self.pilots = bool(pilots)
        self.reshare = bool(reshare)
        self.reshare_threshold_a = _finite_nonneg(
            reshare_threshold_a, "Controller: reshare_threshold_a"
        )
        self.reshare_headroom_a = _finite_nonneg(
            reshare_headroom_a, "Controller: reshare_headroom_a"
        )
        self.overstay_extension_h = _finite_nonneg(
            overstay_extension_h, "Controller: overstay_extension_h"
        )
        self.expected_grace_h = _finite_nonneg(expected_grace_h, "Controller: expected_grace_h")
        self.overdraw_tolerance_a = _finite_nonneg(overdraw_tolerance_a, "overdraw_tolerance_a")
        self.meter_max_age_s = _finite_nonneg(
            2 * self.step_s if meter_max_age_s is None else meter_max_age_s, "meter_max_age_s"
        )
        self.meter_max_lead_s = _finite_nonneg(
            2 * self.step_s if meter_max_lead_s is None else meter_max_lead_s, "meter_max_lead_s"
        )
        #: Meter readings not applied (stale, from the future, out of order), newest last.
        self.rejected_readings: list[RejectedReading] = []
        #: The controller's clock (UTC): the latest step's now; before the first step, the
        #: latest plug-in. Readings are judged against it (never against a reading: a station
        #: with a clock far ahead must not drag it along).
        self._clock: datetime | None = None
        self._last_now: datetime | None = None  # the latest step's now (UTC)
        self._observed: set[str] = set()  # EVSEs reserved because a vehicle overdraws
        self._events: list[str] = []  # for the next step's record
        self.sessions: dict[str, Session] = {}
        #: Vehicles expected but not plugged in yet (:meth:`expect_session`).
        self.expected: dict[str, Session] = {}
        self._state: dict[str, _SessionState] = {}
        self._evse_ids = {e.id for e in site.evses}
        self._busy: dict[str, str] = {}  # evse id -> session id
        self._evse_index = {e.id: k for k, e in enumerate(site.evses)}
        #: EVSE id -> :class:`Reservation` (:meth:`reserve`).
        self.reservations: dict[str, Reservation] = {}
        self.log: list[StepRecord] = []
        self.last_schedule: Schedule | None = None

    @property
    def method(self) -> str:
        """The planner's method (``"lp"``, ``"milp"``, ``"auto"``, ``"fast"``) or ``"custom"``."""
        return str(getattr(self.planner, "method", "custom"))

    def _warm(self) -> Any:
        ws = getattr(self.planner, "warm_start", None)
        if ws is None:
            raise AttributeError("the controller's planner has no warm start")
        return ws

    warm = property(
        lambda self: self._warm().enabled,
        lambda self, v: setattr(self._warm(), "enabled", bool(v)),
        doc="Warm start on (the default planner's WarmStart.enabled).",
    )
    warm_min_mapped = property(
        lambda self: self._warm().min_mapped,
        lambda self, v: setattr(self._warm(), "min_mapped", float(v)),
    )
    alien_basis = property(
        lambda self: self._warm().alien, lambda self, v: setattr(self._warm(), "alien", bool(v))
    )
    cold_after_limit_cut = property(
        lambda self: self._warm().cold_after_limit_cut,
        lambda self, v: setattr(self._warm(), "cold_after_limit_cut", bool(v)),
    )

    # ------------------------------------------------------------------ events
    def new_session(
        self,
        session_id: str,
        evse: str,
        arrival: datetime,
        *,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
        **kw: Any,
    ) -> Session:
        """A :class:`Session` with the controller's defaults for what the vehicle did not say.

        Raises :class:`InputError` for a time that is not an aware datetime in the supported range
        (e.g. a StartTransaction stamped 9999-12-31) and
        :class:`~loadopt.errors.ModelError` for a field the session rejects.
        """
        arrival = to_utc(arrival, f"session {session_id!r}: arrival")
        if departure is None:
            departure = arrival + timedelta(hours=self.default_dwell_h)
        else:
            departure = to_utc(departure, f"session {session_id!r}: departure")
        return Session(
            id=session_id,
            evse=evse,
            arrival=arrival,
            departure=departure,
            energy_kwh=self.default_energy_kwh if energy_kwh is None else energy_kwh,
            **kw,
        )

    def expect_session(self, session: Session) -> None:
        """A vehicle expected to plug in later: a timetable (bus depot), a reservation (OCPP
        ReserveNow) or a forecast.

        It is planned from its arrival on, so capacity is kept for it instead of being promised
        to vehicles that could have charged earlier; it gets no limit before it plugs in.
        :meth:`start_session` with the same id makes it real (the started session's data win);
        it is forgotten if it has not started ``expected_grace_h`` after its arrival. Raises
        :class:`InputError` for an unknown EVSE, an id in use, or an overlap with another expected
        vehicle on the same EVSE.
        """
        session = as_model(session, Session, "expect_session: session")
        if session.id in self.sessions or session.id in self.expected:
            raise InputError(f"session {session.id!r} is already active or expected")
        if session.evse not in self._evse_ids:
            raise InputError(
                f"expected session {session.id!r}: unknown EVSE {session.evse!r} "
                f"on site {self.site.id!r}"
            )
        for other in self.expected.values():
            if (
                other.evse == session.evse
                and session.arrival < other.departure
                and other.arrival < session.departure
            ):
                raise InputError(
                    f"expected session {session.id!r} overlaps expected session "
                    f"{other.id!r} on EVSE {session.evse!r}"
                )
        self.expected[session.id] = session

    def cancel_expected(self, session_id: str) -> None:
        """Forget an expected vehicle (a cancelled reservation)."""
        if self.expected.pop(_check_id(session_id, "expected session id"), None) is None:
            raise InputError(f"unknown expected session {session_id!r}")

    def start_session(self, session: Session) -> None:
        """A vehicle plugged in (OCPP StartTransaction / TransactionEvent Started).

        Raises :class:`InputError` for an unknown EVSE, an EVSE that already has a session, or a
        session id already in use.
        """
        session = as_model(session, Session, "start_session: session")
        if session.id in self.sessions:
            raise InputError(f"session {session.id!r} is already active")
        if session.evse not in self._evse_ids:
            raise InputError(
                f"session {session.id!r}: unknown EVSE {session.evse!r} on site {self.site.id!r}"
            )
        other = self._busy.get(session.evse)
        if other is not None:
            raise InputError(
                f"session {session.id!r}: EVSE {session.evse!r} is busy with session {other!r}"
            )
        self.expected.pop(session.id, None)
        self.sessions[session.id] = session
        self._state[session.id] = _SessionState(
            session=session, delivered_at=session.arrival, departure=session.departure
        )
        self._busy[session.evse] = session.id
        if self._last_now is None:  # before the first step, plug-ins are the only clock
            self._tick(session.arrival)
        self._events.append(f"session {session.id!r} started on EVSE {session.evse!r}")

    def update_session(
        self,
        session_id: str,
        *,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
        max_current: float | None = None,
        min_current: float | None = None,
    ) -> None:
        """New facts about an active session from the vehicle (OCPP 2.x NotifyEVChargingNeeds /
        ISO 15118): departure (aware), energy wanted for the session (kWh), the current range
        it accepts (A). Validated like a new :class:`Session`; nothing changes on an error."""
        s = self._get(session_id)
        upd: dict[str, Any] = {}
        if departure is not None:
            upd["departure"] = to_utc(departure, f"update_session {session_id!r}: departure")
        if energy_kwh is not None:
            upd["energy_kwh"] = energy_kwh
        if max_current is not None:
            upd["max_current"] = max_current
        if min_current is not None:
            upd["min_current"] = min_current
        if not upd:
            return
        new = as_model({**s.model_dump(), **upd}, Session, f"update_session {session_id!r}")
        self.sessions[session_id] = new
        st = self._state[session_id]
        st.session = new
        if departure is not None:
            st.departure = new.departure
        self._events.append(f"session {session_id!r} updated: {sorted(upd)}")

    def stop_session(self, session_id: str, at: datetime) -> None:
        """The vehicle left or the transaction ended (OCPP StopTransaction / Ended)."""
        to_utc(at, f"stop_session {session_id!r}: at")
        s = self._get(session_id)
        del self.sessions[session_id]
        del self._state[session_id]
        self._busy.pop(s.evse, None)
        if s.evse in self._observed:  # the vehicle that overdrew has left
            self._observed.discard(s.evse)
            self.reservations.pop(s.evse, None)
        self._events.append(f"session {session_id!r} stopped")

    def _tick(self, t: datetime) -> None:
        if self._clock is None or t > self._clock:
            self._clock = t

    def meter(
        self,
        session_id: str,
        at: datetime,
        energy_kwh: float | None = None,
        current_a: float | tuple[float, float, float] | None = None,
    ) -> bool:
        """A meter reading: cumulative energy of this session (kWh) and/or current drawn (A).

        ``current_a`` is per EVSE line (one value for the lines the vehicle uses, or three, L1..L3
        of the EVSE); the largest is compared with its limit. Returns whether the reading was
        applied. Raises :class:`InputError` at the call for an unknown session, a time that is not
        an aware datetime, or a value that is not a finite number ≥ 0 (nothing is changed then).
        A reading that is out of order, stale or from the future (module docstring) is not
        applied and is recorded in :attr:`rejected_readings`.
        """
        self._get(session_id)
        st = self._state[session_id]
        at_utc = to_utc(at, f"meter reading of session {session_id!r}: at")
        e = (
            None
            if energy_kwh is None
            else _finite_nonneg(energy_kwh, f"session {session_id!r}: energy_kwh")
        )
        lines: tuple[float, ...] | None = None
        if current_a is not None:
            vals = current_a if isinstance(current_a, tuple | list) else (current_a,)
            if len(vals) not in (1, 3):
                raise InputError(
                    f"session {session_id!r}: current_a needs 1 or 3 values, got {len(vals)}"
                )
            lines = tuple(_finite_nonneg(v, f"session {session_id!r}: current_a") for v in vals)
        why = self._reading_fault(st, at_utc, e, lines)
        if why is not None:
            self.rejected_readings.append(RejectedReading(session_id, at_utc, e, lines, why))
            del self.rejected_readings[:-1000]
            self._events.append(
                f"meter reading of session {session_id!r} at {at_utc.isoformat()} rejected: {why}"
            )
            return False
        if e is not None:
            st.delivered_kwh = e
            st.delivered_at = at_utc
            st.read_at, st.read_kwh = at_utc, e
        if lines is not None:
            ev = self.site.evse(st.session.evse)
            n_ph = min(ev.phases, st.session.phases)
            if len(lines) == 1:
                per = tuple(lines[0] if j < n_ph else 0.0 for j in range(3))
            else:
                per = lines
            st.measured_a = max(lines)
            st.measured_lines_a = per  # type: ignore[assignment]
            st.measured_at = at_utc
        return True

    def _reading_fault(
        self, st: _SessionState, at: datetime, e: float | None, lines: tuple[float, ...] | None
    ) -> str | None:
        """Why a reading must not be applied (``None``: it may)."""
        if self._clock is not None:
            lead = (at - self._clock).total_seconds()
            if lead > self.meter_max_lead_s:
                return (
                    f"from the future: {lead:.0f} s ahead of the controller's clock "
                    f"{self._clock.isoformat()} (more than {self.meter_max_lead_s:.0f} s)"
                )
            if -lead > self.meter_max_age_s:
                return (
                    f"stale: {-lead:.0f} s older than the controller's clock "
                    f"{self._clock.isoformat()} (more than {self.meter_max_age_s:.0f} s)"
                )
        if at < st.session.arrival:
            return f"before the session's arrival {st.session.arrival.isoformat()}"
        if e is not None and st.read_at is not None:
            if at < st.read_at:
                return f"out of order: older than the last energy reading ({st.read_at})"
            if st.read_kwh is not None and e < st.read_kwh - 1e-9:
                return (
                    f"cumulative energy {e} kWh below the last reading {st.read_kwh} kWh "
                    "(a meter reset or a reading out of order)"
                )
        if lines is not None and st.measured_at is not None and at < st.measured_at:
            return f"out of order: older than the last current reading ({st.measured_at})"
        return None

    def reserve(
        self,
        evse_id: str,
        current_a: float | tuple[float, float, float],
        *,
        until: datetime | None = None,
        reason: str = "",
    ) -> None:
        """Budget EVSE ``evse_id`` at ``current_a`` (A, one value for every EVSE line or three)
        from now until ``until`` (aware; ``None``: until :meth:`release`), whatever the plan.

        For what the plan cannot control: a station that has not accepted a lower limit (it may
        draw what it holds), a silent or unknown one (its hardware maximum), a vehicle drawing
        above its limit. Each step counts it as a fixed load on every limit above the EVSE
        (any overlap with a period counts the whole period) and plans everyone else around it;
        a session on the EVSE is planned within the reservation there. Replaces the EVSE's
        previous reservation.
        """
        if _check_id(evse_id, "reserve: EVSE id") not in self._evse_index:
            raise InputError(f"reserve: unknown EVSE {evse_id!r} on site {self.site.id!r}")
        vals = current_a if isinstance(current_a, tuple | list) else (current_a,) * 3
        if len(vals) != 3:
            raise InputError(
                f"reserve EVSE {evse_id!r}: current_a needs 1 or 3 values, got {len(vals)}"
            )
        amps = tuple(_finite_nonneg(v, f"reserve EVSE {evse_id!r}: current_a") for v in vals)
        if until is not None:
            until = to_utc(until, f"reserve EVSE {evse_id!r}: until")
        self.reservations[evse_id] = Reservation(amps, until, reason)  # type: ignore[arg-type]
        self._observed.discard(evse_id)  # set by hand: the controller does not lift it

    def release(self, evse_id: str) -> None:
        """End the reservation of ``evse_id`` (no-op when it has none)."""
        self.reservations.pop(_check_id(evse_id, "release: EVSE id"), None)
        self._observed.discard(evse_id)

    def reserved_array(self, horizon: Horizon) -> np.ndarray | None:
        """``(E, 3, T)`` A of the reservations over ``horizon`` (``None`` when there are none);
        expired reservations are dropped."""
        now = horizon.start_utc
        for eid in [
            k for k, r in self.reservations.items() if r.until is not None and r.until <= now
        ]:
            del self.reservations[eid]
        if not self.reservations:
            return None
        T = horizon.n_periods
        out = np.zeros((len(self.site.evses), 3, T))
        for eid, r in self.reservations.items():
            n = (
                T
                if r.until is None
                else int(
                    np.searchsorted(
                        horizon.period_bounds_s()[:-1], (r.until - now).total_seconds(), side="left"
                    )
                )
            )
            out[self._evse_index[eid], :, :n] = np.asarray(r.current_a)[:, None]
        return out

    def set_signals(self, signals: Signals) -> None:
        """New prices, base load, PV, grid limit or demand-response events from now on."""
        if not isinstance(signals, Signals):
            raise InputError(f"set_signals needs a Signals object, got {type(signals).__name__}")
        self.signals = signals
        self._events.append("signals replaced")

    def set_node_limit(
        self,
        node_id: str,
        *,
        max_current: Any = _KEEP,
        max_power_kw: Any = _KEEP,
        primary_max_current: Any = _KEEP,
    ) -> None:
        """Change a node's rating from the next step on, without rebuilding the site or the
        controller (a grid operator lowering a feeder, a transformer derated on a hot day).

        ``max_current`` (A, one value or three for R, S, T; ``None`` = no limit),
        ``max_power_kw`` (kW or ``None``), ``primary_max_current`` (A, a delta/wye transformer's
        primary lines). Arguments not given keep their value. Raises :class:`InputError` for an
        unknown node or a bad value (and changes nothing).
        """
        from .site import DeltaWye, Node

        try:
            k = next(i for i, n in enumerate(self.site.nodes) if n.id == node_id)
        except StopIteration:
            raise InputError(
                f"set_node_limit: unknown node {node_id!r} on site {self.site.id!r}"
            ) from None
        node = self.site.nodes[k]
        upd = node.model_dump()
        if max_current is not _KEEP:
            upd["max_current"] = max_current
        if max_power_kw is not _KEEP:
            upd["max_power_kw"] = max_power_kw
        if primary_max_current is not _KEEP:
            if node.delta_wye is None:
                raise InputError(f"set_node_limit: node {node_id!r} is not a delta/wye transformer")
            upd["delta_wye"] = DeltaWye(
                turns_ratio=node.delta_wye.turns_ratio, primary_max_current=primary_max_current
            )
        try:
            new = Node.model_validate(upd)
        except ValueError as exc:
            raise InputError(f"set_node_limit: node {node_id!r}: {exc}") from None
        nodes = (*self.site.nodes[:k], new, *self.site.nodes[k + 1 :])
        # the tree, the EVSEs and the ids are unchanged: no need to validate the site again
        self.site = self.site.model_copy(update={"nodes": nodes})
        self._events.append(f"node {node_id!r} limits changed")

    def set_battery_soc(self, battery_id: str, soc: float) -> None:
        """A stationary battery's metered state of charge (fraction of its capacity, [0, 1]):
        the next plan starts from it. Raises :class:`InputError` for an unknown battery or a value
        that is not a finite number in [0, 1] (and changes nothing)."""
        try:
            k = next(i for i, b in enumerate(self.site.batteries) if b.id == battery_id)
        except StopIteration:
            raise InputError(
                f"set_battery_soc: unknown battery {battery_id!r} on site {self.site.id!r}"
            ) from None
        try:
            new = Battery.model_validate({**self.site.batteries[k].model_dump(), "soc": soc})
        except ValueError as exc:
            raise InputError(f"set_battery_soc: battery {battery_id!r}: {exc}") from None
        if not math.isfinite(new.soc):
            raise InputError(f"set_battery_soc: battery {battery_id!r}: soc {soc} is not finite")
        bats = (*self.site.batteries[:k], new, *self.site.batteries[k + 1 :])
        self.site = self.site.model_copy(update={"batteries": bats})

    def on_signal(
        self, signal: Signals | GridSignal | Iterable[GridSignal], now: datetime
    ) -> Schedule:
        """A limit or grid signal changed between steps: apply it and re-plan at once.

        ``signal`` is new :class:`Signals` (replacing the old), or one or more
        :class:`GridSignal` (added; one with the id of a signal already held replaces it).
        Returns the new schedule (act on its period 0 now). Raises :class:`InputError` for
        anything else.
        """
        if isinstance(signal, Signals):
            self.set_signals(signal)
            return self.replan(now, "new signals")
        items = [signal] if isinstance(signal, GridSignal) else signal
        if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
            raise InputError(
                f"on_signal needs Signals or GridSignal(s), got {type(signal).__name__}"
            )
        items = list(items)
        for k, g in enumerate(items):
            if not isinstance(g, GridSignal):
                raise InputError(f"on_signal: item {k} is a {type(g).__name__}, not a GridSignal")
        new = {g.id: g for g in items}
        keep = tuple(g for g in self.signals.grid_signals if g.id not in new)
        self.set_signals(
            Signals.model_validate(
                {**dict(self.signals), "grid_signals": keep + tuple(new.values())}
            )
        )
        return self.replan(now, f"grid signal(s) {sorted(new)}")

    def replan(self, now: datetime, why: str = "") -> Schedule:
        """Re-plan now (a limit, a grid signal, a session or a reservation changed since the last
        step): the same as :meth:`step`, logged as a re-plan with ``why`` and every change seen
        since the last step."""
        self._events.insert(0, f"replan{': ' + why if why else ''}")
        return self.step(now)

    def _get(self, session_id: str) -> Session:
        _check_id(session_id, "session id")
        try:
            return self.sessions[session_id]
        except KeyError:
            raise InputError(
                f"unknown session {session_id!r} (not started or already stopped)"
            ) from None

    # ------------------------------------------------------------------ the step
    def horizon(self, now: datetime) -> Horizon:
        """The horizon of a step at ``now`` (see ``step_s``, ``n_periods``, ``coarse_step_s``,
        ``align_to_grid``)."""
        if self.align_to_grid:
            now_utc = to_utc(now, "Controller.horizon: now")
            off_s = now_utc.timestamp() % self.step_s  # in UTC: never a wall-clock shift
            now = (now_utc - timedelta(seconds=off_s)).astimezone(now.tzinfo)
        if self.coarse_step_s is not None:
            return Horizon.tiered(
                now,
                fine_step_s=self.step_s,
                fine_s=self.fine_s,
                coarse_step_s=self.coarse_step_s,
                span_s=self.step_s * self.n_periods,
            )
        return Horizon(start=now, step_s=self.step_s, n_periods=self.n_periods)

    def planned_sessions(self, now: datetime) -> list[Session]:
        """The active sessions as the next problem sees them: energy still wanted, departure
        estimate, re-sharing cap."""
        out = []
        for sid, st in self._state.items():
            s = st.session
            delivered = self._delivered_estimate(st, now)
            remaining = max(s.energy_kwh - delivered, 0.0)
            v2x_upd: dict[str, Any] = {}
            if s.v2x is not None:
                # energy in the battery since plug-in, metered charge in, planned discharge out
                # (both upper bounds on what moved: the floor below is never too low)
                v = s.v2x
                out_kwh = self._discharged_estimate(st, now)
                net = v.charge_efficiency * delivered - out_kwh / v.discharge_efficiency
                lo, hi = v.min_v2x_energy_kwh - net, v.max_v2x_energy_kwh - net
                remaining = min(max(s.energy_kwh - net, 0.0), max(hi, 0.0))
                v2x_upd["v2x"] = v.model_copy(
                    update={"min_v2x_energy_kwh": round(lo, 6), "max_v2x_energy_kwh": round(hi, 6)}
                )
            dep = st.departure or s.departure
            if dep <= now:  # still plugged in after its estimated departure
                dep = now + timedelta(hours=self.overstay_extension_h)
                st.departure = dep
            upd: dict[str, Any] = {"energy_kwh": round(remaining, 6), "departure": dep, **v2x_upd}
            if s.arrival > now:
                upd["arrival"] = now
            cap = st.cap_a
            if st.over_limit_a is not None:  # not raised while it draws above what it is given
                cap = st.over_limit_a if cap is None else min(cap, st.over_limit_a)
            if cap is not None:
                upd["max_current"] = min(cap, s.max_current)
                if s.min_current is not None:
                    upd["min_current"] = min(s.min_current, upd["max_current"])
            out.append(s.model_copy(update=upd))
            del sid
        out.extend(self._expected_sessions(now))
        return out

    def _expected_sessions(self, now: datetime) -> list[Session]:
        """Expected vehicles as the next problem sees them: from ``max(arrival, now)`` and after
        the vehicle now on their EVSE is expected to leave; the overdue ones are forgotten."""
        grace = timedelta(hours=self.expected_grace_h)
        for sid in [k for k, s in self.expected.items() if s.arrival + grace < now]:
            del self.expected[sid]
        out = []
        for s in self.expected.values():
            arrival = max(s.arrival, now)
            busy = self._busy.get(s.evse)
            if busy is not None:
                st = self._state[busy]
                arrival = max(arrival, st.departure or st.session.departure)
            if arrival < s.departure:
                out.append(s.model_copy(update={"arrival": arrival}))
        return out

    def _delivered_estimate(self, st: _SessionState, now: datetime) -> float:
        """Cumulative kWh at ``now``: last reading + what the vehicle drew since (estimated)."""
        since = st.delivered_at or st.session.arrival
        dt_h = max((now - since).total_seconds(), 0.0) / 3600.0  # a clock going back adds 0
        if dt_h <= 0:
            return st.delivered_kwh
        rate_a = st.measured_a if st.measured_a is not None else (st.last_limit_a or 0.0)
        if st.last_limit_a is not None:
            rate_a = min(rate_a, st.last_limit_a)
        ev = self.site.evse(st.session.evse)
        kw = rate_a * ev.voltage_v * min(ev.phases, st.session.phases) / 1000.0
        return st.delivered_kwh + kw * dt_h

    def _discharged_estimate(self, st: _SessionState, now: datetime) -> float:
        """Grid kWh a V2G vehicle may have given back by ``now``: what it was told to discharge,
        for as long as it was told (no meter subtracts from it: an upper bound)."""
        if st.discharge_at is None or st.last_discharge_a <= 0:
            return st.discharged_kwh
        dt_h = max((now - st.discharge_at).total_seconds(), 0.0) / 3600.0
        ev = self.site.evse(st.session.evse)
        kw = st.last_discharge_a * ev.voltage_v * min(ev.phases, st.session.phases) / 1000.0
        return st.discharged_kwh + kw * dt_h

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

    def step(self, now: datetime) -> Schedule:
        """The schedule for ``[now, now + n_periods · step_s)``; act on its period 0.

        ``now`` must be an aware datetime (:class:`InputError` otherwise, and nothing changes).
        """
        pending = self.begin_step(now)
        sched, mode, reason, solve_s = self._plan(pending.problem)
        return self.end_step(pending, sched, mode, reason, solve_s)

    def begin_step(self, now: datetime) -> PendingStep:
        """The first half of :meth:`step`: the state brought up to ``now`` and the problem
        compiled. For a planner that runs elsewhere (:mod:`loadopt.fleet` runs it on the site's
        worker): hand its result to :meth:`end_step`."""
        now_utc = to_utc(now, "Controller.step: now")
        t0 = time.perf_counter()
        events, self._events = self._events, []
        if self._last_now is not None and now_utc < self._last_now:
            events.append(
                f"clock went backwards by "
                f"{(self._last_now - now_utc).total_seconds():.0f} s: energy estimates "
                "are not counted twice"
            )
        self._update_caps()
        events.extend(self._observe())
        planned = self.planned_sessions(now_utc)
        horizon = self.horizon(now)
        problem = compile_problem(
            self.site,
            planned,
            horizon,
            self.signals,
            self.objective,
            reserved_a=self.reserved_array(horizon),
        )
        return PendingStep(now, now_utc, problem, events, t0, time.perf_counter())

    def end_step(
        self, pending: PendingStep, sched: Schedule, mode: str, reason: str, solve_s: float
    ) -> Schedule:
        """The second half of :meth:`step`: ``sched`` (a safe schedule of ``pending.problem``)
        folded into the state and logged; returns it."""
        now, now_utc, problem, events = (
            pending.now,
            pending.now_utc,
            pending.problem,
            pending.events,
        )
        if self.pilots and not getattr(self.planner, "simulate_unsafe", False):
            sched = self._in_pilot_steps(problem, sched)
        self._after_step(now_utc, problem, sched)
        self._last_now = now_utc if self._last_now is None else max(self._last_now, now_utc)
        self._tick(now_utc)
        if events and events[0].startswith("replan"):
            reason = f"{events[0]}; {reason}"
        self.log.append(
            StepRecord(
                now,
                mode,
                reason,
                sched.status.value,
                sched.method,
                problem.n_sessions,
                pending.t1 - pending.t0,
                solve_s,
                time.perf_counter() - pending.t0,
                events,
            )
        )
        return sched

    def _observe(self) -> list[str]:
        """Observed reality: budget a vehicle metered above its limit at what it draws (a
        reservation on its EVSE lines, until it complies); lift that when it complies."""
        out = []
        for sid, st in self._state.items():
            lines = st.measured_lines_a
            if lines is None or st.measured_at is None:
                continue
            if st.limit_at is not None and st.measured_at <= st.limit_at:
                continue  # no reading since the last limit was handed out
            # a vehicle that has had no limit from us yet draws what its station allows: all of
            # it is beyond the plan
            lim = 0.0 if st.last_limit_a is None else st.last_limit_a
            evse = st.session.evse
            if max(lines) > lim + self.overdraw_tolerance_a:
                self.reservations[evse] = Reservation(
                    tuple(lines),  # type: ignore[arg-type]
                    None,
                    f"session {sid!r} metered at {max(lines):.1f} A above its limit {lim:.1f} A",
                )
                self._observed.add(evse)
                if st.over_limit_a is None and st.last_limit_a is not None:
                    st.over_limit_a = lim
                out.append(
                    f"session {sid!r} on EVSE {evse!r} draws {max(lines):.1f} A above "
                    f"its limit {lim:.1f} A: budgeted at what it draws"
                )
            elif evse in self._observed:
                self._observed.discard(evse)
                self.reservations.pop(evse, None)
                st.over_limit_a = None
                out.append(
                    f"session {sid!r} on EVSE {evse!r} complies again "
                    f"({max(lines):.1f} A within {lim:.1f} A): reservation lifted"
                )
        return out

    def _plan(self, problem: Problem) -> tuple[Schedule, str, str, float]:
        """Run the planner; a custom planner's result is checked (never trusted) unless it says
        it is a simulation baseline that must show what no control causes
        (``simulate_unsafe = True``)."""
        planner = self.planner
        if isinstance(planner, SolvePlanner):  # always through solve() and project()
            sched = planner(problem)
            return (sched, *describe(planner, sched))
        try:
            sched = planner(problem)
            if not isinstance(sched, Schedule) or sched.current.shape != (
                problem.n_sessions,
                problem.n_periods,
            ):
                raise InputError(
                    f"planner {planner!r} returned {type(sched).__name__}, not a "
                    "Schedule of the problem it was given"
                )
        except Exception as exc:  # one bad planner call must not stop the control loop
            from .solve import solve

            fb = solve(problem, "fast")
            fb = replace(
                fb,
                status=ScheduleStatus.SOLVER_FAILED_FALLBACK,
                method="planner->fast",
                message=f"planner failed: {exc!r}",
            )
            return fb, "fallback", f"planner failed ({exc!r}): fast path", fb.solve_time_s
        mode, reason, solve_s = describe(planner, sched)
        from .safety import project, violations

        if sched.problem is not problem and sched.n_phases is None:
            bad = bool(
                violations(
                    problem, sched.current, 1, discharge=sched.discharge, battery_a=sched.battery_a
                )
            )
        else:
            bad = sched.problem.n_vars != problem.n_vars or bool(sched.violations(1))
        if bad and not getattr(planner, "simulate_unsafe", False):
            cur = np.nan_to_num(np.asarray(sched.current, dtype=np.float64))
            extra: dict[str, Any] = {}
            if problem.storage is not None:  # both directions, energy states
                from .safety import project_storage

                bat = (
                    None
                    if sched.battery_a is None
                    else np.nan_to_num(np.asarray(sched.battery_a, dtype=np.float64))
                )
                cur, dis, b = project_storage(
                    problem,
                    cur,
                    None if sched.discharge is None else np.nan_to_num(sched.discharge),
                    None if bat is None else np.maximum(bat, 0.0),
                    None if bat is None else np.maximum(-bat, 0.0),
                )
                extra = dict(discharge=dis, battery_a=b)
            else:
                cur = project(problem, cur)
                extra = dict(discharge=None, battery_a=None)
            sched = replace(
                sched,
                problem=problem,
                current=cur,
                **extra,
                message=(sched.message + "; " if sched.message else "")
                + "projected onto the limits",
            )
            reason += "; projected onto the limits"
        return sched, mode, reason, solve_s

    def _in_pilot_steps(self, problem: Problem, sched: Schedule) -> Schedule:
        """The schedule in the pilots the EVSEs can signal (:func:`loadopt.pilots.round_to_pilots`:
        steps and minimum currents; what rounding takes from period 0 is given back where the
        limits allow). Checked with the schedule's battery and discharge flows: should the result
        break a limit, the rounded-down schedule (safe whenever the plan was) is used."""
        from .pilots import down_to_pilot, pilot_grid, round_to_pilots

        if sched.n_phases is not None or problem.n_sessions == 0:
            return sched
        cur = round_to_pilots(problem, sched.current)
        # round_to_pilots sees session rows only: check against battery and V2G flows too
        if violations(problem, cur, 1, discharge=sched.discharge, battery_a=sched.battery_a):
            grid, stepped = pilot_grid(problem)
            cur = down_to_pilot(sched.current, grid, stepped, problem.session_min_current)
            cur = np.floor(cur * 10.0 + 1e-6) / 10.0
        return replace(sched, current=cur)

    def _after_step(self, now: datetime, problem: Problem, sched: Schedule) -> None:
        first = sched.current[:, 0] if problem.n_periods else np.zeros(problem.n_sessions)
        first_d = (
            sched.discharge[:, 0]
            if sched.discharge is not None and problem.n_periods
            else np.zeros(problem.n_sessions)
        )
        for i, sid in enumerate(problem.session_ids):
            st = self._state.get(sid)
            if st is None:  # an expected vehicle, not plugged in yet
                continue
            # fold the estimate up to now into the state, so that the next estimate starts here
            # (never backwards: a clock going back must not count the same interval twice)
            if st.delivered_at is None or now > st.delivered_at:
                st.delivered_kwh = self._delivered_estimate(st, now)
                st.delivered_at = now
            st.last_limit_a = float(first[i])
            st.limit_at = now
            if st.discharge_at is None or now > st.discharge_at:
                st.discharged_kwh = self._discharged_estimate(st, now)
                st.discharge_at = now
            st.last_discharge_a = float(first_d[i])
        self.last_schedule = sched


def _check_id(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise InputError(f"{what} must be a string, got {type(v).__name__} {v!r:.60}")
    return v


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


def _finite_nonneg(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(f) or f < 0:
        raise InputError(f"{what} must be finite and >= 0, got {v!r}")
    return f
