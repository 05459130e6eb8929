"""A site's own LP under an allowance: what a coupled site solves on its worker.

:func:`with_allowance` adds to a problem one safety row per period — the site's EV power (kW) at
most its allowance — as an ordinary site-import row (``G ≥ 0``), so :func:`loadopt.safety.project`
and the fast path keep it like any other limit. :class:`CoupledSite` keeps the site's LP in HiGHS
on its worker with those rows appended (off while pricing), for the decomposition of
:mod:`loadopt.fleet.coupled`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..lp import Block, LinearProgram, build_lp
from ..problem import ROW_SITE_IMPORT, Problem
from ..safety import project


def ev_matrix(problem: Problem, lp: LinearProgram) -> sp.csr_matrix:
    """``K`` (T × LP columns): ``K @ x`` is the site's EV power per period (kW)."""
    b = lp.cols.get("r")
    if b is None:
        return sp.csr_matrix((problem.n_periods, lp.n_cols))
    kw = problem.session_kw_per_a[problem.var_session[b.index]]
    if problem.var_reserved is not None:  # inside a reservation: counted as fixed load
        kw = np.where(problem.var_reserved[b.index], 0.0, kw)
    return sp.csr_matrix(
        (kw, (problem.var_period[b.index], b.positions)), shape=(problem.n_periods, lp.n_cols)
    )


def with_allowance(problem: Problem, allowance_kw: np.ndarray) -> Problem:
    """``problem`` with one more safety row per period: the EV power (kW) at most
    ``allowance_kw[t]`` (a site-import row: ``G ≥ 0``, so :func:`loadopt.safety.project` and the
    fast path keep it like any other limit)."""
    a = np.asarray(allowance_kw, dtype=np.float64)
    T = problem.n_periods
    if a.shape != (T,) or np.isnan(a).any():
        raise InputError(f"allowance has shape {a.shape}, expected ({T},) without NaN")
    keep = np.flatnonzero(np.isfinite(a))
    rows = np.full(T, -1)
    rows[keep] = np.arange(keep.size)
    vt = problem.var_period
    on = rows[vt] >= 0
    if problem.var_reserved is not None:  # inside a reservation: counted as fixed load
        on &= ~problem.var_reserved
    v = np.flatnonzero(on)
    K = sp.csr_matrix(
        (problem.session_kw_per_a[problem.var_session[v]], (rows[vt[v]], v)),
        shape=(keep.size, problem.n_vars),
    )
    G = sp.vstack([problem.G, K]).tocsr()
    m = keep.size
    return dataclasses.replace(
        problem,
        G=G,
        h=np.concatenate([problem.h, np.maximum(a[keep], 0.0)]),
        row_kind=np.concatenate([problem.row_kind, np.full(m, ROW_SITE_IMPORT, np.int8)]),
        row_node=np.concatenate([problem.row_node, np.full(m, -1, problem.row_node.dtype)]),
        row_phase=np.concatenate([problem.row_phase, np.full(m, -1, problem.row_phase.dtype)]),
        row_period=np.concatenate([problem.row_period, keep.astype(problem.row_period.dtype)]),
    )


class CoupledSite:
    """One site's LP on its worker, with ``T`` allowance rows ``K x ≤ a`` appended (off until
    :meth:`allow`), kept in HiGHS between iterations."""

    def __init__(self, problem: Problem) -> None:
        from ..solvers.highs import LP_OPTIONS, new_highs, pass_lp

        self.problem = problem
        self.lp = build_lp(problem)
        self.K = ev_matrix(problem, self.lp)
        T = problem.n_periods
        self.aug = dataclasses.replace(
            self.lp,
            A=sp.vstack([self.lp.A, self.K]).tocsc(),
            row_lb=np.concatenate([self.lp.row_lb, np.full(T, -np.inf)]),
            row_ub=np.concatenate([self.lp.row_ub, np.full(T, np.inf)]),
            rows={
                **self.lp.rows,
                "allowance": Block(self.lp.n_rows, self.lp.n_rows + T, np.arange(T)),
            },
        )
        self.rows = (self.lp.n_rows + np.arange(T)).astype(np.int32)
        self.cols = np.arange(self.lp.n_cols, dtype=np.int32)
        self.h = None
        if self.lp.n_cols:
            self.h = new_highs(LP_OPTIONS)
            pass_lp(self.h, self.aug)

    def _run(
        self, pi: np.ndarray | None, allowance: np.ndarray | None, time_limit_s: float | None
    ) -> dict[str, Any]:
        from ..solvers.highs import run

        T = self.problem.n_periods
        if self.h is None:  # nobody can draw: the constant is the whole objective
            return {
                "ok": True,
                "f": self.lp.offset,
                "ev": np.zeros(T),
                "w": self.lp.offset,
                "x": np.zeros(0),
            }
        c = self.lp.c if pi is None else self.lp.c + self.K.T @ pi
        self.h.changeColsCost(self.cols.size, self.cols, np.ascontiguousarray(c))
        ub = np.full(T, np.inf) if allowance is None else np.maximum(allowance, 0.0)
        self.h.changeRowsBounds(T, self.rows, np.full(T, -np.inf), ub)
        self.h.setOptionValue(
            "time_limit", float("inf") if time_limit_s is None else float(time_limit_s)
        )
        res = run(self.h)
        if res.x is None:
            return {"ok": False, "message": res.message}
        x = res.x
        ev = self.K @ x
        f = float(self.lp.c @ x + self.lp.offset)
        return {
            "ok": res.status.value == "optimal",
            "f": f,
            "ev": ev,
            "w": f + (0.0 if pi is None else float(pi @ ev)),
            "x": x,
            "message": res.message,
        }

    def price(self, pi: np.ndarray, time_limit_s: float | None = None) -> dict[str, Any]:
        """The site's best proposal at prices ``pi`` (no allowance)."""
        out = self._run(pi, None, time_limit_s)
        out.pop("x", None)
        return out

    def allow(self, allowance: np.ndarray, time_limit_s: float | None = None) -> dict[str, Any]:
        """The site's optimum within ``allowance`` (kW per period), as deci-amps projected onto
        its allowance-augmented problem."""
        out = self._run(None, allowance, time_limit_s)
        if "x" in out:
            p = with_allowance(self.problem, allowance)
            cur = project(p, p.dense(self.lp.currents(p, out.pop("x"))))
            out["x_da"] = np.rint(p.gather(cur) * 10.0).astype(np.int32)
        return out
