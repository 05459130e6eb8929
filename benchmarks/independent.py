"""An instance written the way someone without loadopt would write it: arrays in, one CSC model.

The congested site of issue 16, generated here from a fixed seed with numpy only: 1,000 sessions on
as many EVSEs, 96 × 15-minute periods, five nodes with per-phase current limits (the grid
connection and four panels under it), 70 % three-phase vehicles, time-of-use prices, and energy
requests of 60–100 % of what each session's window allows at its maximum current.

:func:`raw_lp` builds the LP straight from these arrays — one column per plugged-in (session,
period), an unmet-energy slack per session, an import column per period, one row per (node,
phase, period) — without :mod:`loadopt.compile` or :mod:`loadopt.lp`, so nothing loadopt's
reductions exploit is removed. :func:`as_scenario` turns the same instance into loadopt's input
objects. The objective is docs/formulation.md's (import cost, unmet-energy penalty, the
charge-early term scaled by the time to departure), so both models have the same optimum: the
family benchmark checks that to 1e-6 before it times anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import scipy.sparse as sp

from loadopt import Evse, Horizon, Node, Objective, Session, Signals, Site
from loadopt._base import SeriesPoint
from loadopt.lp import LinearProgram, blocks_of
from loadopt.scenario import Scenario

START = datetime(2026, 3, 4, tzinfo=ZoneInfo("Europe/Amsterdam"))
STEP_S = 900
T = 96
VOLT = 230.0
PENALTY = 10.0  # per kWh unmet (Objective default)
EARLY = 1e-3  # per kWh per hour of delay (Objective default)


@dataclass(frozen=True)
class Instance:
    n: int
    arr_s: np.ndarray  #: (n,) arrival, s from START (whole minutes)
    dep_s: np.ndarray  #: (n,) departure
    imax: np.ndarray  #: (n,) A per phase
    phases: np.ndarray  #: (n,) 1 or 3
    phase: np.ndarray  #: (n,) site phase of a 1-phase vehicle (0, 1, 2)
    panel: np.ndarray  #: (n,) 0..3
    energy_kwh: np.ndarray  #: (n,)
    limit_a: np.ndarray  #: (5, 3) per node and phase: row 0 the grid connection, 1..4 panels
    price: np.ndarray  #: (T,) per kWh


def generate(n: int = 1000, seed: int = 16) -> Instance:
    rng = np.random.default_rng(seed)
    arr_min = np.clip(rng.normal(8.5 * 60, 90, n), 0, 20 * 60).round()
    stay_min = np.clip(rng.normal(7.5 * 60, 120, n), 45, 14 * 60).round()
    arr_s = arr_min * 60
    dep_s = np.minimum(arr_s + stay_min * 60, T * STEP_S + 6 * 3600)
    phases = np.where(rng.random(n) < 0.7, 3, 1)
    imax = rng.choice([16.0, 32.0], n, p=[0.4, 0.6])
    phase = rng.integers(0, 3, n)
    panel = rng.integers(0, 4, n)
    # what the window allows at the maximum current (inside the horizon), 60-100 % of it
    in_h = np.clip(np.minimum(dep_s, T * STEP_S) - arr_s, 0, None) / 3600
    energy = np.round(rng.uniform(0.6, 1.0, n) * imax * VOLT * phases / 1000 * in_h, 2)
    # per-phase load if everyone drew their maximum, then limits at 30-45 % of it
    load = np.zeros((5, 3))
    for p in range(3):
        on_p = (phases == 3) | (phase == p)
        for k in range(4):
            load[1 + k, p] = imax[on_p & (panel == k)].sum()
        load[0, p] = imax[on_p].sum()
    frac = np.vstack([[0.30, 0.32, 0.34], rng.uniform(0.36, 0.45, (4, 3))])
    limit = np.round(load * frac)
    hours = np.arange(T) * STEP_S / 3600
    price = np.where(
        (hours >= 17) & (hours < 21), 0.38, np.where((hours >= 7) & (hours < 22), 0.26, 0.14)
    )
    return Instance(n, arr_s, dep_s, imax, phases, phase, panel, energy, limit, price)


def raw_lp(inst: Instance) -> LinearProgram:
    """The straightforward model of ``inst`` (columns ``[x | u | imp]``), built from the arrays."""
    n = inst.n
    dt_h = STEP_S / 3600
    b = np.arange(T + 1) * STEP_S
    ov = np.minimum(inst.dep_s[:, None], b[None, 1:]) - np.maximum(
        inst.arr_s[:, None], b[None, :-1]
    )
    frac = np.clip(ov / STEP_S, 0, 1)
    si, ti = np.nonzero(frac > 0)
    V = si.size
    kw = VOLT * inst.phases / 1000  # kW per A
    kwh = kw[si] * dt_h * frac[si, ti]
    # objective: unmet penalty on u, import cost on imp, charge early on x (docs/formulation.md)
    dep_h = np.clip(inst.dep_s / 3600, dt_h, T * dt_h)
    early = EARLY * (ti + 0.5) * dt_h * (T * dt_h / dep_h[si]) * kwh
    # rows (node, phase, period): vehicle on phase p when 3-phase or its own phase is p
    rows_r, rows_c = [], []
    for p in range(3):
        on = (inst.phases[si] == 3) | (inst.phase[si] == p)
        v = np.flatnonzero(on)
        for node in range(5):
            vv = v if node == 0 else v[inst.panel[si[v]] == node - 1]
            rows_r.append((node * 3 + p) * T + ti[vv])
            rows_c.append(vv)
    r = np.concatenate(rows_r)
    c = np.concatenate(rows_c)
    A_lim = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(15 * T, V))
    A_lim = sp.hstack([A_lim, sp.csr_matrix((15 * T, n + T))])
    A_en = sp.hstack(
        [
            sp.csr_matrix((kwh, (si, np.arange(V))), shape=(n, V)),
            sp.identity(n),
            sp.csr_matrix((n, T)),
        ]
    )
    A_imp = sp.hstack(
        [
            sp.csr_matrix((-kw[si], (ti, np.arange(V))), shape=(T, V)),
            sp.csr_matrix((T, n)),
            sp.identity(T),
        ]
    )
    A = sp.vstack([A_lim, A_en, A_imp], format="csc")
    lim = np.repeat(inst.limit_a.reshape(-1), T)
    return LinearProgram(
        c=np.concatenate([early, np.full(n, PENALTY), inst.price * dt_h]),
        col_lb=np.zeros(V + n + T),
        col_ub=np.concatenate([inst.imax[si], np.full(n, np.inf), np.full(T, np.inf)]),
        A=A,
        row_lb=np.concatenate([np.full(15 * T, -np.inf), inst.energy_kwh, np.zeros(T)]),
        row_ub=np.concatenate([lim, inst.energy_kwh, np.full(T, np.inf)]),
        offset=0.0,
        cols=blocks_of({"r": np.arange(V), "u": np.arange(n), "imp": np.arange(T)}),
        rows=blocks_of(
            {"limits": np.arange(15 * T), "energy": np.arange(n), "import": np.arange(T)}
        ),
    )


def as_scenario(inst: Instance) -> Scenario:
    """The same instance as loadopt's input objects."""
    rot = {0: "RST", 1: "STR", 2: "TRS"}  # puts EVSE L1 on site phase 0, 1, 2
    nodes = [Node(id="grid", kind="grid_connection", max_current=tuple(inst.limit_a[0]))]
    nodes += [
        Node(id=f"panel{k}", parent="grid", kind="panel", max_current=tuple(inst.limit_a[1 + k]))
        for k in range(4)
    ]
    evses = [
        Evse(
            id=f"e{i}",
            node=f"panel{inst.panel[i]}",
            charge_point_id=f"cp{i}",
            phases=int(inst.phases[i]),
            max_current=float(inst.imax[i]),
            phase_rotation=rot[int(inst.phase[i])] if inst.phases[i] == 1 else "RST",
        )
        for i in range(inst.n)
    ]
    site = Site(id="independent", nodes=tuple(nodes), evses=tuple(evses), voltage_v=VOLT)
    sessions = [
        Session(
            id=f"s{i}",
            evse=f"e{i}",
            arrival=START + timedelta(seconds=float(inst.arr_s[i])),
            departure=START + timedelta(seconds=float(inst.dep_s[i])),
            energy_kwh=float(inst.energy_kwh[i]),
            max_current=float(inst.imax[i]),
            phases=int(inst.phases[i]),
        )
        for i in range(inst.n)
    ]
    chg = np.flatnonzero(np.r_[True, np.diff(inst.price) != 0])
    price = tuple(
        SeriesPoint(start=START + timedelta(seconds=int(k) * STEP_S), value=float(inst.price[k]))
        for k in chg
    )
    return Scenario(
        site=site,
        horizon=Horizon(start=START, step_s=STEP_S, n_periods=T),
        sessions=tuple(sessions),
        signals=Signals(import_price=price),
        objective=Objective(
            unmet_energy_per_kwh=PENALTY, charge_early_per_kwh_h=EARLY, finish_first_kwh=0.0
        ),
    )
