"""Turn validated input objects into a :class:`~loadopt.problem.Problem` (arrays only).

This is the only module that walks the input objects. Everything after it works on arrays and is
vectorised: there is no Python loop over sessions × periods anywhere below (loops here run over
sessions, nodes, tree depth or DR events, never their product with periods).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._base import as_model
from .errors import InputError
from .grid.arrays import signal_arrays
from .horizon import Horizon, sample
from .objective import Objective
from .problem import (
    ROW_LINE_FACET,
    ROW_NODE_CURRENT,
    ROW_NODE_POWER,
    ROW_PRIMARY_FACET,
    ROW_SITE_EXPORT,
    ROW_SITE_IMPORT,
    Problem,
    Storage,
)
from .session import Session, as_sessions, check_sessions
from .signals import Signals, split
from .site import Site
from .wiring import (
    COLLINEAR_RAD,
    PHASE_UNIT,
    branch_coefficients,
    delta_wye_primary,
    facet_loss_bound,
    facets,
    sectors,
)


def compile_problem(
    site: Site,
    sessions: Iterable[Session],
    horizon: Horizon,
    signals: Signals | None = None,
    objective: Objective | None = None,
    *,
    reserved_a: np.ndarray | None = None,
) -> Problem:
    """Compile a site, its sessions and the signals over ``horizon`` into a :class:`Problem`.

    Sessions that do not overlap the horizon are kept (with no variables: they cannot charge) so
    that ids stay stable; a session that has already left simply gets nothing.

    ``reserved_a`` (``(E, 3, T)`` A per EVSE line L1, L2, L3, EVSEs in ``site.evses`` order, per
    period; optional) is current an EVSE may draw whatever the plan says: a station that has not
    accepted a lower limit, a silent or unknown one at its hardware maximum, a vehicle drawing
    above its limit. It is a fixed load on every limit above the EVSE, exactly like the base
    load (right-hand sides drop, clamped at 0 with a notice); a session on a reserved EVSE is
    planned within ``[0, min(its max, largest reserved line)]`` in those periods and its
    variables there carry no safety-row entries (its draw is already counted).

    Raises :class:`~loadopt.errors.InputError` for inconsistent inputs (unknown EVSE, duplicate
    session, two sessions on one EVSE at once) and arguments of the wrong type (a string for the
    sessions); a mapping in place of a model is validated into it
    (:class:`~loadopt.errors.ModelError` when it is not valid).
    """
    site = as_model(site, Site, "site")
    sessions = as_sessions(sessions)
    horizon = as_model(horizon, Horizon, "horizon")
    signals = Signals() if signals is None else as_model(signals, Signals, "signals")
    objective = Objective() if objective is None else as_model(objective, Objective, "objective")
    check_sessions(sessions, {e.id for e in site.evses})
    T = horizon.n_periods
    notices: list[str] = []

    # --- tree ------------------------------------------------------------------------------
    tree = _site_tree(site)
    node_ids, node_index, N = tree.node_ids, tree.node_index, len(tree.node_ids)
    parent, root, anc = tree.parent, tree.root, tree.anc
    evse_ids, evse_index, evse_node = tree.evse_ids, tree.evse_index, tree.evse_node
    E_ = len(evse_ids)
    # lines an EVSE does not have carry nothing
    reserved = (
        None
        if reserved_a is None
        else _check_reserved(reserved_a, E_, T, evse_ids) * tree.has_line[:, :, None]
    )

    # --- sessions ----------------------------------------------------------------------------
    S = len(sessions)
    evses = [site.evses[evse_index[s.evse]] for s in sessions]
    s_evse = np.array([evse_index[s.evse] for s in sessions], dtype=np.int64)
    ea = tree.evse_arrays  # per-EVSE arrays, taken per session by its EVSE
    n_ph = np.minimum(ea["evse_phases"][s_evse], np.array([s.phases for s in sessions], np.int64))
    rot = ea["evse_site_phases"][s_evse].reshape(S, 3)
    line_to_line = tree.line_to_line[s_evse]
    branch = branch_coefficients(line_to_line, rot, n_ph)  # (S, 3) line phasor per A
    phase_mask = np.abs(branch) > 0  # site lines the session loads
    volt = ea["evse_voltage_v"][s_evse]
    kw_per_a = volt * n_ph / 1000.0
    max_cur = np.minimum(
        ea["evse_max_current"][s_evse],
        np.array([s.max_current for s in sessions], dtype=np.float64),
    )
    s_min = np.array(
        [np.nan if s.min_current is None else s.min_current for s in sessions], dtype=np.float64
    )
    min_cur = np.where(np.isnan(s_min), ea["evse_min_current"][s_evse], s_min)
    min_cur = np.minimum(min_cur, max_cur)
    energy = np.array([s.energy_kwh for s in sessions], dtype=np.float64)
    prio = np.array([s.priority for s in sessions], dtype=np.float64)
    start_utc = horizon.start_utc  # (as Horizon.seconds_from_start, without a property per call)
    arr_s = np.array([(s.arrival - start_utc).total_seconds() for s in sessions], dtype=np.float64)
    dep_s = np.array(
        [(s.departure - start_utc).total_seconds() for s in sessions], dtype=np.float64
    )
    bounds = horizon.period_bounds_s()
    overlap = np.minimum(dep_s[:, None], bounds[None, 1:]) - np.maximum(
        arr_s[:, None], bounds[None, :-1]
    )
    period_s = horizon.period_s
    avail = np.clip(overlap / period_s[None, :], 0.0, 1.0).reshape(S, T)

    # --- variables ---------------------------------------------------------------------------
    vs, vt = np.nonzero((avail > 0) & (max_cur[:, None] > 0))
    vs = vs.astype(np.int32)
    vt = vt.astype(np.int32)
    V = vs.size
    var_ub = max_cur[vs]
    # reserved EVSEs: the session's own draw is inside the reservation (no safety-row entries)
    if reserved is None:
        var_free = np.ones(V, dtype=bool)
    else:
        res_line_max = reserved.max(axis=1)  # (E, T)
        var_res = res_line_max[s_evse[vs], vt] if V else np.zeros(0)
        var_free = var_res <= 0
        var_ub = np.where(var_free, var_ub, np.minimum(var_ub, var_res))
    var_kwh = kw_per_a[vs] * (period_s[vt] / 3600.0) * avail[vs, vt]

    # --- limits per node, phase, period ------------------------------------------------------
    node_cur = np.full((N, 3, T), np.inf)
    node_kw = np.full((N, T), np.inf)
    for k, node in enumerate(site.nodes):
        trip = node.current_triplet()
        if node.current_series:
            for p in range(3):
                pts = tuple(
                    _point(c.start, c.value if isinstance(c.value, float | int) else c.value[p])
                    for c in node.current_series
                )
                node_cur[k, p] = sample(None if trip is None else trip[p], pts, horizon, "min")
        elif trip is not None:
            node_cur[k] = np.asarray(trip, dtype=np.float64)[:, None]
        if node.power_series_kw:
            node_kw[k] = sample(node.max_power_kw, node.power_series_kw, horizon, "min")
        elif node.max_power_kw is not None:
            node_kw[k] = node.max_power_kw

    # --- signals ---------------------------------------------------------------------------
    base_kw = sample(*split(signals.base_load_kw), horizon, "max")
    pv_kw = sample(*split(signals.pv_kw), horizon, "min")
    price = sample(*split(signals.import_price), horizon, "mean")
    export_price = (
        None
        if signals.export_price is None
        else sample(*split(signals.export_price), horizon, "mean")
    )
    grid_kw = sample(*split(signals.grid_import_limit_kw), horizon, "min")
    base_a = base_kw * 1000.0 / (3.0 * site.voltage_v)

    # reserved draw per EVSE line -> per site phase, node and kW (fixed loads)
    res_site = np.zeros((E_, 3, T))
    if reserved is None or not reserved.any():
        node_res_kw, site_res_kw = np.zeros((N, T)), np.zeros(T)
    else:
        line_phase = np.asarray(tree.evse_arrays["evse_site_phases"])
        e_volt = np.asarray(tree.evse_arrays["evse_voltage_v"])
        for j in range(3):
            np.add.at(res_site, (np.arange(E_), line_phase[:, j]), reserved[:, j])
        res_kw_e = reserved.sum(axis=1) * e_volt[:, None] / 1000.0  # (E, T)
        node_res_kw = np.asarray(tree.anc_t @ res_kw_e).reshape(N, T)
        site_res_kw = res_kw_e.sum(axis=0)
    if reserved is None:
        reserved = np.zeros((E_, 3, T))

    s_anc_csr = anc[s_evse].tocsr()  # (S, N): sessions under each node
    # grid-operator signals (loadopt.grid.arrays): caps per node, prices, setpoints, floors
    sig = signal_arrays(
        signals.grid_signals,
        signals.grid_policy,
        site.id,
        horizon,
        node_index,
        root,
        _carries(parent, root if site.base_load_node is None else node_index[site.base_load_node]),
        s_anc_csr,
        kw_per_a * max_cur,
        energy,
        arr_s,
        dep_s,
        avail,
        sample(*split(signals.base_load_kw), horizon, "min"),
        sample(*split(signals.pv_kw), horizon, "max"),
        grid_kw,
        node_kw,
        vs,
        vt,
        var_ub,
        kw_per_a,
    )
    root_cap = sig.node_cap_kw[root].copy()
    sig_node_cap = sig.node_cap_kw.copy()
    sig_node_cap[root] = np.inf  # the root's signal caps bound the net import, not the node kW
    node_kw = np.minimum(node_kw, sig_node_cap)
    node_cur = np.minimum(node_cur, sig.node_cap_a[:, None, :])
    import_cap = np.minimum(grid_kw, root_cap)
    price = price + sig.import_adder
    if np.any(sig.export_adder != 0):
        export_price = (0.0 if export_price is None else export_price) + sig.export_adder

    # --- batteries: charge columns in the same rows (A per phase, balanced over R, S, T) -------
    bats = site.batteries
    B = len(bats)
    ratio = np.array([0.0 if n.delta_wye is None else n.delta_wye.turns_ratio for n in site.nodes])
    wired = bool(line_to_line.any() or (ratio > 0).any())
    if B and wired:  # storage rows are per phase: not (yet) on phasor facets
        raise InputError(
            f"battery {bats[0].id!r}: batteries are not supported on a site with "
            "line-to-line EVSEs or delta/wye transformers (phasor facet rows)"
        )
    bat_kw_per_a = 3.0 * site.voltage_v / 1000.0
    bat_node = np.array([node_index[b.node] for b in bats], dtype=np.int64)
    bat_anc = _ancestors(bat_node, parent, N) if B else sp.csr_matrix((0, N))  # (B, N)
    bc_battery = np.repeat(np.arange(B), T)
    bc_period = np.tile(np.arange(T, dtype=np.int32), B)
    Vb = bc_battery.size
    bat_var = sp.csr_matrix((np.ones(Vb), (np.arange(Vb), bc_battery)), shape=(Vb, B))
    all_vt = np.concatenate([vt, bc_period])

    # --- safety rows -------------------------------------------------------------------------
    rows = _RowBuilder(V + Vb, T)
    s_anc = s_anc_csr.tocoo()
    free_v = np.flatnonzero(var_free)
    sess_var = sp.csr_matrix((np.ones(free_v.size), (free_v, vs[free_v])), shape=(V, S))

    # the base load sits under site.base_load_node (default: the root) and loads its whole path
    k_base = root if site.base_load_node is None else node_index[site.base_load_node]
    carries = _carries(parent, k_base)
    lines = _line_currents(
        site,
        evse_node,
        s_evse,
        parent,
        n_ph,
        line_to_line,
        node_cur,
        base_a,
        k_base,
        T,
        res_site,
    )
    node_res_a = lines.reserved[: 3 * N].reshape(N, 3, T)
    cur_rhs = node_cur - node_res_a
    cur_rhs[carries] -= base_a[None, None, :]
    m = site.phasor_facets
    # exact rows: lines whose branches (and base load) are all in phase, unit coefficients
    rows.add(
        _with_batteries(sess_var @ lines.shape.C_int, bat_var, lambda: _on_all_phases(bat_anc)),
        all_vt,
        cur_rhs.reshape(-1),
        ROW_NODE_CURRENT,
        node_of=lambda g: g // 3,
        phase_of=lambda g: g % 3,
    )
    # the other limited lines: facets of the phasor disc over the sector (or magnitude rows)
    if lines.shape.Cf.nnz:
        room = (lines.limit - lines.base_mag - lines.reserved) * lines.shape.scale[:, None]
        rows.add(
            _with_batteries(
                sess_var @ lines.shape.Cf,
                bat_var,
                lambda: sp.csr_matrix((B, lines.shape.Cf.shape[1])),
            ),
            all_vt,
            np.repeat(room, m, axis=0).reshape(-1),
            lambda g: np.where(g // m < 3 * N, ROW_LINE_FACET, ROW_PRIMARY_FACET),
            node_of=lambda g: (g // m // 3) % N,
            phase_of=lambda g: (g // m) % 3,
            facet_of=lambda g: g % m,
        )

    # per node and period: Σ EV kW ≤ limit (minus the base load where it flows)
    D = sp.csr_matrix((kw_per_a[s_anc.row], (s_anc.row, s_anc.col)), shape=(S, N))
    kw_rhs = node_kw - node_res_kw
    kw_rhs[carries] -= base_kw[None, :]
    rows.add(
        _with_batteries(sess_var @ D, bat_var, lambda: bat_anc * bat_kw_per_a),
        all_vt,
        kw_rhs.reshape(-1),
        ROW_NODE_POWER,
        node_of=lambda g: g,
    )

    # per period: EV kW + base − PV ≤ grid limit and DR caps
    site_coo = sp.coo_matrix(
        (
            np.concatenate([kw_per_a[vs[free_v]], np.full(Vb, bat_kw_per_a)]),
            (np.concatenate([free_v, V + np.arange(Vb)]), np.zeros(free_v.size + Vb, np.int64)),
        ),
        shape=(V + Vb, 1),
    )
    import_rhs = import_cap - base_kw + pv_kw - site_res_kw
    rows.add(
        site_coo,
        all_vt,
        import_rhs,
        ROW_SITE_IMPORT,
    )
    G_all, h, row_kind, row_node, row_phase, row_period, row_facet = rows.build()
    if Vb:
        G_all = G_all.tocsc()
        G, Gb = G_all[:, :V].tocsr(), G_all[:, V:].tocsr()
    else:  # no battery columns: only the column order within each row to settle
        G, Gb = G_all.sorted_indices(), sp.csr_matrix((G_all.shape[0], 0))

    fixed = "base load and reserved draw" if reserved.any() else "base load"
    for k in map(
        int, np.flatnonzero(carries | node_res_a.any(axis=(1, 2)) | node_res_kw.any(axis=1))
    ):
        notices.extend(_base_load_notices(node_ids[k], cur_rhs[k], kw_rhs[k], None, horizon, fixed))
    notices.extend(_base_load_notices("", None, None, import_rhs, horizon, fixed))
    h = np.maximum(h, 0.0)  # where the base load alone breaks a limit, EVs get nothing

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
    if wired and bidir.any():  # storage rows are per phase: not (yet) on phasor facets
        for i in np.flatnonzero(bidir):
            notices.append(
                f"session {sessions[i].id!r}: V2G is not supported on a site with "
                "line-to-line EVSEs or delta/wye transformers; it is planned to "
                "charge only"
            )
        bidir[:] = False
    storage = None
    if B or bidir.any():
        storage = _compile_storage(
            site,
            sessions,
            evses,
            horizon,
            signals,
            notices,
            bidir=bidir,
            vs=vs,
            vt=vt,
            var_free=var_free,
            avail=avail,
            kw_per_a=kw_per_a,
            phase_mask=phase_mask,
            s_anc=s_anc,
            bat_anc=bat_anc,
            bc=(bc_battery, bc_period),
            Gb=Gb,
            bat_kw_per_a=bat_kw_per_a,
            node_cur=node_cur,
            node_kw=node_kw,
            carries=carries,
            row_kind=row_kind,
            row_period=row_period,
            node_ids=node_ids,
        )

    arrays = dict(
        **tree.evse_arrays,
        session_arrival_s=arr_s,
        session_departure_s=dep_s,
        node_parent=parent,
        evse_node=evse_node,
        session_evse=s_evse,
        session_phase_mask=phase_mask,
        session_kw_per_a=kw_per_a,
        session_max_current=max_cur,
        session_min_current=min_cur,
        session_energy_kwh=energy,
        session_priority=prio,
        avail=avail,
        session_departure_h=np.clip(
            dep_s / 3600.0,
            horizon.step_h,
            T * horizon.step_h if horizon.uniform else bounds[-1] / 3600.0,
        ),
        var_session=vs,
        var_period=vt,
        var_ub=var_ub,
        var_kwh_per_a=var_kwh,
        h=h,
        row_kind=row_kind,
        row_node=row_node,
        row_phase=row_phase,
        row_period=row_period,
        row_facet=row_facet,
        line_base=lines.shape.base,
        line_limit=lines.limit,
        line_exact=lines.exact,
        line_sector_rad=lines.shape.sector_rad,
        line_reserved_a=lines.reserved,
        node_current_limit=node_cur,
        node_power_limit_kw=node_kw,
        base_load_kw=base_kw,
        base_load_a=base_a,
        node_carries_base=carries,
        pv_kw=pv_kw,
        import_price=price,
        export_price=export_price,
        import_cap_kw=import_cap,
        dr_cap_kw=sig.cap_kw,
        evse_reserved_a=reserved,
        var_reserved=~var_free,
        signal_node=sig.node,
        signal_required_kw=sig.required_kw,
        signal_floor_kw=sig.floor_kw,
        signal_offset_s=sig.offset_s,
        setpoint_kw=sig.setpoint_kw,
        setpoint_penalty=sig.setpoint_penalty,
        export_cap_kw=sig.export_cap_kw,
        export_penalty=sig.export_penalty,
        var_floor_a=np.zeros(V),
    )
    problem = Problem(
        horizon=horizon,
        site=site,
        sessions=sessions,
        signals=signals,
        objective=objective,
        node_ids=node_ids,
        evse_ids=evse_ids,
        session_ids=tuple(s.id for s in sessions),
        dr_event_ids=sig.ids,
        signal_kind=sig.kind,
        G=G,
        session_anc=s_anc.tocsr(),
        evse_anc=anc,
        line_coef=lines.shape.coef,
        line_coef_l1=lines.shape.coef_l1,
        facet_loss_bound=lines.loss_bound,
        notices=tuple(notices),
        storage=storage,
        **arrays,
    )
    if np.any(sig.floor_a > 0):
        object.__setattr__(problem, "var_floor_a", _feasible_floor(problem, sig.floor_a))
    for a in arrays.values():
        if isinstance(a, np.ndarray):
            a.setflags(write=False)
    if problem.var_floor_a is not None:
        problem.var_floor_a.setflags(write=False)
    return problem


@dataclass(frozen=True, eq=False)
class _LineShape:
    """What the line currents' rows look like for one site and one set of sessions on their
    EVSEs (time-independent: cached across the controller's steps, :func:`_line_shape`)."""

    coef: sp.csr_matrix  #: (S, 6N) complex
    coef_l1: sp.csr_matrix  #: (S, 6N) complex, sessions on their EVSE's L1 only
    base: np.ndarray  #: (6N,) complex per A of base load
    ratio: np.ndarray  #: (N,) delta/wye turns ratio, 0 = none
    sector_rad: np.ndarray  #: (6N,) rad, +inf where the phasors can cancel
    used: np.ndarray  #: (6N,) bool, some session loads the line
    int_group: np.ndarray  #: (6N,) bool, exact integer rows (ROW_NODE_CURRENT)
    C_int: sp.csr_matrix  #: (S, 3N) |coefficient| of the exact rows
    Cf: sp.csr_matrix  #: (S, 6N·m) facet coefficients (≥ 0)
    scale: np.ndarray  #: (6N,) right-hand-side scale cos(Δ/2m) (1 for magnitude rows)


@dataclass(frozen=True, eq=False)
class _Lines:
    """Line groups ``g = (side · N + node) · 3 + line`` (see :mod:`loadopt.problem`)."""

    shape: _LineShape
    base_mag: np.ndarray  #: (6N, T) A
    limit: np.ndarray  #: (6N, T) A
    exact: np.ndarray  #: (6N,) bool, checked as phasor magnitudes
    loss_bound: float
    reserved: np.ndarray  #: (6N, T) A, bound on the reserved EVSE draw's line magnitudes

    @property
    def coef(self) -> sp.csr_matrix:
        return self.shape.coef


def _walk_lines(
    u: np.ndarray, node: np.ndarray, parent: np.ndarray, ratio: np.ndarray, N: int
) -> sp.csr_matrix:
    """(S, 6N) complex line coefficients: ``u`` (S, 3) at each session's node, carried up the
    tree, through the primary side of every delta/wye transformer on the way (loops run over
    tree depth, vectorised over sessions)."""
    S = u.shape[0]
    r, c, v = [], [], []
    alive, cur, x = np.arange(S), node.copy(), u.copy()
    three = np.arange(3)
    while alive.size:
        r.append(np.repeat(alive, 3))
        c.append((cur[:, None] * 3 + three).ravel())
        v.append(x.ravel())
        tr = ratio[cur] > 0
        if tr.any():
            x = x.copy()
            x[tr] = delta_wye_primary(x[tr], ratio[cur[tr]])
            r.append(np.repeat(alive[tr], 3))
            c.append(((N + cur[tr])[:, None] * 3 + three).ravel())
            v.append(x[tr].ravel())
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur, x = alive[keep], nxt[keep], x[keep]
    out = sp.csr_matrix(
        (
            np.concatenate(v) if v else np.zeros(0, np.complex128),
            (
                np.concatenate(r) if r else np.zeros(0, np.int64),
                np.concatenate(c) if c else np.zeros(0, np.int64),
            ),
        ),
        shape=(S, 6 * N),
        dtype=np.complex128,
    )
    out.eliminate_zeros()
    return out


def _reserved_lines(
    res_site: np.ndarray, evse_node: np.ndarray, parent: np.ndarray, ratio: np.ndarray, N: int
) -> np.ndarray:
    """(6N, T) A: reserved EVSE draw per site line ``res_site`` (E, 3, T), carried up the tree as
    magnitudes (in phase: the worst case); through a delta/wye transformer the primary line
    ``A`` gets ``(|a| + |c|)/n`` (the triangle inequality on ``(I_a − I_c)/n``)."""
    T = res_site.shape[2]
    out = np.zeros((6 * N, T))
    if not res_site.any():
        return out
    alive, cur, x = np.arange(res_site.shape[0]), evse_node.copy(), res_site.copy()
    while alive.size:
        for k in range(3):
            np.add.at(out, cur * 3 + k, x[:, k])
        tr = ratio[cur] > 0
        if tr.any():
            x = x.copy()
            x[tr] = (x[tr] + np.roll(x[tr], 1, axis=1)) / ratio[cur[tr]][:, None, None]
            for k in range(3):
                np.add.at(out, (N + cur[tr]) * 3 + k, x[tr][:, k])
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur, x = alive[keep], nxt[keep], x[keep]
    return out


#: Line shapes of recent (site, sessions-on-EVSEs) pairs: a controller compiles the same site
#: with the same vehicles plugged in every step; only time, meters and limits move.
_SHAPES: dict[tuple, tuple[Site, _LineShape]] = {}
_SHAPES_MAX = 16


def _line_shape(
    site: Site,
    s_evse: np.ndarray,
    parent: np.ndarray,
    n_ph: np.ndarray,
    line_to_line: np.ndarray,
    k_base: int,
    has_base: bool,
) -> _LineShape:
    """The time-independent part of the line currents (cached by site identity and the
    sessions' EVSEs and phase counts)."""
    key = (id(site), s_evse.tobytes(), n_ph.tobytes(), k_base, has_base)
    hit = _SHAPES.get(key)
    if hit is not None and hit[0] is site:
        return hit[1]
    N = len(site.nodes)
    S = s_evse.size
    m = site.phasor_facets
    ratio = np.array([0.0 if n.delta_wye is None else n.delta_wye.turns_ratio for n in site.nodes])
    # a session's line coefficients depend only on its EVSE and how many phases it uses: taken
    # by row from the site's table of every EVSE with 1, 2 and 3 phases (walked once per site)
    table = _evse_line_table(site, parent, ratio, N)
    coef = table[3 * s_evse + n_ph - 1]
    l1 = np.where(line_to_line, n_ph, np.minimum(n_ph, 1))
    coef_l1 = table[3 * s_evse + l1 - 1]
    base = np.zeros(6 * N, dtype=np.complex128)
    b, k = PHASE_UNIT.copy(), k_base
    while k >= 0:
        base[3 * k : 3 * k + 3] = b
        if ratio[k] > 0:
            b = delta_wye_primary(b, ratio[k])
            base[3 * (N + k) : 3 * (N + k) + 3] = b
        k = parent[k]
    cc = coef.tocoo()
    ref, lo, width = sectors(cc.data, cc.col, 6 * N, base if has_base else None)
    used = np.zeros(6 * N, dtype=bool)
    used[cc.col] = True
    unit = np.ones(6 * N, dtype=bool)
    np.logical_and.at(unit, cc.col, np.abs(np.abs(cc.data) - 1.0) < 1e-12)
    is_int = (np.arange(6 * N) < 3 * N) & (width < COLLINEAR_RAD) & unit
    ci = coef[:, : 3 * N].multiply(is_int[None, : 3 * N].astype(np.float64)).tocsr()
    ci.eliminate_zeros()
    C_int = sp.csr_matrix((np.abs(ci.data), ci.indices, ci.indptr), shape=ci.shape)
    fc = coef.multiply((~is_int)[None, :].astype(np.float64)).tocoo()
    w = np.where(width < COLLINEAR_RAD, np.inf, width)
    e, f, val, scale = facets(fc.data, fc.col, ref, lo, w, m)
    keep = val > 0
    Cf = sp.csr_matrix(
        (val[keep], (fc.row[e[keep]], fc.col[e[keep]] * m + f[keep])), shape=(S, 6 * N * m)
    )
    shape = _LineShape(
        coef=coef,
        coef_l1=coef_l1,
        base=base,
        ratio=ratio,
        sector_rad=width,
        used=used,
        int_group=is_int,
        C_int=C_int,
        Cf=Cf,
        scale=scale,
    )
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.pop(next(iter(_SHAPES)))
    _SHAPES[key] = (site, shape)
    return shape


def _evse_line_table(site: Site, parent: np.ndarray, ratio: np.ndarray, N: int) -> sp.csr_matrix:
    """(3E, 6N) complex: row ``3e + k − 1`` is :func:`_walk_lines` of EVSE ``e`` carrying a
    ``k``-phase load (kept in the site's :class:`_SiteTree`)."""
    tree = _site_tree(site)
    table = tree.memo.get("line_table")
    if table is None:
        E = len(site.evses)
        e = np.repeat(np.arange(E), 3)
        k = np.tile(np.arange(1, 4, dtype=np.int64), E)
        branch = branch_coefficients(
            tree.line_to_line[e], tree.evse_arrays["evse_site_phases"][e], k
        )
        table = _walk_lines(branch, tree.evse_node[e], parent, ratio, N)
        tree.memo["line_table"] = table
    return table


def _line_currents(
    site: Site,
    evse_node: np.ndarray,
    s_evse: np.ndarray,
    parent: np.ndarray,
    n_ph: np.ndarray,
    line_to_line: np.ndarray,
    node_cur: np.ndarray,
    base_a: np.ndarray,
    k_base: int,
    T: int,
    res_site: np.ndarray,
) -> _Lines:
    """Exact line-current phasors of every node (and delta/wye primary) and how to model them."""
    N = len(site.nodes)
    has_base = bool(np.max(base_a, initial=0.0) > 0)
    shape = _line_shape(site, s_evse, parent, n_ph, line_to_line, k_base, has_base)
    limit = np.full((6 * N, T), np.inf)
    limit[: 3 * N] = node_cur.reshape(3 * N, T)
    for k, n in enumerate(site.nodes):
        trip = None if n.delta_wye is None else n.delta_wye.primary_triplet()
        if trip is not None:
            limit[3 * (N + k) : 3 * (N + k) + 3] = np.asarray(trip, dtype=np.float64)[:, None]
    base_mag = np.abs(shape.base)[:, None] * base_a[None, :]
    exact = shape.used & np.isfinite(limit).any(axis=1) & ~shape.int_group
    bound = facet_loss_bound(np.where(exact, shape.sector_rad, 0.0), site.phasor_facets)
    return _Lines(
        shape=shape,
        base_mag=base_mag,
        limit=limit,
        exact=exact,
        loss_bound=float(np.max(bound, initial=0.0)),
        reserved=_reserved_lines(res_site, evse_node, parent, shape.ratio, N),
    )


def _carries(parent: np.ndarray, k: int) -> np.ndarray:
    """Node ``k`` and every node above it (where a load hung at ``k`` flows)."""
    out = np.zeros(parent.size, dtype=bool)
    while k >= 0:
        out[k] = True
        k = int(parent[k])
    return out


def _feasible_floor(problem: Problem, floor_a: np.ndarray) -> np.ndarray:
    """§14a floors (A per variable) that every safety row and every energy need allow.

    Scaled per session so that the floors alone never deliver more than it wants, put on the
    0.1 A grid (down), then through the safety projection: a breaker, a node rating or another
    signal's cap always wins over a floor (the floor only stops *this* signal from dimming below
    it).
    """
    from .safety import GRID_SNAP, _project_da

    kwh = np.bincount(
        problem.var_session, problem.var_kwh_per_a * floor_a, minlength=problem.n_sessions
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(kwh > problem.session_energy_kwh, problem.session_energy_kwh / kwh, 1.0)
    da = np.floor(floor_a * scale[problem.var_session] * 10.0 + GRID_SNAP)
    return _project_da(problem, da, max_passes=8) / 10.0


def _ancestors(nodes: np.ndarray, parent: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """(K, N) 1 where node ``n`` is ``nodes[k]`` or above it."""
    r, c = [], []
    cur, alive = nodes.copy(), np.arange(nodes.size)
    while alive.size:
        r.append(alive)
        c.append(cur)
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur = alive[keep], nxt[keep]
    rr = np.concatenate(r) if r else np.zeros(0, np.int64)
    cc = np.concatenate(c) if c else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(rr.size), (rr, cc)), shape=(nodes.size, n_nodes))


def _with_batteries(
    ev: sp.csr_matrix, bat_var: sp.csr_matrix, per_battery: Callable[[], sp.csr_matrix]
) -> sp.coo_matrix:
    """The (V + Vb, groups) coefficients of a row family: the EV columns ``ev`` above the battery
    charge columns ``bat_var @ per_battery()`` (nothing to stack on a site without batteries)."""
    if bat_var.shape[0] == 0:
        return ev.tocoo()
    return sp.vstack([ev, bat_var @ per_battery()]).tocoo()


def _on_all_phases(anc: sp.csr_matrix) -> sp.csr_matrix:
    """(K, N) ancestors -> (K, 3N) with column ``3n + p`` for every phase ``p``."""
    a = anc.tocoo()
    rr = np.repeat(a.row, 3)
    cc = (a.col[:, None] * 3 + np.arange(3)[None, :]).ravel()
    return sp.csr_matrix((np.ones(rr.size), (rr, cc)), shape=(anc.shape[0], 3 * anc.shape[1]))


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
) -> Storage:
    """The bidirectional part of the problem (:class:`~loadopt.problem.Storage`).

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
    u_phase = np.vstack([phase_mask[sess_u], np.ones((B, 3), dtype=bool)])  # (U, 3)
    dvar = sp.csr_matrix((np.ones(Vd), (np.arange(Vd), dv_unit)), shape=(Vd, U))
    a = u_anc.tocoo()
    ri, ci = [], []
    for p in range(3):
        keep = u_phase[a.row, p]
        ri.append(a.row[keep])
        ci.append(a.col[keep] * 3 + p)
    Cu = sp.csr_matrix(
        (np.ones(sum(x.size for x in ri)), (np.concatenate(ri), np.concatenate(ci))),
        shape=(U, 3 * N),
    )
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
    return Storage(battery_ids=tuple(b.id for b in bats), Gb=Gb, Cd=Cd, Gx=Gx, **arrays)


def _point(start, value):
    from ._base import SeriesPoint

    return SeriesPoint(start=start, value=float(value))


class _RowBuilder:
    """Collects safety rows ``Σ_v coef · r_v ≤ rhs`` as COO triplets and labels, then one CSR."""

    def __init__(self, n_vars: int, n_periods: int) -> None:
        self.V, self.T = n_vars, n_periods
        self.n = 0
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.labels: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        var_group: sp.coo_matrix,
        var_period: np.ndarray,
        rhs_flat: np.ndarray,
        kind,
        node_of=None,
        phase_of=None,
        facet_of=None,
    ) -> None:
        """Add a row for every (group, period) with a finite limit.

        ``var_group`` is a (V, n_groups) incidence/coefficient matrix; variable ``v`` sits in the
        row of group ``g`` and its own period, ``rhs_flat[g * T + var_period[v]]``. A label
        function left ``None`` labels every row ``-1`` (site-wide / all phases / no facet).
        """
        T = self.T
        ids = var_group.col.astype(np.int64) * T + var_period[var_group.row]
        finite = np.isfinite(rhs_flat[ids])
        ids, cols, vals = ids[finite], var_group.row[finite], var_group.data[finite]
        if ids.size == 0:
            return
        # the row ids are dense integers below rhs_flat.size: number them without sorting
        present = np.zeros(rhs_flat.size, dtype=bool)
        present[ids] = True
        uniq = np.flatnonzero(present)
        self.r.append((np.cumsum(present) - 1)[ids] + self.n)
        self.c.append(cols)
        self.v.append(vals)
        group = uniq // T
        kinds = kind(group) if callable(kind) else np.full(uniq.size, kind)

        def label(of):
            return np.full(uniq.size, -1) if of is None else of(group)

        self.labels.append(
            (rhs_flat[uniq], kinds, label(node_of), label(phase_of), uniq % T, label(facet_of))
        )
        self.n += uniq.size

    def build(self):
        """``(G, h, row_kind, row_node, row_phase, row_period, row_facet)``."""
        if not self.labels:
            z = np.zeros(0)
            return (
                sp.csr_matrix((0, self.V)),
                z,
                z.astype(np.int8),
                z.astype(np.int32),
                z.astype(np.int8),
                z.astype(np.int32),
                z.astype(np.int8),
            )
        G = sp.csr_matrix(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n, self.V),
        )
        h, kind, node, phase, period, facet = (
            np.concatenate(x) for x in zip(*self.labels, strict=True)
        )
        return (
            G,
            h,
            kind.astype(np.int8),
            node.astype(np.int32),
            phase.astype(np.int8),
            period.astype(np.int32),
            facet.astype(np.int8),
        )


def _check_reserved(
    reserved_a: np.ndarray | None, n_evse: int, n_periods: int, evse_ids: tuple[str, ...]
) -> np.ndarray:
    """``reserved_a`` as a float ``(E, 3, T)`` array (zeros when ``None``), or an InputError."""
    if reserved_a is None:
        return np.zeros((n_evse, 3, n_periods))
    try:
        r = np.array(reserved_a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("reserved_a must be a numeric (EVSEs, 3, periods) array") from None
    if r.shape != (n_evse, 3, n_periods):
        raise InputError(
            f"reserved_a has shape {r.shape}, expected {(n_evse, 3, n_periods)} "
            "(EVSEs, lines, periods)"
        )
    bad = ~np.isfinite(r) | (r < 0)
    if bad.any():
        e = int(np.argwhere(bad)[0][0])
        raise InputError(f"reserved_a of EVSE {evse_ids[e]!r} must be finite and >= 0 A")
    return r


def _base_load_notices(
    node_id: str,
    cur_rhs: np.ndarray | None,
    kw_rhs: np.ndarray | None,
    import_rhs: np.ndarray | None,
    horizon: Horizon,
    fixed: str = "base load",
) -> list[str]:
    """Say, per limit, where the fixed load (base load minus PV, reserved EVSE draw) alone
    already exceeds it."""
    out = []

    def periods(mask: np.ndarray) -> str:
        k = np.flatnonzero(mask)
        first = horizon.period_start(int(k[0])).isoformat()
        return f"{k.size} period(s) from {first}"

    for p, name in enumerate("RST"):
        if cur_rhs is not None and (cur_rhs[p] < 0).any():
            out.append(
                f"node {node_id!r} phase {name}: {fixed} alone exceeds the current "
                f"limit in {periods(cur_rhs[p] < 0)}; vehicles get 0 A there"
            )
    if kw_rhs is not None and (kw_rhs < 0).any():
        out.append(
            f"node {node_id!r}: {fixed} alone exceeds the power limit in "
            f"{periods(kw_rhs < 0)}; vehicles get 0 A there"
        )
    if import_rhs is not None and (import_rhs < 0).any():
        out.append(
            f"grid import: {fixed} minus PV alone exceeds the grid import limit or a "
            f"demand-response cap in {periods(import_rhs < 0)}; vehicles get 0 A there"
        )
    return out


def snap_levels_da(allowed_a: tuple[float, ...]) -> np.ndarray:
    """The one snapping rule for discrete pilot steps (``Evse.allowed_currents``, A): each level
    rounded *down* to the 0.1 A grid an OCPP limit is emitted on (never up: a rounded-up step
    could exceed a limit), sorted, duplicates merged, and 0 added (a pause is always allowed,
    IEC 61851-1). Deci-amps."""
    from .safety import GRID_SNAP

    lv = np.floor(np.asarray(allowed_a, dtype=np.float64) * 10.0 + GRID_SNAP)
    return np.unique(np.r_[0.0, lv])


@dataclass(frozen=True, eq=False)
class _SiteTree:
    """What ``compile_problem`` needs of a site's tree and EVSEs that no session, time or signal
    changes (built once per ``site.nodes``/``site.evses`` pair, :func:`_site_tree`)."""

    nodes: tuple  #: the ``site.nodes`` it was built from (identity: the cache key)
    evses: tuple  #: the ``site.evses`` it was built from
    node_ids: tuple[str, ...]
    node_index: dict[str, int]
    parent: np.ndarray  #: (N,) parent node, -1 at the root
    root: int
    evse_ids: tuple[str, ...]
    evse_index: dict[str, int]
    evse_node: np.ndarray  #: (E,)
    anc: sp.csr_matrix  #: (E, N) 1 where the node is the EVSE's or above it
    anc_t: sp.csr_matrix  #: (N, E)
    has_line: np.ndarray  #: (E, 3) bool, the EVSE has line L1/L2/L3
    line_to_line: np.ndarray  #: (E,) bool, the EVSE is wired line-to-line
    evse_arrays: dict[str, np.ndarray]  #: :func:`evse_arrays`, read-only
    memo: dict = field(default_factory=dict)  #: more per-site arrays, built when first needed


def _site_tree(site: Site) -> _SiteTree:
    """The site's :class:`_SiteTree`, kept beside the site (a controller compiles every step on
    the same site) and rebuilt when the ``nodes`` or ``evses`` tuple it was built from is not
    the site's (a ``model_copy`` with new nodes or EVSEs). Arrays are read-only."""
    cached = site.__dict__.get("_site_tree")
    if isinstance(cached, _SiteTree) and cached.nodes is site.nodes and cached.evses is site.evses:
        return cached
    node_ids = tuple(n.id for n in site.nodes)
    node_index = {nid: k for k, nid in enumerate(node_ids)}
    N = len(node_ids)
    parent = np.array([-1 if n.parent is None else node_index[n.parent] for n in site.nodes])
    evse_ids = tuple(e.id for e in site.evses)
    E = len(evse_ids)
    evse_node = np.array([node_index[e.node] for e in site.evses], dtype=np.int64)
    # ancestors of every EVSE (its node and everything up to the root), walked by depth
    anc_rows, anc_cols = [], []
    cur = evse_node.copy()
    alive = np.arange(E)
    while alive.size:
        anc_rows.append(alive)
        anc_cols.append(cur)
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur = alive[keep], nxt[keep]
    anc = sp.csr_matrix(
        (
            np.ones(sum(a.size for a in anc_rows)),
            (
                np.concatenate(anc_rows) if anc_rows else np.zeros(0, np.int64),
                np.concatenate(anc_cols) if anc_cols else np.zeros(0, np.int64),
            ),
        ),
        shape=(E, N),
    )
    arrays = _site_evse_arrays(site)
    tree = _SiteTree(
        nodes=site.nodes,
        evses=site.evses,
        node_ids=node_ids,
        node_index=node_index,
        parent=parent,
        root=int(np.flatnonzero(parent < 0)[0]),
        evse_ids=evse_ids,
        evse_index={eid: k for k, eid in enumerate(evse_ids)},
        evse_node=evse_node,
        anc=anc,
        anc_t=anc.T.tocsr(),
        has_line=np.arange(3)[None, :] < arrays["evse_phases"].reshape(E, 1),
        line_to_line=np.array([e.wiring == "line_to_line" for e in site.evses], dtype=bool),
        evse_arrays=arrays,
    )
    for a in (parent, evse_node, tree.has_line, tree.line_to_line):
        a.setflags(write=False)
    # an object compared by identity: pydantic's ``Site ==`` first compares ``__dict__`` and,
    # when that differs, only the fields
    site.__dict__["_site_tree"] = tree
    return tree


def _site_evse_arrays(site: Site) -> dict[str, np.ndarray]:
    """:func:`evse_arrays`, built once per ``site.evses`` tuple (a controller compiles every
    step on the same site): kept beside the site, read-only, rebuilt when the tuple it was built
    from is not the site's (a ``model_copy`` with new EVSEs)."""
    cached = site.__dict__.get("_evse_arrays")
    if not isinstance(cached, _EvseArrays) or cached.evses is not site.evses:
        arrays = evse_arrays(site)
        for a in arrays.values():
            a.setflags(write=False)
        cached = _EvseArrays(site.evses, arrays)
        site.__dict__["_evse_arrays"] = cached  # compared by identity (see _site_tree)
    return dict(cached.arrays)


@dataclass(frozen=True, eq=False)
class _EvseArrays:
    evses: tuple  #: the ``site.evses`` the arrays were built from
    arrays: dict[str, np.ndarray]


def evse_arrays(site: Site) -> dict[str, np.ndarray]:
    """Per-EVSE arrays of the :class:`~loadopt.problem.Problem` (``E`` EVSEs, order of
    ``site.evses``): phases, the site phase of each EVSE line (OCPP phase rotation), voltage,
    phase switching, current range, and the discrete levels as CSR (``evse_levels_ptr`` (E+1,),
    ``evse_levels_da`` (K,); an EVSE without ``allowed_currents`` has none)."""
    ev = site.evses
    E = len(ev)
    levels = [
        snap_levels_da(e.allowed_currents) if e.allowed_currents is not None else np.zeros(0)
        for e in ev
    ]
    return dict(
        evse_phases=np.array([e.phases for e in ev], dtype=np.int64).reshape(E),
        evse_site_phases=np.array([e.site_phases for e in ev], dtype=np.int64).reshape(E, 3),
        evse_voltage_v=np.array([e.voltage_v for e in ev], dtype=np.float64).reshape(E),
        evse_phase_switching=np.array([e.phase_switching for e in ev], dtype=bool).reshape(E),
        evse_max_current=np.array([e.max_current for e in ev], dtype=np.float64).reshape(E),
        evse_min_current=np.array([e.min_current for e in ev], dtype=np.float64).reshape(E),
        evse_has_levels=np.array([e.allowed_currents is not None for e in ev], dtype=bool).reshape(
            E
        ),
        evse_levels_ptr=np.r_[0, np.cumsum([lv.size for lv in levels])].astype(np.int64),
        evse_levels_da=(np.concatenate(levels) if levels else np.zeros(0)).astype(np.float64),
    )
