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
    #: kWh discharged (V2G and batteries, AC side) inside the window: DR met with discharge
    discharged_kwh: float = 0.0


@dataclass(frozen=True)
class StorageKpi:
    """What the batteries and V2G vehicles did (kWh AC side, currency)."""

    discharged_kwh: float  #: V2G sessions and batteries together
    v2g_discharged_kwh: float
    battery_charged_kwh: float
    battery_discharged_kwh: float
    #: equivalent full cycles of each battery: kWh out of the cells / capacity
    battery_cycles: tuple[float, ...]
    #: energy cost of the same plan with every discharge and battery flow removed, minus the
    #: actual energy cost (what storage earned or saved on the bill)
    revenue: float
    #: peak import of that same plan without storage, minus the actual peak (kW)
    peak_shaved_kw: float
    degradation_cost: float


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
    storage: StorageKpi | None = None  #: None on a charge-only problem

    def table(self) -> str:
        """A human-readable summary.

        Returns
        -------
        str
            Energy delivered / requested (kWh), sessions served, peak import (kW), cost, and the
            demand-response compliance, one per line.
        """
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
            rows.append(
                (
                    f"grid signal {d.event_id}",
                    f"{ok}: {d.kind}{where}, max {d.max_import_kw:,.1f} kW vs "
                    f"{d.cap_kw:,.1f} kW, {d.curtailed_kwh:,.1f} kWh curtailed"
                    + (f", {d.discharged_kwh:,.1f} kWh discharged" if d.discharged_kwh else ""),
                )
            )
        if self.storage is not None:
            st = self.storage
            rows += [
                (
                    "energy discharged",
                    f"{st.discharged_kwh:,.1f} kWh (V2G "
                    f"{st.v2g_discharged_kwh:,.1f}, batteries "
                    f"{st.battery_discharged_kwh:,.1f})",
                ),
                ("battery cycles", ", ".join(f"{c:.2f}" for c in st.battery_cycles) or "—"),
                ("storage revenue", f"{st.revenue:,.2f} (degradation {st.degradation_cost:,.2f})"),
                ("peak shaved", f"{st.peak_shaved_kw:,.1f} kW"),
            ]
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
    #: (S, T) A per phase each V2G session may discharge (≥ 0, never with ``current`` > 0 in the
    #: same period); None = nothing discharges (always None on a charge-only problem).
    discharge: np.ndarray | None = None
    #: (B, T) A per phase of each stationary battery, balanced over the three phases, signed:
    #: + charge, − discharge (kW = A × 3 × site voltage / 1000); None = batteries idle.
    battery_a: np.ndarray | None = None

    def __post_init__(self) -> None:
        # own a read-only copy: the caller's array stays theirs, and nobody edits an emitted plan
        for name in ("current", "discharge", "battery_a"):
            a = getattr(self, name)
            if a is None:
                continue
            a = np.array(a, dtype=np.float64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    # ------------------------------------------------------------------ safety
    def violations(self, limit: int | None = None) -> list[Violation]:
        """Every limit this schedule breaks as emitted (empty for any schedule from ``solve``).

        Parameters
        ----------
        limit
            Stop after this many (``None``: all).

        Returns
        -------
        list of Violation
            Each naming the limit (node, phase, line, period), its value and the excess (A or kW).
        """
        return violations(
            self.problem, self.current, limit, discharge=self.discharge, battery_a=self.battery_a
        )

    def check(self) -> None:
        """Raise :class:`~loadopt.errors.SafetyError` listing the first violations, if any."""
        v = self.violations(limit=10)
        if v:
            raise SafetyError("schedule violates limits: " + "; ".join(map(str, v)))

    # ------------------------------------------------------------------ loads
    @cached_property
    def ev_power_kw(self) -> np.ndarray:
        """(T,) kW drawn by all vehicles (limits taken as drawn, reservations included), net of
        V2G discharge."""
        return (
            self._power_kw.sum(axis=0)
            + self._reserved_kw.sum(axis=0)
            - self.discharge_kw.sum(axis=0)
        )

    @cached_property
    def discharge_kw(self) -> np.ndarray:
        """(S, T) kW each session discharges (0 without V2G)."""
        p = self.problem
        if self.discharge is None:
            return np.zeros((p.n_sessions, p.n_periods))
        return self.discharge * p.session_kw_per_a[:, None]

    @cached_property
    def battery_kw(self) -> np.ndarray:
        """(B, T) kW of each stationary battery, + charge, − discharge."""
        p = self.problem
        if p.storage is None:
            return np.zeros((0, p.n_periods))
        if self.battery_a is None:
            return np.zeros((p.storage.n_batteries, p.n_periods))
        return self.battery_a * (3.0 * p.site.voltage_v / 1000.0)

    @cached_property
    def soc_kwh(self) -> np.ndarray:
        """(U, T + 1) energy state of every storage unit (V2G sessions relative to now, then
        batteries absolute) if the limits are drawn; see :func:`loadopt.safety.soc_path`."""
        from .safety import soc_path

        return soc_path(self.problem, self.current, self.discharge, self.battery_a)

    def _storage_node_kw(self) -> np.ndarray:
        """(N, T) net kW of batteries and V2G discharge per node (import positive)."""
        p = self.problem
        N, T = len(p.node_ids), p.n_periods
        out = np.zeros((N, T))
        if p.storage is None:
            return out
        if self.discharge is not None:
            out -= p.session_anc.T @ self.discharge_kw
        if p.storage.n_batteries:
            out += self._battery_anc().T @ self.battery_kw
        return out

    def _battery_anc(self):
        p = self.problem
        from .compile import _ancestors

        nodes = np.array([p.node_ids.index(b.node) for b in p.site.batteries], dtype=np.int64)
        return _ancestors(nodes, p.node_parent, len(p.node_ids))

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
        return self.ev_power_kw + self.battery_kw.sum(axis=0) + p.base_load_kw - p.pv_kw

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
            Z = p.line_coef.T @ np.where(one, 0.0, cur) + p.line_coef_l1.T @ np.where(one, cur, 0.0)
        Z = np.asarray(Z) + p.line_base[:, None] * p.base_load_a[None, :]
        return np.abs(Z) + p.line_reserved_a

    @cached_property
    def node_phase_current(self) -> np.ndarray:
        """(N, 3, T) A per node, site line and period (magnitudes of the phasor sums,
        :attr:`line_current`), including the base load where it flows; with batteries and V2G
        (sites whose lines are all in phase) net of their discharge: negative = export."""
        p = self.problem
        N = len(p.node_ids)
        out = self.line_current[: 3 * N].reshape(N, 3, -1)
        if p.storage is not None:
            out = out.copy()
            if self.discharge is not None:
                At = p.session_anc.T.tocsr()
                for k in range(3):
                    out[:, k] -= At @ (self.discharge * p.session_phase_mask[:, k, None])
            if self.battery_a is not None and p.storage.n_batteries:
                out += (self._battery_anc().T @ self.battery_a)[:, None, :]
        return out

    @cached_property
    def node_power_kw(self) -> np.ndarray:
        """(N, T) kW per node and period, including the base load where it flows and reserved
        EVSE draw."""
        p = self.problem
        out = p.session_anc.T @ self._power_kw + p.evse_anc.T @ self._reserved_kw
        out[p.node_carries_base] += p.base_load_kw[None, :]
        return out + self._storage_node_kw()

    @cached_property
    def energy_kwh(self) -> np.ndarray:
        """(S,) kWh each session receives if it draws its limits."""
        p = self.problem
        kw = self._kw_of(self.current) * p.avail
        if p.horizon.uniform:
            return kw.sum(axis=1) * p.step_h
        return kw @ p.period_h

    def session_limits(self, session_id: str) -> list[tuple[datetime, float]]:
        """The limit of one session in every period of the horizon.

        Parameters
        ----------
        session_id
            The session.

        Returns
        -------
        list of (datetime, float)
            ``(period start, limit in A per phase)``.
        """
        i = self.problem.session_index(session_id)
        return list(zip(self.problem.period_starts, self.current[i].tolist(), strict=True))

    @cached_property
    def discharged_kwh(self) -> np.ndarray:
        """(S,) kWh each session gives back (AC side) if it discharges its limits."""
        p = self.problem
        return (self.discharge_kw * p.avail) @ p.period_h

    # ------------------------------------------------------------------ KPIs
    def _cost(self, imp: np.ndarray) -> float:
        p = self.problem
        cost = float(np.sum(np.maximum(imp, 0) * p.import_price * p.period_h))
        if p.export_price is not None:
            cost -= float(np.sum(np.maximum(-imp, 0) * p.export_price * p.period_h))
        return cost

    def _storage_kpi(self) -> StorageKpi | None:
        p = self.problem
        st = p.storage
        if st is None:
            return None
        dt = p.period_h
        v2g = float(self.discharged_kwh.sum())
        bkw = self.battery_kw
        b_in = float((np.maximum(bkw, 0) @ dt).sum())
        b_out_ac = np.maximum(-bkw, 0) @ dt
        Us = st.n_units - st.n_batteries
        cycles = b_out_ac / st.unit_eta_d[Us:] / st.battery_capacity_kwh
        without = self.import_kw - self.battery_kw.sum(axis=0) + self.discharge_kw.sum(axis=0)
        su = st.unit_session[:Us]
        degr = float(
            np.sum(self.discharged_kwh[su] * st.unit_degradation[:Us])
            + np.sum(b_out_ac * st.unit_degradation[Us:])
        )
        return StorageKpi(
            discharged_kwh=v2g + float(b_out_ac.sum()),
            v2g_discharged_kwh=v2g,
            battery_charged_kwh=b_in,
            battery_discharged_kwh=float(b_out_ac.sum()),
            battery_cycles=tuple(float(c) for c in cycles),
            revenue=self._cost(without) - self._cost(self.import_kw),
            peak_shaved_kw=float(
                max(without.max(initial=0.0), 0.0) - max(self.import_kw.max(initial=0.0), 0.0)
            ),
            degradation_cost=degr,
        )

    def kpis(self) -> Kpis:
        """The headline numbers of this schedule (:class:`Kpis`).

        Returns
        -------
        Kpis
            Energy delivered vs requested (kWh) per session and in total, sessions served, peak
            import (kW), energy cost, demand-response compliance per grid signal
            (:mod:`loadopt.grid.compliance`), and the storage figures when there is storage.
        """
        p = self.problem
        got = np.minimum(self.energy_kwh, p.session_energy_kwh)
        st = p.storage
        if st is not None and self.discharge is not None:  # V2G: the energy stored at the end
            Us = st.n_units - st.n_batteries
            end = self.soc_kwh[:Us, -1]
            su = st.unit_session[:Us]
            got = got.copy()
            got[su] = np.clip(end, 0.0, p.session_energy_kwh[su])
        sess = tuple(
            SessionKpi(sid, float(p.session_energy_kwh[i]), float(got[i]))
            for i, sid in enumerate(p.session_ids)
        )
        imp = self.import_kw
        cost = self._cost(imp)
        out_kw = self.discharge_kw.sum(axis=0) + np.maximum(-self.battery_kw, 0).sum(axis=0)
        from .grid.compliance import compliance

        drs = []
        for c in compliance(self):
            if c.period_index.size == 0:
                drs.append(DrKpi(c.signal_id, 0, 0.0, float("inf"), True, c.kind, c.node))
                continue
            drs.append(
                DrKpi(
                    c.signal_id,
                    int(c.period_index.size),
                    float(c.planned_kw.max()),
                    float(c.required_kw.min()),
                    c.compliant,
                    c.kind,
                    c.node,
                    c.first_cause,
                    c.curtailed_kwh,
                    float(out_kw[c.period_index] @ p.period_h[c.period_index]),
                )
            )
        return Kpis(
            sessions=sess,
            delivered_kwh=float(got.sum()),
            requested_kwh=float(p.session_energy_kwh.sum()),
            sessions_served=sum(s.served for s in sess),
            peak_import_kw=float(max(imp.max(initial=0.0), 0.0)),
            energy_cost=cost,
            demand_response=tuple(drs),
            storage=self._storage_kpi(),
        )
