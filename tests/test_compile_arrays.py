"""The compiler's and the LP builder's CSR-array shortcuts equal their scipy formulation.

``compile.lines._line_shape``, ``compile.rows._row_template`` and the safety-row reduction of
``lp.build_lp`` gather, filter, concatenate and merge rows on plain ``(indptr, indices, data)``
arrays (``loadopt._csr``) because scipy's per-call overhead dominated a controller step. The
references below are the scipy formulations they replaced (sparse fancy indexing, ``multiply``,
``hstack``, matrix products), kept here verbatim in what they compute; every array and matrix
must come out identical (values, shapes, dtypes) on random sites — line-to-line wiring with
delta/wye transformers (facet rows), congested three-phase trees (duplicate rows), batteries
beside V2G vehicles (storage columns, coupled rows) — random sessions and horizons, uniform and
tiered.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt import Horizon, _csr
from loadopt.acn import jpl_site
from loadopt.compile import compile_problem
from loadopt.compile import lines as L
from loadopt.compile import rows as R
from loadopt.compile.storage import _battery_columns
from loadopt.lp import _dedupe_row_arrays, build_lp, duplicate_rows
from loadopt.session import V2xParameters
from loadopt.site import Site
from loadopt.synthetic import benchmark_scenario, v2g_scenario
from loadopt.wiring import COLLINEAR_RAD, branch_coefficients, facets, sectors

# --- the scipy references ----------------------------------------------------------------------


def _ref_shape(site, s_evse, n_ph, line_to_line, k_base, has_base, bat_node, two_way):
    """``_line_shape``'s coefficient matrices, built with scipy as before the array rewrite."""
    tree = L._site_tree(site)
    N, m = len(site.nodes), site.phasor_facets
    table = L._evse_line_table(site, tree.parent, tree.ratio, N)
    coef = table[3 * s_evse + n_ph - 1]
    coef_l1 = table[3 * s_evse + np.where(line_to_line, n_ph, np.minimum(n_ph, 1)) - 1]
    base = L._base_phasors(site, tree.parent, tree.ratio, k_base)
    B = bat_node.size
    bat_coef = L._walk_lines(np.tile(L.PHASE_UNIT, (B, 1)), bat_node, tree.parent, tree.ratio, N)
    all_coef = sp.vstack([coef, bat_coef]).tocsr() if B else coef
    S, SB = s_evse.size, s_evse.size + B
    cc = all_coef.tocoo()
    ref, lo_, width = sectors(cc.data, cc.col, 6 * N, base if has_base or two_way else None)
    unit = np.ones(6 * N, dtype=bool)
    np.logical_and.at(unit, cc.col, np.abs(np.abs(cc.data) - 1.0) < 1e-12)
    is_int = (np.arange(6 * N) < 3 * N) & (width < COLLINEAR_RAD) & unit
    ci = all_coef[:, : 3 * N].multiply(is_int[None, : 3 * N].astype(np.float64)).tocsr()
    ci.eliminate_zeros()
    C_int = sp.csr_matrix((np.abs(ci.data), ci.indices, ci.indptr), shape=ci.shape)
    fc = all_coef.multiply((~is_int)[None, :].astype(np.float64)).tocoo()
    w = np.where(width < COLLINEAR_RAD, np.inf, width)
    e, f, val, _ = facets(fc.data, fc.col, ref, lo_, w, m)
    keep = val > 0
    Cf = sp.csr_matrix(
        (val[keep], (fc.row[e[keep]], fc.col[e[keep]] * m + f[keep])), shape=(SB, 6 * N * m)
    )
    return dict(
        coef=coef,
        coef_l1=coef_l1,
        int_group=is_int,
        sector_rad=width,
        C_int=C_int[:S],
        Cf=Cf[:S],
        bat_coef=bat_coef,
        bat_C_int=C_int[S:],
        bat_Cf=Cf[S:],
    )


def _ref_template(shape, s_anc_csr, kw_per_a, bat_anc, bat_kw_per_a, N, m):
    """``_row_template``'s coefficients, built with ``sp.hstack`` / ``sp.vstack``."""
    S, B = s_anc_csr.shape[0], bat_anc.shape[0]
    s_anc = s_anc_csr.tocoo()
    D = sp.csr_matrix((kw_per_a[s_anc.row], (s_anc.row, s_anc.col)), shape=(S, N))
    C = sp.hstack([shape.C_int, shape.Cf, D, sp.csr_matrix(kw_per_a.reshape(S, 1))], format="csr")
    if B:
        bat = sp.hstack(
            [
                shape.bat_C_int,
                shape.bat_Cf,
                bat_anc * bat_kw_per_a,
                sp.csr_matrix(np.full((B, 1), bat_kw_per_a)),
            ],
            format="csr",
        )
        C = sp.vstack([C, bat], format="csr")
    C.eliminate_zeros()
    C.sort_indices()
    return C


def _ref_safety_block(problem):
    """The reduced safety rows of ``build_lp`` as scipy computed them: ``(G_red, h_red, rows
    of G kept)`` on the current columns kept, then every storage column."""
    G, h, V, st_ = problem.G, problem.h, problem.n_vars, problem.storage
    K = G if st_ is None else sp.hstack([G, st_.Gb, -st_.Cd]).tocsr()
    ub_all = (
        problem.var_ub.copy()
        if st_ is None
        else np.concatenate([problem.var_ub, st_.bc_ub, st_.dv_ub])
    )
    nnz = np.diff(K.indptr)
    single = np.flatnonzero(nnz == 1)
    if single.size:
        idx = K.indptr[single]
        pos = K.data[idx] > 0
        np.minimum.at(ub_all, K.indices[idx][pos], h[single][pos] / K.data[idx][pos])
    K_pos = K.maximum(0) if st_ is not None else K
    keep_row = np.flatnonzero((nnz > 1) & ((K_pos @ ub_all) > h * (1 + 1e-12)))
    G_red, h_red = K[keep_row], h[keep_row]
    ub = ub_all[:V]
    E = problem.session_energy_kwh
    bidir = np.zeros(problem.n_sessions, bool) if st_ is None else st_.session_unit >= 0
    ub[(E[problem.var_session] <= 0) & ~bidir[problem.var_session]] = 0.0
    cols = np.flatnonzero(ub > 0)
    n_st = 0 if st_ is None else st_.bc_ub.size + st_.dv_ub.size
    G_red = G_red[:, np.concatenate([cols, V + np.arange(n_st)])]
    nz = np.diff(G_red.indptr) > 0
    g_rows, G_red, h_red = keep_row[nz], G_red[nz], h_red[nz]
    rep = duplicate_rows(G_red)
    h_min = np.full(G_red.shape[0], np.inf)
    np.minimum.at(h_min, rep, h_red)
    keep = np.flatnonzero(rep == np.arange(G_red.shape[0]))
    return G_red[keep], h_min[keep], g_rows[keep], cols.size, n_st


# --- comparisons -------------------------------------------------------------------------------


def _same_sparse(a, b, what):
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert (a != b).nnz == 0, what


def _sites():
    cong = benchmark_scenario(14, n_periods=16, seed=3)
    v2g = v2g_scenario(6, n_periods=16, seed=4, battery_kwh=50.0)[0]
    return {
        "jpl": (jpl_site(), cong.horizon.start.replace(hour=8), lo.Signals(base_load_kw=3.0)),
        "congested": (cong.site, cong.horizon.start.replace(hour=8), cong.signals),
        "v2g": (v2g.site, v2g.horizon.start.replace(hour=8), v2g.signals),
    }


SITES = _sites()


def _problem(name: str, seed: int, tiered: bool):
    site, start, signals = SITES[name]
    site = Site.model_validate(site.model_dump())  # this example's own caches
    rng = np.random.default_rng(seed)
    hz = (
        Horizon.tiered(start, fine_step_s=300, fine_s=3600, coarse_step_s=900, span_s=6 * 3600)
        if tiered
        else Horizon(start=start, step_s=900, n_periods=int(rng.integers(2, 20)))
    )
    n = int(rng.integers(0, len(site.evses) + 1))
    sessions = []
    for j, e in enumerate(rng.choice(len(site.evses), size=n, replace=False)):
        arr = start + timedelta(minutes=int(rng.integers(-60, 60)))
        kw = {}
        if name == "v2g" and rng.random() < 0.6:
            kw["v2x"] = V2xParameters(min_v2x_energy_kwh=-5.0, max_v2x_energy_kwh=70.0)
        sessions.append(
            lo.Session(
                id=f"s{j}",
                evse=site.evses[int(e)].id,
                arrival=arr,
                departure=arr + timedelta(minutes=int(rng.integers(20, 8 * 60))),
                energy_kwh=float(rng.choice([0.0, rng.uniform(1.0, 50.0)])),
                phases=int(rng.choice([1, 2, 3])),
                **kw,
            )
        )
    return compile_problem(site, sessions, hz, signals)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(SITES)),
    seed=st.integers(0, 10**6),
    tiered=st.booleans(),
)
def test_line_shape_template_and_lp_safety_rows_equal_their_scipy_formulation(name, seed, tiered):
    p = _problem(name, seed, tiered)
    site = p.site
    tree = L._site_tree(site)
    N, m = len(site.nodes), site.phasor_facets
    sa_evse = p.session_evse
    n_ph = np.round(p.session_kw_per_a * 1000.0 / p.evse_voltage_v[sa_evse]).astype(np.int64)
    bat_node = np.array([tree.node_index[b.node] for b in site.batteries], dtype=np.int64)
    bidir = np.zeros(sa_evse.size, bool) if p.storage is None else p.storage.session_unit >= 0
    k_base = tree.root if site.base_load_node is None else tree.node_index[site.base_load_node]
    has_base = bool(np.max(p.base_load_a, initial=0.0) > 0)
    shape = L._line_shape(
        site,
        sa_evse,
        tree.parent,
        n_ph,
        tree.line_to_line[sa_evse],
        k_base,
        has_base,
        bat_node if bat_node.size else None,
        bidir if bidir.any() else None,
    )
    two_way = bool(bat_node.size or bidir.any())
    want = _ref_shape(
        site, sa_evse, n_ph, tree.line_to_line[sa_evse], k_base, has_base, bat_node, two_way
    )
    for k, v in want.items():
        got = getattr(shape, k)
        if sp.issparse(v):
            _same_sparse(got, v, k)
        else:
            assert np.array_equal(got, v), k
    # the compiled problem carries that shape's line coefficients
    _same_sparse(p.line_coef, shape.coef, "problem.line_coef")

    bat = _battery_columns(site, tree.node_index, tree.parent, p.n_periods)
    bat_anc, s_anc = bat.anc, p.session_anc
    tpl = R._row_template(shape, s_anc, p.session_kw_per_a, bat_anc, bat.kw_per_a, N, m)
    C = _ref_template(shape, s_anc, p.session_kw_per_a, bat_anc, bat.kw_per_a, N, m)
    assert tpl.n_groups == C.shape[1]
    assert np.array_equal(tpl.ptr, C.indptr) and np.array_equal(tpl.idx, C.indices)
    assert np.array_equal(tpl.val, C.data)

    # the LP's safety block: rows, right-hand sides and coefficients of the reference
    for q in (p, replace(p, var_ub=p.var_ub * 0.5, h=p.h * 0.8)):
        lp = build_lp(q)
        G_red, h_red, g_rows, n_r, n_st = _ref_safety_block(q)
        blk = lp.rows["safety"]
        assert np.array_equal(blk.index, g_rows)
        assert np.array_equal(lp.row_ub[blk.slice], h_red)
        u = lp.cols["u"].size if "u" in lp.cols else 0
        on = np.concatenate([np.arange(n_r), n_r + u + np.arange(n_st)])
        A = lp.A.tocsr()[blk.slice][:, on]
        _same_sparse(A, G_red, "safety block")


def _random_csr(rng, m, n, density, dup_share=0.4):
    M = sp.random(m, n, density=density, format="csr", random_state=rng)
    M.data = np.round(M.data * 4) / 4 + 0.25  # few distinct values, no zeros
    rows = [M[i] for i in range(m)]
    for i in range(1, m):  # duplicate some rows
        if rng.random() < dup_share:
            rows[i] = rows[int(rng.integers(i))]
    return sp.vstack(rows, format="csr")


@pytest.mark.parametrize("seed", range(6))
def test_csr_helpers_and_row_merge_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    M = _random_csr(rng, 40, 12, 0.3)
    ptr, idx, val = M.indptr, M.indices, M.data
    rows = rng.integers(0, 40, size=25)
    _same_sparse(_csr.csr(*_csr.take_rows(ptr, idx, val, rows), (25, 12)), M[rows], "take_rows")
    keep = rng.random(M.nnz) < 0.6
    K = M.copy()
    K.data = np.where(keep, K.data, 0.0)
    K.eliminate_zeros()
    _same_sparse(_csr.csr(*_csr.keep_entries(ptr, idx, val, keep), M.shape), K, "keep_entries")
    N2 = _random_csr(rng, 40, 7, 0.4)
    got = _csr.hstack_rows([(ptr, idx, val, 0), (N2.indptr, N2.indices, N2.data, 12)])
    _same_sparse(_csr.csr(*got, (40, 19)), sp.hstack([M, N2], format="csr"), "hstack_rows")
    # merging duplicate rows: the smallest right-hand side, the first of each twin kept
    h = rng.uniform(0, 10, size=40)
    p2, i2, v2, h2, kept = _dedupe_row_arrays(ptr, idx, val, h, 12)
    rep = duplicate_rows(M)
    want_keep = np.flatnonzero(rep == np.arange(40))
    h_min = np.full(40, np.inf)
    np.minimum.at(h_min, rep, h)
    assert kept.size < 40  # the example has duplicates
    assert np.array_equal(kept, want_keep) and np.array_equal(h2, h_min[want_keep])
    _same_sparse(_csr.csr(p2, i2, v2, (kept.size, 12)), M[want_keep], "merged rows")
    # explicit zeros do not make rows differ (scipy's comparison is kept for them)
    Z = M.copy()
    Z.data[0] = 0.0
    rep_z = duplicate_rows(Z)
    assert np.array_equal(
        _dedupe_row_arrays(Z.indptr, Z.indices, Z.data, h, 12)[4],
        np.flatnonzero(rep_z == np.arange(40)),
    )


@pytest.mark.skipif(
    __import__("loadopt.compile._kernels", fromlist=["KERNEL"]).KERNEL.get(force=True) is None,
    reason="numba missing or disabled: only the numpy form runs",
)
@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(SITES)), seed=st.integers(0, 10**6), tiered=st.booleans())
def test_compiled_row_assembly_equals_the_numpy_form(name, seed, tiered):
    """The numba assembly of the safety rows (by group, or in two passes where the variables
    are not in (unit, period) order) gives the numpy form's matrices, entry for entry (row
    pointers, column indices, values, index dtypes), with reservations (variables without
    entries), partly limited groups and battery columns."""
    p = _problem(name, seed, tiered)
    rng = np.random.default_rng(seed)
    calls = []
    real = R._assemble_rows

    def rec(*a):
        calls.append(a)
        return real(*a)

    import loadopt.compile.core as core

    reserved = None
    if rng.random() < 0.5:
        reserved = np.zeros((len(p.site.evses), 3, p.n_periods))
        reserved[rng.integers(len(p.site.evses)), :, : rng.integers(1, p.n_periods + 1)] = 8.0
    core._assemble_rows = rec
    try:
        compile_problem(p.site, p.sessions, p.horizon, p.signals, reserved_a=reserved)
    finally:
        core._assemble_rows = real
    (tpl, unit, period, free, rhs, T, n_ev, finite) = calls[0]
    assert np.array_equal(finite, np.isfinite(rhs))
    if rhs.size and rng.random() < 0.5:  # some groups limited in some periods only
        rhs = rhs.copy()
        rhs[rng.random(rhs.size) < 0.3] = np.inf
    finite = np.isfinite(rhs)
    by_group = R._kernel(by_group=True)(
        *R._template_by_group(tpl, finite.reshape(tpl.n_groups, T).any(axis=1)),
        unit.astype(np.int64),
        period.astype(np.int64),
        free,
        finite,
        T,
    )
    assert by_group is not None  # a compile's variables are in (unit, period) order
    if rng.random() < 0.3:  # variables out of (unit, period) order: the two-pass kernel runs
        perm = rng.permutation(unit.size)
        unit, period, free = unit[perm], period[perm], free[perm]
        n_ev = unit.size  # (the battery columns are no longer the last ones)
    got = R._assemble_rows(tpl, unit, period, free, rhs, T, n_ev)
    kern = R._kernel
    R._kernel = lambda by_group=False: None  # type: ignore[assignment]
    try:
        want = R._assemble_rows(tpl, unit, period, free, rhs, T, n_ev)
    finally:
        R._kernel = kern  # type: ignore[assignment]
    assert (got[1] is None) == (want[1] is None)  # no battery columns: no Gb
    for a, b, what in zip(got[:2], want[:2], ("G", "Gb"), strict=True):
        if a is None:
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, what
        for x in ("indptr", "indices", "data"):
            assert getattr(a, x).dtype == getattr(b, x).dtype, (what, x)
            assert np.array_equal(getattr(a, x), getattr(b, x)), (what, x)
    for a, b in zip(got[2:], want[2:], strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kernel", [True, False])
def test_csc_from_coo_equals_scipy(seed, kernel, monkeypatch):
    """The LP builder's COO → CSC gives scipy's matrix entry for entry: row blocks in ascending
    order (the compiled counting pass), and triplets out of order, repeated (summed) or with
    explicit zeros (scipy's conversion)."""
    rng = np.random.default_rng(seed)
    lazy = _csr.LazyKernel(_csr._coo_to_csc_loop)
    if kernel:
        lazy.get(force=True)
    else:
        lazy.done = True  # never compiled: scipy's conversion
    monkeypatch.setattr(_csr, "COO_KERNEL", lazy)
    m, n = 30, 20
    M = sp.random(m, n, density=0.3, format="coo", random_state=rng)
    order = np.lexsort((M.col, M.row))  # row-major: each column's rows ascending
    r, c, v = M.row[order], M.col[order], M.data[order]
    cases = [(r, c, v)]
    perm = rng.permutation(r.size)  # out of order
    cases.append((r[perm], c[perm], v[perm]))
    dup = rng.integers(0, r.size, 5)  # repeated entries, one explicit zero
    cases.append((np.r_[r, r[dup]], np.r_[c, c[dup]], np.r_[v, np.zeros(4), 1.0]))
    for rr, cc, vv in cases:
        got = _csr.csc_from_coo(rr, cc, vv, (m, n))
        want = sp.csc_matrix((vv, (rr, cc)), shape=(m, n))
        want.sort_indices()
        assert got.format == "csc" and got.shape == want.shape and got.dtype == want.dtype
        for x in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(got, x), getattr(want, x)), x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kernel", [True, False])
def test_take_map_equals_scipy(seed, kernel, monkeypatch):
    """The LP builder's row selection (rows kept, columns renumbered or dropped, rows left empty
    dropped), compiled and as arrays, equals scipy's fancy indexing."""
    rng = np.random.default_rng(seed)
    lazy = _csr.LazyKernel(_csr._take_map_loop)
    if kernel:
        lazy.get(force=True)
    else:
        lazy.done = True
    monkeypatch.setattr(_csr, "TAKE_MAP_KERNEL", lazy)
    M = sp.random(50, 30, density=0.15, format="csr", random_state=rng)
    rows = np.flatnonzero(rng.random(50) < 0.7)
    keep_cols = np.flatnonzero(rng.random(30) < 0.5)
    cols = np.full(30, -1, np.int64)
    cols[keep_cols] = np.arange(keep_cols.size)
    ptr, idx, val, which = _csr.take_map(M.indptr, M.indices, M.data, rows, cols)
    want = M[rows][:, keep_cols].tocsr()
    nz = np.flatnonzero(np.diff(want.indptr) > 0)
    assert np.array_equal(which, nz)
    want = want[nz]
    for got, w in ((ptr, want.indptr), (idx, want.indices), (val, want.data)):
        assert np.array_equal(got, w)
    assert ptr.dtype == idx.dtype == which.dtype == np.int64 and val.dtype == np.float64


def _csr_inputs(rng):
    """Canonical ``(indptr, indices, data, shape)`` in the forms callers hand ``csr``: int32 or
    int64 indices, owned arrays, views of a larger array (scipy copies those), empty shapes."""
    n_rows, n_cols = int(rng.integers(0, 6)), int(rng.integers(0, 6))
    dense = np.where(rng.random((n_rows, n_cols)) < 0.5, rng.normal(size=(n_rows, n_cols)), 0.0)
    ref = sp.csr_matrix(dense)
    ptr = ref.indptr.astype(rng.choice([np.int32, np.int64]))
    idx = ref.indices.astype(rng.choice([np.int32, np.int64]))
    val = ref.data.copy()
    form = rng.integers(3)
    if form == 1 and val.size:  # views of larger arrays
        big_i = np.concatenate([idx, np.zeros(3 * idx.size + 1, idx.dtype)])
        big_v = np.concatenate([val, np.zeros(3 * val.size + 1)])
        idx, val = big_i[: idx.size], big_v[: val.size]
    elif form == 2:  # read-only, as the site tree's arrays are
        for a in (ptr, idx, val):
            a.setflags(write=False)
    return ptr, idx, val, (n_rows, n_cols)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_csr_equals_scipys_constructor(seed):
    """``_csr.csr`` sets a matrix up without scipy's constructor where it can: the same object
    as scipy builds (attributes, index dtypes, values, sorted flag, whether it shares memory with
    the inputs, writeability)."""
    ptr, idx, val, shape = _csr_inputs(np.random.default_rng(seed))
    got = _csr.csr(ptr, idx, val, shape)
    want = _csr._scipy_csr(ptr, idx, val, shape)
    assert type(got) is type(want) and set(vars(got)) == set(vars(want))
    assert got.shape == want.shape and got.maxprint == want.maxprint
    assert got.has_sorted_indices and want.has_sorted_indices
    for x, src in (("indptr", ptr), ("indices", idx), ("data", val)):
        a, b = getattr(got, x), getattr(want, x)
        assert a.dtype == b.dtype and np.array_equal(a, b), x
        assert np.shares_memory(a, src) == np.shares_memory(b, src), x
        assert a.flags.writeable == b.flags.writeable, x
    assert (got != want).nnz == 0


def test_new_problem_equals_the_dataclass_constructor():
    """``problem._new_problem`` makes the object ``Problem(**fields)`` makes, field for field;
    a missing or unknown field is the constructor's own error."""
    import dataclasses

    from loadopt.problem import Problem, _new_problem

    p = _problem("jpl", 3, False)
    every = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}  # in field order
    a, b = _new_problem(**every), Problem(**every)
    assert list(vars(a)) == list(vars(b)) and all(vars(a)[k] is vars(b)[k] for k in vars(a))
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "notices"}
    fields = dict(reversed(fields.items()))  # another order, a default left out
    a, b = _new_problem(**fields), Problem(**fields)
    assert type(a) is Problem and vars(a).keys() == vars(b).keys()
    assert list(vars(a)) == list(vars(b))  # the same order too
    assert all(vars(a)[k] is vars(b)[k] for k in vars(a))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.h = None  # type: ignore[misc]
    del fields["G"]
    with pytest.raises(TypeError, match="G"):
        _new_problem(**fields)
    with pytest.raises(TypeError, match="nonsense"):
        _new_problem(**fields, G=p.G, nonsense=1)


def _session_arrays_reference(site, sessions, horizon):
    """The session arrays as the compiler built them before its one-pass form: a list per field,
    the EVSE's arrays gathered per session (kept verbatim: the reference)."""
    tree = L._site_tree(site)
    evse_index = tree.evse_index
    S, T = len(sessions), horizon.n_periods
    s_evse = np.array([evse_index[s.evse] for s in sessions], dtype=np.int64)
    ea = tree.evse_arrays
    n_ph = np.minimum(ea["evse_phases"][s_evse], np.array([s.phases for s in sessions], np.int64))
    line_to_line = tree.line_to_line[s_evse]
    E = len(site.evses)
    e = np.repeat(np.arange(E), 3)
    k = np.tile(np.arange(1, 4, dtype=np.int64), E)
    masks = np.abs(branch_coefficients(tree.line_to_line[e], ea["evse_site_phases"][e], k)) > 0
    phase_mask = masks[3 * s_evse + n_ph - 1]
    kw_per_a = ea["evse_voltage_v"][s_evse] * n_ph / 1000.0
    max_cur = np.minimum(
        ea["evse_max_current"][s_evse],
        np.array([s.max_current for s in sessions], dtype=np.float64),
    )
    s_min = np.array(
        [np.nan if s.min_current is None else s.min_current for s in sessions], dtype=np.float64
    )
    min_cur = np.minimum(np.where(np.isnan(s_min), ea["evse_min_current"][s_evse], s_min), max_cur)
    energy = np.array([s.energy_kwh for s in sessions], dtype=np.float64)
    prio = np.array([s.priority for s in sessions], dtype=np.float64)
    start = horizon.start_utc
    arr_s = np.array([(s.arrival - start).total_seconds() for s in sessions], dtype=np.float64)
    dep_s = np.array([(s.departure - start).total_seconds() for s in sessions], dtype=np.float64)
    bounds = horizon.period_bounds_s()
    overlap = np.minimum(dep_s[:, None], bounds[None, 1:]) - np.maximum(
        arr_s[:, None], bounds[None, :-1]
    )
    avail = np.clip(overlap / horizon.period_s[None, :], 0.0, 1.0).reshape(S, T)
    return (s_evse, n_ph, line_to_line, phase_mask, kw_per_a, max_cur, min_cur, energy, prio,
            arr_s, dep_s, avail)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(SITES)),
    seed=st.integers(0, 10**6),
    tiered=st.booleans(),
    mins=st.sampled_from(["none", "all", "some"]),
)
def test_session_arrays_and_variables_equal_their_per_field_formulation(name, seed, tiered, mins):
    """The session arrays read in one pass (every field at once, the EVSE phase table, the
    minimum currents by case) are the per-field formulation's, bit for bit: sessions with and
    without their own minimum current, 1-, 2- and 3-phase vehicles, sub-second and zoned
    times."""
    from zoneinfo import ZoneInfo

    from loadopt.compile import core as C

    p = _problem(name, seed, tiered)
    rng = np.random.default_rng(seed)
    zone = ZoneInfo("America/Los_Angeles")
    sessions = []
    for s in p.sessions:
        upd = {
            "arrival": (s.arrival + timedelta(microseconds=int(rng.integers(0, 10**6)))).astimezone(
                zone
            ),
            "max_current": float(rng.uniform(6.0, 32.0)),
        }
        if mins == "all" or (mins == "some" and rng.random() < 0.5):
            upd["min_current"] = float(rng.uniform(0.0, 6.0))
        sessions.append(s.model_copy(update=upd))
    sessions = tuple(sessions)
    tree = L._site_tree(p.site)
    fields = (
        C._SessionFields(*zip(*map(C._FIELDS, sessions), strict=True)) if sessions else C._NO_FIELDS
    )
    got = C._session_arrays(tree, fields, p.horizon)
    want = _session_arrays_reference(p.site, sessions, p.horizon)
    for a, b, what in zip(got, want, C._SessionArrays._fields, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert a.tobytes() == b.tobytes(), what
    # the variables, with a reservation on some EVSE lines or none
    reserved = None
    if rng.random() < 0.5:
        reserved = np.zeros((len(p.site.evses), 3, p.n_periods))
        reserved[rng.integers(len(p.site.evses)), : int(rng.integers(1, 4))] = 6.0
    got_v = C._variables(got, reserved, p.horizon.period_s)
    for a, b, what in zip(
        got_v,
        _variables_reference(got, reserved, p.horizon.period_s),
        ("var_session", "var_period", "var_ub", "var_free", "var_kwh"),
        strict=True,
    ):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), what


def _variables_reference(sa, reserved, period_s):
    """The variables as the compiler built them before (2-D positions, int32 gathers; kept
    verbatim: the reference)."""
    vs, vt = np.nonzero((sa.avail > 0) & (sa.max_cur[:, None] > 0))
    vs = vs.astype(np.int32)
    vt = vt.astype(np.int32)
    var_ub = sa.max_cur[vs]
    if reserved is None:
        var_free = np.ones(vs.size, dtype=bool)
    else:
        held = reserved[sa.s_evse[vs], :, vt]
        var_free = held.max(axis=1, initial=0.0) <= 0
        uses = np.arange(3)[None, :] < sa.n_ph[vs][:, None]
        var_res = np.where(uses, held, np.inf).min(axis=1, initial=np.inf)
        var_ub = np.where(var_free, var_ub, np.minimum(var_ub, var_res))
    var_kwh = sa.kw_per_a[vs] * (period_s[vt] / 3600.0) * sa.avail[vs, vt]
    return vs, vt, var_ub, var_free, var_kwh


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_compiled_hstack_rows_and_template_by_group_equal_their_numpy_forms(seed):
    """The compiled row concatenation (the row template's families side by side) and the
    template by group (the assembly's input) give their numpy forms' arrays, dtypes included:
    random parts (empty rows, int32 and int64 pointers and indices), random templates and
    masks of the groups some period limits."""
    from loadopt.compile import _kernels as K

    if K.KERNEL_TEMPLATE.get(force=True) is None:
        pytest.skip("numba missing or disabled: only the numpy form runs")
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 8))
    parts, off = [], 0
    for _ in range(int(rng.integers(1, 5))):
        M = _random_csr(rng, n_rows, int(rng.integers(1, 6)), float(rng.uniform(0, 0.8)))
        ptr = M.indptr.astype(rng.choice([np.int32, np.int64]))
        parts.append((ptr, M.indices.astype(rng.choice([np.int32, np.int64])), M.data, off))
        off += M.shape[1]
    lazy = _csr.LazyKernel(_csr._hstack_rows_loop)
    lazy.get(force=True)
    real = _csr.HSTACK_KERNEL
    _csr.HSTACK_KERNEL = lazy
    try:
        got = _csr.hstack_rows(parts)
        lazy.kernel = None  # the numpy form
        want = _csr.hstack_rows(parts)
    finally:
        _csr.HSTACK_KERNEL = real
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # the template by group
    n_groups = int(rng.integers(1, 12))
    T_ = _random_csr(rng, int(rng.integers(1, 9)), n_groups, float(rng.uniform(0, 0.9)))
    tpl = R._RowTemplate(
        ptr=T_.indptr.astype(np.int64),
        idx=T_.indices.astype(np.int64),
        val=T_.data,
        n_groups=n_groups,
        s_anc_csr=sp.csr_matrix((0, 1)),
    )
    on = rng.random(n_groups) < 0.7
    got = K.KERNEL_TEMPLATE.get()(tpl.ptr, tpl.idx, tpl.val, on)
    want = R._by_group(tpl, on)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_a_kernel_given_what_numba_cannot_type_runs_the_loop_interpreted():
    """An argument numba has no compiled form for (non-native byte order) must not stop the
    caller: :class:`loadopt._csr.LazyKernel` runs the same loop interpreted, same result."""
    pytest.importorskip("numba")
    lazy = _csr.LazyKernel(_csr._take_map_loop)
    kernel = lazy.get(force=True)
    if kernel is None:
        pytest.skip("numba disabled (LOADOPT_DISABLE_NUMBA)")
    M = sp.random(12, 9, density=0.4, format="csr", random_state=np.random.default_rng(3))
    rows = np.array([0, 3, 5, 11], dtype=np.int64)
    cols = np.where(np.arange(9) % 3 == 0, -1, np.arange(9)).astype(np.int64)
    args = (M.indptr.astype(np.int64), M.indices.astype(np.int64), M.data, rows, cols)
    want = kernel(*args)
    swapped = M.data.astype(M.data.dtype.newbyteorder(">"))  # not the machine's byte order
    got = kernel(*args[:2], swapped, *args[3:])
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)
