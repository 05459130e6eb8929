"""The :class:`Controller`: its settings, and the planning step (the state brought up to ``now``,
the problem compiled, the planner run and checked, the result folded back into the state)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from .._base import as_model, to_utc
from ..compile import compile_problem
from ..errors import InputError, LoadoptError
from ..horizon import Horizon
from ..objective import Objective
from ..planner import Planner, SolvePlanner, as_planner, describe
from ..problem import Problem
from ..schedule import Schedule, ScheduleStatus
from ..session import Session
from ..signals import GridSignal, Signals
from ..site import Site
from ..solvers.warm import MIN_WARM_ROWS
from .limits import _Limits
from .metering import _Metering
from .resharing import _Resharing
from .sessions import _Sessions
from .state import (
    PendingStep,
    RejectedReading,
    Reservation,
    StepRecord,
    _finite_nonneg,
    _SessionState,
)


class Controller(_Sessions, _Metering, _Limits, _Resharing):
    """Rolling-horizon scheduling for one site (see :mod:`loadopt.controller`).

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
        up to the same span. ``None``: ``n_periods`` periods of ``step_s``. ``"auto"`` (default,
        :func:`auto_coarse_step_s`): hourly periods after the first ``fine_s`` when ``step_s``
        divides an hour and the span reaches beyond ``fine_s`` by more than an hour, else
        uniform. ``fine_s="auto"`` (default, :func:`auto_fine_s`): :data:`AUTO_FINE_PERIODS`
        periods of ``step_s`` (1.5 h at 5-minute steps, 4.5 h at 15 minutes; the fine part then
        runs on to the next whole coarse period). The plan beyond ``fine_s`` only has to be right
        in aggregate (only period 0 is acted upon; coarse periods take every limit's minimum
        over them, so they are never less safe); on the shipped JPL week the tiered horizon
        delivers the same energy to the same sessions as the uniform one at a lower cost per
        step (docs/benchmarks.md).
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
        below the minimum current): ``True`` / ``"resolve"`` (default) the rounding-aware LP —
        rounded down, period 0 given back what rounding takes where the limits allow
        (:func:`loadopt.pilots.round_to_pilots`), and where that leaves a session below the
        pilot its plan was nearer to, period 0 fixed in pilots and the LP solved again around
        it (:func:`loadopt.pilots.pilot_fixings`; LP planners only); ``"round"`` the rounding
        and give-back without the re-solve; ``False`` limits as planned. Re-sharing compares
        what a car draws with the *step* it was given, not the limit.
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
    warm, warm_min_mapped, alien_basis, cold_after_limit_cut, warm_min_rows
        Warm-start settings of the default planner (:class:`loadopt.solvers.warm.WarmStart`:
        ``enabled``, ``min_mapped``, ``alien``, ``cold_after_limit_cut``, ``min_rows``: an LP
        with fewer rows is solved cold, where a warm start measured slower); also readable
        and settable as attributes.
    """

    def __init__(
        self,
        site: Site,
        *,
        step_s: int = 900,
        n_periods: int = 96,
        coarse_step_s: int | Literal["auto"] | None = "auto",
        fine_s: int | Literal["auto"] = "auto",
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
        warm_min_rows: int = MIN_WARM_ROWS,
        policy: str | None = None,
        pilots: bool | str = True,
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
            from ..fast import POLICIES
            from ..options import FastOptions

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
        if fine_s == "auto":
            fine_s = auto_fine_s(self.step_s)
        if coarse_step_s == "auto":
            coarse_step_s = auto_coarse_step_s(self.step_s, self.n_periods, fine_s)
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
            ws.min_rows = int(warm_min_rows)
        self.default_dwell_h = _finite_nonneg(default_dwell_h, "Controller: default_dwell_h")
        self.default_energy_kwh = _finite_nonneg(
            default_energy_kwh, "Controller: default_energy_kwh"
        )
        #: Hand out limits in the pilots the EVSEs can signal (steps, minimum current):
        #: :meth:`_in_pilot_steps`.
        if pilots not in (True, False, "resolve", "round"):
            raise InputError(
                f"Controller: pilots must be True, 'resolve', 'round' or False, got {pilots!r}"
            )
        self.pilots = pilots  # True means "resolve"
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
    warm_min_rows = property(
        lambda self: self._warm().min_rows,
        lambda self, v: setattr(self._warm(), "min_rows", int(v)),
    )

    def to_state(self) -> dict[str, Any]:
        """The controller's state as a JSON-able document (:mod:`loadopt.controller.persist`).

        Returns
        -------
        dict
            Site, settings, planner options, signals, objective, reservations, active sessions
            with their metered energy (kWh), currents (A) and estimates, expected vehicles and
            the clock; only JSON types. :meth:`from_state` continues from it.
        """
        from .persist import to_state

        return to_state(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], planner: Any = None) -> Controller:
        """A controller continuing from :meth:`to_state` (every part validated as new input).

        Parameters
        ----------
        state
            A document from :meth:`to_state` (e.g. after ``json.loads``).
        planner
            The planner of a controller saved with a custom (callable) planner; ``None`` uses
            the saved options and warm-start settings.

        Returns
        -------
        Controller
            The restored controller; its first step solves cold (no basis is kept).

        Raises
        ------
        InputError
            An unknown setting, session-state or clock field; a custom planner not passed again.
        ModelError
            A site, session, signal or objective the models reject.
        """
        from .persist import from_state

        return from_state(cls, state, planner)

    def on_signal(
        self, signal: Signals | GridSignal | Iterable[GridSignal], now: datetime
    ) -> Schedule:
        """A limit or grid signal changed between steps: apply it and re-plan at once.

        Parameters
        ----------
        signal
            New :class:`Signals` (replacing the old), or one or more :class:`GridSignal` (added;
            one with the id of a signal already held replaces it).
        now
            The time of the re-plan (aware datetime).

        Returns
        -------
        Schedule
            The new schedule: act on its period 0 now.

        Raises
        ------
        InputError
            Anything else than signals.
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
        since the last step.

        Parameters
        ----------
        now
            The time of the re-plan (aware datetime).
        why
            What changed (for the step record).

        Returns
        -------
        Schedule
            As :meth:`step`.
        """
        self._events.insert(0, f"replan{': ' + why if why else ''}")
        return self.step(now)

    def horizon(self, now: datetime) -> Horizon:
        """The horizon of a step at ``now`` (see ``step_s``, ``n_periods``, ``coarse_step_s``,
        ``align_to_grid``).

        Parameters
        ----------
        now
            The step's time (aware datetime).

        Returns
        -------
        Horizon
            Starting at ``now`` floored to a whole UTC second (or at the UTC grid instant at or
            before it with ``align_to_grid``), spanning ``step_s * n_periods`` seconds.
        """
        # whole seconds (UTC): OCPP sends startSchedule in whole seconds, so a period boundary
        # between two seconds would be sent early and a limit rising there would rise early
        now_utc = to_utc(now, "Controller.horizon: now").replace(microsecond=0)
        if self.align_to_grid:  # in UTC: never a wall-clock shift
            step = self.step_s
            whole = isinstance(step, int | float) and not isinstance(step, bool)
            if not (whole and step > 0 and float(step).is_integer()):  # (set at run time)
                raise InputError(
                    f"Controller.step_s must be a positive whole number of seconds, got {step!r}"
                )
            now_utc -= timedelta(seconds=int(now_utc.timestamp()) % int(step))
        now = now_utc.astimezone(now.tzinfo)
        if self.coarse_step_s is not None:
            # the tiers depend on the settings and on where ``now`` falls in its coarse period
            # only (Horizon.tiered aligns to UTC multiples of it): worked out once per offset
            span_s = self.step_s * self.n_periods
            coarse: int | None = self.coarse_step_s
            if isinstance(coarse, bool) or not (isinstance(coarse, int) and coarse > 0):
                coarse = None  # (set at run time) no offset: Horizon.tiered says what is wrong
            key = (
                None if coarse is None else int(now_utc.timestamp()) % coarse,
                self.step_s,
                self.fine_s,
                self.coarse_step_s,
                span_s,
            )
            tiers = self.__dict__.setdefault("_tiers", {})
            ps = None if coarse is None else tiers.get(key)
            if ps is None:
                h = Horizon.tiered(
                    now,
                    fine_step_s=self.step_s,
                    fine_s=self.fine_s,
                    coarse_step_s=self.coarse_step_s,
                    span_s=span_s,
                )
                if len(tiers) >= 256:
                    tiers.clear()
                if coarse is not None:
                    tiers[key] = (h.step_s, h.n_periods, h.periods_s)
                return h
            if ps[2] is None:  # (as Horizon.non_uniform builds them)
                return Horizon(start=now, step_s=ps[0], n_periods=ps[1])
            return Horizon(start=now, step_s=ps[0], n_periods=ps[1], periods_s=ps[2])
        return Horizon(start=now, step_s=self.step_s, n_periods=self.n_periods)

    def step(self, now: datetime) -> Schedule:
        """The schedule for ``[now, now + n_periods * step_s)``; act on its period 0.

        Parameters
        ----------
        now
            The step's time (aware datetime).

        Returns
        -------
        Schedule
            Currents (A per phase) per session and period, checked against every limit of the
            problem compiled from the real sessions and signals (``Schedule.status`` says which path
            produced it; :attr:`log` records the step).

        Raises
        ------
        InputError
            ``now`` is not an aware datetime (nothing changes).
        """
        pending = self.begin_step(now)
        sched, mode, reason, solve_s = self._plan(pending.problem)
        return self.end_step(pending, sched, mode, reason, solve_s)

    def begin_step(self, now: datetime) -> PendingStep:
        """The first half of :meth:`step`: the state brought up to ``now`` and the problem compiled.

        For a planner that runs elsewhere (:mod:`loadopt.fleet` runs it on the site's worker): hand
        its result to :meth:`end_step`.

        Parameters
        ----------
        now
            The step's time (aware datetime).

        Returns
        -------
        PendingStep
            The compiled problem and what the step record needs.

        Raises
        ------
        InputError
            ``now`` is not an aware datetime.
        """
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
        """The second half of :meth:`step`: ``sched`` folded into the state and logged.

        Parameters
        ----------
        pending
            What :meth:`begin_step` returned.
        sched
            A safe schedule of ``pending.problem``.
        mode, reason
            How it was produced and why (for the :class:`StepRecord`).
        solve_s
            Solver time (s).

        Returns
        -------
        Schedule
            ``sched``, in the EVSEs' pilot steps when ``pilots`` is on.
        """
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
            from ..solve import solve

            fb = solve(problem, "fast")
            fb = replace(
                fb,
                status=ScheduleStatus.SOLVER_FAILED_FALLBACK,
                method="planner->fast",
                message=f"planner failed: {exc!r}",
            )
            return fb, "fallback", f"planner failed ({exc!r}): fast path", fb.solve_time_s
        mode, reason, solve_s = describe(planner, sched)
        from ..safety import project, violations

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
                from ..safety import project_storage

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

    def _after_step(self, now: datetime, problem: Problem, sched: Schedule) -> None:
        first = sched.current[:, 0] if problem.n_periods else np.zeros(problem.n_sessions)
        first_d = (
            sched.discharge[:, 0]
            if sched.discharge is not None and problem.n_periods
            else np.zeros(problem.n_sessions)
        )
        # Python floats, as float(x) per session
        first_l = np.asarray(first, dtype=np.float64).tolist()
        first_dl = np.asarray(first_d, dtype=np.float64).tolist()
        for i, sid in enumerate(problem.session_ids):
            st = self._state.get(sid)
            if st is None:  # an expected vehicle, not plugged in yet
                continue
            # fold the estimate up to now into the state, so that the next estimate starts here
            # (never backwards: a clock going back must not count the same interval twice)
            if st.delivered_at is None or now > st.delivered_at:
                st.delivered_kwh = self._delivered_estimate(st, now)
                st.delivered_at = now
            st.last_limit_a = first_l[i]
            st.limit_at = now
            if st.discharge_at is None or now > st.discharge_at:
                if st.discharge_at is not None and not st.last_discharge_a <= 0:  # (else: 0)
                    st.discharged_kwh = self._discharged_estimate(st, now)
                st.discharge_at = now
            st.last_discharge_a = first_dl[i]
        self.last_schedule = sched


#: The number of fine periods of the default (``fine_s="auto"``) tiered horizon. A count, not a
#: duration: the LP's size, and so a step's cost, grows with the periods; measured on the shipped
#: JPL week (docs/benchmarks.md), 18 five-minute periods deliver the same energy to as many
#: sessions as 4 h of them (48) and 1-minute control the same as 240, at a fraction of the cost.
AUTO_FINE_PERIODS = 18

#: The coarse period of the default (``"auto"``) tiered horizon (s).
AUTO_COARSE_STEP_S = 3600


def auto_fine_s(step_s: int) -> int:
    """The fine part of ``Controller(fine_s="auto")``: :data:`AUTO_FINE_PERIODS` periods.

    Parameters
    ----------
    step_s
        The controller's period (s).

    Returns
    -------
    int
        ``AUTO_FINE_PERIODS * step_s`` (s).
    """
    return AUTO_FINE_PERIODS * int(step_s)


def auto_coarse_step_s(step_s: int, n_periods: int, fine_s: int) -> int | None:
    """The coarse period of ``Controller(coarse_step_s="auto")``: :data:`AUTO_COARSE_STEP_S`
    when ``step_s`` is shorter and divides it and the horizon spans more than an hour beyond
    ``fine_s``; ``None`` (uniform) otherwise."""
    coarse = AUTO_COARSE_STEP_S
    if not isinstance(fine_s, int) or isinstance(fine_s, bool):
        return None  # (a bad fine_s is only an error where a tiered horizon uses it)
    if step_s < coarse and coarse % step_s == 0 and step_s * n_periods > fine_s + coarse:
        return coarse
    return None
