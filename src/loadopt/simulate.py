"""Replay sessions against the controller (or a baseline policy) and score what happened.

The simulator steps through a scenario's horizon (one control interval per period). At each step:

1. vehicles whose departure has passed leave (``stop_session``); vehicles that have arrived plug
   in (``start_session``) with what the policy is told: their true departure and energy, or a
   default dwell / default energy when ``known_departure`` / ``known_energy`` is off;
2. every plugged-in vehicle reports its meter (cumulative kWh and the current it drew);
3. the policy's ``step(now)`` gives the limits; the EVSE turns a limit into a pilot it can
   signal (:func:`evse_pilot`: the largest of its ``allowed_currents`` at or below the limit, or
   0 below its minimum current — IEC 61851-1: below the minimum duty cycle the vehicle pauses);
   each vehicle draws ``min(pilot, what its battery accepts)`` for the period — the battery
   accepts its maximum current up to ``taper_from`` of the energy it wants, then linearly less
   down to 10 % of it (constant-current / constant-voltage charging), and nothing once full;
   ``noise`` draws up to that fraction less at random. A vehicle that arrives between two steps
   draws nothing until the next step (the safe ``TxDefaultProfile`` of the OCPP adapter).

Storage (sites with V2G sessions or batteries, docs/simulation.md): a V2G vehicle also follows
its discharge setpoint (OCPP 2.1 ``CentralSetpoint``) exactly, never below its V2X floor nor while
it charges, and charges no further than its V2X ceiling; a battery follows the plan's first period
within ``min_soc``..``max_soc``; energies move with the charge/discharge efficiencies. The
controller is told each vehicle's metered charge energy (its discharge it estimates from the
setpoints it handed out) and each battery's state of charge (``Controller.set_battery_soc``).
Baselines charge only.

What the vehicles drew is recorded as a ``(sessions, periods)`` current array on the problem
compiled from the *true* sessions over the whole horizon, so the same
:meth:`~loadopt.schedule.Schedule.kpis` and :func:`~loadopt.safety.violations` score every policy:
energy delivered, sessions fully served, peak import, energy cost, demand-response compliance,
storage (energy discharged, battery cycles, revenue, peak shaved; both directions checked) and
limit violations (0 for the controller; the uncontrolled baseline shows what it causes).

Baselines (same bookkeeping as the controller, one period of lookahead, no optimiser):
``uncontrolled`` (every vehicle at its maximum), ``equal_share`` (max-min fair water-filling over
every limit, :func:`loadopt.fast.allocate` ``policy="fair"``) and ``edf`` (earliest departure
first over every limit, ``policy="edf"``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from .compile import compile_problem
from .controller import Controller, StepRecord
from .errors import InputError
from .options import Policy
from .problem import Problem
from .safety import session_kwh_per_a, violations
from .scenario import Scenario
from .schedule import Kpis, Schedule, ScheduleStatus
from .session import Session

BASELINES = ("uncontrolled", "equal_share", "edf", "llf")


class BaselinePlanner:
    """A baseline as a controller planner (:mod:`loadopt.planner`), deciding one period ahead:
    ``uncontrolled`` (every vehicle at its maximum — breaks limits on purpose, to show what no
    control causes: ``simulate_unsafe``), ``equal_share`` (:func:`loadopt.fast.allocate`
    ``policy="fair"``), ``edf`` (``policy="edf"``) or ``llf`` (least laxity first,
    ``policy="llf"``)."""

    def __init__(self, kind: str) -> None:
        if kind not in BASELINES:
            raise InputError(f"unknown baseline {kind!r}; choose from {BASELINES}")
        self.kind = kind
        self.simulate_unsafe = kind == "uncontrolled"
        self.last_mode, self.last_reason, self.last_solve_s = "baseline", kind, 0.0

    def __call__(self, problem: Problem) -> Schedule:
        t0 = time.perf_counter()
        if self.kind == "uncontrolled":
            cur = problem.dense(problem.var_ub)
        else:
            from .fast import allocate

            pol: Policy = (
                "fair" if self.kind == "equal_share" else ("edf" if self.kind == "edf" else "llf")
            )
            cur = np.zeros((problem.n_sessions, problem.n_periods))
            if problem.n_sessions:
                cur[:, 0] = allocate(problem, 0, pol)
        self.last_solve_s = time.perf_counter() - t0
        return Schedule(
            problem, cur, ScheduleStatus.FEASIBLE, self.kind, solve_time_s=self.last_solve_s
        )


@dataclass
class SimulationResult:
    """What happened in one replay."""

    name: str
    schedule: Schedule  #: currents as drawn (A) on the problem of the true sessions
    limits: np.ndarray  #: (S, T) limits handed out (A), NaN where not plugged in
    kpis: Kpis
    n_violations: int
    step_time_s: np.ndarray  #: wall time of every policy step (s)
    log: list[StepRecord] = field(default_factory=list)
    #: (U, T + 1) energy (kWh in the battery) of every storage unit as replayed — V2G sessions
    #: relative to plug-in, batteries absolute; column 0 is the start (empty without storage)
    soc_kwh: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))

    @property
    def delivered_pct(self) -> float:
        k = self.kpis
        return 100.0 * k.delivered_kwh / k.requested_kwh if k.requested_kwh else 100.0


def evse_pilot(problem: Problem) -> Callable[[np.ndarray], np.ndarray]:
    """What each session's EVSE signals for a limit (``(S,)`` A → ``(S,)`` A): the largest allowed
    step at or below it (``Evse.allowed_currents``), and 0 below the session's minimum current
    (:mod:`loadopt.pilots`)."""
    from .pilots import down_to_pilot, pilot_grid

    grid, stepped = pilot_grid(problem)
    lo = problem.session_min_current
    return lambda limit: down_to_pilot(limit, grid, stepped, lo)


def accepted_current(
    vmax: np.ndarray, delivered: np.ndarray, wanted: np.ndarray, taper_from: float = 0.8
) -> np.ndarray:
    """Current (A) the battery accepts: ``vmax`` up to ``taper_from`` of the wanted energy, then
    linearly less down to 10 % of ``vmax`` at full, 0 once full (vectorised)."""
    frac = np.divide(delivered, wanted, out=np.ones_like(delivered), where=wanted > 0)
    span = max(1.0 - taper_from, 1e-9)
    k = np.clip((1.0 - frac) / span, 0.1, 1.0)
    return np.where(frac >= 1.0 - 1e-9, 0.0, vmax * k)


def simulate(
    scenario: Scenario,
    policy: str | Controller = "controller",
    *,
    known_departure: bool = True,
    known_energy: bool = True,
    noise: float = 0.0,
    taper_from: float = 0.8,
    horizon_h: float = 12.0,
    seed: int = 0,
    progress: bool = False,
    controller_options: dict | None = None,
    forecast: bool = False,
) -> SimulationResult:
    """Replay ``scenario``'s sessions through ``policy`` (see the module docstring).

    ``policy``: ``"controller"`` (a :class:`Controller` planning ``horizon_h`` ahead), a baseline
    name (:data:`BASELINES`) or a ready :class:`Controller`-like object. The scenario's horizon
    sets the simulated span and the control interval (its ``step_s``). ``forecast``: the
    controller is told every arrival in advance (:meth:`Controller.expect_session`: a depot's
    timetable, reservations); baselines decide one period ahead and ignore it.
    """
    hz = scenario.horizon
    step_s, K = hz.step_s, hz.n_periods
    sessions = list(scenario.sessions)
    # a V2G vehicle that arrives below its V2X minimum (ISO 15118-20: evMinV2XEnergyRequest > 0)
    # charges to it first and may discharge above it later: scored with discharge columns and
    # its true floor in the replay (below), not as a charge-only vehicle
    v2x_min = np.array([0.0 if s.v2x is None else s.v2x.min_v2x_energy_kwh for s in sessions])
    truth_sessions = [
        s.model_copy(update={"v2x": s.v2x.model_copy(update={"min_v2x_energy_kwh": 0.0})})
        if s.v2x is not None and s.v2x.min_v2x_energy_kwh > 0
        else s
        for s in sessions
    ]
    truth = compile_problem(scenario.site, truth_sessions, hz, scenario.signals, scenario.objective)
    if isinstance(policy, str):
        name = policy
        opts: dict[str, Any] = dict(
            step_s=step_s, signals=scenario.signals, objective=scenario.objective
        )
        if policy == "controller":
            n = max(1, min(K, round(horizon_h * 3600 / step_s)))
            ctl: Controller = Controller(
                scenario.site, n_periods=n, **{**opts, **(controller_options or {})}
            )
        else:
            ctl = Controller(
                scenario.site, planner=BaselinePlanner(policy), n_periods=1, reshare=False, **opts
            )
    else:
        ctl, name = policy, type(policy).__name__
    rng = np.random.default_rng(seed)

    def told(s: Session) -> Session:
        """The session as the vehicle announces it (what the controller may know)."""
        upd: dict[str, Any] = {}
        if not known_departure:
            upd["departure"] = s.arrival + timedelta(hours=ctl.default_dwell_h)
        if not known_energy:
            upd["energy_kwh"] = ctl.default_energy_kwh
        return s.model_copy(update=upd) if upd else s

    if forecast and isinstance(policy, str) and policy == "controller":
        for s in sessions:
            ctl.expect_session(told(s))
    S = len(sessions)
    ids = truth.session_ids
    t0 = hz.start_utc  # real-time steps (UTC arithmetic), whatever the zone of the horizon
    arr = np.array([hz.seconds_from_start(s.arrival) for s in sessions])
    dep = np.array([hz.seconds_from_start(s.departure) for s in sessions])
    wanted = truth.session_energy_kwh.copy()
    vmax = truth.session_max_current.copy()
    kw_per_a = truth.session_kw_per_a
    delivered = np.zeros(S)
    last_a = np.zeros(S)
    started = np.zeros(S, dtype=bool)
    stopped = np.zeros(S, dtype=bool)
    drawn = np.zeros((S, K))
    limits = np.full((S, K), np.nan)
    pilot = evse_pilot(truth)
    times = np.zeros(K)
    # storage: V2G vehicles (energy relative to plug-in) and batteries (absolute), as replayed
    st = truth.storage
    v2g = np.zeros(S, dtype=bool)
    eta_c, eta_d = np.ones(S), np.ones(S)
    e_lo, e_hi = np.full(S, -np.inf), np.full(S, np.inf)
    stored = np.zeros(S)
    exported = np.zeros(S)  # grid kWh each V2G vehicle gave back since plug-in
    out_d = np.zeros((S, K))
    _, kwh_d = session_kwh_per_a(truth)
    B = 0 if st is None else st.n_batteries
    bat_a = np.zeros((B, K))
    soc = np.zeros((0, K + 1))
    b_ids = () if st is None else st.battery_ids
    if st is not None:
        Us = st.n_units - B
        su = st.unit_session[:Us]
        v2g[su] = True
        eta_c[su], eta_d[su] = st.unit_eta_c[:Us], st.unit_eta_d[:Us]
        e_lo[su], e_hi[su] = st.unit_emin_kwh[:Us], st.unit_emax_kwh[:Us]
        e_lo[su] = np.maximum(e_lo[su], v2x_min[su])  # never discharged below its V2X minimum
        b_e = st.unit_e0_kwh[Us:].copy()
        b_lo, b_hi = st.unit_emin_kwh[Us:], st.unit_emax_kwh[Us:]
        b_kw = st.unit_kw_per_a[Us:]
        b_eta_c, b_eta_d = st.unit_eta_c[Us:], st.unit_eta_d[Us:]
        b_cap = st.battery_capacity_kwh
        soc = np.zeros((st.n_units, K + 1))
        soc[Us:, 0] = b_e
    for k in range(K):
        now = (t0 + timedelta(seconds=k * step_s)).astimezone(hz.start.tzinfo)  # shown locally
        ts = k * step_s
        for i in np.flatnonzero(started & ~stopped & (dep <= ts)):
            ctl.stop_session(ids[i], now)
            stopped[i] = True
        for i in np.flatnonzero(~started & (arr <= ts) & (dep > ts)):
            ctl.start_session(told(sessions[i]))
            started[i] = True
        active = np.flatnonzero(started & ~stopped)
        for i in active:
            # V2G: the export register too (OCPP 2.1 Energy.Active.Export.Register)
            x_kw = {"exported_kwh": float(exported[i])} if v2g[i] else {}
            ctl.meter(
                ids[i], now, energy_kwh=float(delivered[i]), current_a=float(last_a[i]), **x_kw
            )
        for j in range(B):  # a battery's management system reports its state of charge
            ctl.set_battery_soc(b_ids[j], float(np.clip(b_e[j] / b_cap[j], 0.0, 1.0)))
        c0 = time.perf_counter()
        sched = ctl.step(now)
        times[k] = time.perf_counter() - c0
        lim = np.zeros(S)
        sp = np.zeros(S)  # discharge setpoint, A per phase (V2G)
        if active.size:
            pos = {sid: j for j, sid in enumerate(sched.problem.session_ids)}
            rows = np.array([pos[ids[i]] for i in active])
            lim[active] = sched.current[rows, 0]
            limits[active, k] = lim[active]
            if sched.discharge is not None:
                sp[active] = np.nan_to_num(sched.discharge[rows, 0])
        acc = accepted_current(vmax, delivered, wanted, taper_from)
        # a V2G vehicle accepts its maximum up to its V2X ceiling (ISO 15118-20 evMaxV2XEnergy)
        acc[v2g] = np.where(stored[v2g] < e_hi[v2g] - 1e-9, vmax[v2g], 0.0)
        d = np.minimum(pilot(lim), acc)
        if noise > 0:
            d *= 1.0 - noise * rng.random(S)
        avail = truth.avail[:, k]
        e_per_a = kw_per_a * avail * (step_s / 3600.0)
        room = np.divide(wanted - delivered, e_per_a, out=np.zeros(S), where=e_per_a > 0)
        room[v2g] = np.divide(
            e_hi[v2g] - stored[v2g],
            eta_c[v2g] * e_per_a[v2g],
            out=np.zeros(int(v2g.sum())),
            where=e_per_a[v2g] > 0,
        )
        d = np.minimum(d, np.maximum(room, 0.0))
        d = np.floor(np.maximum(d, 0.0) * 10.0 + 1e-9) / 10.0  # what a meter resolves
        d[~(started & ~stopped)] = 0.0
        # V2G discharge: the setpoint as the inverter follows it (no meter rounding: a setpoint
        # cut short would take back credit the plan counted on), never below the V2X floor
        give = np.divide(
            (stored - e_lo) * eta_d, kwh_d[:, k], out=np.zeros(S), where=kwh_d[:, k] > 0
        )
        x = np.minimum(np.maximum(sp, 0.0), np.maximum(give, 0.0))
        x[~(started & ~stopped) | ~v2g | (d > 0)] = 0.0
        drawn[:, k] = d
        out_d[:, k] = x
        delivered += d * e_per_a
        exported += x * kwh_d[:, k]
        before = stored.copy()
        stored += eta_c * d * e_per_a - x * kwh_d[:, k] / eta_d
        # float dust only (a vehicle below its V2X minimum is not lifted to it)
        stored[v2g] = np.clip(
            stored[v2g], np.minimum(e_lo[v2g], before[v2g]), np.maximum(e_hi[v2g], before[v2g])
        )
        last_a = d
        if B:
            dt_h = float(truth.period_h[k])
            b = np.zeros(B)
            if sched.battery_a is not None:
                b = np.nan_to_num(np.asarray(sched.battery_a, dtype=np.float64)[:, 0])
            b_in = np.minimum(np.maximum(b, 0.0), (b_hi - b_e) / (b_eta_c * b_kw * dt_h))
            b_out = np.minimum(np.maximum(-b, 0.0), (b_e - b_lo) * b_eta_d / (b_kw * dt_h))
            b_in, b_out = np.maximum(b_in, 0.0), np.maximum(b_out, 0.0)
            bat_a[:, k] = b_in - b_out
            b_e = np.clip(b_e + (b_eta_c * b_in - b_out / b_eta_d) * b_kw * dt_h, b_lo, b_hi)
        if st is not None:
            soc[: st.n_units - B, k + 1] = stored[st.unit_session[: st.n_units - B]]
            soc[st.n_units - B :, k + 1] = b_e
        if progress:
            _progress(name, k + 1, K)
    if progress:
        print(file=sys.stderr)
    dis = out_d if v2g.any() else None
    bat = bat_a if B else None
    sched = Schedule(
        truth,
        drawn,
        ScheduleStatus.FEASIBLE,
        f"simulated:{name}",
        solve_time_s=float(times.sum()),
        discharge=dis,
        battery_a=bat,
    )
    return SimulationResult(
        name,
        sched,
        limits,
        sched.kpis(),
        len(violations(truth, drawn, discharge=dis, battery_a=bat)),
        times,
        list(getattr(ctl, "log", [])),
        soc,
    )


def _progress(name: str, k: int, n: int) -> None:
    w = 30
    f = int(w * k / n)
    print(f"\r{name:<14} [{'#' * f}{'.' * (w - f)}] {k}/{n}", end="", file=sys.stderr, flush=True)


def compare(
    scenario: Scenario, baselines: list[str] | tuple[str, ...] = BASELINES, **kw
) -> list[SimulationResult]:
    """The controller and each baseline on the same replay (controller first)."""
    return [simulate(scenario, "controller", **kw)] + [
        simulate(scenario, b, **kw) for b in baselines
    ]


def _table_rows(results: list[SimulationResult]) -> tuple[list[str], list[list[str]]]:
    def dr(r: SimulationResult) -> str:
        d = r.kpis.demand_response
        out = sum(x.discharged_kwh for x in d)
        met = f"{sum(x.compliant for x in d)}/{len(d)} met" if d else "—"
        return met + (f" ({out:,.1f} kWh discharged)" if out > 0 else "")

    def pct(r: SimulationResult) -> str:
        return f"{r.kpis.delivered_kwh:,.1f} kWh ({r.delivered_pct:.1f} %)"

    def ms(r: SimulationResult) -> str:
        return f"{1e3 * r.step_time_s.mean():.1f} / {1e3 * r.step_time_s.max():.1f} ms"

    rows: list[tuple[str, Callable[[SimulationResult], str]]] = [
        ("energy delivered", pct),
        ("sessions fully served", lambda r: f"{r.kpis.sessions_served}/{len(r.kpis.sessions)}"),
        ("peak grid import", lambda r: f"{r.kpis.peak_import_kw:,.1f} kW"),
        ("energy cost", lambda r: f"{r.kpis.energy_cost:,.2f}"),
        ("demand response", dr),
        ("limit violations", lambda r: f"{r.n_violations}"),
        ("step time mean / max", ms),
    ]
    if any(r.kpis.storage is not None for r in results):

        def sto(fn: Callable[[Any], str]) -> Callable[[SimulationResult], str]:
            return lambda r: "—" if r.kpis.storage is None else fn(r.kpis.storage)

        rows[-2:-2] = [
            ("energy discharged", sto(lambda s: f"{s.discharged_kwh:,.1f} kWh")),
            ("battery cycles", sto(lambda s: " / ".join(f"{c:.2f}" for c in s.battery_cycles))),
            ("storage revenue", sto(lambda s: f"{s.revenue:,.2f}")),
            ("peak shaved", sto(lambda s: f"{s.peak_shaved_kw:,.1f} kW")),
        ]
    head = ["", *(r.name for r in results)]
    return head, [[label, *(fn(r) for r in results)] for label, fn in rows]


def simulation_table(results: list[SimulationResult]) -> str:
    """KPIs side by side, one column per policy (plain text)."""
    head, body = _table_rows(results)
    widths = [max(len(row[j]) for row in [head, *body]) for j in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def markdown_table(results: list[SimulationResult]) -> str:
    """The same table in Markdown (for docs)."""
    head, body = _table_rows(results)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(out)


def hindsight(scenario: Scenario, *, taper_from: float = 0.8, site_limits: bool = True) -> Schedule:
    """The hindsight bound of a replay: one LP over the whole scenario with every arrival,
    departure and energy known in advance, under the physics :func:`simulate` imposes.

    What a clairvoyant operator could at most deliver — an upper bound on every policy's
    energy in :func:`simulate` with the same ``taper_from`` (per session and in total):

    - the site's limits as compiled (the same safety rows, phasor facets included, the
      controller plans with); ``site_limits=False`` drops them (every car on its own: what the
      cars' physics alone allow — a day where both agree is *not overbooked*);
    - a vehicle draws from the first control step at or after its arrival (the simulator plugs
      it in there);
    - the battery taper of :func:`accepted_current`, as two linear relaxations (so the bound
      stays a bound): the current of a period is at most ``vmax · (0.1 + 0.9 (1 − f) / (1 −
      taper_from))`` with ``f`` the fraction of the wanted energy held at the period's start
      (the chord over the taper, above the true ``vmax · clip((1 − f)/(1 − taper_from), 0.1,
      1)``), and the energy held at the end of each period is at most what the car would hold
      charging greedily from its arrival (the most any policy can give it by then: the taper's
      one-step map is increasing, so greedy is pointwise best);
    - the EVSEs' pilot steps and minimum currents are relaxed (an LP; any policy's drawn
      currents are feasible for it).

    Returns the LP's schedule on the problem of the step-aligned sessions (same ids and
    energies as the scenario's): :meth:`~loadopt.schedule.Schedule.kpis` gives energy and
    sessions served. V2G sessions (no taper in the simulator) get no taper rows.
    """
    import dataclasses
    import math

    import scipy.sparse as sp

    from .lp import build_lp
    from .solvers.highs import LP_OPTIONS, solve_lp

    if not 0.0 <= taper_from < 1.0:
        raise InputError(f"hindsight: taper_from must be in [0, 1), got {taper_from!r}")
    hz = scenario.horizon
    aligned = []
    for s in scenario.sessions:
        k = math.ceil(hz.seconds_from_start(s.arrival) / hz.step_s - 1e-9)
        arr = hz.start_utc + timedelta(seconds=max(k, 0) * hz.step_s)
        arr = min(max(arr, s.arrival), s.departure - timedelta(seconds=1))
        aligned.append(s.model_copy(update={"arrival": arr}) if arr != s.arrival else s)
    p = compile_problem(scenario.site, aligned, hz, scenario.signals, scenario.objective)
    S, T = p.n_sessions, p.n_periods
    lp = build_lp(p)
    if lp.n_cols == 0:
        return Schedule(p, np.zeros((S, T)), ScheduleStatus.OPTIMAL, "hindsight")
    W = p.session_energy_kwh
    vmax = p.session_max_current
    bidir = np.zeros(S, dtype=bool)
    if p.storage is not None:
        bidir = p.storage.session_unit >= 0
    # the greedy trajectory: energy each car holds at the end of each period charging at what
    # its battery accepts from its (step-aligned) plug-in on
    e_per_a = np.zeros((S, T))
    e_per_a[p.var_session, p.var_period] = p.var_kwh_per_a
    held = np.zeros(S)
    greedy = np.zeros((S, T))
    for t in range(T):  # once per period, vectorised over sessions
        room = np.divide(W - held, e_per_a[:, t], out=np.zeros(S), where=e_per_a[:, t] > 0)
        d = np.minimum(accepted_current(vmax, held, W, taper_from), np.maximum(room, 0.0))
        held = held + d * e_per_a[:, t]
        greedy[:, t] = held
    # one energy-held column per current column of a tapering session, in period order
    r = lp.cols["r"]
    v = r.index
    sess, per = p.var_session[v], p.var_period[v]
    tap = np.flatnonzero((W[sess] > 0) & ~bidir[sess])
    tap = tap[np.lexsort((per[tap], sess[tap]))]
    n = tap.size
    first = np.ones(n, dtype=bool)
    first[1:] = sess[tap][1:] != sess[tap][:-1]
    later = np.flatnonzero(~first)
    e_col = lp.n_cols + np.arange(n)
    r_col = r.start + tap
    slope = 0.9 / (1.0 - taper_from)
    s_t = sess[tap]
    # rows [0, n): e_j − e_{j−1} − kWh/A · r_j = 0;  rows [n, 2n): r_j + vmax·slope/W · e_{j−1}
    # ≤ vmax (0.1 + slope)
    rows = np.concatenate([np.arange(n), np.arange(n), later, n + np.arange(n), n + later])
    cols = np.concatenate([e_col, r_col, e_col[later - 1], r_col, e_col[later - 1]])
    vals = np.concatenate(
        [
            np.ones(n),
            -p.var_kwh_per_a[v][tap],
            -np.ones(later.size),
            np.ones(n),
            (vmax[s_t] * slope / W[s_t])[later],
        ]
    )
    B = sp.csr_matrix((vals, (rows, cols)), shape=(2 * n, lp.n_cols + n))
    A = sp.vstack([sp.hstack([lp.A, sp.csc_matrix((lp.n_rows, n))]), B]).tocsc()
    row_lb = np.concatenate([lp.row_lb, np.zeros(n), np.full(n, -np.inf)])
    row_ub = np.concatenate([lp.row_ub, np.zeros(n), vmax[s_t] * (0.1 + slope)])
    if not site_limits and "safety" in lp.rows:
        row_lb[lp.rows["safety"].slice] = -np.inf
        row_ub[lp.rows["safety"].slice] = np.inf
    big = dataclasses.replace(
        lp,
        c=np.concatenate([lp.c, np.zeros(n)]),
        col_lb=np.concatenate([lp.col_lb, np.zeros(n)]),
        col_ub=np.concatenate([lp.col_ub, greedy[s_t, per[tap]] + 1e-9]),
        A=A,
        row_lb=row_lb,
        row_ub=row_ub,
    )
    res = solve_lp(big, options=LP_OPTIONS)
    if res.x is None:
        raise InputError(f"hindsight: the LP found no solution ({res.message})")
    cur = p.dense(lp.currents(p, res.x[: lp.n_cols]))
    return Schedule(p, cur, ScheduleStatus.OPTIMAL, "hindsight", res.objective, res.time_s)
