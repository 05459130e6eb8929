"""Line currents of every node (and delta/wye primary) as phasors: the time-independent line
shapes (cached per site and sessions-on-EVSEs), the exact integer rows and the facet rows of the
phasor disc (:mod:`loadopt.wiring`), and the reserved draw carried up the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._csr import csr, entry_rows, keep_entries, pointer, take_rows
from ..site import Site
from ..wiring import (
    COLLINEAR_RAD,
    PHASE_UNIT,
    SEPARATED_SECTOR_RAD,
    branch_coefficients,
    circle_facet_count,
    delta_wye_primary,
    facet_loss_bound,
    facets,
    sectors,
    two_way_facets,
    two_way_fixed,
)
from .tree import _site_tree


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
    #: ``(indptr, indices, data)`` of the ``(S + B, 3N)`` |coefficient| of the exact rows and of
    #: the ``(S + B, 6N·m)`` facet coefficients (≥ 0): the sessions, then the batteries
    #: (balanced three-phase loads at the site voltage on their node); canonical CSR arrays
    int_rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    facet_rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    n_sessions: int
    n_facets: int  #: ``m``, facets per line (the site's ``phasor_facets``)
    scale: np.ndarray  #: (6N,) right-hand-side scale cos(Δ/2m) (1 for magnitude rows)
    bat_coef: sp.csr_matrix | None = None  #: (B, 6N) complex, the batteries' ``coef``
    #: (6N,) bool, lines carrying storage whose sector is wider than 60°: full-circle coupled
    #: rows (:func:`loadopt.wiring.two_way_facets`) with ``n_circle`` facets each
    coupled: np.ndarray | None = None
    n_circle: int = 0
    cw_c: sp.csr_matrix | None = None  #: (S + B, 6N·M) coupled-row coefficients, charging
    cw_d: sp.csr_matrix | None = None  #: (S + B, 6N·M) coupled-row coefficients, discharging
    cw_base: np.ndarray | None = None  #: (6N, M) the base load's clipped projection per A
    cw_pv: np.ndarray | None = None  #: (6N, M) the PV output's clipped projection per A
    memo: dict = field(default_factory=dict)  #: more per-shape structures (the row template)

    def _rows(self, which: str, lo: int, hi: int) -> sp.csr_matrix:
        m = self.int_rows if which == "int" else self.facet_rows
        n_cols = self.base.size // 2 if which == "int" else self.base.size * self.n_facets
        return _rows_csr(m, lo, hi, n_cols)

    @cached_property
    def C_int(self) -> sp.csr_matrix:
        """(S, 3N) |coefficient| of the exact rows."""
        return self._rows("int", 0, self.n_sessions)

    @cached_property
    def Cf(self) -> sp.csr_matrix:
        """(S, 6N·m) facet coefficients (≥ 0)."""
        return self._rows("facet", 0, self.n_sessions)

    @cached_property
    def bat_C_int(self) -> sp.csr_matrix:
        """(B, 3N) the batteries' ``C_int``."""
        return self._rows("int", self.n_sessions, self.int_rows[0].size - 1)

    @cached_property
    def bat_Cf(self) -> sp.csr_matrix:
        """(B, 6N·m) the batteries' ``Cf``."""
        return self._rows("facet", self.n_sessions, self.facet_rows[0].size - 1)


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


def _drop_oldest(store: dict) -> None:
    """Drop the oldest entry of a bounded store (insertion order). Another thread may be
    dropping the same entry, or changing the store, at the same time: then nothing is dropped
    here (the store may stay one over its bound until the next insertion)."""
    try:
        store.pop(next(iter(store)), None)
    except (StopIteration, RuntimeError):  # emptied, or changed size, meanwhile
        pass


def _line_shape(
    site: Site,
    s_evse: np.ndarray,
    parent: np.ndarray,
    n_ph: np.ndarray,
    line_to_line: np.ndarray,
    k_base: int,
    has_base: bool,
    bat_node: np.ndarray | None = None,
    unit_mask: np.ndarray | None = None,
) -> _LineShape:
    """The time-independent part of the line currents (cached by site identity and the
    sessions' EVSEs and phase counts).

    With storage (batteries at ``bat_node``, bidirectional sessions ``unit_mask``) the sectors
    also span the batteries and the base load's direction (PV feeds in on the opposite one), and
    lines where charging and exporting phasors may be less than 120° apart get coupled rows
    (docs/formulation.md, "Storage on phasor lines").
    """
    bat_node = np.zeros(0, np.int64) if bat_node is None else bat_node
    unit_mask = np.zeros(s_evse.size, bool) if unit_mask is None else unit_mask
    two_way = bool(bat_node.size or unit_mask.any())
    key = (
        id(site),
        s_evse.tobytes(),
        n_ph.tobytes(),
        k_base,
        has_base,
        bat_node.tobytes(),
        unit_mask.tobytes(),
    )
    hit = _SHAPES.get(key)
    if hit is not None and hit[0] is site:
        return hit[1]
    N = len(site.nodes)
    S = s_evse.size
    m = site.phasor_facets
    ratio = _site_tree(site).ratio
    # a session's line coefficients depend only on its EVSE and how many phases it uses: taken
    # by row from the site's table of every EVSE with 1, 2 and 3 phases (walked once per site)
    table = _evse_line_table(site, parent, ratio, N)
    tp, ti, td = table.indptr, table.indices, table.data
    G6 = 6 * N
    cp, ci, cd = take_rows(tp, ti, td, 3 * s_evse + n_ph - 1)
    coef = csr(cp, ci, cd, (S, G6))
    l1 = np.where(line_to_line, n_ph, np.minimum(n_ph, 1))
    # (every session line-to-line or on one phase: the same rows)
    same = bool(np.array_equal(l1, n_ph))
    coef_l1 = coef if same else csr(*take_rows(tp, ti, td, 3 * s_evse + l1 - 1), (S, G6))
    base = _base_phasors(site, parent, ratio, k_base)
    B = bat_node.size
    if B:
        # a battery is a balanced three-phase load on its node: the base load's phasors, from
        # there
        bat_coef = _walk_lines(np.tile(PHASE_UNIT, (B, 1)), bat_node, parent, ratio, N)
        cp = np.concatenate([cp, cp[-1] + bat_coef.indptr[1:]])
        ci = np.concatenate([ci, bat_coef.indices])
        cd = np.concatenate([cd, bat_coef.data])
    else:
        bat_coef = _no_batteries(site, G6)
    SB = S + B
    # every unit's (session, then battery) line coefficients as entries in row order
    c_row, c_col = entry_rows(cp), ci
    ref, lo, width = sectors(cd, c_col, G6, base if has_base or two_way else None)
    used = np.zeros(G6, dtype=bool)
    used[c_col] = True
    unit = np.bincount(c_col, np.abs(np.abs(cd) - 1.0) >= 1e-12, minlength=G6) == 0
    is_int = (np.arange(G6) < 3 * N) & (width < COLLINEAR_RAD) & unit
    # exact rows: |coefficient| on the integer lines
    e_int = is_int[c_col]
    C_int = keep_entries(cp, c_col, np.abs(cd), e_int)
    # facet rows of the other lines (entry order kept: facets of an entry ascending)
    e_f = np.flatnonzero(~e_int)
    w = np.where(width < COLLINEAR_RAD, np.inf, width)
    e, f, val, scale = facets(cd[e_f], c_col[e_f], ref, lo, w, m)
    order = np.argsort(e, kind="stable")  # two sorted runs (cut, magnitude): one merge
    e, f, val = e_f[e[order]], f[order], val[order]
    keep = val > 0
    e, f, val = e[keep], f[keep], val[keep]
    Cf = (pointer(np.bincount(c_row[e], minlength=SB)), c_col[e] * m + f, val)
    cc = _Entries(c_row, c_col, cd)
    two: dict = {}
    if two_way:
        # lines that storage units load and whose sector is wider than 60° (or can cancel)
        is_unit = np.concatenate([unit_mask, np.ones(B, dtype=bool)])
        touched = np.zeros(6 * N, dtype=bool)
        touched[cc.col[is_unit[cc.row]]] = True
        coupled = touched & ~is_int & (width > SEPARATED_SECTOR_RAD)  # collinear: separated
        M = circle_facet_count(m)
        kc = np.flatnonzero(coupled[cc.col])
        e2, f2, vc, vd = two_way_facets(cc.data[kc], cc.col[kc], ref, lo, M)
        r2, c2 = cc.row[kc][e2], cc.col[kc][e2] * M + f2
        shape2 = (SB, 6 * N * M)
        cw_base, cw_pv = two_way_fixed(base, ref, lo, M)
        two = dict(
            coupled=coupled,
            n_circle=M,
            cw_c=sp.csr_matrix((vc, (r2, c2)), shape=shape2),
            cw_d=sp.csr_matrix((vd, (r2, c2)), shape=shape2),
            cw_base=cw_base,
            cw_pv=cw_pv,
        )
        for x in ("cw_c", "cw_d"):
            two[x].eliminate_zeros()
    width.setflags(write=False)  # Problem.line_sector_rad of every step with these sessions
    shape = _LineShape(
        coef=coef,
        coef_l1=coef_l1,
        base=base,
        ratio=ratio,
        sector_rad=width,
        used=used,
        int_group=is_int,
        int_rows=C_int,
        facet_rows=Cf,
        n_sessions=S,
        n_facets=m,
        scale=scale,
        bat_coef=bat_coef,
        **two,
    )
    if len(_SHAPES) >= _SHAPES_MAX:
        _drop_oldest(_SHAPES)
    _SHAPES[key] = (site, shape)
    return shape


class _Entries(NamedTuple):
    """A compressed matrix's entries in row order (the storage rows take them as COO)."""

    row: np.ndarray
    col: np.ndarray
    data: np.ndarray


def _rows_csr(
    m: tuple[np.ndarray, np.ndarray, np.ndarray], lo: int, hi: int, n_cols: int
) -> sp.csr_matrix:
    """Rows ``lo:hi`` of the canonical ``(indptr, indices, data)`` ``m`` as a CSR matrix."""
    ptr, idx, val = m
    a, b = ptr[lo], ptr[hi]
    return csr(ptr[lo : hi + 1] - a, idx[a:b], val[a:b], (hi - lo, n_cols))


def _no_batteries(site: Site, n_groups: int) -> sp.csr_matrix:
    """The empty ``(0, 6N)`` complex battery line coefficients (one per site; read-only)."""
    memo = _site_tree(site).memo
    got = memo.get("no_batteries")
    if got is None:
        got = sp.csr_matrix((0, n_groups), dtype=np.complex128)
        for a in (got.data, got.indices, got.indptr):
            a.setflags(write=False)
        memo["no_batteries"] = got
    return got


def _base_phasors(site: Site, parent: np.ndarray, ratio: np.ndarray, k_base: int) -> np.ndarray:
    """(6N,) complex line phasors per A of the balanced base load hung at node ``k_base`` (kept
    per node in the site's :class:`_SiteTree`; read-only)."""
    tree = _site_tree(site)
    key = ("base_phasors", k_base)
    base = tree.memo.get(key)
    if base is None:
        N = parent.size
        base = np.zeros(6 * N, dtype=np.complex128)
        b, k = PHASE_UNIT.copy(), k_base
        while k >= 0:
            base[3 * k : 3 * k + 3] = b
            if ratio[k] > 0:
                b = delta_wye_primary(b, ratio[k])
                base[3 * (N + k) : 3 * (N + k) + 3] = b
            k = parent[k]
        base.setflags(write=False)
        tree.memo[key] = base
    return base


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


def evse_branch_line_coef(site: Site) -> sp.csr_matrix:
    """``(3E, 6N)`` complex: row ``3e + j`` is the line current (A, on every line group
    ``g = (side · N + node) · 3 + line`` of :mod:`loadopt.problem`, delta/wye primaries
    included) per A drawn by branch ``j`` of EVSE ``e`` alone (its line ``Lj``: line-to-neutral on
    ``rotation[j]``, line-to-line on the pair ``(rotation[j], rotation[j+1])``,
    :mod:`loadopt.wiring`); zero for branches the EVSE does not have. Summed over an EVSE's
    branches it is :func:`_evse_line_table`'s row for its phase count. Kept in the site's
    :class:`_SiteTree`; read-only. Used where each branch may draw its own current (the OCPP
    transition guard, :class:`loadopt.ocpp.guard.SiteLimits`)."""
    tree = _site_tree(site)
    table = tree.memo.get("branch_line_table")
    if table is None:
        E, N = len(site.evses), len(site.nodes)
        e = np.repeat(np.arange(E), 3)
        j = np.tile(np.arange(3), E)
        rot = np.asarray(tree.evse_arrays["evse_site_phases"], dtype=np.int64)
        # branch j alone is the first branch of the rotation started at Lj
        rolled = rot[e[:, None], (j[:, None] + np.arange(3)[None, :]) % 3]
        one = (j < tree.evse_arrays["evse_phases"][e]).astype(np.int64)
        branch = branch_coefficients(tree.line_to_line[e], rolled, one)
        table = _walk_lines(branch, tree.evse_node[e], tree.parent, tree.ratio, N)
        for a in (table.data, table.indices, table.indptr):
            a.setflags(write=False)
        tree.memo["branch_line_table"] = table
    return table


def _line_currents(
    shape: _LineShape, limit: np.ndarray, base_mag: np.ndarray, reserved: np.ndarray, m: int
) -> _Lines:
    """Exact line-current phasors of every node (and delta/wye primary) and how to model them:
    the sessions' line shape beside the step's line limits ``limit``, base-load magnitudes
    ``base_mag`` and reserved draw ``reserved`` (6N, T) A
    (:class:`loadopt.compile.limits._StepLimits`), ``m`` facets per line."""
    exact = shape.used & np.isfinite(limit).any(axis=1) & ~shape.int_group
    exact.setflags(write=False)
    key = ("loss_bound", exact.tobytes())
    loss = shape.memo.get(key)
    if loss is None:
        bound = facet_loss_bound(np.where(exact, shape.sector_rad, 0.0), m)
        loss = shape.memo[key] = float(np.max(bound, initial=0.0))
    return _Lines(
        shape=shape,
        base_mag=base_mag,
        limit=limit,
        exact=exact,
        loss_bound=loss,
        reserved=reserved,
    )
