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
- **the previous optimal basis** (``controller.warm``, on by default): every step builds the
  reduced LP of the new problem cold (:func:`loadopt.lp.build_lp`, milliseconds) and hands HiGHS
  the previous step's optimal basis mapped onto it by stable keys — a current column by (session,
  absolute period), a safety row by (kind, node, phase, absolute period), an energy row by
  session, a balance/peak row by absolute period. What is new starts nonbasic at 0 (columns) or
  basic (rows); the basic count is repaired to the number of rows; HiGHS swaps slacks into a
  singular basis when it factorizes. Sessions arriving or leaving only change the keys that
  match. After a limit drop over most of the horizon the step is solved cold (a warm start is
  slower there, DESIGN.md). Every step records which path was taken and why
  (:attr:`Controller.log`).

Whatever the solver does, the schedule returned went through :func:`loadopt.safety.project` on the
problem compiled from the real sessions and signals: it never exceeds a limit. On solver failure or
time-out the fast path is used (status ``*_fallback``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .compile import compile_problem
from .errors import InputError
from .horizon import Horizon
from .lp import LinearProgram, build_lp
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
        #: Vehicles expected but not plugged in yet (:meth:`expect_session`).
        self.expected: dict[str, Session] = {}
        #: An expected vehicle not plugged in this long after its arrival is forgotten (h).
        self.expected_grace_h = 0.5
        self._state: dict[str, _SessionState] = {}
        self._evse_ids = {e.id for e in site.evses}
        self._busy: dict[str, str] = {}  # evse id -> session id
        self._evse_index = {e.id: k for k, e in enumerate(site.evses)}
        #: EVSE id -> :class:`Reservation` (:meth:`reserve`).
        self.reservations: dict[str, Reservation] = {}
        self.log: list[StepRecord] = []
        self.last_schedule: Schedule | None = None
        #: Warm start: each step's LP is built cold and HiGHS starts from the previous step's
        #: optimal basis mapped onto it by stable keys (module docstring). On by default:
        #: measured faster than a cold solve on both benchmark cases (docs/simulation.md).
        self.warm = True
        #: Below this share of columns + rows found in the previous basis, solve cold.
        self.warm_min_mapped = 0.5
        #: Let HiGHS repair the basic count itself (``HighsBasis.alien``) instead of
        #: :meth:`_mapped_basis` doing it (measured slower: one extra LU factorization).
        self.alien_basis = False
        #: Solve cold when a limit dropped over most of the horizon (DESIGN.md: a warm start can
        #: be many times slower there; re-measured in benchmarks/test_bench_controller.py).
        self.cold_after_limit_cut = True
        self._memo: _BasisMemo | None = None
        self._epoch: datetime | None = None
        self._sid_int: dict[str, int] = {}
        self._fp: np.ndarray | None = None
        self._fp_at: datetime | None = None

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
        sched, mode, reason, solve_s = self._solve(problem, now)
        self._after_step(now, problem, sched)
        self.log.append(StepRecord(now, mode, reason, sched.status.value, sched.method,
                                   problem.n_sessions, t1 - t0, solve_s,
                                   time.perf_counter() - t0))
        return sched

    def _solve(self, problem: Problem, now: datetime) -> tuple[Schedule, str, str, float]:
        from .solve import _finish, solve
        from .solvers.highs import LP_OPTIONS, basis_arrays, new_highs, pass_lp, run, set_basis
        from .solvers.result import SolverResult, SolverStatus

        if self.method == "fast":
            sched = solve(problem, method="fast")
            return sched, "fast", "method='fast'", sched.solve_time_s
        t0 = time.perf_counter()
        lp = build_lp(problem)
        fp = self._limit_fingerprint(problem)
        if lp.n_cols == 0:  # nobody can draw (HiGHS calls an empty model an error)
            res = SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
            sched = _finish(problem, res, lambda x: np.zeros(problem.n_vars), "lp-highs", t0)
            self._fp, self._fp_at = fp, now
            return sched, "empty", "no session can draw", 0.0
        start: tuple[np.ndarray, np.ndarray] | None = None
        keys = None
        try:  # the warm start is an optimisation: any fault in it means a cold solve
            keys = self._keys(problem, lp) if self.warm else None
            if keys is None:
                reason = "warm start off: solved cold"
            elif self._memo is None:
                reason = "no previous optimal basis: solved cold"
            elif self.cold_after_limit_cut and self._limits_cut(fp, now):
                reason = ("a limit dropped over most of the horizon: solved cold (a warm start "
                          "is slower there)")
            else:
                start, info = self._mapped_basis(lp, keys)
                if start is None:
                    reason = f"{info}: solved cold"
                else:
                    reason = f"previous basis mapped: {info}"
        except Exception as exc:
            keys, start, reason = None, None, f"warm start failed ({exc!r}): solved cold"
        mode = "cold" if start is None else "warm"
        try:
            hi = new_highs(LP_OPTIONS, self.time_limit_s)
            pass_lp(hi, lp)
            if start is not None and not set_basis(hi, *start, alien=self.alien_basis):
                mode, reason = "cold", reason + "; HiGHS rejected it: solved cold"
            t_run = time.perf_counter()
            res = run(hi)
            solve_s = time.perf_counter() - t_run
        except Exception as exc:  # a broken solver must never take the controller down
            self._memo = None
            sched = replace_status_failed(solve(problem, method="fast"), f"HiGHS failed: {exc!r}")
            return sched, mode, reason + f"; solver failed ({exc!r}): fast path", 0.0
        self._fp, self._fp_at = fp, now
        self._memo = None
        if res.status == SolverStatus.OPTIMAL and res.x is not None and keys is not None:
            try:
                basis = basis_arrays(hi, lp, res.x)
                if basis is not None:
                    dual = np.asarray(hi.getSolution().col_dual, dtype=np.float64)
                    self._memo = _BasisMemo.of(*keys, *basis, res.x, dual)
            except Exception:  # no basis to start from next time: that step solves cold
                self._memo = None
        sched = _finish(problem, res, lambda x: lp.currents(problem, x), f"lp-highs-{mode}", t0)
        return sched, mode, reason, solve_s

    # ------------------------------------------------------------------ warm start
    def _sid(self, ids: tuple[str, ...]) -> np.ndarray:
        """A stable integer per session id (assigned on first sight, never reused)."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, sid in enumerate(ids):
            k = self._sid_int.get(sid)
            if k is None:
                k = self._sid_int[sid] = len(self._sid_int)
            out[i] = k
        return out

    def _keys(self, problem: Problem, lp: LinearProgram) -> tuple[np.ndarray, np.ndarray]:
        """Stable int64 keys of the LP's columns and rows, equal across steps for the same thing.

        Columns: ``r`` by (session, absolute period); import, export by absolute period; the peak
        and ``z`` columns by kind. Rows (``lp.row_block`` / ``row_index``): a safety row by (kind,
        node, phase, absolute period), an energy or fairness row by session, a balance or peak
        row by absolute period. The absolute period counts steps of ``step_s`` from the first
        horizon this controller solved (a ``now`` off that grid is rounded: the basis is only a
        start, any start is correct).
        """
        if self._epoch is None:
            self._epoch = problem.horizon.start
        p0 = round((problem.horizon.start - self._epoch).total_seconds() / self.step_s)
        sid = self._sid(problem.session_ids)
        voc = lp.var_of_col
        cols = [_pack(0, sid[problem.var_session[voc]], p0 + problem.var_period[voc])]
        if lp.u_sess is not None and lp.u_sess.size:  # unmet energy per session
            cols.append(_pack(10, sid[lp.u_sess], 0))
        T = problem.n_periods
        per = p0 + np.arange(T, dtype=np.int64)
        if lp.imp_cols is not None:
            cols += [_pack(1, 0, per), _pack(2, 0, per)]
        if lp.peak_col is not None:
            cols.append(_pack(3, 0, np.zeros(1, np.int64)))
        if lp.z_col is not None:
            cols.append(_pack(4, 0, np.zeros(1, np.int64)))
        col_keys = np.concatenate(cols)
        rows = np.empty(lp.n_rows, dtype=np.int64)
        blk, idx = lp.row_block, lp.row_index
        if blk is None or idx is None:
            raise RuntimeError("the LP carries no row provenance (row_block/row_index)")
        m = blk == 0
        g = idx[m]
        node_phase = ((problem.row_kind[g].astype(np.int64) << 24)
                      | ((problem.row_node[g].astype(np.int64) + 1) << 3)
                      | (problem.row_phase[g].astype(np.int64) + 1))
        rows[m] = _pack(5, node_phase, p0 + problem.row_period[g])
        for code, per_session in ((1, True), (2, False), (3, False), (4, True)):
            m = blk == code
            if m.any():
                rows[m] = (_pack(5 + code, sid[idx[m]], 0) if per_session
                           else _pack(5 + code, 0, p0 + idx[m]))
        return col_keys, rows

    def _mapped_basis(self, lp: LinearProgram, keys: tuple[np.ndarray, np.ndarray]
                      ) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
        """The previous optimal basis carried over to ``lp`` by key, with a consistent count.

        Columns and rows found under the same key keep their status (a nonbasic column at an
        upper bound that became infinite goes to its lower one); new columns start nonbasic at
        their lower bound, new rows basic (slack). Then exactly ``n_rows`` entries must be basic:
        with too many, the basic columns nearest a bound (at the previous values) become
        nonbasic at it; with too few, the nonbasic rows with the most slack (previous values
        under the new matrix) become basic. A singular basis matrix is left to HiGHS, which
        swaps in slacks when it factorizes. Returns ``(None, why)`` when too little maps.
        """
        from .solvers.highs import BASIS_BASIC, BASIS_LOWER, BASIS_UPPER

        memo = self._memo
        assert memo is not None
        ck, rk = keys
        jc, hit_c = _lookup(memo.col_order, memo.col_keys, ck)
        jr, hit_r = _lookup(memo.row_order, memo.row_keys, rk)
        # Rows with identical coefficients (the L1/L2/L3 rows of a node whose vehicles all draw
        # three phases) are merged by build_lp under one of their phases, not always the same
        # one: a current row not found under its phase is looked up under the other phases.
        cur = np.flatnonzero(~hit_r & ((rk >> _KIND_SHIFT) == _CURRENT_ROW_TAG))
        for ph in (1, 2, 3):
            if cur.size == 0:
                break
            alt = (rk[cur] & ~np.int64(0b111 << _PHASE_SHIFT)) | np.int64(ph << _PHASE_SHIFT)
            j, hit = _lookup(memo.row_order, memo.row_keys, alt)
            jr[cur[hit]], hit_r[cur[hit]] = j[hit], True
            cur = cur[~hit]
        n, m = lp.n_cols, lp.n_rows
        frac = (hit_c.sum() + hit_r.sum()) / max(n + m, 1)
        if frac < self.warm_min_mapped:
            return None, f"only {frac:.0%} of the columns and rows map to the previous basis"
        col = np.full(n, BASIS_LOWER, np.int8)
        col[hit_c] = memo.col_status[jc[hit_c]]
        x = np.zeros(n)
        x[hit_c] = memo.x[jc[hit_c]]
        lb, ub = lp.col_lb, lp.col_ub
        col[(col == BASIS_UPPER) & ~np.isfinite(ub)] = BASIS_LOWER
        x = np.clip(x, lb, ub)
        x = np.where(col == BASIS_LOWER, lb, np.where(col == BASIS_UPPER, ub, x))
        row = np.full(m, BASIS_BASIC, np.int8)
        row[hit_r] = memo.row_status[jr[hit_r]]
        nonb = row != BASIS_BASIC
        row[nonb] = np.where(np.isfinite(lp.row_ub[nonb]), BASIS_UPPER, BASIS_LOWER)
        nb = int((col == BASIS_BASIC).sum() + (row == BASIS_BASIC).sum())
        fixed = ""
        if nb > m:  # too many basic: the basic columns closest to a bound leave the basis
            cand = np.flatnonzero(col == BASIS_BASIC)
            to_lb, to_ub = x[cand] - lb[cand], ub[cand] - x[cand]
            k = nb - m
            pick = np.argpartition(np.minimum(to_lb, to_ub), k - 1)[:k]
            col[cand[pick]] = np.where(to_ub[pick] < to_lb[pick], BASIS_UPPER, BASIS_LOWER)
            fixed = f", {k} basic column(s) made nonbasic"
        elif nb < m:  # too few basic
            k = m - nb
            pick = self._replacements(memo, ck, jc, hit_c, col, k)
            col[pick] = BASIS_BASIC
            fixed = f", {pick.size} column(s) made basic in place of lost ones"
            if pick.size < k:  # the rest: slacks of the nonbasic rows with most room
                cand = np.flatnonzero(row != BASIS_BASIC)
                act = lp.A @ x
                room = np.minimum(lp.row_ub[cand] - act[cand], act[cand] - lp.row_lb[cand])
                rest = k - pick.size
                row[cand[np.argpartition(-room, rest - 1)[:rest]]] = BASIS_BASIC
                fixed += f", {rest} slack(s) made basic"
        info = (f"{int(hit_c.sum())}/{n} columns, {int(hit_r.sum())}/{m} rows kept"
                f"{fixed}")
        return (col, row), info

    @staticmethod
    def _replacements(memo: _BasisMemo, ck: np.ndarray, jc: np.ndarray, hit_c: np.ndarray,
                      col: np.ndarray, k: int) -> np.ndarray:
        """Up to ``k`` nonbasic current columns to make basic, one for each basic current column
        that left with the period rolled out (or the session gone), taken from the same session.

        A basic column of a session pins its energy row's dual; when it leaves, making a slack
        basic instead would zero a dual and make many columns dual infeasible. The replacement
        is the session's mapped nonbasic column with the smallest previous reduced cost (the
        one that was closest to entering), so the duals stay close to the previous optimum.
        """
        from .solvers.highs import BASIS_BASIC

        old_is_r = (memo.col_keys_raw >> 59) == 0
        lost = np.ones(memo.col_keys_raw.size, dtype=bool)
        lost[jc[hit_c]] = False
        lost &= old_is_r & (memo.col_status == BASIS_BASIC)
        if not lost.any():
            return np.zeros(0, np.int64)
        sess_old = (memo.col_keys_raw[lost] >> 28) & 0x7FFFFFFF
        need = np.bincount(sess_old)
        cand = np.flatnonzero(hit_c & (col != BASIS_BASIC) & ((ck >> 59) == 0))
        sess = (ck[cand] >> 28) & 0x7FFFFFFF
        ok = sess < need.size
        cand, sess = cand[ok], sess[ok]
        ok = need[sess] > 0
        cand, sess = cand[ok], sess[ok]
        if cand.size == 0:
            return cand
        score = np.abs(memo.dual[jc[cand]])
        order = np.lexsort((score, sess))
        cand, sess, score = cand[order], sess[order], score[order]
        first = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        rank = np.arange(sess.size) - np.repeat(first, np.diff(np.r_[first, sess.size]))
        take = rank < need[sess]
        cand, rank, score = cand[take], rank[take], score[take]
        if cand.size > k:
            cand = cand[np.lexsort((score, rank))[:k]]
        return cand

    def _limit_fingerprint(self, problem: Problem) -> np.ndarray:
        """Per period: the site import room (kW) and every node's current (A) and power (kW)
        limit — what a grid operator or a DR event can lower."""
        T = problem.n_periods
        return np.vstack([problem.import_cap_kw[None, :] - problem.base_load_kw + problem.pv_kw,
                          problem.node_current_limit.reshape(-1, T),
                          problem.node_power_limit_kw])

    def _limits_cut(self, fp: np.ndarray, now: datetime) -> bool:
        """Did a limit drop in most periods since the last solve (aligned in absolute time)?"""
        old, then = self._fp, self._fp_at
        if old is None or then is None or old.shape != fp.shape:
            return False
        d = round((now - then).total_seconds() / self.step_s)
        T = fp.shape[1]
        if d < 0 or d >= T:
            return False
        with np.errstate(invalid="ignore"):
            lower = np.any(fp[:, : T - d] < old[:, d:] - 1e-9, axis=0)
        return bool(lower.sum() > 0.5 * (T - d))

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


def replace_status_failed(sched: Schedule, message: str) -> Schedule:
    """The fast-path schedule, marked as the fallback after a solver failure."""
    from dataclasses import replace

    from .schedule import ScheduleStatus

    return replace(sched, status=ScheduleStatus.SOLVER_FAILED_FALLBACK, method="lp->fast",
                   message=message)


def _finite_nonneg(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(f) or f < 0:
        raise InputError(f"{what} must be finite and >= 0, got {v!r}")
    return f


@dataclass(frozen=True, eq=False)
class _BasisMemo:
    """The last optimal basis, by key: keys sorted once (``*_order`` maps back)."""

    col_keys: np.ndarray  #: sorted
    col_order: np.ndarray
    col_keys_raw: np.ndarray  #: in column order
    row_keys: np.ndarray  #: sorted
    row_order: np.ndarray
    col_status: np.ndarray
    row_status: np.ndarray
    x: np.ndarray  #: column values
    dual: np.ndarray  #: reduced costs of the columns

    @classmethod
    def of(cls, col_keys: np.ndarray, row_keys: np.ndarray, col_status: np.ndarray,
           row_status: np.ndarray, x: np.ndarray, dual: np.ndarray) -> _BasisMemo:
        co = np.argsort(col_keys, kind="stable")
        ro = np.argsort(row_keys, kind="stable")
        return cls(col_keys[co], co, col_keys, row_keys[ro], ro, col_status, row_status, x, dual)


#: Bit positions in a safety row's key (see :meth:`Controller._keys` and :func:`_pack`): the
#: key >> _KIND_SHIFT is (tag 5, row kind); the site phase + 1 sits in 3 bits at _PHASE_SHIFT.
_KIND_SHIFT = 28 + 24
_PHASE_SHIFT = 28
_CURRENT_ROW_TAG = (5 << 7) | 0  # tag 5, ROW_NODE_CURRENT (kind 0)


def _pack(tag: int, a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
    """One int64 key: ``tag`` (4 bits) | ``a`` (31 bits) | ``b`` (28 bits, offset by 2**27)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return (np.int64(tag) << 59) | ((a & 0x7FFFFFFF) << 28) | ((b + (1 << 27)) & 0xFFFFFFF)


def _lookup(order: np.ndarray, sorted_keys: np.ndarray, keys: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each key: its index in the previous (unsorted) arrays and whether it was there."""
    if sorted_keys.size == 0:
        return np.zeros(keys.size, np.int64), np.zeros(keys.size, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return order[pos], sorted_keys[pos] == keys
