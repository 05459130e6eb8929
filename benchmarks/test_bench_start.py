"""Does a starting basis built from the fast path's allocation pay? (issue 16, item 3)

For every member of the benchmark family: the fast path's horizon allocation
(:func:`loadopt.fast.allocate_horizon`, EDF) is turned into a basis of the reduced LP — a current
column at 0 or at its bound nonbasic there, strictly between them basic; an unmet-energy column
basic when the session is partly served; import/export basic when non-zero; a safety row's slack
basic unless the allocation fills it; equality rows nonbasic — and the count is repaired by HiGHS
(``alien`` basis: it completes a rank-deficient or over-full set by its own crash). Iterations and
HiGHS time from that start are compared with HiGHS' own start, same process, alternating.

Measured so far (docs/benchmarks.md): the start costs more iterations than it saves on every
congested member, so the library does not use it; this benchmark stays to re-check that claim.
Run: ``pytest benchmarks/test_bench_start.py -s``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import family
from loadopt import fast
from loadopt.lp import build_lp
from loadopt.solvers import highs as hs

START: dict[str, dict] = {}


def fast_path_basis(problem, lp, policy: str = "edf") -> tuple[np.ndarray, np.ndarray]:
    """Column and row statuses (``BASIS_*`` codes) of ``lp`` at the fast path's allocation."""
    cur = fast.allocate_horizon(problem, policy)
    r = np.zeros(lp.n_cols)
    rb = lp.cols["r"]
    r[rb.slice] = cur[problem.var_session[rb.index], problem.var_period[rb.index]]
    ub, lb = lp.col_ub, lp.col_lb
    x = r.copy()
    if "u" in lp.cols:  # unmet energy = E - delivered of the session's energy row
        ub_ = lp.cols["u"]
        e = lp.rows["energy"]
        act = lp.A[e.slice] @ r
        x[ub_.slice] = np.clip(lp.row_ub[e.slice] - act, 0, ub[ub_.slice])
    if "imp" in lp.cols:
        bal = lp.rows["balance"]
        net = lp.row_lb[bal.slice] - lp.A[bal.slice] @ x  # imp − exp = net + EV
        x[lp.cols["imp"].slice] = np.maximum(net, 0)
        x[lp.cols["exp"].slice] = np.minimum(np.maximum(-net, 0), ub[lp.cols["exp"].slice])
    tol = 1e-6
    col = np.full(lp.n_cols, hs.BASIS_BASIC, np.int8)
    col[x <= lb + tol] = hs.BASIS_LOWER
    col[np.isfinite(ub) & (x >= ub - tol) & (ub > lb)] = hs.BASIS_UPPER
    act = lp.A @ x
    row = np.full(lp.n_rows, hs.BASIS_BASIC, np.int8)
    tight = np.isfinite(lp.row_ub) & (act >= lp.row_ub - 1e-6 * np.maximum(1, np.abs(lp.row_ub)))
    row[tight] = hs.BASIS_UPPER
    eq = lp.row_lb == lp.row_ub
    row[eq] = hs.BASIS_UPPER
    return col, row


def _run(lp, basis=None):
    h = hs.new_highs(hs.LP_OPTIONS)
    hs.pass_lp(h, lp)
    if basis is not None:
        assert hs.set_basis(h, *basis, alien=True)
    t0 = time.perf_counter()
    h.run()
    dt = time.perf_counter() - t0
    info = h.getInfo()
    return dt, int(info.simplex_iteration_count), float(info.objective_function_value)


@pytest.mark.parametrize("name", [n for n in family.NAMES])
def test_fast_path_start(benchmark, name):
    m = family.member(name)
    p = m.scenario.compile()
    lp = build_lp(p)
    fast.allocate(p, 0)  # JIT compile (or load) and the per-problem preparation, not timed
    t0 = time.perf_counter()
    basis = fast_path_basis(p, lp)
    t_basis = time.perf_counter() - t0
    res: dict[str, list] = {"cold": [], "fast-path start": []}

    def round_():
        for k in ("cold", "fast-path start"):
            res[k].append(_run(lp, basis if k != "cold" else None))

    benchmark.pedantic(round_, rounds=1 if benchmark.disabled else 3, iterations=1)
    cold, warm = res["cold"], res["fast-path start"]
    assert warm[0][2] == pytest.approx(cold[0][2], rel=1e-7)
    row = {
        "cold_s": min(r[0] for r in cold),
        "start_s": min(r[0] for r in warm) + t_basis,
        "basis_build_s": t_basis,
        "cold_iters": cold[0][1],
        "start_iters": warm[0][1],
    }
    START[name] = row
    benchmark.extra_info.update(row)
    print(
        f"\n{name}: cold {1e3 * row['cold_s']:.1f} ms / {row['cold_iters']} it; fast-path "
        f"start {1e3 * row['start_s']:.1f} ms (of which basis {1e3 * t_basis:.1f} ms) / "
        f"{row['start_iters']} it; ratio {row['start_s'] / row['cold_s']:.2f}"
    )
