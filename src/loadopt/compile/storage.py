"""The bidirectional part of a compile: battery charge columns in the safety rows, the V2X
sessions, and the :class:`~loadopt.problem.Storage` (discharge columns, credit on site-import
rows, export rows).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..horizon import sample
from ..problem import (
    ROW_LINE_FACET,
    ROW_NODE_CURRENT,
    ROW_NODE_POWER,
    ROW_PRIMARY_FACET,
    ROW_SITE_EXPORT,
    ROW_SITE_IMPORT,
    Storage,
)
from ..session import Session
from ..signals import split
from ..site import Evse, Site
from .rows import _RowBuilder
from .tree import _ancestors, _site_tree


def _compile_storage(
    site,
    sessions,
    evses,
    horizon,
    signals,
    notices,
    *,
    bidir,
    vs,
    vt,
    var_free,
    avail,
    kw_per_a,
    phase_mask,
    s_anc,
    bat_anc,
    bc,
    Gb,
    bat_kw_per_a,
    node_cur,
    node_kw,
    carries,
    row_kind,
    row_period,
    node_ids,
    lines,
    base_a,
    sess_var,
    bat_var,
) -> tuple[Storage, tuple | None]:
    """The bidirectional part of the problem (:class:`~loadopt.problem.Storage`), and the coupled
    rows to append to the problem's safety rows (``(G, h, kind, node, phase, period, facet)``,
    None when there are none; their battery-charge and discharge parts are already in the
    storage's ``Gb`` and ``Cd``, their discharge part also in ``Gx``).

    On phasor lines (line-to-line EVSEs, delta/wye primaries; docs/formulation.md "Storage on
    phasor lines") the export direction has the same facets as the import direction, with PV
    where the base load is; lines whose charging sector is wider than 60° (where a charging and
    an exporting phasor may add up to more than either) get full-circle coupled rows instead.

    Discharge columns exist for a bidirectional session where it is plugged in, outside any
    reservation, with a discharge limit above 0 and a V2X floor at or below its energy now
    (ISO 15118-20: a positive ``evMinV2XEnergyRequest`` means it is below its V2X minimum), and
    for every battery in every period. Export rows count discharge alone plus the PV output's
    period maximum where it feeds in (the base-load path, ``node_carries_base``): nothing that
    may stop at any instant — charging, base load — is credited against a physical rating or
    the export contract.
    """
    T = horizon.n_periods
    S, N = len(sessions), len(node_ids)
    bats = site.batteries
    B = len(bats)
    dt = horizon.period_h  # (T,) h
    sess_u = np.flatnonzero(bidir)
    Us = sess_u.size
    U = Us + B
    unit_session = np.concatenate([sess_u, np.full(B, -1)]).astype(np.int64)
    unit_battery = np.concatenate([np.full(Us, -1), np.arange(B)]).astype(np.int64)
    session_unit = np.full(S, -1, np.int64)
    session_unit[sess_u] = np.arange(Us)
    v2x = [sessions[i].v2x for i in sess_u]
    cap = np.array([b.capacity_kwh for b in bats], dtype=np.float64)
    e0_b = np.array([b.soc for b in bats]) * cap
    # a battery outside its band is only moved back towards it
    emin_b = np.minimum(np.array([b.min_soc for b in bats]) * cap, e0_b)
    emax_b = np.maximum(np.array([b.max_soc for b in bats]) * cap, e0_b)
    lo_s = np.array([p.min_v2x_energy_kwh for p in v2x], dtype=np.float64)
    hi_s = np.array([p.max_v2x_energy_kwh for p in v2x], dtype=np.float64)
    unit = dict(
        unit_kw_per_a=np.concatenate([kw_per_a[sess_u], np.full(B, bat_kw_per_a)]),
        unit_e0_kwh=np.concatenate([np.zeros(Us), e0_b]),
        unit_emin_kwh=np.concatenate([np.minimum(lo_s, 0.0), emin_b]),
        unit_emax_kwh=np.concatenate([np.maximum(hi_s, 0.0), emax_b]),
        unit_eta_c=np.array(
            [p.charge_efficiency for p in v2x] + [b.charge_efficiency for b in bats],
            dtype=np.float64,
        ),
        unit_eta_d=np.array(
            [p.discharge_efficiency for p in v2x] + [b.discharge_efficiency for b in bats],
            dtype=np.float64,
        ),
        unit_target_kwh=np.concatenate(
            [
                np.array([sessions[i].energy_kwh for i in sess_u], dtype=np.float64),
                np.full(B, -np.inf),
            ]
        ),
        unit_degradation=np.array(
            [p.degradation_per_kwh for p in v2x] + [b.degradation_per_kwh for b in bats],
            dtype=np.float64,
        ),
        unit_terminal_value=np.concatenate(
            [np.zeros(Us), np.array([b.terminal_value_per_kwh for b in bats], dtype=np.float64)]
        ),
    )
    # --- discharge columns -------------------------------------------------------------------
    evse_dis = [
        evses[i].max_current
        if evses[i].max_discharge_current is None
        else evses[i].max_discharge_current
        for i in sess_u
    ]
    dis_max_s = np.minimum(
        np.array(evse_dis, dtype=np.float64),
        np.array([p.max_discharge_current for p in v2x], dtype=np.float64),
    )
    may = (dis_max_s > 0) & (lo_s <= 0)
    for k in np.flatnonzero(~may & (lo_s > 0)):
        notices.append(
            f"session {sessions[sess_u[k]].id!r}: below its V2X minimum "
            f"({lo_s[k]:.3g} kWh to charge first); not discharged in this plan"
        )
    u_of_v = session_unit[vs] if vs.size else np.zeros(0, np.int64)
    sv = np.flatnonzero((u_of_v >= 0) & var_free)
    sv = sv[may[u_of_v[sv]]]
    bc_battery, bc_period = bc
    dv_unit = np.concatenate([u_of_v[sv], Us + bc_battery]).astype(np.int64)
    dv_period = np.concatenate([vt[sv], bc_period]).astype(np.int32)
    dv_ub = np.concatenate(
        [
            dis_max_s[u_of_v[sv]],
            np.repeat(
                np.array([b.max_discharge_kw for b in bats], dtype=np.float64) / bat_kw_per_a, T
            ),
        ]
    )
    dv_kwh = np.concatenate(
        [kw_per_a[vs[sv]] * dt[vt[sv]] * avail[vs[sv], vt[sv]], bat_kw_per_a * dt[bc_period]]
    )
    Vd = dv_unit.size
    var_dv = np.full(vs.size, -1, np.int64)
    var_dv[sv] = np.arange(sv.size)
    dv_kw = unit["unit_kw_per_a"][dv_unit]

    # --- credit on site-import rows (contract, DR caps) ------------------------------------
    imp_row = np.full(T, -1, np.int64)
    k_imp = np.flatnonzero(row_kind == ROW_SITE_IMPORT)
    imp_row[row_period[k_imp]] = k_imp
    has = imp_row[dv_period] >= 0 if Vd else np.zeros(0, bool)
    Cd = sp.csr_matrix(
        (dv_kw[has], (imp_row[dv_period[has]], np.flatnonzero(has))), shape=(row_kind.size, Vd)
    )

    # --- export rows -------------------------------------------------------------------------
    pv_max = sample(*split(signals.pv_kw), horizon, "max")
    export_cap = sample(*split(signals.grid_export_limit_kw), horizon, "min")
    pv_a = pv_max * 1000.0 / (3.0 * site.voltage_v)
    rows = _RowBuilder(Vd, T)
    # per discharge column, the units' nodes: sessions through their EVSE, batteries directly
    u_anc = sp.vstack([s_anc.tocsr()[sess_u], bat_anc]).tocsr()  # (U, N)
    dvar = sp.csr_matrix((np.ones(Vd), (np.arange(Vd), dv_unit)), shape=(Vd, U))
    shape = lines.shape
    # lines whose phasors are all in phase: |coefficient| (1 per line the unit loads)
    Cu = sp.vstack([shape.C_int[sess_u], shape.bat_C_int]).tocsr()  # (U, 3N)
    x_cur = node_cur.copy()
    x_cur[carries] -= pv_a[None, None, :]
    rows.add(
        (dvar @ Cu).tocoo(),
        dv_period,
        x_cur.reshape(-1),
        ROW_NODE_CURRENT,
        node_of=lambda g: g // 3,
        phase_of=lambda g: g % 3,
    )
    x_kw = node_kw.copy()
    x_kw[carries] -= pv_max[None, :]
    rows.add(
        (dvar @ (u_anc.multiply(unit["unit_kw_per_a"][:, None]))).tocoo(),
        dv_period,
        x_kw.reshape(-1),
        ROW_NODE_POWER,
        node_of=lambda g: g,
    )
    # the other limited lines: the import direction's facets, PV where the base load is (lines
    # with coupled rows take their discharge part below)
    m = site.phasor_facets
    coupled = np.zeros(6 * N, bool) if shape.coupled is None else shape.coupled
    pv_line = np.abs(shape.base)[:, None] * pv_a[None, :]  # (6N, T)
    sep = np.repeat(~coupled, m)
    Fu = sp.vstack([shape.Cf[sess_u], shape.bat_Cf]).tocsr() @ sp.diags(sep.astype(np.float64))
    if Fu.nnz:
        room = (lines.limit - pv_line - lines.reserved) * shape.scale[:, None]
        rows.add(
            (dvar @ Fu).tocoo(),
            dv_period,
            np.repeat(room, m, axis=0).reshape(-1),
            lambda g: np.where(g // m < 3 * N, ROW_LINE_FACET, ROW_PRIMARY_FACET),
            node_of=lambda g: (g // m // 3) % N,
            phase_of=lambda g: (g // m) % 3,
        )
    exp_rhs = export_cap - pv_max
    rows.add(
        sp.coo_matrix((dv_kw, (np.arange(Vd), np.zeros(Vd, np.int64))), shape=(Vd, 1)),
        dv_period,
        exp_rhs,
        ROW_SITE_EXPORT,
    )
    Gx, hx, x_kind, x_node, x_phase, x_period, _ = rows.build()
    for k in np.flatnonzero(carries):
        for p, name in enumerate("RST"):
            if np.isfinite(x_cur[k, p]).any() and (x_cur[k, p] < 0).any():
                notices.append(
                    f"node {node_ids[k]!r} phase {name}: PV alone exceeds the "
                    "current limit in the export direction; nothing discharges there"
                )
        if (x_kw[k] < 0).any():
            notices.append(
                f"node {node_ids[k]!r}: PV alone exceeds the power limit in the "
                "export direction; nothing discharges there"
            )
    if (exp_rhs < 0).any():
        notices.append(
            "grid export: PV alone exceeds the grid export limit; nothing discharges there"
        )
    hx = np.maximum(hx, 0.0)
    Cd = Cd.tocsr()
    extra = None
    if coupled.any():
        extra, Gb, Cd, Gx, hx, x_kind, x_node, x_phase, x_period = _coupled_rows(
            site,
            shape,
            lines,
            base_a,
            pv_a,
            sess_var,
            bat_var,
            dvar,
            np.concatenate([vt, bc_period]),
            dv_period,
            sess_u,
            Gb,
            Cd,
            (Gx, hx, x_kind, x_node, x_phase, x_period),
            notices,
            node_ids,
        )
    arrays = dict(
        unit_session=unit_session,
        unit_battery=unit_battery,
        session_unit=session_unit,
        battery_capacity_kwh=cap,
        bc_battery=bc_battery,
        bc_period=bc_period,
        bc_ub=np.repeat(
            np.array([b.max_charge_kw for b in bats], dtype=np.float64) / bat_kw_per_a, T
        ),
        dv_unit=dv_unit,
        dv_period=dv_period,
        dv_ub=dv_ub,
        dv_kwh_per_a=dv_kwh,
        hx=hx,
        x_kind=x_kind,
        x_node=x_node,
        x_phase=x_phase,
        x_period=x_period,
        pv_max_kw=pv_max,
        export_cap_kw=export_cap,
        var_dv=var_dv,
        **unit,
    )
    for v in arrays.values():
        v.setflags(write=False)
    storage = Storage(
        battery_ids=tuple(b.id for b in bats),
        Gb=Gb,
        Cd=Cd,
        Gx=Gx,
        bat_line_coef=shape.bat_coef,
        **arrays,
    )
    return storage, extra


def _coupled_rows(
    site,
    shape,
    lines,
    base_a,
    pv_a,
    sess_var,
    bat_var,
    dvar,
    charge_period,
    dv_period,
    sess_u,
    Gb,
    Cd,
    export,
    notices,
    node_ids,
):
    """Full-circle rows (:func:`loadopt.wiring.two_way_facets`) of the lines in
    ``shape.coupled``, over charge columns (sessions' variables, battery charge) and discharge
    columns at once: every instant — any unit on or off, the base load and PV on or off — keeps
    the line's phasor under its limit. The charge part joins the problem's rows (returned), the
    discharge part goes into ``Cd`` with a minus sign (it loads the row, no credit) and, alone,
    into the export rows ``Gx`` with the same right-hand side, so the projection (discharge
    first, then charge under what is left) stays exact in one pass."""
    N = len(node_ids)
    T = lines.limit.shape[1]
    M = shape.n_circle
    m = site.phasor_facets
    S = sess_var.shape[1]
    V, Vb, Vd = sess_var.shape[0], bat_var.shape[0], dvar.shape[0]
    cols = sp.vstack(
        [
            sess_var @ shape.cw_c[:S],
            bat_var @ shape.cw_c[S:],
            dvar @ sp.vstack([shape.cw_d[sess_u], shape.cw_d[S:]]).tocsr(),
        ]
    ).tocoo()
    lim = np.where(shape.coupled[:, None], lines.limit, np.inf)  # (6N, T)
    rhs = (
        lim[:, None, :] * np.cos(np.pi / M)
        - shape.cw_base[:, :, None] * base_a[None, None, :]
        - shape.cw_pv[:, :, None] * pv_a[None, None, :]
        - lines.reserved[:, None, :]
    )
    rows = _RowBuilder(V + Vb + Vd, T)
    rows.add(
        cols,
        np.concatenate([charge_period, dv_period]).astype(np.int64),
        rhs.reshape(-1),
        lambda g: np.where(g // M < 3 * N, ROW_LINE_FACET, ROW_PRIMARY_FACET),
        node_of=lambda g: (g // M // 3) % N,
        phase_of=lambda g: (g // M) % 3,
        facet_of=lambda g: m + g % M,
    )
    Gc, hc, kind, node, phase, period, facet = rows.build()
    if (hc < 0).any():
        bad = sorted({int(x) for x in node[hc < 0]})
        notices.append(
            "coupled line rows (storage on phasor lines) at node(s) "
            + ", ".join(repr(node_ids[k]) for k in bad)
            + ": fixed loads alone exceed the limit; nothing charges or discharges there"
        )
    hc = np.maximum(hc, 0.0)
    Gc = Gc.tocsc()
    g_r, g_b, g_d = (Gc[:, a:b].tocsr() for a, b in ((0, V), (V, V + Vb), (V + Vb, V + Vb + Vd)))
    Gb = sp.vstack([Gb, g_b]).tocsr()
    Cd = sp.vstack([Cd, -g_d]).tocsr()
    Gx, hx, x_kind, x_node, x_phase, x_period = export
    has_d = np.diff(g_d.indptr) > 0
    Gx = sp.vstack([Gx, g_d[has_d]]).tocsr()
    hx = np.concatenate([hx, hc[has_d]])
    x_kind = np.concatenate([x_kind, kind[has_d].astype(x_kind.dtype)])
    x_node = np.concatenate([x_node, node[has_d].astype(x_node.dtype)])
    x_phase = np.concatenate([x_phase, phase[has_d].astype(x_phase.dtype)])
    x_period = np.concatenate([x_period, period[has_d].astype(x_period.dtype)])
    return (
        (g_r, hc, kind, node, phase, period, facet),
        Gb,
        Cd,
        Gx,
        hx,
        x_kind,
        x_node,
        x_phase,
        x_period,
    )


class _BatteryColumns(NamedTuple):
    """The battery charge columns ``Vb = B · T`` (A per phase, balanced over R, S, T) that sit in
    the same safety rows as the EV columns."""

    B: int
    kw_per_a: float  #: kW per A of a battery column (three phases at the site voltage)
    anc: sp.csr_matrix  #: (B, N) 1 where the node is the battery's or above it
    battery: np.ndarray  #: (Vb,) battery of each column
    period: np.ndarray  #: (Vb,) period of each column
    var: sp.csr_matrix  #: (Vb, B) column -> battery incidence
    node: np.ndarray  #: (B,) node of each battery


def _battery_columns(
    site: Site, node_index: dict[str, int], parent: np.ndarray, T: int
) -> _BatteryColumns:
    """Charge columns of ``site.batteries`` (kept per ``T`` in the site's tree while
    ``site.batteries`` and the voltage are the same objects; read-only)."""
    memo = _site_tree(site).memo
    got = memo.get(("battery_columns", T))
    if got is not None and got[0] is site.batteries and got[1] == site.voltage_v:
        return got[2]
    bats = site.batteries
    B = len(bats)
    N = len(site.nodes)
    bat_kw_per_a = 3.0 * site.voltage_v / 1000.0
    bat_node = np.array([node_index[b.node] for b in bats], dtype=np.int64)
    bat_anc = _ancestors(bat_node, parent, N) if B else sp.csr_matrix((0, N))  # (B, N)
    bc_battery = np.repeat(np.arange(B), T)
    bc_period = np.tile(np.arange(T, dtype=np.int32), B)
    Vb = bc_battery.size
    bat_var = sp.csr_matrix((np.ones(Vb), (np.arange(Vb), bc_battery)), shape=(Vb, B))
    for a in (bat_node, bc_battery, bc_period, bat_anc.data, bat_anc.indices, bat_anc.indptr):
        a.setflags(write=False)
    for a in (bat_var.data, bat_var.indices, bat_var.indptr):
        a.setflags(write=False)
    out = _BatteryColumns(B, bat_kw_per_a, bat_anc, bc_battery, bc_period, bat_var, bat_node)
    memo[("battery_columns", T)] = (site.batteries, site.voltage_v, out)
    return out


def _v2x_sessions(
    sessions: tuple[Session, ...], evses: list[Evse], notices: list[str]
) -> np.ndarray:
    """(S,) bool: the sessions planned bidirectionally (V2X parameters on a bidirectional EVSE);
    a notice for every session that has V2X parameters and is planned to charge only."""
    bidir = np.array(
        [s.v2x is not None and e.bidirectional for s, e in zip(sessions, evses, strict=True)],
        dtype=bool,
    )
    for s, e in zip(sessions, evses, strict=True):
        if s.v2x is not None and not e.bidirectional:
            notices.append(
                f"session {s.id!r}: has V2X parameters but EVSE {e.id!r} is not "
                "bidirectional; it is planned to charge only"
            )
    return bidir
