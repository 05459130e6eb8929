"""Fixed loads on the limits: the reserved EVSE draw (validated, carried to site phases, nodes
and kW) and the notices where a fixed load (base load minus PV, reserved draw) alone already
exceeds a limit.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..horizon import Horizon
from ..wiring import branch_lines
from .tree import _SiteTree


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


def _reserved_loads(
    reserved: np.ndarray | None, tree: _SiteTree, T: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reserved draw per EVSE line as fixed loads: ``(res_site (E, 3, T) A per site phase,
    node_res_kw (N, T) kW per node, site_res_kw (T,) kW at the grid connection)``."""
    E_, N = len(tree.evse_ids), len(tree.node_ids)
    res_site = np.zeros((E_, 3, T))
    if reserved is None or not reserved.any():
        node_res_kw, site_res_kw = np.zeros((N, T)), np.zeros(T)
    else:
        e_volt = np.asarray(tree.evse_arrays["evse_voltage_v"])
        # a line-to-line branch loads both lines of its pair
        inc = branch_lines(tree.line_to_line, tree.evse_arrays["evse_site_phases"])
        res_site = np.einsum("ejp,ejt->ept", inc, reserved)
        res_kw_e = reserved.sum(axis=1) * e_volt[:, None] / 1000.0  # (E, T)
        node_res_kw = np.asarray(tree.anc_t @ res_kw_e).reshape(N, T)
        site_res_kw = res_kw_e.sum(axis=0)
    return res_site, node_res_kw, site_res_kw


def _overloaded_reserved(
    cur_rhs: np.ndarray,
    kw_rhs: np.ndarray,
    import_rhs: np.ndarray,
    line_room_a: np.ndarray,
    s_anc_csr,
    vs: np.ndarray,
    vt: np.ndarray,
    var_free: np.ndarray,
) -> np.ndarray:
    """The reserved columns (a session on a reserved EVSE, planned inside the reservation) that
    must be 0 A: those under a node whose limit the fixed loads alone (base load, reserved draw)
    already exceed in that period — a node current (``cur_rhs`` (N, 3, T) A < 0), a phasor line
    or delta/wye primary line (``line_room_a`` (6N, T) A < 0, groups ``(side·N + node)·3 +
    line``), a node kW limit (``kw_rhs`` (N, T) < 0) — or every one of them where the grid
    import (``import_rhs`` (T,) kW < 0: grid limit, DR caps) is exceeded.

    Inside a reservation the plan is free only while the reservation fits: there, handing out up
    to what the vehicle is metered at changes nothing on the lines. Where the fixed loads already
    exceed a limit, the only limit that helps is 0 A (a vehicle that has not had a limit from us
    yet, or exceeded one, complies with it once accepted); handing out what it draws would allow
    a draw above the limit. Per node, not per line: conservative where only another line of the
    node is overloaded. Returns ``(V,)`` bool."""
    out = np.zeros(var_free.size, dtype=bool)
    res = np.flatnonzero(~var_free)
    if res.size == 0:
        return out
    tol = 1e-9
    N = cur_rhs.shape[0]
    node_bad = (cur_rhs < -tol).any(axis=1) | (kw_rhs < -tol)  # (N, T)
    g_bad = np.flatnonzero((line_room_a < -tol).any(axis=1))
    for g in g_bad:  # few: only overloaded line groups
        node_bad[(g // 3) % N] |= line_room_a[g] < -tol
    root_bad = import_rhs < -tol  # (T,)
    if not (node_bad.any() or root_bad.any()):
        return out
    under = np.asarray(s_anc_csr[vs[res]].todense(), dtype=bool)  # (Vr, N)
    t = vt[res]
    out[res] = root_bad[t] | (under & node_bad[:, t].T).any(axis=1)
    return out
