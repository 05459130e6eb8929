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
- **the HiGHS model** (``warm=True``): when the next step's LP has the same structure (same
  sessions, same rows that can bind), only costs, bounds, right-hand sides and the changed
  coefficients are updated on the kept ``Highs`` object and it re-solves from the previous basis;
  otherwise the model is rebuilt. Every step records which path was taken and why
  (:attr:`Controller.log`).

Whatever the solver does, the schedule returned went through :func:`loadopt.safety.project` on the
problem compiled from the real sessions and signals: it never exceeds a limit. On solver failure or
time-out the fast path is used (status ``*_fallback``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .compile import compile_problem
from .errors import InputError
from .horizon import Horizon
from .objective import Objective
from .problem import Problem
from .schedule import Schedule
from .session import Session
from .signals import Signals
from .site import Site


@dataclass
class StepRecord:
    """What one :meth:`Controller.step` did (for logs, tests and benchmarks)."""

    now: datetime
    mode: str  #: "rebuild", "warm", "warm-cold" (kept model, basis cleared), "empty", "fast"
    reason: str  #: why this path was taken
    status: str  #: the schedule status
    method: str  #: the schedule method
    n_sessions: int
    build_s: float  #: compile + LP build (s)
    solve_s: float  #: solver time (s)
    total_s: float  #: the whole step (s)


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
    extra: dict[str, Any] = field(default_factory=dict)


class Controller:
    """Rolling-horizon scheduling for one site (see the module docstring).

    ``step_s`` / ``n_periods``: the horizon of every step. ``method``: ``"lp"`` (HiGHS, default)
    or ``"fast"``. ``time_limit_s``: the solver's time limit per step (the fast path takes over
    when it runs out). ``default_dwell_h`` / ``default_energy_kwh``: what :meth:`new_session`
    assumes when the vehicle does not say (OCPP 1.6 transactions carry neither; 2.x
    ``ChargingNeeds`` may).
    """

    def __init__(
        self,
        site: Site,
        *,
        step_s: int = 900,
        n_periods: int = 96,
        signals: Signals | None = None,
        objective: Objective | None = None,
        method: str = "lp",
        time_limit_s: float | None = 5.0,
        default_dwell_h: float = 8.0,
        default_energy_kwh: float = 30.0,
    ) -> None:
        if method not in ("lp", "fast"):
            raise ValueError(f"unknown method {method!r}; use 'lp' or 'fast'")
        Horizon(start=datetime(2000, 1, 1).astimezone(), step_s=step_s, n_periods=n_periods)
        self.site = site
        self.step_s = int(step_s)
        self.n_periods = int(n_periods)
        self.signals = signals or Signals()
        self.objective = objective or Objective()
        self.method = method
        self.time_limit_s = time_limit_s
        self.default_dwell_h = float(default_dwell_h)
        self.default_energy_kwh = float(default_energy_kwh)
        #: Re-sharing parameters (A): see the module docstring.
        self.reshare = True
        self.reshare_threshold_a = 1.0
        self.reshare_headroom_a = 2.0
        #: How long an overstaying vehicle is assumed to stay on (h).
        self.overstay_extension_h = 1.0
        self.sessions: dict[str, Session] = {}
        self._state: dict[str, _SessionState] = {}
        self._evse_ids = {e.id for e in site.evses}
        self._busy: dict[str, str] = {}  # evse id -> session id
        self.log: list[StepRecord] = []
        self.last_schedule: Schedule | None = None

    # ------------------------------------------------------------------ events
    def new_session(self, session_id: str, evse: str, arrival: datetime, *,
                    departure: datetime | None = None, energy_kwh: float | None = None,
                    **kw: Any) -> Session:
        """A :class:`Session` with the controller's defaults for what the vehicle did not say."""
        return Session(
            id=session_id, evse=evse, arrival=arrival,
            departure=departure or arrival + timedelta(hours=self.default_dwell_h),
            energy_kwh=self.default_energy_kwh if energy_kwh is None else energy_kwh, **kw)

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
        problem = compile_problem(self.site, planned, horizon, self.signals, self.objective)
        t1 = time.perf_counter()
        sched, mode, reason, solve_s = self._solve(problem, now)
        self._after_step(now, problem, sched)
        self.log.append(StepRecord(now, mode, reason, sched.status.value, sched.method,
                                   problem.n_sessions, t1 - t0, solve_s,
                                   time.perf_counter() - t0))
        return sched

    def _solve(self, problem: Problem, now: datetime) -> tuple[Schedule, str, str, float]:
        from .solve import solve

        sched = solve(problem, method=self.method, time_limit_s=self.time_limit_s)
        return sched, "rebuild", "plain rebuild every step", sched.solve_time_s

    def _after_step(self, now: datetime, problem: Problem, sched: Schedule) -> None:
        first = sched.current[:, 0] if problem.n_periods else np.zeros(problem.n_sessions)
        for i, sid in enumerate(problem.session_ids):
            st = self._state[sid]
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
