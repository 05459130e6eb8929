"""The LP's reductions are exact: the reduced model has the optimum of the unreduced one."""

from __future__ import annotations

import dataclasses
import sys
from itertools import pairwise
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
import loadopt.lp as lpm
from loadopt.lp import build_lp
from loadopt.solvers import highs as hs

from .conftest import examples
from .test_safety_properties import scenarios

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import straightforward_lp


def _plain(p: lo.Problem) -> lo.Problem:
    """The same instance with only the terms the reference model has (no fairness column)."""
    obj = lo.Objective(demand_charge_per_kw=p.objective.demand_charge_per_kw)
    return lo.compile_problem(p.site, p.sessions, p.horizon, p.signals, obj)


@settings(max_examples=examples(120))
@given(scenarios())
def test_reduced_lp_has_the_unreduced_optimum(p):
    p = _plain(p)
    ref = straightforward_lp(p)
    if ref.n_cols == 0:
        return
    a = hs.solve_lp(ref)
    assert a.status.value == "optimal"
    # the unmet energy as a column or eliminated; the import substituted where it can be or not
    for unmet_slack, elim in ((True, None), (False, None), (True, False)):
        lp = build_lp(p, unmet_slack=unmet_slack, eliminate_import=elim)
        if lp.integrality is not None:
            # where export pays more than import the built model has the meter-direction binary
            # (one meter cannot import and export at once), which the straightforward reference
            # lacks: no common optimum to compare (the binary's own tests: test_storage.py)
            exp_price = 0.0 if p.export_price is None else p.export_price  # none: paid 0
            assert "y" in lp.cols and np.any(exp_price > p.import_price)
            continue
        b = (
            hs.solve_lp(lp, options=hs.LP_OPTIONS)
            if lp.n_cols
            else hs.SolverResult(hs.SolverStatus.OPTIMAL, None, lp.offset, 0.0)
        )
        assert b.status.value == "optimal"
        # abs: HiGHS' primal feasibility tolerance (1e-7) times the largest penalty (10 × 5)
        assert b.objective == pytest.approx(a.objective, rel=1e-7, abs=1e-5)


def test_named_blocks_cover_every_row_and_column():
    from loadopt.synthetic import demo_scenario

    sc = demo_scenario(n_evse=12)
    p = sc.model_copy(
        update={"objective": lo.Objective(fairness=1.0, demand_charge_per_kw=0.1)}
    ).compile()
    lp = build_lp(p)
    for blocks, n in ((lp.cols, lp.n_cols), (lp.rows, lp.n_rows)):
        spans = sorted((b.start, b.stop) for b in blocks.values())
        assert spans[0][0] == 0 and spans[-1][1] == n  # contiguous, no gap, no overlap
        assert all(a[1] == b[0] for a, b in pairwise(spans))
        assert all(b.index.size == b.size for b in blocks.values())
    assert list(lp.cols) == ["r", "u", "imp", "exp", "peak", "z"]
    assert list(lp.rows) == ["safety", "energy", "balance", "peak", "fairness"]
    # a balance row only where PV exceeds the base load (elsewhere the import is substituted),
    # a peak row per period
    surplus = np.flatnonzero(p.base_load_kw < p.pv_kw)
    assert 0 < surplus.size < p.n_periods
    assert lp.rows["balance"].index.tolist() == surplus.tolist()
    assert lp.cols["imp"].index.tolist() == surplus.tolist()
    assert sorted(lp.rows["peak"].index.tolist()) == list(range(p.n_periods))
    full = build_lp(p, eliminate_import=False)
    assert full.rows["balance"].size == full.rows["peak"].size == p.n_periods
    assert full.rows["balance"].index.tolist() == list(range(p.n_periods))
    g = lp.rows["safety"]
    # a safety row's bound is its problem row's h, or smaller where identical rows were merged
    assert (lp.row_ub[g.slice] <= p.h[g.index]).all()
    A = lp.A.tocsr()
    r = lp.cols["r"]
    G = p.G[:, r.index]
    for k in range(min(g.size, 50)):  # coefficients are the problem row's, on kept columns
        np.testing.assert_array_equal(A[g.start + k, r.slice].toarray(), G[g.index[k]].toarray())
    # the energy row of a session holds that session's current columns and its unmet column
    e, u = lp.rows["energy"], lp.cols["u"]
    assert e.index.tolist() == u.index.tolist()
    k = 0
    sess_cols = r.positions[p.var_session[r.index] == e.index[k]]
    row = A[e.start + k].toarray().ravel()
    assert set(np.flatnonzero(row)) == {*sess_cols.tolist(), u.start + k}


def test_duplicate_rows_are_merged_to_the_tightest():
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=(40.0, 30.0, 35.0)),
            lo.Node(id="cb", parent="grid", max_current=50.0),
        ),
        evses=tuple(lo.Evse(id=f"e{k}", node="cb", charge_point_id=f"C{k}") for k in range(3)),
    )
    from .conftest import horizon, session

    p = lo.compile_problem(site, [session(f"s{k}", f"e{k}", 100) for k in range(3)], horizon(2))
    lp = build_lp(p)
    # grid R/S/T and cb R/S/T carry the same three-phase cars: one row per period survives
    assert lp.rows["safety"].size == 2
    assert lp.row_ub[lp.rows["safety"].slice].tolist() == [30.0, 30.0]


def _assert_same_lp(a: lpm.LinearProgram, b: lpm.LinearProgram) -> None:
    """Bit for bit: arrays (values and dtypes), matrix, offset, blocks."""
    for k in ("c", "col_lb", "col_ub", "row_lb", "row_ub"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k
    assert type(a.offset) is type(b.offset) and a.offset == b.offset
    assert a.A.format == b.A.format and a.A.shape == b.A.shape
    for k in ("indptr", "indices", "data"):
        x, y = getattr(a.A, k), getattr(b.A, k)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), k
    assert a.A.has_sorted_indices == b.A.has_sorted_indices
    for x, y in ((a.cols, b.cols), (a.rows, b.rows)):
        assert list(x) == list(y)
        for k in x:
            assert (x[k].start, x[k].stop) == (y[k].start, y[k].stop)
            assert x[k].index.dtype == y[k].index.dtype
            assert x[k].index.tobytes() == y[k].index.tobytes()
    assert (a.integrality is None) == (b.integrality is None)


def _general_build(p: lo.Problem, **kw) -> lpm.LinearProgram:
    """build_lp with its shortcuts off (no early exit without columns, no energy-rows-only LP,
    the general CSC)."""
    with (
        mock.patch.object(lpm, "_has_extra_columns", lambda *a: True),
        mock.patch.object(lpm, "_csc_one_per_column", lambda *a: None),
        mock.patch.object(lpm, "_energy_rows_lp", lambda *a: None),
    ):
        return build_lp(p, **kw)


@settings(max_examples=examples(60), deadline=None)
@given(scenarios())
def test_shortcuts_build_the_general_lp_bit_for_bit(p):
    """The shortcuts of build_lp (no columns: no row pipeline; no safety row left: the energy
    rows set up directly; one entry per column: the CSC straight from the triplets) give the LP
    of the general build, bit for bit, also where nobody can draw or nobody wants energy."""
    nobody = dataclasses.replace(p, var_ub=np.zeros_like(p.var_ub))
    sated = dataclasses.replace(p, session_energy_kwh=np.zeros_like(p.session_energy_kwh))
    # uncongested, no prices, fairness or soft signals: the energy rows only
    loose = dataclasses.replace(
        p,
        h=np.full_like(p.h, 1e9),
        objective=lo.Objective(charge_early_per_kwh_h=p.objective.charge_early_per_kwh_h),
        import_price=np.zeros_like(p.import_price),
        export_price=None,
        setpoint_kw=None,
        export_cap_kw=None,
    )
    for q in (p, nobody, sated, loose):
        for kw in ({}, {"unmet_slack": False}):
            _assert_same_lp(build_lp(q, **kw), _general_build(q, **kw))


def test_no_session_builds_an_empty_lp_as_the_general_build():
    from .conftest import horizon

    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=40.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="C0"),),
    )
    p = lo.compile_problem(site, [], horizon(4))
    assert p.n_vars == 0
    for kw in ({}, {"unmet_slack": False}):
        lp = build_lp(p, **kw)
        assert lp.n_cols == lp.n_rows == 0
        _assert_same_lp(lp, _general_build(p, **kw))


@st.composite
def _rows_and_bounds(draw):
    """A CSR matrix with singleton rows, explicit zeros and negatives, its h and bounds."""
    m, n = draw(st.integers(1, 25)), draw(st.integers(1, 12))
    vals = st.sampled_from([1.0, 0.5, 2.0, 1.0 / 3.0, 230.0 / 1000.0, 0.0, -1.0])
    ptr, idx, data = [0], [], []
    for _ in range(m):
        k = draw(st.integers(0, min(n, 5)))
        idx += sorted(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True)))
        data += [draw(vals) for _ in range(k)]
        ptr.append(len(idx))
    K = sp.csr_matrix((np.array(data), np.array(idx, np.int32), np.array(ptr, np.int32)), (m, n))
    h = np.array(
        draw(
            st.lists(
                st.sampled_from([0.0, 1.0, 7.5, 32.0, 1e3, np.inf, -1.0]), min_size=m, max_size=m
            )
        )
    )
    ub = np.array(
        draw(
            st.lists(
                st.sampled_from([0.0, 6.0, 16.0, 32.0, 1.0 / 3.0, np.inf]), min_size=n, max_size=n
            )
        )
    )
    return K, h, ub, draw(st.booleans())


@settings(max_examples=examples(200), deadline=None)
@given(_rows_and_bounds())
def test_compiled_row_scan_is_the_numpy_form(case):
    """The compiled scan of the safety rows (singletons to bounds, rows that can bind) keeps the
    rows the numpy form keeps and lowers the bounds to the same bits; so does its plain-Python
    form (no fused multiply-add in the compiled one)."""
    K, h, ub, positive_only = case
    kernel = lpm.SCAN_ROWS_KERNEL.get(force=True)
    if kernel is None:
        pytest.skip("numba not available")
    ref_ub = ub.copy()
    with mock.patch.object(lpm.SCAN_ROWS_KERNEL, "get", lambda *a, **k: None):
        ref = lpm._scan_rows(K, h, ref_ub, positive_only)
    for loop in (kernel, lpm._scan_rows_loop):
        got_ub = ub.copy()
        with (
            mock.patch.object(lpm.SCAN_ROWS_KERNEL, "get", lambda *a, loop=loop, **k: loop),
            np.errstate(invalid="ignore"),  # the Python loop on numpy scalars: 0 · inf
        ):
            got = lpm._scan_rows(K, h, got_ub, positive_only)
        assert got.tolist() == ref.tolist()
        assert got_ub.tobytes() == ref_ub.tobytes()


def test_compiled_row_scan_takes_only_rows_that_fit_the_bounds():
    """The compiled scan writes bounds by column and reads ``h`` by row without bounds checks:
    a matrix wider than the bounds or taller than ``h`` goes to the numpy form (which refuses
    it, or broadcasts one ``h``) instead of being read and written past their ends."""
    kernel = lpm.SCAN_ROWS_KERNEL.get(force=True)
    if kernel is None:
        pytest.skip("numba not available")
    K = sp.csr_matrix(np.array([[0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]]))
    with mock.patch.object(lpm.SCAN_ROWS_KERNEL, "get", lambda *a, **k: None):
        with pytest.raises(IndexError):
            lpm._scan_rows(K, np.ones(3), np.full(2, 32.0), False)
        ref_ub = np.full(4, 32.0)
        ref = lpm._scan_rows(K, np.ones(1), ref_ub, False)
    with mock.patch.object(lpm.SCAN_ROWS_KERNEL, "get", lambda *a, **k: kernel):
        with pytest.raises(IndexError):
            lpm._scan_rows(K, np.ones(3), np.full(2, 32.0), False)
        ub = np.full(4, 32.0)
        assert lpm._scan_rows(K, np.ones(1), ub, False).tolist() == ref.tolist()
        assert ub.tolist() == ref_ub.tolist()


@st.composite
def _rows_with_twins(draw):
    """Canonical CSR rows without explicit zeros, many of them copies of earlier rows."""
    n = draw(st.integers(1, 10))
    vals = st.sampled_from([1.0, 0.5, 2.0, 1.0 / 3.0, -1.0, 1e-300, np.nan])
    rows: list[tuple[list[int], list[float]]] = []
    for _ in range(draw(st.integers(2, 30))):
        if rows and draw(st.booleans()):
            rows.append(rows[draw(st.integers(0, len(rows) - 1))])
            continue
        k = draw(st.integers(1, min(n, 5)))
        idx = sorted(draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True)))
        rows.append((idx, [draw(vals) for _ in range(k)]))
    ptr = np.cumsum([0] + [len(r[0]) for r in rows]).astype(np.int64)
    idx = np.array([j for r in rows for j in r[0]], np.int64)
    val = np.array([v for r in rows for v in r[1]], np.float64)
    return ptr, idx, val, n


@settings(max_examples=examples(150), deadline=None)
@given(_rows_with_twins())
def test_duplicate_row_loop_finds_the_first_identical_row(case):
    """The compiled duplicate-row search (and its plain-Python form) gives each row the
    lowest-index row with the same indices and values (NaN equal to nothing), as a brute-force
    comparison does; the numpy and scipy forms give that row or the row itself."""
    ptr, idx, val, n = case
    m = ptr.size - 1
    rows = [(idx[ptr[i] : ptr[i + 1]].tolist(), val[ptr[i] : ptr[i + 1]]) for i in range(m)]

    def same(a, b):
        return a[0] == b[0] and bool(np.all(a[1] == b[1]))  # NaN != NaN

    want = np.array(
        [next(j for j in range(i + 1) if j == i or same(rows[j], rows[i])) for i in range(m)]
    )
    kernel = lpm.DUPLICATE_ROWS_KERNEL.get(force=True)
    loops = [lpm._duplicate_rows_loop] + ([kernel] if kernel is not None else [])
    for loop in loops:
        with np.errstate(over="ignore"):  # the Python loop on numpy uint64: wrapping products
            got, no_zeros = loop(ptr, idx, val, val.view(np.uint64))
        assert no_zeros and got.tolist() == want.tolist()
        zero = val.copy()
        zero[-1] = 0.0
        with np.errstate(over="ignore"):
            assert not loop(ptr, idx, zero, zero.view(np.uint64))[1]
    # the numpy and scipy forms group by a hashed key and compare with the group's first row: a
    # row that collided with a different one stays apart (sound, not always complete)
    for rep in (
        lpm._duplicate_row_arrays(ptr, idx, val, n),
        lpm.duplicate_rows(sp.csr_matrix((val, idx, ptr), (m, n))),
    ):
        assert all(r in (i, want[i]) for i, r in enumerate(rep.tolist()))
