"""HiGHS through ``highspy``: the whole model handed over as arrays in one ``passModel`` call.

Measured (docs/benchmarks.md): passing CSC arrays costs milliseconds where filling a ``HighsLp``
field by field is ~9× slower; ``getSolution().col_value`` is a Python list and is converted once.
"""

from __future__ import annotations

import time
from typing import Any

import highspy
import numpy as np

from ..lp import LinearProgram
from .result import SolverResult, SolverStatus

#: Options set on every solve unless overridden. Output off: a controller runs this every few
#: seconds and logs through its own logger.
DEFAULT_OPTIONS: dict[str, Any] = {"output_flag": False}

#: Options for the reduced LP of :func:`loadopt.lp.build_lp`. Its reductions leave HiGHS'
#: presolve nothing to do but cost it time (measured in docs/benchmarks.md: ~2× on 1,000 × 96).
LP_OPTIONS: dict[str, Any] = {"presolve": "off"}

_MS = highspy.HighsModelStatus

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
    integ = (np.zeros(lp.n_cols, dtype=np.int32) if integrality is None
             else np.ascontiguousarray(integrality, dtype=np.int32))
    st = h.passModel(
        int(lp.n_cols), int(lp.n_rows), int(A.nnz), 1, 1, float(lp.offset),
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
        raise RuntimeError("HiGHS rejected the model (passModel returned kError)")


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


def solve_lp(lp: LinearProgram, time_limit_s: float | None = None,
             options: dict[str, Any] | None = None) -> SolverResult:
    """Solve ``lp`` on a fresh ``Highs`` object."""
    t0 = time.perf_counter()
    try:
        h = new_highs(options, time_limit_s)
        pass_lp(h, lp)
        res = run(h)
    except Exception as exc:  # a broken solver must never take the controller down
        return SolverResult(SolverStatus.ERROR, None, None, time.perf_counter() - t0,
                            f"HiGHS failed: {exc!r}")
    return SolverResult(res.status, res.x, res.objective, time.perf_counter() - t0,
                        res.message, res.mip_gap)


def same_structure(a: LinearProgram, b: LinearProgram) -> bool:
    """True when ``a`` and ``b`` have the same shape and sparsity pattern (values may differ)."""
    return (a.n_cols == b.n_cols and a.n_rows == b.n_rows and a.A.nnz == b.A.nnz
            and np.array_equal(a.A.indptr, b.A.indptr)
            and np.array_equal(a.A.indices, b.A.indices))


def update_lp(h, old: LinearProgram, new: LinearProgram) -> int:
    """Turn the model ``old`` held by ``h`` into ``new`` in place, keeping HiGHS' basis.

    ``old`` and ``new`` must have the same structure (:func:`same_structure`). Costs, column and
    row bounds are replaced wholesale (three vector calls); matrix values that differ are changed
    one by one with ``changeCoeff``. Returns the number of coefficients changed.
    """
    n, m = new.n_cols, new.n_rows
    cols = np.arange(n, dtype=np.int32)
    rows = np.arange(m, dtype=np.int32)
    h.changeColsCost(n, cols, np.ascontiguousarray(new.c, dtype=np.float64))
    h.changeColsBounds(n, cols, np.ascontiguousarray(new.col_lb, dtype=np.float64),
                       np.ascontiguousarray(new.col_ub, dtype=np.float64))
    if m:
        h.changeRowsBounds(m, rows, np.ascontiguousarray(new.row_lb, dtype=np.float64),
                           np.ascontiguousarray(new.row_ub, dtype=np.float64))
    h.changeObjectiveOffset(float(new.offset))
    diff = np.flatnonzero(old.A.data != new.A.data)
    if diff.size:
        col_of = np.repeat(np.arange(n), np.diff(new.A.indptr))
        for k in diff.tolist():
            h.changeCoeff(int(new.A.indices[k]), int(col_of[k]), float(new.A.data[k]))
    return int(diff.size)
