"""The separable LP (rows share no column) solved by sorting: the same optimum as HiGHS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.options import LpOptions
from loadopt.solvers import highs as hs
from loadopt.solvers.result import SolverStatus
from loadopt.solvers.separable import solve_separable

from .conftest import examples

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _lp(row_of, a, c, lo_, up, r_lo, r_hi, offset=0.0):
    """A duck-typed LinearProgram: column j in row ``row_of[j]`` (-1: none) with ``a[j]``."""
    n, m = len(c), len(r_lo)
    cols = [j for j in range(n) if row_of[j] >= 0]
    A = sp.csc_matrix(
        ([a[j] for j in cols], ([row_of[j] for j in cols], cols)), shape=(m, n), dtype=float
    )
    return SimpleNamespace(
        n_cols=n,
        n_rows=m,
        A=A,
        c=np.asarray(c, float),
        col_lb=np.asarray(lo_, float),
        col_ub=np.asarray(up, float),
        row_lb=np.asarray(r_lo, float),
        row_ub=np.asarray(r_hi, float),
        offset=offset,
        integrality=None,
    )


@st.composite
def separable_lps(draw):
    m = draw(st.integers(0, 4))
    n = draw(st.integers(1, 9))
    row_of = draw(st.lists(st.integers(-1, m - 1), min_size=n, max_size=n))
    a = draw(st.lists(st.floats(0.1, 3.0), min_size=n, max_size=n))
    c = draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.3, 1.0, 2.5]), min_size=n, max_size=n))
    lo_ = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n))
    width = draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, np.inf]), min_size=n, max_size=n))
    up = [lo_[j] + width[j] for j in range(n)]
    kinds = draw(st.lists(st.sampled_from(["eq", "le", "ge", "range"]), min_size=m, max_size=m))
    vals = draw(st.lists(st.floats(0.0, 8.0), min_size=m, max_size=m))
    r_lo = [v if k in ("eq", "ge", "range") else -np.inf for k, v in zip(kinds, vals, strict=True)]
    r_hi = [
        v if k in ("eq", "le") else (v + 2.0 if k == "range" else np.inf)
        for k, v in zip(kinds, vals, strict=True)
    ]
    return _lp(row_of, a, c, lo_, up, r_lo, r_hi, offset=draw(st.floats(-5, 5)))


def _highs(lp):
    h = hs.new_highs({"presolve": "off"})
    hs.pass_lp(h, lp)
    return hs.run(h)


@settings(max_examples=examples(200), deadline=None)
@given(lp=separable_lps())
def test_sorting_finds_highs_optimum(lp):
    """Same optimal objective as HiGHS (1e-7), a feasible point; None exactly where HiGHS has
    no optimum (infeasible or unbounded)."""
    got = solve_separable(lp)
    ref = _highs(lp)
    if got is None:
        assert ref.status is not SolverStatus.OPTIMAL
        return
    assert ref.status is SolverStatus.OPTIMAL
    assert got.objective == pytest.approx(ref.objective, rel=1e-7, abs=1e-7)
    x = got.x
    assert np.all(x >= lp.col_lb - 1e-9) and np.all(x <= lp.col_ub + 1e-9)
    act = lp.A @ x
    assert np.all(act >= lp.row_lb - 1e-7) and np.all(act <= lp.row_ub + 1e-7)
    assert got.objective == pytest.approx(float(lp.c @ x + lp.offset), abs=1e-9)


def test_not_separable_or_not_positive_is_left_to_highs():
    shared = _lp([0, 0], [1.0, 1.0], [1.0, 1.0], [0, 0], [1, 1], [1.0], [1.0])
    shared.A = sp.csc_matrix(np.array([[1.0, 1.0], [1.0, 0.0]]))
    shared.n_rows, shared.row_lb, shared.row_ub = 2, np.zeros(2), np.ones(2)
    assert solve_separable(shared) is None  # column 0 in two rows
    negative = _lp([0], [-1.0], [1.0], [0.0], [1.0], [-1.0], [0.0])
    assert solve_separable(negative) is None  # a negative coefficient
    binary = _lp([0], [1.0], [1.0], [0.0], [1.0], [0.0], [1.0])
    binary.integrality = np.array([1])
    assert solve_separable(binary) is None
    # a row whose bounds cross inside the activity it can reach: infeasible (HiGHS says so)
    crossed = _lp([0, 0], [1.0, 1.0], [1.0, 1.0], [0, 0], [10, 10], [5.0], [3.0])
    assert solve_separable(crossed) is None
    assert _highs(crossed).status is SolverStatus.INFEASIBLE
    # NaN in a cost or a bound: not a sortable LP
    for k in range(3):
        vals = [[1.0, 1.0], [0.0, 0.0], [10.0, 10.0]]
        vals[k][1] = np.nan
        bad = _lp([0, 1], [1.0, 1.0], vals[0], vals[1], vals[2], [5.0, 1.0], [6.0, 2.0])
        assert solve_separable(bad) is None, k


def _site(grid_a: float) -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", max_current=grid_a),),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"CP{k}", phases=3) for k in range(4)
        ),
    )


@pytest.mark.parametrize("grid_a", [400.0, 40.0])
def test_solve_uses_it_only_where_nothing_can_bind(grid_a):
    """An uncongested problem (400 A for four 32 A cars) is solved by sorting, with HiGHS'
    objective and a safe schedule; a congested one (40 A) still goes to HiGHS."""
    hz = lo.Horizon(start=T0, step_s=900, n_periods=16)
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0 + timedelta(minutes=15 * k),
            departure=T0 + timedelta(hours=2 + k),
            energy_kwh=10.0 + 5 * k,
        )
        for k in range(4)
    ]
    sig = lo.Signals(
        import_price=[{"start": T0, "value": 0.3}, {"start": T0 + timedelta(hours=1), "value": 0.1}]
    )
    p = lo.compile_problem(_site(grid_a), sessions, hz, sig)
    fast = lo.solve(p)
    ref = lo.solve(p, LpOptions(separable=False))
    assert fast.method == ("lp-separable" if grid_a > 100 else "lp-highs")
    assert ref.method == "lp-highs"
    assert fast.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
    assert fast.violations() == [] and fast.status is lo.ScheduleStatus.OPTIMAL


@st.composite
def one_row_per_column_lps(draw):
    """Separable LPs whose every column is in exactly one row: ties in cost, rows of up to 80
    columns, negative bounds; in one draw of four also the awkward values (signed zeros,
    infinite bounds, non-positive coefficients) that the compiled loop leaves to numpy."""
    awkward = draw(st.integers(0, 3)) == 0
    m = draw(st.integers(1, 4))
    n = draw(st.integers(1, 80))
    row_of = draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n))
    coefs = [0.25, 1.0, 1.5, 3.0] + ([0.0, -1.0] if awkward else [])
    a = draw(st.lists(st.sampled_from(coefs), min_size=n, max_size=n))
    costs = [-2.0, -0.5, 0.0, 0.3, 1.0, 2.5, 1e-3, 7.0 / 3.0] + ([-0.0] if awkward else [])
    c = draw(st.lists(st.sampled_from(costs), min_size=n, max_size=n))
    lows = [0.0, 0.5, 1.0 / 3.0, -1.0] + ([-0.0] if awkward else [])
    lo_ = draw(st.lists(st.sampled_from(lows), min_size=n, max_size=n))
    widths = [0.0, 1.0, 2.5, 0.1] + ([np.inf] if awkward else [])
    width = draw(st.lists(st.sampled_from(widths), min_size=n, max_size=n))
    up = [lo_[j] + width[j] for j in range(n)]
    vals = draw(st.lists(st.sampled_from([0.0, -0.0, 0.7, 2.0, 5.5, 30.0]), min_size=m, max_size=m))
    kinds = draw(st.lists(st.sampled_from(["eq", "le", "ge", "range"]), min_size=m, max_size=m))
    r_lo = [v if k in ("eq", "ge", "range") else -np.inf for k, v in zip(kinds, vals, strict=True)]
    r_hi = [
        v if k in ("eq", "le") else (v + 1.0 / 3.0 if k == "range" else np.inf)
        for k, v in zip(kinds, vals, strict=True)
    ]
    return _lp(row_of, a, c, lo_, up, r_lo, r_hi, offset=draw(st.floats(-5, 5)))


@settings(max_examples=examples(300), deadline=None)
@given(lp=one_row_per_column_lps())
def test_compiled_loop_is_the_numpy_form_to_the_bit(lp):
    """The compiled knapsack loop gives the numpy form's answer bit for bit (or leaves it to
    the numpy form), None in the same cases; so does its plain-Python form (no fused
    multiply-add in the compiled one)."""
    from unittest import mock

    import loadopt.solvers.separable as sep

    kernel = sep.KNAPSACK_KERNEL.get(force=True)
    if kernel is None:
        pytest.skip("numba not available")
    with mock.patch.object(sep.KNAPSACK_KERNEL, "get", lambda *a, **k: None):
        ref = solve_separable(lp)
    for loop in (kernel, sep._knapsack_loop):
        with mock.patch.object(sep.KNAPSACK_KERNEL, "get", lambda *a, loop=loop, **k: loop):
            got = solve_separable(lp)
        assert (got is None) == (ref is None)
        if ref is not None:
            assert got.x.tobytes() == ref.x.tobytes()
            assert got.objective == ref.objective


def test_compiled_loop_takes_only_an_lp_whose_arrays_match_its_matrix():
    """The compiled loop indexes the row and column bounds by the matrix's rows and columns
    without a bounds check: an LP whose bound arrays are shorter than its matrix goes to the
    numpy form (which refuses it) instead of being read and written past their ends."""
    from unittest import mock

    import loadopt.solvers.separable as sep

    kernel = sep.KNAPSACK_KERNEL.get(force=True)
    if kernel is None:
        pytest.skip("numba not available")
    good = _lp([0, 1, 2], [1.0] * 3, [-1.0] * 3, [0.0] * 3, [5.0] * 3, [-np.inf] * 3, [4.0] * 3)
    short_rows = SimpleNamespace(**{**vars(good), "row_lb": good.row_lb[:1]})
    short_rows.row_ub, short_rows.n_rows = good.row_ub[:1], 1
    short_cols = SimpleNamespace(**{**vars(good), "col_ub": good.col_ub[:1]})
    for bad in (short_rows, short_cols):
        with mock.patch.object(sep.KNAPSACK_KERNEL, "get", lambda *a, **k: None):
            with pytest.raises((IndexError, ValueError)) as ref:
                solve_separable(bad)
        with mock.patch.object(sep.KNAPSACK_KERNEL, "get", lambda *a, **k: kernel):
            with pytest.raises(ref.type):
                solve_separable(bad)
    with mock.patch.object(sep.KNAPSACK_KERNEL, "get", lambda *a, **k: kernel):
        assert solve_separable(good).x.tolist() == [4.0] * 3
