"""HiGHS through ``highspy``: the whole model handed over as arrays in one ``passModel`` call.

Measured (docs/benchmarks.md): passing CSC arrays costs milliseconds where filling a ``HighsLp``
field by field is ~9× slower; ``getSolution().col_value`` is a Python list and is converted once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import highspy
import numpy as np

from ..errors import SolverError
from ..lp import LinearProgram, relaxed_start
from .result import SolverResult, SolverStatus

#: Options set on every solve unless overridden. Output off: a controller runs this every few
#: seconds and logs through its own logger.
DEFAULT_OPTIONS: dict[str, Any] = {"output_flag": False}

#: Options for the reduced LP of :func:`loadopt.lp.build_lp`, chosen across the benchmark family
#: (benchmarks/test_bench_family.py, docs/benchmarks.md) rather than on one instance: presolve off
#: (after the LP's own reductions HiGHS' presolve finds little — on the congested members it
#: takes iterations off but costs more time than it saves; 1.3–5× slower on every member),
#: serial dual simplex (HiGHS' default strategy; the parallel dual was 0.9× on one member and
#: 5–60× slower on the others on the shared 2-core machine, primal 3–140× slower). Dual cost
#: perturbation off (``dual_simplex_cost_perturbation_multiplier=0``) measured 0.72–0.98× HiGHS
#: time across the family (no cleanup pass) but is not set: among the many equal-cost optima of
#: these LPs (the objective does not rank who charges first when both are served in the end) it
#: lands on different ones than the settings users have seen so far; scaling, edge weights,
#: crash and pricing strategies were within ±5 % or slower. Re-measure with the family when
#: highspy is upgraded.
LP_OPTIONS: dict[str, Any] = {"presolve": "off"}

_MS = highspy.HighsModelStatus

_HighsClass: Any
try:  # the bound C++ class, without highspy's Python callback layer, which prints a banner
    from highspy._core import _Highs as _HighsClass
except ImportError:  # pragma: no cover - other highspy layouts
    _HighsClass = highspy.Highs


def new_highs(options: dict[str, Any] | None = None, time_limit_s: float | None = None):
    h = _HighsClass()
    for k, v in {**DEFAULT_OPTIONS, **(options or {})}.items():
        h.setOptionValue(k, v)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    return h


def pass_lp(h, lp: LinearProgram, integrality: np.ndarray | None = None) -> None:
    """Hand ``lp`` to the ``Highs`` object ``h`` in one call (column-wise CSC, int32 indices)."""
    A = lp.A
    if integrality is None:
        integrality = lp.integrality
    integ = (
        np.zeros(lp.n_cols, dtype=np.int32)
        if integrality is None
        else np.ascontiguousarray(integrality, dtype=np.int32)
    )
    st = h.passModel(
        int(lp.n_cols),
        int(lp.n_rows),
        int(A.nnz),
        1,
        1,
        float(lp.offset),
        np.ascontiguousarray(lp.c, dtype=np.float64),
        np.ascontiguousarray(lp.col_lb, dtype=np.float64),
        np.ascontiguousarray(lp.col_ub, dtype=np.float64),
        np.ascontiguousarray(lp.row_lb, dtype=np.float64),
        np.ascontiguousarray(lp.row_ub, dtype=np.float64),
        np.ascontiguousarray(A.indptr, dtype=np.int32),
        np.ascontiguousarray(A.indices, dtype=np.int32),
        np.ascontiguousarray(A.data, dtype=np.float64),
        integ,
    )
    if st == highspy.HighsStatus.kError:
        raise SolverError("HiGHS rejected the model (passModel returned kError)")


def change_bounds(
    h,
    cols: np.ndarray,
    col_lb: np.ndarray,
    col_ub: np.ndarray,
    rows: np.ndarray,
    row_ub: np.ndarray,
) -> None:
    """Change the bounds of columns ``cols`` to ``[col_lb, col_ub]`` and the upper bounds of the
    ``≤`` rows ``rows`` to ``row_ub`` on the model ``h`` holds; HiGHS keeps its basis, so the
    next :func:`run` re-optimises from it (the dual simplex after a bound change)."""
    if cols.size:
        st = h.changeColsBounds(
            int(cols.size),
            np.ascontiguousarray(cols, dtype=np.int32),
            np.ascontiguousarray(col_lb, dtype=np.float64),
            np.ascontiguousarray(col_ub, dtype=np.float64),
        )
        if st == highspy.HighsStatus.kError:
            raise SolverError("HiGHS rejected the column bounds (changeColsBounds)")
    if rows.size:
        st = h.changeRowsBounds(
            int(rows.size),
            np.ascontiguousarray(rows, dtype=np.int32),
            np.full(rows.size, -np.inf),
            np.ascontiguousarray(row_ub, dtype=np.float64),
        )
        if st == highspy.HighsStatus.kError:
            raise SolverError("HiGHS rejected the row bounds (changeRowsBounds)")


def add_rows(
    h, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, row_ub: np.ndarray
) -> None:
    """Add the rows ``A · x ≤ row_ub`` (``A`` as CSR arrays over the model's columns) to the
    model ``h`` holds; HiGHS keeps its basis, the new rows' slacks basic."""
    n = int(row_ub.size)
    st = h.addRows(
        n,
        np.full(n, -np.inf),
        np.ascontiguousarray(row_ub, dtype=np.float64),
        int(indptr[-1]),
        np.ascontiguousarray(indptr[:-1], dtype=np.int32),
        np.ascontiguousarray(indices, dtype=np.int32),
        np.ascontiguousarray(data, dtype=np.float64),
    )
    if st == highspy.HighsStatus.kError:
        raise SolverError("HiGHS rejected the added rows (addRows)")


def run(h) -> SolverResult:
    """Run ``h`` and translate its status; the column values come back as one numpy array."""
    t0 = time.perf_counter()
    h.run()
    dt = time.perf_counter() - t0
    ms = h.getModelStatus()
    info = h.getInfo()
    has_primal = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_primal else None
    obj = float(info.objective_function_value) if has_primal else None
    gap = float(info.mip_gap) if np.isfinite(info.mip_gap) else None
    if ms == _MS.kOptimal:
        status = SolverStatus.OPTIMAL
    elif ms in (_MS.kTimeLimit, _MS.kIterationLimit, _MS.kInterrupt, _MS.kSolutionLimit):
        status = SolverStatus.TIME_LIMIT
    elif ms == _MS.kInfeasible:
        status = SolverStatus.INFEASIBLE
    elif ms in (_MS.kUnbounded, _MS.kUnboundedOrInfeasible):
        status = SolverStatus.UNBOUNDED
    else:
        status = SolverStatus.ERROR
    return SolverResult(status, x, obj, dt, h.modelStatusToString(ms), gap)


def solve_lp(
    lp: LinearProgram,
    time_limit_s: float | None = None,
    options: dict[str, Any] | None = None,
    *,
    start: bool = False,
) -> SolverResult:
    """Solve ``lp`` on a fresh ``Highs`` object. ``start=True``: from :func:`relaxed_basis`
    where that rule takes it (else, and by default, from HiGHS' own slack basis)."""
    t0 = time.perf_counter()
    try:
        h = new_highs(options, time_limit_s)
        pass_lp(h, lp)
        if start:
            basis = relaxed_basis(lp)
            if basis is not None:
                set_basis(h, *basis)
        res = run(h)
    except Exception as exc:  # a broken solver must never take the controller down
        return SolverResult(
            SolverStatus.ERROR, None, None, time.perf_counter() - t0, f"HiGHS failed: {exc!r}"
        )
    return SolverResult(
        res.status, res.x, res.objective, time.perf_counter() - t0, res.message, res.mip_gap
    )


#: ``HighsBasisStatus`` codes as small integers (the order of the enum): the basis arrays below.
BASIS_LOWER, BASIS_BASIC, BASIS_UPPER = 0, 1, 2
_STATUS = np.array(
    [
        highspy.HighsBasisStatus.kLower,
        highspy.HighsBasisStatus.kBasic,
        highspy.HighsBasisStatus.kUpper,
    ],
    dtype=object,
)


def basis_arrays(h, lp: LinearProgram, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The optimal basis of the model ``lp`` that ``h`` just solved, as two int8 arrays.

    ``(col_status, row_status)`` with :data:`BASIS_LOWER` / :data:`BASIS_BASIC` /
    :data:`BASIS_UPPER`. Read through ``getBasicVariables`` (a numpy array) rather than
    ``getBasis`` (a Python list of enum objects, ~0.4 µs an entry): a nonbasic column is at its
    upper bound when its value ``x`` is, a nonbasic row at the bound it has (``≤`` rows at the
    upper one). ``None`` when HiGHS has no basis to give.
    """
    try:
        st, bv = h.getBasicVariables()
    except Exception:  # no invert (e.g. an empty model): no basis to give
        return None
    if st == highspy.HighsStatus.kError or len(bv) != lp.n_rows:
        return None
    bv = np.asarray(bv, dtype=np.int64)
    ub = lp.col_ub
    fin = np.isfinite(ub)
    at_ub = np.zeros(lp.n_cols, dtype=bool)
    at_ub[fin] = (x[fin] >= ub[fin] - 1e-9 * np.maximum(1.0, np.abs(ub[fin]))) & (
        ub[fin] > lp.col_lb[fin]
    )
    col = np.where(at_ub, BASIS_UPPER, BASIS_LOWER).astype(np.int8)
    row = np.where(np.isfinite(lp.row_ub), BASIS_UPPER, BASIS_LOWER).astype(np.int8)
    col[bv[bv >= 0]] = BASIS_BASIC
    row[-1 - bv[bv < 0]] = BASIS_BASIC
    return col, row


def set_basis(h, col_status: np.ndarray, row_status: np.ndarray, *, alien: bool = False) -> bool:
    """Hand HiGHS a starting basis (int8 arrays as from :func:`basis_arrays`) for the next run.

    With ``alien=False`` the basis must have exactly ``num_row`` basic entries; HiGHS replaces
    the columns of a singular basis matrix by slacks when it factorizes. ``alien=True`` lets
    HiGHS repair the count itself (one extra LU factorization). Returns ``False`` when HiGHS
    rejects the basis (the model is then solved from its own start).
    """
    b = highspy.HighsBasis()
    b.col_status = _STATUS[col_status].tolist()
    b.row_status = _STATUS[row_status].tolist()
    b.valid = True
    b.alien = alien
    return h.setBasis(b) != highspy.HighsStatus.kError


#: The relaxed start is used while the safety rows it overloads are exceeded by at most this
#: share of their limits in sum (:attr:`loadopt.lp.RelaxedStart.overload`). Measured
#: (docs/benchmarks.md): 0.11–0.67 on the family and held-out instances where it saved up to half
#: of the HiGHS time (a few within ±5 %, one 1.2× slower), 0.87–0.94 on the instances where it
#: cost 1.2–1.6× (sessions wanting most of what their windows allow: the dual simplex then
#: undoes most of the relaxed point, from a denser basis than its own slack start).
START_MAX_OVERLOAD = 0.75
#: ... and only on LPs with at least this many columns: on the JPL controller's small LPs
#: (≤ 1,729 columns, a few ms each) the start's fixed costs — the greedy, handing the basis
#: over, HiGHS' steepest-edge weights for a basis that is not all slacks — outweighed what it
#: saved at every size there (1.16–1.33× slower).
START_MIN_COLS = 2000


def relaxed_basis(
    lp: LinearProgram, max_overload: float | None = None, min_cols: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The basis of :func:`loadopt.lp.relaxed_start` as ``(col_status, row_status)`` for
    :func:`set_basis`, or None where it does not apply or the rule says HiGHS' own start is
    better: fewer than ``min_cols`` columns (default :data:`START_MIN_COLS`) or an overload above
    ``max_overload`` (default :data:`START_MAX_OVERLOAD`)."""
    if lp.n_cols < (START_MIN_COLS if min_cols is None else min_cols):
        return None
    st = relaxed_start(lp)
    limit = START_MAX_OVERLOAD if max_overload is None else max_overload
    if st is None or st.overload > limit:
        return None
    col = np.where(st.col_upper, BASIS_UPPER, BASIS_LOWER).astype(np.int8)
    col[st.col_basic] = BASIS_BASIC
    row = np.where(st.row_basic, BASIS_BASIC, BASIS_UPPER).astype(np.int8)
    return col, row


def interrupt_at(h: Any, deadline: float) -> None:
    """Stop HiGHS at ``deadline`` (perf_counter s) even where its own ``time_limit`` is not
    checked: measured, root cut separation on a 500 × 96 model with 8 A steps overran a 10 s
    limit by 74 s. The simplex and MIP interrupt callbacks are polled inside those loops."""

    def cb(_type, _msg, _out, data_in, _user) -> None:
        if data_in is not None and time.perf_counter() > deadline:
            data_in.user_interrupt = True

    h.setCallback(cb, None)
    for kind in (
        highspy.cb.HighsCallbackType.kCallbackSimplexInterrupt,
        highspy.cb.HighsCallbackType.kCallbackMipInterrupt,
    ):
        h.startCallback(kind)


#: Seconds HiGHS may overrun the deadline before it is abandoned.
OVERRUN_GRACE_S = 0.25


def run_until(h: Any, deadline: float) -> SolverResult | None:
    """``run(h)`` in a thread (HiGHS releases the GIL); None if it is still running
    ``OVERRUN_GRACE_S`` after ``deadline`` — the caller keeps its incumbent. The thread is not a
    daemon: a process that exits while it runs waits for it (a daemon thread inside HiGHS at
    interpreter exit aborts the process)."""
    box: list[SolverResult] = []
    th = threading.Thread(target=lambda: box.append(run(h)), daemon=False)
    th.start()
    th.join(max(deadline - time.perf_counter(), 0.0) + OVERRUN_GRACE_S)
    return box[0] if box else None
