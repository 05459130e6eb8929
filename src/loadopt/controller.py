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

Whatever the solver does, the schedule returned went through :func:`loadopt.safety.project` on the
problem compiled from the real sessions and signals: it never exceeds a limit. On solver failure or
time-out the fast path is used (status ``*_fallback``); a custom planner that raises, returns
something else than a schedule of the problem, or breaks a limit is replaced by (or projected
onto) what is safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .compile import compile_problem
from .errors import InputError
from .horizon import Horizon
from .objective import Objective
from .planner import Planner, SolvePlanner, as_planner, describe
from .problem import Problem
from .schedule import Schedule, ScheduleStatus
from .session import Session
from .signals import Signals
from .site import Site


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
    measured_at: datetime | None = None
    last_limit_a: float | None = None  #: limit of period 0 handed out at the last step
    limit_at: datetime | None = None  #: when it was handed out
    cap_a: float | None = None  #: re-sharing cap (A), None = none
    departure: datetime | None = None  #: current departure estimate


class Controller:
    """Rolling-horizon scheduling for one site (see the module docstring).

    Parameters
    ----------
    site
        The site (its EVSEs and limits).
    step_s, n_periods
        The horizon of every step: period length (s) and number of periods.
    signals, objective
        Prices, base load, limits, DR events; objective weights (changeable later).
    planner
        What solves each step's problem (:func:`loadopt.planner.as_planner`): ``"lp"`` (HiGHS,
        warm-started, default), ``"milp"``, ``"auto"``, ``"fast"``, an options object of
        :mod:`loadopt.options`, or a callable ``Problem -> Schedule``.
    method
        The 0.1 name of ``planner`` when it is a method name (``"lp"`` or ``"fast"``).
    time_limit_s
        The solver's time limit per step (s) for a planner given by method name (the fast path
        takes over when it runs out).
    default_dwell_h, default_energy_kwh
        What :meth:`new_session` assumes when the vehicle does not say (OCPP 1.6 transactions
        carry neither; 2.x ``ChargingNeeds`` may).
    reshare, reshare_threshold_a, reshare_headroom_a
        Re-sharing of undrawn capacity (A; module docstring).
    overstay_extension_h
        How long an overstaying vehicle is assumed to stay on (h).
    expected_grace_h
        An expected vehicle not plugged in this long after its arrival is forgotten (h).
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
        warm: bool = True,
        warm_min_mapped: float = 0.5,
        alien_basis: bool = False,
        cold_after_limit_cut: bool = True,
    ) -> None:
        if method is not None:
            if planner is not None:
                raise InputError("Controller: pass planner or method, not both")
            if method not in ("lp", "fast"):
                raise InputError(f"unknown method {method!r}; use 'lp' or 'fast' (or planner=)")
            planner = method
        Horizon(start=datetime(2000, 1, 1).astimezone(), step_s=step_s, n_periods=n_periods)
        self.site = site
        self.step_s = int(step_s)
        self.n_periods = int(n_periods)
        self.signals = signals or Signals()
        self.objective = objective or Objective()
        self.time_limit_s = time_limit_s
        self.planner: Planner = as_planner(planner, time_limit_s=time_limit_s)
        if isinstance(self.planner, SolvePlanner):
            ws = self.planner.warm_start
            ws.enabled, ws.min_mapped = bool(warm), float(warm_min_mapped)
            ws.alien, ws.cold_after_limit_cut = bool(alien_basis), bool(cold_after_limit_cut)
        self.default_dwell_h = float(default_dwell_h)
        self.default_energy_kwh = float(default_energy_kwh)
        self.reshare = bool(reshare)
        self.reshare_threshold_a = float(reshare_threshold_a)
        self.reshare_headroom_a = float(reshare_headroom_a)
        self.overstay_extension_h = float(overstay_extension_h)
        self.expected_grace_h = float(expected_grace_h)
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

    warm = property(lambda self: self._warm().enabled,
                    lambda self, v: setattr(self._warm(), "enabled", bool(v)),
                    doc="Warm start on (the default planner's WarmStart.enabled).")
    warm_min_mapped = property(lambda self: self._warm().min_mapped,
                               lambda self, v: setattr(self._warm(), "min_mapped", float(v)))
    alien_basis = property(lambda self: self._warm().alien,
                           lambda self, v: setattr(self._warm(), "alien", bool(v)))
    cold_after_limit_cut = property(
        lambda self: self._warm().cold_after_limit_cut,
        lambda self, v: setattr(self._warm(), "cold_after_limit_cut", bool(v)))

    # ------------------------------------------------------------------ events
    def new_session(self, session_id: str, evse: str, arrival: datetime, *,
                    departure: datetime | None = None, energy_kwh: float | None = None,
                    **kw: Any) -> Session:
        """A :class:`Session` with the controller's defaults for what the vehicle did not say."""
        return Session(
            id=session_id, evse=evse, arrival=arrival,
            departure=departure or arrival + timedelta(hours=self.default_dwell_h),
            energy_kwh=self.default_energy_kwh if energy_kwh is None else energy_kwh, **kw)

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
        if session.id in self.sessions or session.id in self.expected:
            raise InputError(f"session {session.id!r} is already active or expected")
        if session.evse not in self._evse_ids:
            raise InputError(f"expected session {session.id!r}: unknown EVSE {session.evse!r} "
                             f"on site {self.site.id!r}")
        for other in self.expected.values():
            if (other.evse == session.evse and session.arrival < other.departure
                    and other.arrival < session.departure):
                raise InputError(f"expected session {session.id!r} overlaps expected session "
                                 f"{other.id!r} on EVSE {session.evse!r}")
        self.expected[session.id] = session

    def cancel_expected(self, session_id: str) -> None:
        """Forget an expected vehicle (a cancelled reservation)."""
        if self.expected.pop(session_id, None) is None:
            raise InputError(f"unknown expected session {session_id!r}")

    def start_session(self, session: Session) -> None:
        """A vehicle plugged in (OCPP StartTransaction / TransactionEvent Started).

        Raises :class:`InputError` for an unknown EVSE, an EVSE that already has a session, or a
        session id already in use.
        """
        if session.id in self.sessions:
            raise InputError(f"session {session.id!r} is already active")
        if session.evse not in self._evse_ids:
            raise InputError(f"session {session.id!r}: unknown EVSE {session.evse!r} on site "
                             f"{self.site.id!r}")
        other = self._busy.get(session.evse)
        if other is not None:
            raise InputError(f"session {session.id!r}: EVSE {session.evse!r} is busy with "
                             f"session {other!r}")
        self.expected.pop(session.id, None)
        self.sessions[session.id] = session
        self._state[session.id] = _SessionState(session=session, delivered_at=session.arrival,
                                                departure=session.departure)
        self._busy[session.evse] = session.id

    def stop_session(self, session_id: str, at: datetime) -> None:
        """The vehicle left or the transaction ended (OCPP StopTransaction / Ended)."""
        s = self._get(session_id)
        del self.sessions[session_id]
        del self._state[session_id]
        self._busy.pop(s.evse, None)

    def meter(self, session_id: str, at: datetime, energy_kwh: float | None = None,
              current_a: float | tuple[float, float, float] | None = None) -> None:
        """A meter reading: cumulative energy of this session (kWh) and/or current drawn (A).

        ``current_a`` is per phase (one value or three, L1..L3 of the EVSE); the largest is used.
        """
        self._get(session_id)
        st = self._state[session_id]
        if energy_kwh is not None:
            e = _finite_nonneg(energy_kwh, f"session {session_id!r}: energy_kwh")
            st.delivered_kwh = e
            st.delivered_at = at
        if current_a is not None:
            vals = current_a if isinstance(current_a, tuple | list) else (current_a,)
            if len(vals) not in (1, 3):
                raise InputError(f"session {session_id!r}: current_a needs 1 or 3 values, got "
                                 f"{len(vals)}")
            cur = max(_finite_nonneg(v, f"session {session_id!r}: current_a") for v in vals)
            st.measured_a = cur
            st.measured_at = at

    def reserve(self, evse_id: str, current_a: float | tuple[float, float, float], *,
                until: datetime | None = None, reason: str = "") -> None:
        """Budget EVSE ``evse_id`` at ``current_a`` (A, one value for every EVSE line or three)
        from now until ``until`` (aware; ``None``: until :meth:`release`), whatever the plan.

        For what the plan cannot control: a station that has not accepted a lower limit (it may
        draw what it holds), a silent or unknown one (its hardware maximum), a vehicle drawing
        above its limit. Each step counts it as a fixed load on every limit above the EVSE
        (any overlap with a period counts the whole period) and plans everyone else around it;
        a session on the EVSE is planned within the reservation there. Replaces the EVSE's
        previous reservation.
        """
        if evse_id not in self._evse_index:
            raise InputError(f"reserve: unknown EVSE {evse_id!r} on site {self.site.id!r}")
        vals = current_a if isinstance(current_a, tuple | list) else (current_a,) * 3
        if len(vals) != 3:
            raise InputError(f"reserve EVSE {evse_id!r}: current_a needs 1 or 3 values, got "
                             f"{len(vals)}")
        amps = tuple(_finite_nonneg(v, f"reserve EVSE {evse_id!r}: current_a") for v in vals)
        if until is not None and (not isinstance(until, datetime) or until.tzinfo is None):
            raise InputError(f"reserve EVSE {evse_id!r}: until must be a timezone-aware "
                             f"datetime, got {until!r}")
        self.reservations[evse_id] = Reservation(amps, until, reason)  # type: ignore[arg-type]

    def release(self, evse_id: str) -> None:
        """End the reservation of ``evse_id`` (no-op when it has none)."""
        self.reservations.pop(evse_id, None)

    def reserved_array(self, horizon: Horizon) -> np.ndarray | None:
        """``(E, 3, T)`` A of the reservations over ``horizon`` (``None`` when there are none);
        expired reservations are dropped."""
        now = horizon.start
        for eid in [k for k, r in self.reservations.items()
                    if r.until is not None and r.until <= now]:
            del self.reservations[eid]
        if not self.reservations:
            return None
        T = horizon.n_periods
        out = np.zeros((len(self.site.evses), 3, T))
        for eid, r in self.reservations.items():
            n = T if r.until is None else min(
                T, int(np.ceil((r.until - now).total_seconds() / horizon.step_s)))
            out[self._evse_index[eid], :, :n] = np.asarray(r.current_a)[:, None]
        return out

    def set_signals(self, signals: Signals) -> None:
        """New prices, base load, PV, grid limit or demand-response events from now on."""
        if not isinstance(signals, Signals):
            raise InputError(f"set_signals needs a Signals object, got {type(signals).__name__}")
        self.signals = signals

    def _get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise InputError(f"unknown session {session_id!r} (not started or already "
                             "stopped)") from None

    # ------------------------------------------------------------------ the step
    def horizon(self, now: datetime) -> Horizon:
        return Horizon(start=now, step_s=self.step_s, n_periods=self.n_periods)

    def planned_sessions(self, now: datetime) -> list[Session]:
        """The active sessions as the next problem sees them: energy still wanted, departure
        estimate, re-sharing cap."""
        out = []
        for sid, st in self._state.items():
            s = st.session
            remaining = max(s.energy_kwh - self._delivered_estimate(st, now), 0.0)
            dep = st.departure or s.departure
            if dep <= now:  # still plugged in after its estimated departure
                dep = now + timedelta(hours=self.overstay_extension_h)
                st.departure = dep
            upd: dict[str, Any] = {"energy_kwh": round(remaining, 6), "departure": dep}
            if s.arrival > now:
                upd["arrival"] = now
            if st.cap_a is not None:
                upd["max_current"] = min(st.cap_a, s.max_current)
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
        dt_h = max((now - since).total_seconds(), 0.0) / 3600.0
        if dt_h <= 0:
            return st.delivered_kwh
        rate_a = st.measured_a if st.measured_a is not None else (st.last_limit_a or 0.0)
        if st.last_limit_a is not None:
            rate_a = min(rate_a, st.last_limit_a)
        ev = self.site.evse(st.session.evse)
        kw = rate_a * ev.voltage_v * min(ev.phases, st.session.phases) / 1000.0
        return st.delivered_kwh + kw * dt_h

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
            if st.cap_a is not None and got >= st.cap_a - self.reshare_threshold_a:
                st.cap_a = None  # it draws what it is given: give it its maximum again
            elif lim >= min_a and got < lim - self.reshare_threshold_a:
                st.cap_a = max(got + self.reshare_headroom_a, min_a)

    def step(self, now: datetime) -> Schedule:
        """The schedule for ``[now, now + n_periods · step_s)``; act on its period 0."""
        if now.tzinfo is None:
            raise InputError("Controller.step: now must be timezone-aware")
        t0 = time.perf_counter()
        self._update_caps()
        planned = self.planned_sessions(now)
        horizon = self.horizon(now)
        problem = compile_problem(self.site, planned, horizon, self.signals, self.objective,
                                  reserved_a=self.reserved_array(horizon))
        t1 = time.perf_counter()
        sched, mode, reason, solve_s = self._plan(problem)
        self._after_step(now, problem, sched)
        self.log.append(StepRecord(now, mode, reason, sched.status.value, sched.method,
                                   problem.n_sessions, t1 - t0, solve_s,
                                   time.perf_counter() - t0))
        return sched

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
                    problem.n_sessions, problem.n_periods):
                raise InputError(f"planner {planner!r} returned {type(sched).__name__}, not a "
                                 "Schedule of the problem it was given")
        except Exception as exc:  # one bad planner call must not stop the control loop
            from .solve import solve

            fb = solve(problem, "fast")
            fb = replace(fb, status=ScheduleStatus.SOLVER_FAILED_FALLBACK, method="planner->fast",
                         message=f"planner failed: {exc!r}")
            return fb, "fallback", f"planner failed ({exc!r}): fast path", fb.solve_time_s
        mode, reason, solve_s = describe(planner, sched)
        from .safety import project, violations

        if sched.problem is not problem and sched.n_phases is None:
            bad = bool(violations(problem, sched.current, 1))
        else:
            bad = sched.problem.n_vars != problem.n_vars or bool(sched.violations(1))
        if bad and not getattr(planner, "simulate_unsafe", False):

            cur = project(problem, np.nan_to_num(np.asarray(sched.current, dtype=np.float64)))
            sched = replace(sched, problem=problem, current=cur,
                            message=(sched.message + "; " if sched.message else "")
                            + "projected onto the limits")
            reason += "; projected onto the limits"
        return sched, mode, reason, solve_s

    def _after_step(self, now: datetime, problem: Problem, sched: Schedule) -> None:
        first = sched.current[:, 0] if problem.n_periods else np.zeros(problem.n_sessions)
        for i, sid in enumerate(problem.session_ids):
            st = self._state.get(sid)
            if st is None:  # an expected vehicle, not plugged in yet
                continue
            # fold the estimate up to now into the state, so that the next estimate starts here
            st.delivered_kwh = self._delivered_estimate(st, now)
            st.delivered_at = now
            st.last_limit_a = float(first[i])
            st.limit_at = now
        self.last_schedule = sched


def _finite_nonneg(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(f) or f < 0:
        raise InputError(f"{what} must be finite and >= 0, got {v!r}")
    return f
