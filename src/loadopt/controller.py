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
- **the HiGHS model** (``controller.warm = True``; off by default, see docs/simulation.md):
  when the next step's LP has the same structure (same
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
        #: Keep the HiGHS model between steps and re-solve warm when its structure allows. Off by
        #: default: measured on 1,000 sessions × 96 periods (docs/simulation.md), the padded
        #: fixed-structure model a warm re-solve needs is slower to re-solve than the compact
        #: problem is to solve cold (``benchmarks/test_bench_controller.py`` re-measures it).
        self.warm = False
        self._hi: Any = None
        self._lp: Any = None
        self._ids: tuple[str, ...] = ()
        self._fp: np.ndarray | None = None
        self._fp_at: datetime | None = None
        self._stale: str | None = None
        self._ext_start: datetime | None = None
        #: Periods the kept model reaches beyond the horizon: that many one-period rolls re-solve
        #: warm before the window must be rebuilt.
        self.reserve_periods = max(1, n_periods // 4)
        self.warm_simplex_strategy = 4

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

        if self.method == "fast":
            sched = solve(problem, method="fast")
            return sched, "fast", "method='fast'", sched.solve_time_s
        if not self.warm:
            sched = solve(problem, method="lp", time_limit_s=self.time_limit_s)
            return sched, "rebuild", "warm re-solve off (plain rebuild every step)", \
                sched.solve_time_s
        return self._solve_warm(problem, now)

    # ------------------------------------------------------------------ warm re-solve
    def _padded_lp(self, problem: Problem, ext_start: datetime, d: int) -> tuple[Problem, Any]:
        """The LP whose structure survives a time shift.

        It spans ``n_periods + reserve_periods`` periods from ``ext_start`` (the start of the kept
        model); this step's horizon is its periods ``[d, d + n_periods)``. A column per session
        and period of that extended window keeps its *absolute* period from step to step, so the
        previous basis still describes the plan. Every session is padded over the whole window;
        what really limits it is applied afterwards as column bounds (0 outside this step's
        horizon and where the vehicle is not plugged in, the re-sharing cap), as energy
        coefficients (a partly plugged period) and as the real site-import right-hand sides.
        """
        from dataclasses import replace

        from .lp import build_lp
        from .problem import ROW_SITE_IMPORT

        T = problem.n_periods
        ext = Horizon(start=ext_start, step_s=self.step_s, n_periods=T + self.reserve_periods)
        padded = []
        for s in problem.sessions:
            orig = self._state[s.id].session
            padded.append(s.model_copy(update={
                "arrival": min(s.arrival, ext_start), "departure": ext.end,
                "energy_kwh": max(s.energy_kwh, 1e-6), "max_current": orig.max_current,
                "min_current": orig.min_current}))
        pp = compile_problem(self.site, padded, ext, self.signals, self.objective)
        f_ext = np.zeros((problem.n_sessions, ext.n_periods))
        f_ext[:, d:d + T] = problem.avail
        f = f_ext[pp.var_session, pp.var_period]
        h = pp.h.copy()
        win = (pp.row_period >= d) & (pp.row_period < d + T)
        imp = (pp.row_kind == ROW_SITE_IMPORT) & win
        if imp.any():  # the padded problem's DR baselines differ: use the real caps
            real = np.maximum(problem.import_cap_kw - problem.base_load_kw + problem.pv_kw, 0.0)
            h[imp] = real[pp.row_period[imp] - d]
        pv = replace(pp, var_kwh_per_a=pp.var_kwh_per_a * np.where(f > 0, f, 1.0), h=h)
        lp = build_lp(pv)
        voc = lp.var_of_col
        sess = pv.var_session[voc]
        col_ub = lp.col_ub.copy()
        r_ub = np.minimum(col_ub[: lp.n_r], problem.session_max_current[sess])
        dead = (f[voc] <= 0) | (problem.session_energy_kwh[sess] <= 0)
        col_ub[: lp.n_r] = np.where(dead, 0.0, r_ub)
        c = lp.c.copy()
        # charge-early cost counts hours from this step, not from the window start
        c[: lp.n_r] -= self.objective.charge_early_per_kwh_h * d * ext.step_h * \
            pv.var_kwh_per_a[voc]
        row_ub = lp.row_ub
        if lp.peak_col is not None:  # the peak is over this step's horizon only
            col = lp.A.indices[lp.A.indptr[lp.peak_col]:lp.A.indptr[lp.peak_col + 1]]
            outside = np.ones(ext.n_periods, dtype=bool)
            outside[d:d + T] = False
            row_ub = row_ub.copy()
            row_ub[col[outside[: col.size]]] = np.inf
        return pv, replace(lp, col_ub=col_ub, c=c, row_ub=row_ub)

    def _offset(self, now: datetime) -> int | None:
        """Periods from the kept window's start to ``now``, if ``now`` is on its grid."""
        if self._ext_start is None:
            return None
        q = (now - self._ext_start).total_seconds() / self.step_s
        d = round(q)
        if abs(q - d) > 1e-6 or d < 0:
            return None
        return d

    def _limit_fingerprint(self, problem: Problem) -> np.ndarray:
        T = problem.n_periods
        return np.vstack([problem.import_cap_kw[None, :] - problem.base_load_kw + problem.pv_kw,
                          problem.node_current_limit.reshape(-1, T),
                          problem.node_power_limit_kw])

    def _limits_cut(self, fp: np.ndarray, now: datetime) -> bool:
        """Did a limit drop in most periods since the kept model was solved (aligned in time)?"""
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

    def _solve_warm(self, problem: Problem, now: datetime) -> tuple[Schedule, str, str, float]:
        from .solve import _finish, solve
        from .solvers.highs import LP_OPTIONS, new_highs, pass_lp, run, same_structure, update_lp
        from .solvers.result import SolverResult, SolverStatus

        t0 = time.perf_counter()
        ids = problem.session_ids
        T = problem.n_periods
        reason: str | None = None
        d = self._offset(now)
        if self._hi is None or self._lp is None:
            reason = "no model kept"
        elif set(ids) != set(self._ids):
            added = sorted(set(ids) - set(self._ids))
            gone = sorted(set(self._ids) - set(ids))
            reason = "sessions changed" + (f": +{added[:3]}" if added else "") + (
                f" -{gone[:3]}" if gone else "")
        elif ids != self._ids:
            reason = "session order changed"
        elif self._stale:
            reason = self._stale
        elif d is None:
            reason = "now is not on the kept model's period grid"
        elif d > self.reserve_periods:
            reason = f"kept window used up ({self.reserve_periods} reserve periods)"
        if reason is not None:
            self._ext_start, d = now, 0
        assert d is not None and self._ext_start is not None
        pv, lp = self._padded_lp(problem, self._ext_start, d)
        fp = self._limit_fingerprint(problem)
        if lp.n_cols == 0:
            self._drop_model()
            res = SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
            sched = _finish(problem, res, lambda x: np.zeros(problem.n_vars), "lp-highs", t0)
            return sched, "empty", "no session can draw", 0.0
        if reason is None and not same_structure(self._lp, lp):
            reason = (f"LP structure changed ({self._lp.n_cols}x{self._lp.n_rows} -> "
                      f"{lp.n_cols}x{lp.n_rows}: the rows that can bind changed)")
        mode = "rebuild" if reason is not None else "warm"
        if reason is None:
            reason = f"same structure, shifted {d} period(s): costs, bounds and rhs updated"
        try:
            if mode == "rebuild":
                if self._hi is None:
                    self._hi = new_highs(LP_OPTIONS)
                self._hi.setOptionValue("simplex_strategy", 1)
                pass_lp(self._hi, lp)
            else:
                self._hi.setOptionValue("simplex_strategy", self.warm_simplex_strategy)
                n = update_lp(self._hi, self._lp, lp)
                if n:
                    reason += f", {n} coefficient(s) changed"
                if self._limits_cut(fp, now):
                    self._hi.clearSolver()
                    mode = "warm-cold"
                    reason = ("a limit dropped over most of the horizon: basis cleared, solved "
                              "cold on the kept model (a warm start is slower there)")
            if self.time_limit_s is not None:  # HiGHS' clock runs on over the object's runs
                self._hi.setOptionValue("time_limit",
                                        float(self._hi.getRunTime() + self.time_limit_s))
            t_run = time.perf_counter()
            res = run(self._hi)
            solve_s = time.perf_counter() - t_run
        except Exception as exc:  # a broken solver must never take the controller down
            self._drop_model()
            self._hi = None
            sched = solve(problem, method="fast")
            sched = replace_status_failed(sched, f"HiGHS failed: {exc!r}")
            return sched, mode, reason + f"; solver failed ({exc!r}): fast path", 0.0
        self._lp, self._ids, self._fp, self._fp_at = lp, ids, fp, now
        self._stale = None
        if res.status != SolverStatus.OPTIMAL:
            self._stale = f"previous solve ended {res.status.value}: model rebuilt"
        dd = d

        def to_vars(x: np.ndarray) -> np.ndarray:
            return problem.gather(pv.dense(lp.currents(pv, x))[:, dd:dd + T])

        sched = _finish(problem, res, to_vars, f"lp-highs-{mode}", t0)
        return sched, mode, reason, solve_s

    def _drop_model(self) -> None:
        self._lp = None
        self._ids = ()
        self._fp = None
        self._stale = "model dropped"

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
