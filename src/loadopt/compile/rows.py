"""The safety rows ``G r + Gb c <= h``: the row template of a site and a set of plugged-in
vehicles (every row family's coefficients per unit and row group, cached with the line shape),
assembled for one step's variables and right-hand sides without a sparse product or a sort
(:func:`_assemble_rows`); and the COO row builder the export rows of the storage use.

What a controller's step moves — time, meters, limits, signals — changes only the right-hand
sides and which variables exist; the template (built when the vehicles on the EVSEs change) is
reused as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._csr import csr, hstack_rows, keep_entries, pointer
from ..problem import (
    ROW_LINE_FACET,
    ROW_NODE_CURRENT,
    ROW_NODE_POWER,
    ROW_PRIMARY_FACET,
    ROW_SITE_IMPORT,
)
from .lines import _drop_oldest, _LineShape


@dataclass(frozen=True, eq=False)
class _RowTemplate:
    """The coefficients of every safety-row family per unit (the sessions, then the batteries)
    and row group, for one site and one set of vehicles on their EVSEs: the part of ``G`` no
    step of a controller moves (time, meters, limits and signals change only the right-hand
    sides and which variables exist). Built once per line shape (:func:`_row_template`).

    Groups, in the order of the rows of ``G``: ``3N`` exact line currents (node · 3 + phase),
    ``6N·m`` phasor facets (line group · m + facet), ``N`` node powers (kW), 1 site import (kW).
    """

    ptr: np.ndarray  #: (U + 1,) CSR row pointer of the (U, groups) coefficients
    idx: np.ndarray  #: group of each coefficient (ascending within a unit)
    val: np.ndarray  #: the coefficient (A per A, or kW per A)
    n_groups: int
    s_anc_csr: sp.csr_matrix
    memo: dict = field(default_factory=dict)  #: the template on a step's finite groups


def _row_template(
    shape: _LineShape,
    s_anc_csr: sp.csr_matrix,
    kw_per_a: np.ndarray,
    bat_anc: sp.csr_matrix,
    bat_kw_per_a: float,
    N: int,
    m: int,
) -> _RowTemplate:
    """The :class:`_RowTemplate` of the sessions ``shape`` was built for (kept in its memo: the
    line shape is cached by site identity and the sessions' EVSEs and phase counts, which fix
    ``kw_per_a`` and ``s_anc_csr`` too), with the site's batteries (``bat_anc``, balanced over
    the three phases) as the last units."""
    tpl = shape.memo.get("rows")
    if isinstance(tpl, _RowTemplate):
        return tpl
    S, B = s_anc_csr.shape[0], bat_anc.shape[0]
    # per unit (the sessions, then the batteries): [exact rows | facets | node kW | site kW]
    anc = s_anc_csr if not B else sp.vstack([s_anc_csr, bat_anc], format="csr")
    kw = np.concatenate([kw_per_a, np.full(B, bat_kw_per_a)]).astype(np.float64)
    a_ptr = anc.indptr.astype(np.int64)
    c_int, c_f = shape.int_rows, shape.facet_rows
    ptr, idx, val = hstack_rows(
        [
            (*c_int, 0),
            (*c_f, 3 * N),
            (a_ptr, anc.indices, np.repeat(kw, np.diff(a_ptr)), 3 * N + 6 * N * m),
            (np.arange(S + B + 1), np.zeros(S + B, np.int64), kw, 3 * N + 6 * N * m + N),
        ]
    )
    nz = val != 0
    if not nz.all():
        ptr, idx, val = keep_entries(ptr, idx, val, nz)
    n_groups = 3 * N + 6 * N * m + N + 1
    tpl = _RowTemplate(
        ptr=ptr.astype(np.int64),
        idx=idx.astype(np.int64),
        val=val.astype(np.float64),
        n_groups=n_groups,
        s_anc_csr=s_anc_csr,
    )
    shape.memo["rows"] = tpl
    return tpl


_LABELS: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}


def _group_labels(N: int, m: int) -> tuple[np.ndarray, ...]:
    """``(kind, node, phase, facet)`` of each row group of a :class:`_RowTemplate` (−1: all
    nodes / phases, no facet)."""
    got = _LABELS.get((N, m))
    if got is not None:
        return got
    g_int = np.arange(3 * N)
    g_f = np.arange(6 * N * m)
    g_kw = np.arange(N)

    def cat(*parts):
        return np.concatenate([np.asarray(p) for p in parts])

    out = (
        cat(
            np.full(3 * N, ROW_NODE_CURRENT),
            np.where(g_f // m < 3 * N, ROW_LINE_FACET, ROW_PRIMARY_FACET),
            np.full(N, ROW_NODE_POWER),
            [ROW_SITE_IMPORT],
        ).astype(np.int8),
        cat(g_int // 3, (g_f // m // 3) % N, g_kw, [-1]).astype(np.int32),
        cat(g_int % 3, (g_f // m) % 3, np.full(N, -1), [-1]).astype(np.int8),
        cat(np.full(3 * N, -1), g_f % m, np.full(N, -1), [-1]).astype(np.int8),
    )
    for a in out:
        a.setflags(write=False)
    _LABELS[(N, m)] = out
    return out


def _assemble_rows(
    tpl: _RowTemplate,
    unit: np.ndarray,
    period: np.ndarray,
    free: np.ndarray,
    rhs: np.ndarray,
    T: int,
    n_ev: int,
    finite: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix | None, np.ndarray, np.ndarray, np.ndarray]:
    """The safety rows of one step from the template: variable ``v`` (of unit ``unit[v]`` in
    period ``period[v]``; ``free[v]`` False: it has no entries) enters the row of group ``g``
    and its own period with the unit's coefficient; a row exists where some variable enters it
    and its right-hand side ``rhs[g·T + t]`` is finite. Rows are numbered by ``g·T + t`` (the
    families in template order). Returns ``(G, Gb, h, group, period)``: the first ``n_ev``
    variables' columns, then the rest (battery charge; None when there is none). A few passes
    over the entries, no sort: the columns come out in variable order, already CSC.
    ``finite`` is ``np.isfinite(rhs)`` when the caller has it."""
    nv = unit.size
    if not nv:  # no variable: no row (what either form gives, without a pass)
        none = np.zeros(0, np.int64)
        G = csr(np.zeros(1, np.int32), np.zeros(0, np.int32), np.zeros(0), (0, 0))
        return G, None, rhs[none], none, none.astype(np.int32)
    if finite is None:
        finite = np.isfinite(rhs)
    finite = np.asarray(finite).reshape(tpl.n_groups, T)
    on = np.asarray(finite.any(axis=1))
    kernel = _kernel()
    if kernel is not None and rhs.size < 2**31:
        unit = unit.astype(np.int64, copy=False)
        period = period.astype(np.int64, copy=False)
        free = free.astype(bool, copy=False)
        flat = finite.reshape(-1)
        by_group = _kernel(by_group=True)
        got = None
        if by_group is not None:
            got = by_group(*_template_by_group(tpl, on), unit, period, free, flat, T)
        if got is None:  # variables not in (unit, period) order
            ptr, idx, val = _template_on(tpl, on)  # groups some period limits
            got = kernel(ptr, idx, val, unit, period, free, flat, T)
        ptr32, cols, data, uniq = got
        G = csr(ptr32, cols, data, (uniq.size, nv))
        if nv > n_ev:  # battery charge columns: the last ones of every row
            G, Gb = _split_columns(G, n_ev)
        else:
            Gb = None
        return G, Gb, rhs[uniq], uniq // T, (uniq % T).astype(np.int32)
    whole = bool((on == finite.all(axis=1)).all())  # every group limited always or never
    ptr, idx, val = _template_on(tpl, on)
    start = ptr[unit]
    cnt = np.where(free, ptr[unit + 1] - start, 0)
    ends = np.cumsum(cnt)
    nnz = int(ends[-1]) if nv else 0
    pos = np.arange(nnz) + np.repeat(start - (ends - cnt), cnt)
    per = np.repeat(period, cnt)
    rid = idx[pos] * T + per
    colptr = np.r_[0, ends]
    if not whole:
        keep = finite.reshape(-1)[rid]
        pos, rid = pos[keep], rid[keep]
        colptr = np.r_[0, np.cumsum(np.bincount(np.repeat(np.arange(nv), cnt)[keep], minlength=nv))]
    present = np.zeros(rhs.size, dtype=bool)
    present[rid] = True
    uniq = np.flatnonzero(present)
    rowno = np.empty(rhs.size, dtype=np.int32)
    rowno[uniq] = np.arange(uniq.size, dtype=np.int32)
    G_all = sp.csc_matrix((val[pos], rowno[rid], colptr.astype(np.int32)), shape=(uniq.size, nv))
    if nv > n_ev:
        G, Gb = G_all[:, :n_ev].tocsr(), G_all[:, n_ev:].tocsr()
    else:
        G, Gb = G_all.tocsr(), None
    return G, Gb, rhs[uniq], uniq // T, (uniq % T).astype(np.int32)


def _kernel(by_group: bool = False):
    """The compiled assembly (:data:`loadopt.compile._kernels.KERNEL`) once the process compiles
    often, else None (the numpy form); ``by_group``: ``KERNEL_BY_GROUP``, asked only once
    ``KERNEL`` is there."""
    from ._kernels import KERNEL, KERNEL_BY_GROUP

    return (KERNEL_BY_GROUP if by_group else KERNEL).get(force=by_group)


def _split_columns(m: sp.csr_matrix, n: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(m[:, :n], m[:, n:])`` of a CSR matrix with sorted rows, from its arrays."""
    left = m.indices < n
    a = keep_entries(m.indptr, m.indices, m.data, left)
    b = keep_entries(m.indptr, m.indices - n, m.data, ~left)
    rows = m.shape[0]
    return (
        csr(a[0].astype(np.int32), a[1], a[2], (rows, n)),
        csr(b[0].astype(np.int32), b[1], b[2], (rows, m.shape[1] - n)),
    )


def _template_on(tpl: _RowTemplate, on: np.ndarray) -> tuple[np.ndarray, ...]:
    """``tpl``'s ``(ptr, idx, val)`` with only the groups ``on`` (a step's finite limits: the
    others can have no row), kept per mask in the template's memo."""
    key = on.tobytes()
    got = tpl.memo.get(key)
    if got is None:
        k = on[tpl.idx]
        U = tpl.ptr.size - 1
        rows = np.repeat(np.arange(U), np.diff(tpl.ptr))
        ptr = np.r_[0, np.cumsum(np.bincount(rows[k], minlength=U))]
        got = (ptr.astype(np.int64), tpl.idx[k], tpl.val[k])
        if len(tpl.memo) >= 8:
            _drop_oldest(tpl.memo)
        tpl.memo[key] = got
    return got


def _template_by_group(tpl: _RowTemplate, on: np.ndarray) -> tuple[np.ndarray, ...]:
    """``tpl`` on the groups ``on`` by group (its transpose): ``(ptr, unit, val, groups,
    unit_cnt)`` as :func:`loadopt.compile._kernels.assemble_csr_by_group` takes it (units
    ascending within a group), kept per mask in the template's memo (read-only)."""
    key = ("by_group", on.tobytes())
    got = tpl.memo.get(key)
    if got is None:
        from ._kernels import KERNEL_TEMPLATE

        kernel = KERNEL_TEMPLATE.get(force=True)  # (asked once the assembly kernel is there)
        got = _by_group(tpl, on) if kernel is None else kernel(tpl.ptr, tpl.idx, tpl.val, on)
        for a in got:
            a.setflags(write=False)
        if len(tpl.memo) >= 8:
            tpl.memo.clear()
        tpl.memo[key] = got
    return got


def _by_group(tpl: _RowTemplate, on: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`loadopt.compile._kernels.template_by_group` in numpy."""
    ptr, idx, val = _template_on(tpl, on)
    cnt = np.diff(ptr)
    unit_of = np.repeat(np.arange(cnt.size, dtype=np.int64), cnt)
    # by group, units ascending within each (a stable sort: radix on 16-bit group ids)
    order = np.argsort(idx.astype(np.int16) if tpl.n_groups < 2**15 else idx, kind="stable")
    per_group = np.bincount(idx, minlength=tpl.n_groups)
    groups = np.flatnonzero(per_group)
    return (
        pointer(per_group[groups]),
        unit_of[order],
        val[order],
        groups.astype(np.int64),
        cnt.astype(np.int64),
    )


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
