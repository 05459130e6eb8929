"""The result: a current per session × period (A) and what follows from it.

A :class:`Schedule` produced by :func:`loadopt.solve` is always safe to emit: its currents sit on
the 0.1 A grid and satisfy every limit of the problem (:meth:`Schedule.check` proves it). Its
``status`` says which path produced it and whether anything could not be honoured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property

import numpy as np

from .errors import SafetyError
from .problem import Problem
from .safety import Violation, violations


class ScheduleStatus(StrEnum):
    OPTIMAL = "optimal"  #: the solver proved optimality (up to its tolerances)
    FEASIBLE = "feasible"  #: a valid, not proven optimal schedule (e.g. MILP gap, fast path)
    TIME_LIMIT_FALLBACK = "time_limit_fallback"  #: solver ran out of time; fast path used
    SOLVER_FAILED_FALLBACK = "solver_failed_fallback"  #: solver failed; fast path used


@dataclass(frozen=True)
class SessionKpi:
    session_id: str
    requested_kwh: float
    delivered_kwh: float

    @property
    def unmet_kwh(self) -> float:
        return max(self.requested_kwh - self.delivered_kwh, 0.0)

    @property
    def served(self) -> bool:
        return self.unmet_kwh <= max(1e-3, 1e-3 * self.requested_kwh)


@dataclass(frozen=True)
class DrKpi:
    """One grid signal's compliance in this schedule (:mod:`loadopt.grid.compliance`)."""

    event_id: str
    periods: int  #: periods of the horizon the signal covers
    max_import_kw: float  #: largest planned load of its node there (net export for export caps)
    cap_kw: float  #: the tightest requirement there (cap, setpoint or export cap)
    compliant: bool
    kind: str = "import_cap_kw"
    node: str = ""  #: "" = the grid connection
    cause: str = ""  #: why it is not met (first missed period)
    curtailed_kwh: float = 0.0  #: energy not delivered because of it


@dataclass(frozen=True)
class Kpis:
    """Headline numbers of a schedule (energies in kWh, powers in kW, cost in currency)."""

    sessions: tuple[SessionKpi, ...]
    delivered_kwh: float
    requested_kwh: float
    sessions_served: int
    peak_import_kw: float
    energy_cost: float
    demand_response: tuple[DrKpi, ...]

    def table(self) -> str:
        """A human-readable summary."""
        n = len(self.sessions)
        pct = 100.0 * self.delivered_kwh / self.requested_kwh if self.requested_kwh else 100.0
        rows = [
            ("sessions", f"{n}"),
            ("sessions fully served", f"{self.sessions_served} ({_pct(self.sessions_served, n)})"),
            ("energy requested", f"{self.requested_kwh:,.1f} kWh"),
            ("energy delivered", f"{self.delivered_kwh:,.1f} kWh ({pct:.1f} %)"),
            ("peak grid import", f"{self.peak_import_kw:,.1f} kW"),
            ("energy cost", f"{self.energy_cost:,.2f}"),
        ]
        for d in self.demand_response:
            if d.periods == 0:
                continue
            ok = "met" if d.compliant else f"NOT MET ({d.cause})"
            where = f" at {d.node}" if d.node else ""
            rows.append((f"grid signal {d.event_id}",
                         f"{ok}: {d.kind}{where}, max {d.max_import_kw:,.1f} kW vs "
                         f"{d.cap_kw:,.1f} kW, {d.curtailed_kwh:,.1f} kWh curtailed"))
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.0f} %" if b else "—"


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-phase current limits (A) for every session and period, with provenance."""

    problem: Problem
    current: np.ndarray  #: (S, T) A, multiples of 0.1 A
    status: ScheduleStatus
    method: str  #: which path produced it: "lp", "milp", "fast", "lp->fast" …
    objective: float | None = None
    solve_time_s: float = 0.0
    message: str = ""
    notices: tuple[str, ...] = field(default=())
    #: Number of phases per session × period where phase switching chose it (OCPP numberPhases);
    #: None = the session's own phase count throughout.
    n_phases: np.ndarray | None = None

    def __post_init__(self) -> None:
        # own a read-only copy: the caller's array stays theirs, and nobody edits an emitted plan
        cur = np.array(self.current, dtype=np.float64)
        cur.setflags(write=False)
        object.__setattr__(self, "current", cur)

    # ------------------------------------------------------------------ safety
    def violations(self, limit: int | None = None) -> list[Violation]:
        """Every limit this schedule breaks as emitted (empty for any schedule from ``solve``)."""
        return violations(self.problem, self.current, limit)

    def check(self) -> None:
        """Raise :class:`~loadopt.errors.SafetyError` listing the first violations, if any."""
        v = self.violations(limit=10)
        if v:
            raise SafetyError("schedule violates limits: " + "; ".join(map(str, v)))

    # ------------------------------------------------------------------ loads
    @cached_property
    def ev_power_kw(self) -> np.ndarray:
        """(T,) kW drawn by all vehicles (limits taken as drawn, reservations included)."""
        return self._power_kw.sum(axis=0) + self._reserved_kw.sum(axis=0)

    @cached_property
    def unreserved_current(self) -> np.ndarray:
        """(S, T) A of the plan outside reservations (inside one, the EVSE's reservation is
        what it may draw and is counted instead, :attr:`Problem.evse_reserved_a`)."""
        p = self.problem
        if p.var_reserved is None or not p.var_reserved.any():
            return self.current
        out = self.current.copy()
        out[p.var_session[p.var_reserved], p.var_period[p.var_reserved]] = 0.0
        return out

    @cached_property
    def _reserved_kw(self) -> np.ndarray:
        """(E, T) kW reserved per EVSE."""
        p = self.problem
        if p.evse_reserved_a is None:
            return np.zeros((len(p.evse_ids), p.n_periods))
        volt = p.evse_voltage_v
        return p.evse_reserved_a.sum(axis=1) * volt[:, None] / 1000.0

    @cached_property
    def _power_kw(self) -> np.ndarray:
        """(S, T) kW per session and period outside reservations (those count per EVSE)."""
        return self._kw_of(self.unreserved_current)

    def _kw_of(self, current: np.ndarray) -> np.ndarray:
        """(S, T) kW of per-session currents, with the phase count of each period."""
        p = self.problem
        kw = current * p.session_kw_per_a[:, None]
        if self.n_phases is not None:  # phase switching: kW scales with the phases in use
            full = np.maximum(p.session_phase_mask.sum(axis=1), 1)[:, None]
            kw = kw * np.minimum(self.n_phases, full) / full
        return kw

    @cached_property
    def import_kw(self) -> np.ndarray:
        """(T,) net grid import kW (negative = export) with base load and PV."""
        p = self.problem
        return self.ev_power_kw + p.base_load_kw - p.pv_kw

    @cached_property
    def line_current(self) -> np.ndarray:
        """(6N, T) A: the magnitude of every line current — node lines, then delta/wye primary
        lines (groups of :mod:`loadopt.problem`) — as the phasor sum of the branches on it and
        the base load (:mod:`loadopt.wiring`; the plain sum where all are in phase), plus the
        reserved EVSE draw (added in phase, the worst case)."""
        p = self.problem
        cur = self.unreserved_current
        if self.n_phases is None:
            Z = p.line_coef.T @ cur
        else:  # periods switched to one phase draw on the EVSE's L1 only
            one = self.n_phases == 1
            Z = (p.line_coef.T @ np.where(one, 0.0, cur)
                 + p.line_coef_l1.T @ np.where(one, cur, 0.0))
        Z = np.asarray(Z) + p.line_base[:, None] * p.base_load_a[None, :]
        return np.abs(Z) + p.line_reserved_a

    @cached_property
    def node_phase_current(self) -> np.ndarray:
        """(N, 3, T) A per node, site line and period (magnitudes of the phasor sums,
        :attr:`line_current`), including the base load where it flows."""
        N = len(self.problem.node_ids)
        return self.line_current[: 3 * N].reshape(N, 3, -1)

    @cached_property
    def node_power_kw(self) -> np.ndarray:
        """(N, T) kW per node and period, including the base load where it flows and reserved
        EVSE draw."""
        p = self.problem
        out = p.session_anc.T @ self._power_kw + p.evse_anc.T @ self._reserved_kw
        out[p.node_carries_base] += p.base_load_kw[None, :]
        return out

    @cached_property
    def energy_kwh(self) -> np.ndarray:
        """(S,) kWh each session receives if it draws its limits."""
        p = self.problem
        kw = self._kw_of(self.current) * p.avail
        if p.horizon.uniform:
            return kw.sum(axis=1) * p.step_h
        return kw @ p.period_h

    def session_limits(self, session_id: str) -> list[tuple[datetime, float]]:
        """``(period start, limit A)`` for every period of the horizon, for one session."""
        i = self.problem.session_index(session_id)
        return list(zip(self.problem.period_starts, self.current[i].tolist(), strict=True))

    # ------------------------------------------------------------------ KPIs
    def kpis(self) -> Kpis:
        p = self.problem
        got = np.minimum(self.energy_kwh, p.session_energy_kwh)
        sess = tuple(SessionKpi(sid, float(p.session_energy_kwh[i]), float(got[i]))
                     for i, sid in enumerate(p.session_ids))
        imp = self.import_kw
        dt = p.period_h
        cost = float(np.sum(np.maximum(imp, 0) * p.import_price * dt))
        if p.export_price is not None:
            cost -= float(np.sum(np.maximum(-imp, 0) * p.export_price * dt))
        from .grid.compliance import compliance

        drs = []
        for c in compliance(self):
            if c.period_index.size == 0:
                drs.append(DrKpi(c.signal_id, 0, 0.0, float("inf"), True, c.kind, c.node))
                continue
            drs.append(DrKpi(c.signal_id, int(c.period_index.size), float(c.planned_kw.max()),
                             float(c.required_kw.min()), c.compliant, c.kind, c.node,
                             c.first_cause, c.curtailed_kwh))
        return Kpis(
            sessions=sess, delivered_kwh=float(got.sum()),
            requested_kwh=float(p.session_energy_kwh.sum()),
            sessions_served=sum(s.served for s in sess),
            peak_import_kw=float(max(imp.max(initial=0.0), 0.0)),
            energy_cost=cost, demand_response=tuple(drs),
        )
