"""Compliance per grid signal: required vs planned vs metered power in each period of its window.

For every :class:`~loadopt.signals.GridSignal` of a schedule's problem and every period its
window covers (after randomisation; plus every period a stale stream's fallback covers):

- ``required_kw``: what the operator asked for — the cap (before §14a floors raised it), the
  setpoint, or the export cap (kW);
- ``planned_kw``: what the schedule makes the signal's node draw (at the grid connection: net
  import with base load and PV; elsewhere: the node's load with the base load where it flows);
- ``metered_kw``: what a meter saw (optional, per period);
- ``met`` per period, judged on the metered value where there is one, else on the plan, with the
  cause of a miss; ``curtailed_kwh``: energy the vehicles under the node wanted and did not get
  because of the signal (see :func:`compliance`).

The adapters (:mod:`loadopt.grid.openadr2`, :mod:`loadopt.grid.openadr3`) send these back as the
protocol's report; :meth:`loadopt.Schedule.kpis` summarises them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ..errors import InputError
from .arrays import is_validity_only

#: Tolerance of a cap or export cap (kW, relative to the requirement): float noise, not a margin.
CAP_TOL = 1e-6
#: A setpoint counts as met within this share of it (or 0.5 kW, whichever is larger).
SETPOINT_TOL = 0.05


@dataclass(frozen=True, eq=False)
class SignalCompliance:
    """One signal's compliance, period by period (arrays over the periods in ``period_index``)."""

    signal_id: str
    source: str
    ref: str | None
    node: str  #: node id ("" = the grid connection)
    kind: str
    period_index: np.ndarray  #: periods of the horizon the signal covers
    period_start: tuple[datetime, ...]
    required_kw: np.ndarray
    planned_kw: np.ndarray
    metered_kw: np.ndarray | None
    met: np.ndarray  #: bool per period
    cause: tuple[str, ...]  #: why a period was missed ("" where met)
    curtailed_kwh: float  #: energy not delivered because of this signal (kWh)

    @property
    def compliant(self) -> bool:
        return bool(self.met.all())

    @property
    def first_cause(self) -> str:
        return next((c for c in self.cause if c), "")

    def as_dict(self) -> dict:
        """Plain JSON-able form (what the reports carry)."""
        return {
            "signal": self.signal_id,
            "source": self.source,
            "ref": self.ref,
            "node": self.node,
            "kind": self.kind,
            "compliant": self.compliant,
            "curtailed_kwh": self.curtailed_kwh,
            "periods": [
                {
                    "start": t.isoformat(),
                    "required_kw": float(r),
                    "planned_kw": float(p),
                    "metered_kw": None if self.metered_kw is None else float(self.metered_kw[k]),
                    "met": bool(m),
                    "cause": c,
                }
                for k, (t, r, p, m, c) in enumerate(
                    zip(
                        self.period_start,
                        self.required_kw,
                        self.planned_kw,
                        self.met,
                        self.cause,
                        strict=True,
                    )
                )
            ],
        }


def compliance(
    schedule, metered_kw: Mapping[str, np.ndarray] | np.ndarray | None = None
) -> tuple[SignalCompliance, ...]:
    """Compliance of every grid signal of ``schedule.problem``.

    ``metered_kw``: per-period metered power (kW, the period's mean or its largest reading — a
    cap is judged against what is given), either one ``(T,)`` array for the grid connection's net
    import or a mapping from node id (``""`` = the grid connection) to such arrays. NaN = no
    reading for that period (the plan is judged there).

    ``curtailed_kwh`` counts, in the periods where the signal binds (the plan sits at its
    requirement), what the vehicles under its node could still have drawn (at their maximum,
    while plugged in) above the plan, bounded by the energy they are left wanting at the end of
    the horizon.
    """
    sched = schedule
    p = sched.problem
    T = p.n_periods
    K = len(p.dr_event_ids)
    if K == 0:
        return ()
    root = int(np.flatnonzero(p.node_parent < 0)[0])
    meters = _meters(metered_kw, p, root)
    imp = sched.import_kw
    node_kw = sched.node_power_kw
    req_all = p.signal_required_kw if p.signal_required_kw is not None else p.dr_cap_kw
    floors = p.signal_floor_kw if p.signal_floor_kw is not None else np.zeros((K, T))
    nodes = p.signal_node if p.signal_node is not None else np.full(K, root)
    kinds = p.signal_kind or ("import_cap_kw",) * K
    dt = p.period_h  # (T,) h
    # per node: what its vehicles could still draw above the plan (kW), and what they end short
    ev_max = (p.session_max_current * p.session_kw_per_a)[:, None] * p.avail  # (S, T) kW
    room = np.maximum(ev_max - sched._power_kw, 0.0)
    short = np.maximum(p.session_energy_kwh - sched.energy_kwh, 0.0)
    anc = p.session_anc
    fixed_root = p.base_load_kw - p.pv_kw
    by_id = {s.id: s for s in p.signals.grid_signals}
    out = []
    for j, sid in enumerate(p.dr_event_ids):
        n = int(nodes[j])
        kind = kinds[j]
        req = req_all[j]
        cover = np.flatnonzero(np.isfinite(req))
        g = by_id.get(sid)
        if g is not None and is_validity_only(g):
            # a stream's staleness rule alone (grid.arrays.validity_signal): nothing to judge
            # while the stream is fresh; once stale, its fallback cap
            if cover.size == 0:
                continue
            kind = "fallback_kw"
        if kind == "current_cap_a":  # the most loaded phase of the node (A)
            planned = sched.node_phase_current[n].max(axis=0)[cover]
        else:
            planned = (imp if n == root else node_kw[n])[cover]
        if kind == "export_cap_kw":
            planned = -planned
        metered = None
        judged = planned
        m_arr = meters.get(n)
        if m_arr is not None:
            metered = m_arr[cover] * (-1.0 if kind == "export_cap_kw" else 1.0)
            judged = np.where(np.isnan(metered), planned, metered)
        r = req[cover]
        if kind == "setpoint_kw":
            met = np.abs(judged - r) <= np.maximum(SETPOINT_TOL * np.abs(r), 0.5)
        else:
            met = judged <= r + CAP_TOL * np.maximum(np.abs(r), 1.0)
        causes = []
        if kind == "current_cap_a":
            fixed = np.where(p.node_carries_base[n], p.base_load_a, 0.0)[cover]
        else:
            fixed = (
                fixed_root if n == root else np.where(p.node_carries_base[n], p.base_load_kw, 0.0)
            )[cover]
        for k in range(cover.size):
            if met[k]:
                causes.append("")
            elif kind == "export_cap_kw":
                causes.append(
                    "export above the cap: not enough controllable load to absorb the "
                    "PV surplus (no discharge)"
                )
            elif kind == "setpoint_kw":
                causes.append(
                    "setpoint not reachable: the vehicles are at their limits or want "
                    "no more energy"
                )
            elif (
                metered is not None
                and not np.isnan(metered[k])
                and metered[k] > planned[k] + CAP_TOL * max(abs(r[k]), 1.0)
            ):
                causes.append(
                    f"metered {metered[k]:.2f} kW above the plan {planned[k]:.2f} kW: "
                    "a vehicle drew more than its limit or the base load / PV "
                    "differed from the forecast"
                )
            elif fixed[k] > r[k] + CAP_TOL:
                causes.append(f"the base load alone ({fixed[k]:.2f} kW) exceeds the cap")
            elif floors[j, cover[k]] > r[k]:
                causes.append(
                    f"§14a floors ({floors[j, cover[k]]:.2f} kW for the devices "
                    "plugged in) are above the cap"
                )
            else:
                causes.append("planned above the cap (another limit's projection)")
        curtailed = 0.0
        if kind not in ("export_cap_kw", "setpoint_kw", "current_cap_a", "none") and cover.size:
            under = anc[:, n].nonzero()[0]
            # binding: within the 0.1 A rounding of every vehicle under the node
            step_kw = 0.1 * float(p.session_kw_per_a[under].sum()) + 1e-6
            binds = planned >= r - step_kw
            t_b = cover[binds]
            if under.size and t_b.size:
                could = float((room[np.ix_(under, t_b)] * dt[t_b]).sum())
                curtailed = min(could, float(short[under].sum()))
        out.append(
            SignalCompliance(
                signal_id=sid,
                source=g.source if g else "manual",
                ref=g.ref if g else None,
                node="" if n == root else p.node_ids[n],
                kind=kind,
                period_index=cover,
                period_start=tuple(p.horizon.period_start(int(t)) for t in cover),
                required_kw=r,
                planned_kw=planned,
                metered_kw=metered,
                met=np.asarray(met, bool),
                cause=tuple(causes),
                curtailed_kwh=curtailed,
            )
        )
    return tuple(out)


def _meters(metered_kw, p, root: int) -> dict[int, np.ndarray]:
    if metered_kw is None:
        return {}
    items = (
        {"": metered_kw} if isinstance(metered_kw, np.ndarray | list | tuple) else dict(metered_kw)
    )
    out = {}
    for node_id, arr in items.items():
        if node_id in ("", None):
            k = root
        elif node_id in p.node_ids:
            k = p.node_ids.index(node_id)
        else:
            raise InputError(f"metered power for unknown node {node_id!r}")
        a = np.asarray(arr, dtype=np.float64)
        if a.shape != (p.n_periods,):
            raise InputError(
                f"metered power of node {node_id or 'grid connection'!r} has shape "
                f"{a.shape}, expected ({p.n_periods},)"
            )
        out[k] = a
    return out
