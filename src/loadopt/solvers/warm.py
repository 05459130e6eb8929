"""Warm starts across rolling-horizon steps: the previous optimal basis, carried over by key.

Each step builds the reduced LP of the new problem cold (:func:`loadopt.lp.build_lp`,
milliseconds) and hands HiGHS the previous step's optimal basis mapped onto it by stable keys — a
current column by (session, absolute period), a safety row by (kind, node, phase, absolute
period), an energy row by session, a balance/peak row by absolute period. What is new starts
nonbasic at 0 (columns) or basic (rows); the basic count is repaired to the number of rows; HiGHS
swaps slacks into a singular basis when it factorizes. Sessions arriving or leaving only change
the keys that match. After a limit drop over most of the horizon the step is solved cold (a warm
start is many times slower there: re-measured in benchmarks/test_bench_controller.py).

A :class:`WarmStart` is the state one sequence of solves carries between calls; pass it to
:func:`loadopt.solve` as ``warm_start=`` (the :class:`~loadopt.controller.Controller` does).
The warm start is only an optimisation: any fault in it means a cold solve, never a wrong one.

It also keeps the HiGHS model of its last optimal solve, for one *hot* re-solve of the same
problem with tightened bounds (:meth:`WarmStart.resolve_tightened`: the controller's
rounding-aware pilot step fixes period-0 currents and re-plans the rest): only the changed
column and row bounds are handed to HiGHS, which re-optimises from the optimal basis it holds
(dual simplex) instead of building and solving the LP again. :func:`tightened_bounds` says which
bounds change, and refuses (the caller then re-solves cold) where the LP's reductions cannot be
shown to stay valid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .._csr import entry_rows, keep_entries, take_rows
from ..lp import LinearProgram
from ..problem import Problem
from .result import SolverResult, SolverStatus

#: Below this many LP rows a warm start is slower than a cold solve (keys, mapping and the basis
#: kept included): measured step by step, warm and cold on the same LPs, on the shipped JPL week
#: with uniform and tiered horizons (docs/benchmarks.md, "Warm start by size"); the LP's rows
#: predicted the crossover on both horizons, its columns did not.
MIN_WARM_ROWS = 1000


class WarmStart:
    """The previous optimal basis of a sequence of LP solves, and how to map it onto the next.

    ``enabled``: hand HiGHS the mapped basis (off: every solve is cold and nothing is kept).
    ``min_mapped``: below this share of columns + rows found in the previous basis, solve cold.
    ``alien``: let HiGHS repair the basic count itself (``HighsBasis.alien``) instead of
    :meth:`mapped_basis` doing it (measured slower: one extra LU factorization).
    ``cold_after_limit_cut``: solve cold when a limit dropped over most of the horizon.
    ``min_rows``: an LP with fewer rows is solved cold and no basis is kept for it (the keys, the
    mapping and the basis kept cost more than a warm start saves at that size: measured on the
    shipped JPL week, :data:`MIN_WARM_ROWS`); 0 = warm at every size.
    ``keep_model``: keep the last solve's HiGHS object — its optimal model for one
    :meth:`resolve_tightened`, the object itself for the next solve to reuse (off: nothing is
    kept, :meth:`resolve_tightened` always says None, every solve makes a new object — where
    nobody re-solves, e.g. a fleet worker, a kept model per site would only take memory). It is
    never pickled.

    After each :meth:`solve`, ``mode`` is ``"warm"``, ``"cold"`` or ``"empty"`` and ``reason``
    says why (for logs).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        min_mapped: float = 0.5,
        alien: bool = False,
        cold_after_limit_cut: bool = True,
        min_rows: int = MIN_WARM_ROWS,
        keep_model: bool = True,
    ) -> None:
        self.enabled = bool(enabled)
        self.keep_model = bool(keep_model)
        self.min_rows = int(min_rows)
        self.min_mapped = float(min_mapped)
        self.alien = bool(alien)
        self.cold_after_limit_cut = bool(cold_after_limit_cut)
        self.memo: BasisMemo | None = None
        self.mode = "cold"
        self.reason = ""
        self.solve_s = 0.0  #: the last solver run (s)
        self._epoch: datetime | None = None
        self._sid_int: dict[str, int] = {}
        #: the problem of the last solve: its limits, against which a cut is detected (read
        #: only when a warm start is considered)
        self._fp_of: Problem | None = None
        #: the last optimal solve's problem, LP and HiGHS model (for one hot re-solve)
        self._solved: tuple[Problem, LinearProgram, Any] | None = None
        #: the last solve's HiGHS object with its options and time limit, reused by the next
        self._spare: tuple[dict[str, Any], float | None, Any] | None = None

    def reset(self) -> None:
        """Forget the previous basis (the next solve is cold) and the kept model."""
        self.memo = None
        self._solved = self._spare = None

    def release_model(self) -> None:
        """Drop the kept HiGHS model (:meth:`resolve_tightened` then says None until the next
        optimal solve keeps one)."""
        self._solved = self._spare = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_solved"] = state["_spare"] = None  # HiGHS objects do not pickle
        return state

    # ------------------------------------------------------------------ the solve
    def solve(
        self,
        problem: Problem,
        lp: LinearProgram,
        options: dict[str, Any] | None,
        time_limit_s: float | None,
    ) -> SolverResult:
        """Solve ``lp`` (built from ``problem``) on HiGHS from the mapped previous basis, and
        keep the new optimal basis for the next call. Never raises: a solver fault comes back as
        an ``ERROR`` result (and the next solve is cold)."""
        from .highs import basis_arrays, pass_lp, run, set_basis

        self._solved = None
        if lp.n_cols == 0:  # nobody can draw (HiGHS calls an empty model an error)
            self._fp_of = problem
            self.mode, self.reason, self.solve_s = "empty", "no session can draw", 0.0
            return SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
        start: tuple[np.ndarray, np.ndarray] | None = None
        keys = None
        try:  # the warm start is an optimisation: any fault in it means a cold solve
            small = lp.n_rows < self.min_rows
            keys = self.keys(problem, lp) if self.enabled and not small else None
            if keys is None:
                reason = (
                    f"{lp.n_rows} rows < {self.min_rows}: solved cold (faster at this size)"
                    if self.enabled
                    else "warm start off: solved cold"
                )
            elif self.memo is None:
                reason = "no previous optimal basis: solved cold"
            elif self.cold_after_limit_cut and self._limits_cut(problem):
                reason = (
                    "a limit dropped over most of the horizon: solved cold (a warm start "
                    "is slower there)"
                )
            else:
                start, info = self.mapped_basis(lp, keys)
                reason = (
                    f"{info}: solved cold" if start is None else (f"previous basis mapped: {info}")
                )
        except Exception as exc:
            keys, start, reason = None, None, f"warm start failed ({exc!r}): solved cold"
        mode = "cold" if start is None else "warm"
        t0 = time.perf_counter()
        try:
            hi = self._highs_for(options, time_limit_s)
            pass_lp(hi, lp)
            if start is not None and not set_basis(hi, *start, alien=self.alien):
                mode, reason = "cold", reason + "; HiGHS rejected it: solved cold"
            res = run(hi)
        except Exception as exc:  # a broken solver must never take the controller down
            self.memo = None
            self.mode, self.reason = mode, reason + f"; solver failed ({exc!r}): fast path"
            self.solve_s = 0.0
            return SolverResult(
                SolverStatus.ERROR, None, None, time.perf_counter() - t0, f"HiGHS failed: {exc!r}"
            )
        self._fp_of = problem
        self.memo = None
        if self.keep_model:
            self._spare = (dict(options or {}), time_limit_s, hi)
            if res.status == SolverStatus.OPTIMAL and res.x is not None:
                self._solved = (problem, lp, hi)
        if res.status == SolverStatus.OPTIMAL and res.x is not None and keys is not None:
            try:
                basis = basis_arrays(hi, lp, res.x)
                if basis is not None:
                    dual = np.asarray(hi.getSolution().col_dual, dtype=np.float64)
                    self.memo = BasisMemo.of(*keys, *basis, res.x, dual)
            except Exception:  # no basis to start from next time: that step solves cold
                self.memo = None
        self.mode, self.reason, self.solve_s = mode, reason, res.time_s
        return res

    def _highs_for(self, options: dict[str, Any] | None, time_limit_s: float | None) -> Any:
        """The HiGHS object for the next solve: the last one, cleared (its model is replaced by
        ``pass_lp``), where it was made with the same options — measured 0.15 ms less per
        solve than a new one on the JPL LPs, with the same solutions (206 of 206) — else new.
        HiGHS (< 2.0) counts an object's runs together against ``time_limit``: it is
        re-based on the run time so far."""
        from .highs import new_highs

        spare, self._spare = self._spare, None
        opts = dict(options or {})
        if spare is None or spare[0] != opts or spare[1] != time_limit_s or "time_limit" in opts:
            return new_highs(options, time_limit_s)
        hi = spare[2]
        hi.clearSolver()
        if time_limit_s is not None:
            hi.setOptionValue("time_limit", hi.getRunTime() + float(time_limit_s))
        return hi

    def resolve_tightened(
        self, problem: Problem, floor_a: np.ndarray, ub_a: np.ndarray, h: np.ndarray
    ) -> tuple[SolverResult, LinearProgram] | None:
        """Re-solve the last solve's LP *hot* with tighter bounds: the LP of ``problem`` with
        ``var_floor_a=floor_a``, ``var_ub=ub_a`` (``(V,)`` A) and safety right-hand sides ``h``
        (``(M,)`` A or kW), from the optimal basis HiGHS still holds (dual simplex).

        Parameters
        ----------
        problem
            The problem of the last :meth:`solve` (the same object; otherwise None).
        floor_a, ub_a, h
            The new bounds, each at most as loose as ``problem``'s (:func:`tightened_bounds`).

        Returns
        -------
        tuple[SolverResult, LinearProgram] or None
            The optimal result and the LP its columns belong to (map it back with
            :meth:`~loadopt.lp.LinearProgram.currents` on the tightened problem); None when
            there is no model of ``problem`` kept, the tightening cannot be done on it, or
            HiGHS does not come back optimal — the caller then solves the tightened problem
            cold. The kept model is used once (its bounds are changed).
        """
        from .highs import add_rows, change_bounds, run

        kept, self._solved = self._solved, None
        if kept is None or kept[0] is not problem:
            return None
        _, lp, hi = kept
        try:
            tt = tightened_bounds(problem, lp, floor_a, ub_a, h)
            if tt is None:
                return None
            change_bounds(hi, tt.cols, tt.col_lb, tt.col_ub, tt.rows, tt.row_ub)
            if tt.new_ub.size:
                add_rows(hi, *tt.new_rows, tt.new_ub)
            _, limit = hi.getOptionValue("time_limit")
            if np.isfinite(limit):  # HiGHS (< 2.0) counts a model's runs together: a new budget
                hi.setOptionValue("time_limit", hi.getRunTime() + limit)
            res = run(hi)
        except Exception:  # only an optimisation: the caller solves cold
            return None
        if res.status != SolverStatus.OPTIMAL or res.x is None:
            return None
        return res, lp

    # ------------------------------------------------------------------ keys and mapping
    def _sid(self, ids: tuple[str, ...]) -> np.ndarray:
        """A stable integer per session id (assigned on first sight, never reused)."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, sid in enumerate(ids):
            k = self._sid_int.get(sid)
            if k is None:
                k = self._sid_int[sid] = len(self._sid_int)
            out[i] = k
        return out

    def keys(self, problem: Problem, lp: LinearProgram) -> tuple[np.ndarray, np.ndarray]:
        """Stable int64 keys of the LP's columns and rows, equal across steps for the same thing.

        Looked up by block name (:class:`~loadopt.lp.LinearProgram` ``cols`` / ``rows``):
        a current column by (session, absolute period), an unmet-energy column by session,
        import/export by absolute period, the peak and ``z`` columns by kind; a safety row by
        (kind, node, facet, phase, absolute period), an energy or fairness row by session, a
        balance or peak row by absolute period (:data:`COL_KEYS`, :data:`ROW_KEYS`). The absolute
        period counts steps of the horizon's ``step_s`` from the first horizon this warm start saw
        (a ``now`` off that grid is rounded: the basis is only a start, any start is correct); on a
        non-uniform horizon a period's absolute period is that of its start, so the coarse
        periods that start at the same instant from step to step
        (:meth:`loadopt.horizon.Horizon.tiered`) keep their keys. A block without a key rule
        raises (the caller then solves cold).
        """
        hz = problem.horizon
        if self._epoch is None:
            self._epoch = hz.start_utc
        step_s = hz.step_s
        # real seconds (UTC): two datetimes in one ZoneInfo subtract as wall-clock times, an
        # hour off across a daylight-saving change
        p0 = round((hz.start_utc - self._epoch).total_seconds() / step_s)
        if hz.uniform:
            per = p0 + np.arange(problem.n_periods, dtype=np.int64)
        else:
            per = p0 + np.round(hz.period_bounds_s()[:-1] / step_s).astype(np.int64)
        sid = self._sid(problem.session_ids)

        def by_rule(
            kind: str, rules: dict[str, tuple[int, str]], name: str, idx: np.ndarray
        ) -> np.ndarray:
            if name not in rules:
                raise KeyError(f"no warm-start key rule for {kind} block {name!r}")
            tag, space = rules[name]
            if space == "session":
                return _pack(tag, sid[idx], 0)
            if space == "period":
                return _pack(tag, 0, per[idx])
            return _pack(tag, 0, np.zeros(idx.size, np.int64))

        st = problem.storage
        unit = np.zeros(0, np.int64)
        if st is not None:  # a storage unit by its session's id, or its battery's
            Us = st.n_units - st.n_batteries
            unit = np.concatenate(
                [
                    sid[st.unit_session[:Us]],
                    self._sid(tuple("\0battery:" + b for b in st.battery_ids)),
                ]
            )
        T = problem.n_periods
        col_keys = np.empty(lp.n_cols, dtype=np.int64)
        for name, b in lp.cols.items():
            if name == "r":
                v = b.index
                col_keys[b.slice] = _pack(
                    _R_TAG, sid[problem.var_session[v]], per[problem.var_period[v]]
                )
            elif st is not None and name in _STORAGE_COLS:
                tag = _STORAGE_COLS[name]
                if name == "bc":
                    u, t = (
                        st.n_units - st.n_batteries + st.bc_battery[b.index],
                        st.bc_period[b.index],
                    )
                elif name == "d":
                    u, t = st.dv_unit[b.index], st.dv_period[b.index]
                elif name == "e":
                    u, t = b.index // T, b.index % T
                else:  # "w": per V2G session
                    col_keys[b.slice] = _pack(tag, sid[b.index], 0)
                    continue
                col_keys[b.slice] = _pack(tag, unit[u], per[t])
            else:
                col_keys[b.slice] = by_rule("column", COL_KEYS, name, b.index)
        rows = np.empty(lp.n_rows, dtype=np.int64)
        for name, b in lp.rows.items():
            if name == "safety":
                g = b.index
                # the facets of one phasor line limit (loadopt.wiring) share kind, node, phase
                # and period: the facet index keeps their keys apart
                node_phase = (
                    (problem.row_kind[g].astype(np.int64) << 24)
                    | ((problem.row_node[g].astype(np.int64) + 1) << 9)
                    | ((problem.row_facet[g].astype(np.int64) + 1) << 3)
                    | (problem.row_phase[g].astype(np.int64) + 1)
                )
                rows[b.slice] = _pack(_SAFETY_TAG, node_phase, per[problem.row_period[g]])
            elif st is not None and name == "export":
                g = b.index
                node_phase = (
                    (st.x_kind[g].astype(np.int64) << 24)
                    | ((st.x_node[g].astype(np.int64) + 1) << 10)
                    | (st.x_phase[g].astype(np.int64) + 1)
                )
                # the coupled facets of one line share the rest: keep them apart by order
                dup = _rank_within(node_phase * (1 << 28) + per[st.x_period[g]])
                rows[b.slice] = _pack(_EXPORT_TAG, node_phase | (dup << 3), per[st.x_period[g]])
            elif st is not None and name == "energy_state":
                u, t = b.index // T, b.index % T
                rows[b.slice] = _pack(_ENERGY_STATE_TAG, unit[u], per[t])
            elif st is not None and name == "v2g_target":
                rows[b.slice] = _pack(_V2G_TARGET_TAG, sid[b.index], 0)
            else:
                rows[b.slice] = by_rule("row", ROW_KEYS, name, b.index)
        return col_keys, rows

    def mapped_basis(
        self, lp: LinearProgram, keys: tuple[np.ndarray, np.ndarray]
    ) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
        """The previous optimal basis carried over to ``lp`` by key, with a consistent count.

        Columns and rows found under the same key keep their status (a nonbasic column at an
        upper bound that became infinite goes to its lower one); new columns start nonbasic at
        their lower bound, new rows basic (slack). Then exactly ``n_rows`` entries must be basic:
        with too many, the basic columns nearest a bound (at the previous values) become
        nonbasic at it; with too few, the nonbasic rows with the most slack (previous values
        under the new matrix) become basic. A singular basis matrix is left to HiGHS, which
        swaps in slacks when it factorizes. Returns ``(None, why)`` when too little maps.
        """
        from .highs import BASIS_BASIC, BASIS_LOWER, BASIS_UPPER

        memo = self.memo
        assert memo is not None
        ck, rk = keys
        jc, hit_c = _lookup(memo.col_order, memo.col_keys, ck)
        jr, hit_r = _lookup(memo.row_order, memo.row_keys, rk)
        # Rows with identical coefficients (the L1/L2/L3 rows of a node whose vehicles all draw
        # three phases) are merged by build_lp under one of their phases, not always the same
        # one: a current row not found under its phase is looked up under the other phases.
        cur = np.flatnonzero(~hit_r & ((rk >> _KIND_SHIFT) == _CURRENT_ROW_TAG))
        for ph in (1, 2, 3):
            if cur.size == 0:
                break
            alt = (rk[cur] & ~np.int64(0b111 << _PHASE_SHIFT)) | np.int64(ph << _PHASE_SHIFT)
            j, hit = _lookup(memo.row_order, memo.row_keys, alt)
            jr[cur[hit]], hit_r[cur[hit]] = j[hit], True
            cur = cur[~hit]
        n, m = lp.n_cols, lp.n_rows
        frac = (hit_c.sum() + hit_r.sum()) / max(n + m, 1)
        if frac < self.min_mapped:
            return None, f"only {frac:.0%} of the columns and rows map to the previous basis"
        col = np.full(n, BASIS_LOWER, np.int8)
        col[hit_c] = memo.col_status[jc[hit_c]]
        x = np.zeros(n)
        x[hit_c] = memo.x[jc[hit_c]]
        lb, ub = lp.col_lb, lp.col_ub
        col[(col == BASIS_UPPER) & ~np.isfinite(ub)] = BASIS_LOWER
        x = np.clip(x, lb, ub)
        x = np.where(col == BASIS_LOWER, lb, np.where(col == BASIS_UPPER, ub, x))
        row = np.full(m, BASIS_BASIC, np.int8)
        row[hit_r] = memo.row_status[jr[hit_r]]
        nonb = row != BASIS_BASIC
        row[nonb] = np.where(np.isfinite(lp.row_ub[nonb]), BASIS_UPPER, BASIS_LOWER)
        nb = int((col == BASIS_BASIC).sum() + (row == BASIS_BASIC).sum())
        fixed = ""
        if nb > m:  # too many basic: the basic columns closest to a bound leave the basis
            cand = np.flatnonzero(col == BASIS_BASIC)
            to_lb, to_ub = x[cand] - lb[cand], ub[cand] - x[cand]
            k = nb - m
            pick = np.argpartition(np.minimum(to_lb, to_ub), k - 1)[:k]
            col[cand[pick]] = np.where(to_ub[pick] < to_lb[pick], BASIS_UPPER, BASIS_LOWER)
            fixed = f", {k} basic column(s) made nonbasic"
        elif nb < m:  # too few basic
            k = m - nb
            pick = self._replacements(memo, ck, jc, hit_c, col, k)
            col[pick] = BASIS_BASIC
            fixed = f", {pick.size} column(s) made basic in place of lost ones"
            if pick.size < k:  # the rest: slacks of the nonbasic rows with most room
                cand = np.flatnonzero(row != BASIS_BASIC)
                act = lp.A @ x
                room = np.minimum(lp.row_ub[cand] - act[cand], act[cand] - lp.row_lb[cand])
                rest = k - pick.size
                row[cand[np.argpartition(-room, rest - 1)[:rest]]] = BASIS_BASIC
                fixed += f", {rest} slack(s) made basic"
        info = f"{int(hit_c.sum())}/{n} columns, {int(hit_r.sum())}/{m} rows kept{fixed}"
        return (col, row), info

    @staticmethod
    def _replacements(
        memo: BasisMemo, ck: np.ndarray, jc: np.ndarray, hit_c: np.ndarray, col: np.ndarray, k: int
    ) -> np.ndarray:
        """Up to ``k`` nonbasic current columns to make basic, one for each basic current column
        that left with the period rolled out (or the session gone), taken from the same session.

        A basic column of a session pins its energy row's dual; when it leaves, making a slack
        basic instead would zero a dual and make many columns dual infeasible. The replacement
        is the session's mapped nonbasic column with the smallest previous reduced cost (the
        one that was closest to entering), so the duals stay close to the previous optimum.
        """
        from .highs import BASIS_BASIC

        old_is_r = (memo.col_keys_raw >> 59) == _R_TAG
        lost = np.ones(memo.col_keys_raw.size, dtype=bool)
        lost[jc[hit_c]] = False
        lost &= old_is_r & (memo.col_status == BASIS_BASIC)
        if not lost.any():
            return np.zeros(0, np.int64)
        sess_old = (memo.col_keys_raw[lost] >> 28) & 0x7FFFFFFF
        need = np.bincount(sess_old)
        cand = np.flatnonzero(hit_c & (col != BASIS_BASIC) & ((ck >> 59) == _R_TAG))
        sess = (ck[cand] >> 28) & 0x7FFFFFFF
        ok = sess < need.size
        cand, sess = cand[ok], sess[ok]
        ok = need[sess] > 0
        cand, sess = cand[ok], sess[ok]
        if cand.size == 0:
            return cand
        score = np.abs(memo.dual[jc[cand]])
        order = np.lexsort((score, sess))
        cand, sess, score = cand[order], sess[order], score[order]
        first = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        rank = np.arange(sess.size) - np.repeat(first, np.diff(np.r_[first, sess.size]))
        take = rank < need[sess]
        cand, rank, score = cand[take], rank[take], score[take]
        if cand.size > k:
            cand = cand[np.lexsort((score, rank))[:k]]
        return cand

    def _limit_fingerprint(self, problem: Problem) -> np.ndarray:
        """Per period: the site import room (kW) and every node's current (A) and power (kW)
        limit — what a grid operator or a DR event can lower."""
        T = problem.n_periods
        return np.vstack(
            [
                problem.import_cap_kw[None, :] - problem.base_load_kw + problem.pv_kw,
                problem.node_current_limit.reshape(-1, T),
                problem.node_power_limit_kw,
            ]
        )

    def _limits_cut(self, problem: Problem) -> bool:
        """Did a limit drop in most periods since the last solve (periods matched by their
        start instant, so a non-uniform horizon compares the periods both solves have)?"""
        prev = self._fp_of
        if prev is None:
            return False
        fp, old = self._limit_fingerprint(problem), self._limit_fingerprint(prev)
        if old.shape[0] != fp.shape[0]:
            return False
        t = problem.horizon.start.timestamp() + problem.horizon.period_bounds_s()[:-1]
        old_t = prev.horizon.start.timestamp() + prev.horizon.period_bounds_s()[:-1]
        common, i, j = np.intersect1d(
            np.round(t, 3), np.round(old_t, 3), assume_unique=True, return_indices=True
        )
        if common.size == 0:
            return False
        with np.errstate(invalid="ignore"):
            lower = np.any(fp[:, i] < old[:, j] - 1e-9, axis=0)
        return bool(lower.sum() > 0.5 * common.size)


@dataclass(frozen=True, eq=False)
class BasisMemo:
    """The last optimal basis, by key: keys sorted once (``*_order`` maps back)."""

    col_keys: np.ndarray  #: sorted
    col_order: np.ndarray
    col_keys_raw: np.ndarray  #: in column order
    row_keys: np.ndarray  #: sorted
    row_order: np.ndarray
    col_status: np.ndarray
    row_status: np.ndarray
    x: np.ndarray  #: column values
    dual: np.ndarray  #: reduced costs of the columns

    @classmethod
    def of(
        cls,
        col_keys: np.ndarray,
        row_keys: np.ndarray,
        col_status: np.ndarray,
        row_status: np.ndarray,
        x: np.ndarray,
        dual: np.ndarray,
    ) -> BasisMemo:
        co = np.argsort(col_keys, kind="stable")
        ro = np.argsort(row_keys, kind="stable")
        return cls(col_keys[co], co, col_keys, row_keys[ro], ro, col_status, row_status, x, dual)


#: Key tags (4 bits) of the LP's blocks: current columns, safety rows, and the rest by name
#: with the space their block index lives in ("session", "period" or "const").
_R_TAG = 0
_SAFETY_TAG = 5
COL_KEYS: dict[str, tuple[int, str]] = {
    "imp": (1, "period"),
    "exp": (2, "period"),
    "peak": (3, "const"),
    "z": (4, "const"),
    "u": (10, "session"),
    "sp_up": (11, "period"),
    "sp_down": (12, "period"),
    "xc": (13, "period"),
}
ROW_KEYS: dict[str, tuple[int, str]] = {
    "energy": (6, "session"),
    "balance": (7, "period"),
    "peak": (8, "period"),
    "fairness": (9, "session"),
    "grid_setpoint": (10, "period"),
    "grid_export": (11, "period"),
}

#: Storage blocks (:mod:`loadopt.lp`, "Storage"): columns by (unit, absolute period) — a unit
#: is its V2G session's id or its battery's — and the V2G target slack by session; rows: the
#: export rows like the safety rows, energy states by (unit, absolute period), targets by
#: session. (The binaries ``zx``/``y`` make a MIP: no warm start, no key.)
_STORAGE_COLS = {"bc": 5, "d": 6, "e": 7, "w": 8}
_EXPORT_TAG = 12
_ENERGY_STATE_TAG = 13
_V2G_TARGET_TAG = 14


@dataclass(frozen=True, eq=False)
class Tightening:
    """Bound changes on a built LP (:func:`tightened_bounds`): columns ``cols`` get
    ``[col_lb, col_ub]``, the ``≤`` rows ``rows`` the right-hand sides ``row_ub``, and rows
    ``new_rows · x ≤ new_ub`` are added (``new_rows``: CSR arrays ``(indptr, indices, data)``
    over the LP's columns)."""

    cols: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    rows: np.ndarray
    row_ub: np.ndarray
    new_rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    new_ub: np.ndarray


def tightened_bounds(
    problem: Problem, lp: LinearProgram, floor_a: np.ndarray, ub_a: np.ndarray, h: np.ndarray
) -> Tightening | None:
    """The changes that turn ``lp`` (``build_lp(problem)``, default form) into an LP with the
    feasible set and objective of the LP of ``replace(problem, var_floor_a=floor_a, var_ub=ub_a,
    h=h)``, or None where that cannot be shown.

    :func:`loadopt.lp.build_lp` reduces the LP by the bounds it was built with: a safety row
    holding one variable becomes that variable's bound, a row that cannot bind at the bounds
    (``G · ub ≤ h``) is dropped, rows with equal coefficients are merged under the smallest
    right-hand side, a variable with no room (or whose session wants nothing) is dropped.
    Tightening keeps those reductions valid, so with ``ub_a ≤ var_ub`` and ``h ≤ problem.h``
    (else None): the singleton bounds are recomputed from ``h`` (they only fall); a dropped row
    whose right-hand side did not change still cannot bind (its load at the new bounds is at
    most what it was); a variable the LP dropped must have no room left (else None); a changed
    row the LP kept gets the smaller right-hand side (a merged row: the smallest of its group,
    the others being checked as dropped ones); a changed row the LP dropped or merged away
    that can bind at the new column bounds is added back. The objective does not depend on
    the bounds. Same feasible set, same objective: the optimum of building the tightened LP
    (up to build_lp's own 1e-12 tolerance on dropped rows). Not for storage problems or LPs
    with binaries, nor where a session with a fairness row is left without room (the rebuilt LP
    has no fairness row for it; None).
    """
    V, M = problem.n_vars, problem.G.shape[0]
    if problem.storage is not None or lp.integrality is not None or "r" not in lp.cols:
        return None
    floor_a = np.asarray(floor_a, dtype=np.float64)
    ub_a = np.asarray(ub_a, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    if floor_a.shape != (V,) or ub_a.shape != (V,) or h.shape != (M,):
        return None
    h0 = problem.h
    if np.any(ub_a > problem.var_ub) or np.any(h > h0):  # a loosening: dropped rows may bind
        return None
    G = problem.G
    nnz = np.diff(G.indptr)
    ub_all = ub_a.copy()
    one = np.flatnonzero(nnz == 1)  # singleton rows are bounds, as in build_lp
    if one.size:
        idx = G.indptr[one]
        pos = G.data[idx] > 0
        np.minimum.at(ub_all, G.indices[idx][pos], h[one][pos] / G.data[idx][pos])
    ub_all[problem.session_energy_kwh[problem.var_session] <= 0] = 0.0
    blk = lp.cols["r"]
    cols = blk.index
    in_lp = np.zeros(V, dtype=bool)
    in_lp[cols] = True
    if np.any(ub_all[~in_lp] > 0):  # room where the LP has no column
        return None
    old_lb, old_ub = lp.col_lb[blk.slice], lp.col_ub[blk.slice]
    new_ub = np.minimum(ub_all[cols], old_ub)
    fair = lp.rows.get("fairness")
    if fair is not None:  # build_lp gives a session left without room no fairness row (z free)
        room = np.zeros(problem.n_sessions, dtype=bool)
        room[problem.var_session[cols[new_ub > 0]]] = True
        if not room[fair.index].all():
            return None
    new_lb = np.minimum(floor_a[cols], new_ub)
    ch = np.flatnonzero((new_lb != old_lb) | (new_ub != old_ub))
    rows = np.zeros(0, dtype=np.int64)
    row_ub = np.zeros(0)
    add = np.zeros(0, dtype=np.int64)
    changed = np.flatnonzero(h < h0)
    changed = changed[nnz[changed] > 1]
    if changed.size:
        sb = lp.rows.get("safety")
        g_rows = np.zeros(0, np.int64) if sb is None else sb.index  # ascending, as in G
        k = np.minimum(np.searchsorted(g_rows, changed), max(g_rows.size - 1, 0))
        hit = (g_rows[k] == changed) if g_rows.size else np.zeros(changed.size, dtype=bool)
        rows = (0 if sb is None else sb.start) + k[hit]
        row_ub = np.minimum(lp.row_ub[rows], h[changed[hit]])
        miss = changed[~hit]
        if miss.size:  # dropped or merged away by build_lp: back where it can bind now
            x_ub = np.zeros(V)
            x_ub[cols] = new_ub
            mp, mc, mv = take_rows(G.indptr, G.indices, G.data, miss)
            load = np.bincount(entry_rows(mp), mv * x_ub[mc], minlength=miss.size)
            add = miss[load > h[miss]]
    col_of = np.full(V, -1, dtype=np.int64)
    col_of[cols] = blk.start + np.arange(cols.size)
    ap, ac, av = take_rows(G.indptr, G.indices, G.data, add)
    ap, ac, av = keep_entries(ap, ac, av, col_of[ac] >= 0)  # no column: 0 in both LPs
    return Tightening(
        blk.start + ch, new_lb[ch], new_ub[ch], rows, row_ub, (ap, col_of[ac], av), h[add].copy()
    )


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """Per element, how many equal keys come before it (0 for the first)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    first = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    rank = np.arange(k.size) - np.repeat(first, np.diff(np.r_[first, k.size]))
    out = np.empty_like(rank)
    out[order] = rank
    return out


#: Bit positions in a safety row's key (see :meth:`WarmStart.keys` and :func:`_pack`): the
#: key >> _KIND_SHIFT is (tag 5, row kind); the site phase + 1 sits in 3 bits at _PHASE_SHIFT.
_KIND_SHIFT = 28 + 24
_PHASE_SHIFT = 28
_CURRENT_ROW_TAG = (5 << 7) | 0  # tag 5, ROW_NODE_CURRENT (kind 0)


def _pack(tag: int, a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """One int64 key: ``tag`` (4 bits) | ``a`` (31 bits) | ``b`` (28 bits, offset by 2**27)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return (np.int64(tag) << 59) | ((a & 0x7FFFFFFF) << 28) | ((b + (1 << 27)) & 0xFFFFFFF)


def _lookup(
    order: np.ndarray, sorted_keys: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each key: its index in the previous (unsorted) arrays and whether it was there."""
    if sorted_keys.size == 0:
        return np.zeros(keys.size, np.int64), np.zeros(keys.size, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return order[pos], sorted_keys[pos] == keys
