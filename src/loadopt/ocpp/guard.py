"""The admission test of transition-safe updates: may one more message go out now?

The invariant the adapter keeps (docs/ocpp.md, "The per-instant invariant"): for every node,
site phase, node power row and the site import, at every instant ``t`` of the plan,

    Σ over connectors of what the connector may draw at t under ANY interleaving of the
    messages in flight (:meth:`loadopt.ocpp.belief.Belief.worst_a`) + base load
        ≤ the limit at t,

or, where the stations already hold more than a limit allows (a limit that just dropped, a
station that rebooted), it never grows. A message that lowers what its connector may draw is
therefore always sent at once (counting it as possibly held changes nothing: the old profile is
larger); one that raises it is sent only when counting it as possibly held keeps every row that
it loads within its limit — usually once the decreases it depends on were ``Accepted``.

Limits are those of the last compiled :class:`~loadopt.problem.Problem` (node currents per site
phase and node kW per period, with the base load and PV, grid import and demand-response caps),
held constant after the horizon's last period.

**The export direction** (OCPP 2.1 V2X) is kept the same way, with what connectors may
*discharge* (:meth:`loadopt.ocpp.belief.Belief.worst_discharge_a`) against the export rows
of the compile step (``Problem.storage``: ``−limit ≤ net``): per node and site phase the node's
current limit, per node its kW limit — less the PV output's period maximum where it feeds in,
and with no credit for any charging or base load, which may stop at any instant — and the grid
export limit less that PV (:meth:`SiteLimits.export_excess`).

**Wired sites** (line-to-line EVSEs, delta/wye transformers: :mod:`loadopt.wiring`): a line
carries the phasor sum of its branches (a line-to-line branch loads both lines of its pair, a
transformer's primary lines combinations of its secondary ones), which a per-site-phase sum does
not see. There the node-current rows are replaced by exact line rows, one per node line and
delta/wye primary line with a limit: with each EVSE branch anywhere in ``[0, worst_a]``
charging and ``[0, worst_discharge_a]`` discharging (the opposite phasor), both where a
connector may do either, the base load and the PV output each on or off, the largest magnitude
any instant reaches (:func:`loadopt.wiring.zonotope_max_abs`, the planner's exact check too)
against ``Problem.line_limit``. The plan passes them (its facet rows are an inner approximation
valid for every draw between 0 and the plan), so an increase still goes out once the decreases
it depends on are accepted.
"""

from __future__ import annotations

import numpy as np

from ..compile.lines import evse_branch_line_coef
from ..compile.tree import _site_tree
from ..horizon import sample
from ..problem import Problem
from ..safety import PHASOR_RTOL
from ..signals import split
from ..site import Site
from ..wiring import Zonotope
from .belief import epoch_s

#: Tolerance (A or kW) below which a change does not count.
EPS = 1e-6


def has_phasor_lines(site: Site) -> bool:
    """Whether ``site`` has line-to-line EVSEs or delta/wye transformers: its line currents are
    phasor sums (:mod:`loadopt.wiring`) that per-site-phase rows do not bound."""
    tree = _site_tree(site)
    return bool(tree.line_to_line.any() or (tree.ratio > 0).any())


class SiteLimits:
    """Per-period room for EV load on every row, as arrays, and load of per-line currents.

    Parameters
    ----------
    problem
        The compiled problem of the plan (its limits, base load, reservations, horizon).
    """

    def __init__(self, problem: Problem) -> None:
        p = problem
        site = p.site
        self.start_s = epoch_s(p.horizon.start)
        self.step_s = float(p.horizon.step_s)
        self.n_periods = p.n_periods
        E = len(site.evses)
        has_line = np.arange(3)[None, :] < p.evse_phases.reshape(E, 1)
        self.line_phase = np.where(has_line, p.evse_site_phases.reshape(E, 3), -1).astype(np.int64)
        self.kw_per_a = p.evse_voltage_v.reshape(E) / 1000.0  # per line
        self.anc = np.asarray(p.evse_anc.todense(), dtype=np.float64)  # (E, N)
        base = p.node_carries_base
        cur = p.node_current_limit.astype(np.float64).copy()
        cur[base] -= p.base_load_a[None, None, :]
        self.cur_cap = cur  # (N, 3, T)
        kw = p.node_power_limit_kw.astype(np.float64).copy()
        kw[base] -= p.base_load_kw[None, :]
        self.kw_cap = kw  # (N, T)
        self.imp_cap = p.import_cap_kw - p.base_load_kw + p.pv_kw  # (T,)
        # export direction: as the compile step's export rows (Problem.storage), also when the
        # plan discharges nothing (a station may still hold an old setpoint)
        if p.storage is not None:
            pv_max, exp_cap = p.storage.pv_max_kw, p.storage.export_cap_kw
        else:
            sig = p.signals
            pv_max = sample(*split(sig.pv_kw), p.horizon, "max")
            exp_cap = sample(*split(sig.grid_export_limit_kw), p.horizon, "min")
        pv_max = np.nan_to_num(np.asarray(pv_max, dtype=np.float64), posinf=0.0)
        pv_a = pv_max * 1000.0 / (3.0 * site.voltage_v)
        xcur = p.node_current_limit.astype(np.float64).copy()
        xcur[base] -= pv_a[None, None, :]
        self.xcur_cap = xcur  # (N, 3, T)
        xkw = p.node_power_limit_kw.astype(np.float64).copy()
        xkw[base] -= pv_max[None, :]
        self.xkw_cap = xkw  # (N, T)
        self.exp_cap = np.asarray(exp_cap, dtype=np.float64) - pv_max  # (T,)
        # period boundaries (epoch s): uniform or not (a tiered horizon)
        self._bounds = self.start_s + p.horizon.period_bounds_s()
        self.end_s = float(self._bounds[-1])
        self.n_line_rows = 6 * len(site.nodes)
        #: line-to-line EVSEs or delta/wye transformers: exact line rows replace the node
        #: current rows (module docstring)
        self.wired = has_phasor_lines(site)
        if self.wired:
            B = evse_branch_line_coef(site).tocsc()  # (3E, 6N) complex per branch A
            limited = np.isfinite(p.line_limit).any(axis=1) & (np.diff(B.indptr) > 0)
            self.line_groups = np.flatnonzero(limited)  # (G,) line groups checked
            self._g_branch = [B.indices[B.indptr[g] : B.indptr[g + 1]] for g in self.line_groups]
            self._g_coef = [B.data[B.indptr[g] : B.indptr[g + 1]] for g in self.line_groups]
            self._g_base = p.line_base[self.line_groups]  # per A of balanced base load
            # each group's directions (its branches twice: charge, discharge; base load, PV)
            # are fixed: the zonotope is prepared once, an admission test only evaluates it
            self._g_zono = [
                Zonotope(np.concatenate([c, c, np.full(2, b)]))
                for c, b in zip(self._g_coef, self._g_base, strict=True)
            ]
            self._line_limit = p.line_limit[self.line_groups].astype(np.float64)  # (G, T)
            self._base_a = np.asarray(p.base_load_a, dtype=np.float64)  # (T,)
            self._pv_a = pv_a  # (T,) feeding in where the base load is
            loads = np.zeros((E, self.line_groups.size), dtype=bool)
            for i, br in enumerate(self._g_branch):
                loads[np.unique(br // 3), i] = True
            self._evse_groups = [np.flatnonzero(row) for row in loads]  # per EVSE
        else:
            self.line_groups = np.zeros(0, np.int64)

    def period_bounds_s(self) -> np.ndarray:
        """The plan's period boundaries.

        Returns
        -------
        numpy.ndarray
            ``(T + 1,)`` epoch s.
        """
        return self._bounds

    def _period(self, times_s: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self._bounds, times_s, side="right") - 1
        return np.clip(k, 0, self.n_periods - 1).astype(np.int64)

    def loads(self, worst_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Loads of per-line currents on every row.

        Parameters
        ----------
        worst_a
            ``(n, E, 3)`` A per EVSE line.

        Returns
        -------
        tuple of numpy.ndarray
            Node current ``(n, N, 3)`` A, node power ``(n, N)`` kW, EV import ``(n,)`` kW.
        """
        n = worst_a.shape[0]
        N = self.anc.shape[1]
        w = np.where(np.isfinite(worst_a), worst_a, 1e9)
        cur = np.zeros((n, N, 3))
        for ph in range(3):
            on = (self.line_phase == ph).astype(np.float64)  # (E, 3)
            cur[:, :, ph] = (w * on[None]).sum(axis=2) @ self.anc
        kw_e = w.sum(axis=2) * self.kw_per_a[None, :]  # (n, E)
        return cur, kw_e @ self.anc, kw_e.sum(axis=1)

    def excess(
        self, worst_a: np.ndarray, times_s: np.ndarray, discharge_a: np.ndarray | None = None
    ) -> np.ndarray:
        """Load minus room per row.

        Parameters
        ----------
        worst_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).
        discharge_a
            ``(n, E, 3)`` A per EVSE line that may be discharged at the same time (OCPP 2.1
            V2X; only the exact line rows of a wired site see both directions at once);
            ``None``: none.

        Returns
        -------
        numpy.ndarray
            ``(n, R)`` (``R = 3N + N + 1 + 6N``: node current per site phase, node kW, site
            import, then the exact line rows of a wired site, groups as in
            :mod:`loadopt.problem`; A or kW); > 0 means over the limit, ``-inf`` a row that is
            not checked (on a wired site the node current rows, which its line rows replace).
        """
        k = self._period(np.asarray(times_s, dtype=np.float64))
        flat = self._flat(worst_a, k, self.cur_cap, self.kw_cap, self.imp_cap)
        return np.concatenate([flat, self.line_excess(worst_a, discharge_a, times_s)], axis=1)

    def export_excess(
        self, discharge_a: np.ndarray, times_s: np.ndarray, charge_a: np.ndarray | None = None
    ) -> np.ndarray:
        """Discharge minus room per export row (node current per site phase, node kW, grid export,
        then the exact line rows of a wired site, as in :meth:`excess`).

        Parameters
        ----------
        discharge_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).
        charge_a
            ``(n, E, 3)`` A per EVSE line that may be drawn at the same time (for the exact
            line rows); ``None``: none.

        Returns
        -------
        numpy.ndarray
            ``(n, R)`` (``R = 3N + N + 1 + 6N``; A or kW); > 0 means over the limit.
        """
        k = self._period(np.asarray(times_s, dtype=np.float64))
        flat = self._flat(discharge_a, k, self.xcur_cap, self.xkw_cap, self.exp_cap)
        if charge_a is None:
            charge_a = np.zeros_like(discharge_a)
        return np.concatenate([flat, self.line_excess(charge_a, discharge_a, times_s)], axis=1)

    def _flat(
        self, a: np.ndarray, k: np.ndarray, cur_cap: np.ndarray, kw_cap: np.ndarray, cap: np.ndarray
    ) -> np.ndarray:
        """``(n, 3N + N + 1)`` load minus room of the per-site-phase, node kW and site rows."""
        cur, kw, imp = self.loads(a)
        with np.errstate(invalid="ignore"):
            c = cur - np.moveaxis(cur_cap[:, :, k], 2, 0)
            p = kw - kw_cap[:, k].T
            i = imp - cap[k]
        if self.wired:  # a per-site-phase sum is not a line current there: the line rows are
            c[:] = -np.inf
        out = np.concatenate([c.reshape(len(k), -1), p, i[:, None]], axis=1)
        return np.where(np.isnan(out), -np.inf, out)

    def line_excess(
        self, charge_a: np.ndarray, discharge_a: np.ndarray | None, times_s: np.ndarray
    ) -> np.ndarray:
        """Exact line rows of a wired site: the largest line magnitude any instant reaches minus
        the line's limit (A), per node line and delta/wye primary line.

        Every EVSE branch draws anything in ``[0, charge_a]`` or discharges anything in
        ``[0, discharge_a]`` (the opposite phasor), the base load (period maximum) and the PV
        output (period maximum, feeding in) are each on or off
        (:class:`loadopt.wiring.Zonotope`, prepared once per group).

        Parameters
        ----------
        charge_a
            ``(n, E, 3)`` A per EVSE line.
        discharge_a
            ``(n, E, 3)`` A per EVSE line, or ``None``: none.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 6N)`` A, > 0 over the limit; ``-inf`` for groups not checked (no limit, no
            EVSE on the line, or not a wired site).
        """
        n = np.asarray(charge_a).shape[0]
        out = np.full((n, self.n_line_rows), -np.inf)
        if not self.wired or not self.line_groups.size:
            return out
        k = self._period(np.asarray(times_s, dtype=np.float64))
        gs = np.arange(self.line_groups.size)
        out[:, self.line_groups] = self._line_mag(charge_a, discharge_a, k, gs) - self._lim(k, gs)
        return out

    def _lim(self, k: np.ndarray, gs: np.ndarray) -> np.ndarray:
        """``(n, g)`` limits (A) of the checked groups ``gs`` in periods ``k``."""
        return self._line_limit[gs][:, k].T

    def _line_mag(
        self, charge_a: np.ndarray, discharge_a: np.ndarray | None, k: np.ndarray, gs: np.ndarray
    ) -> np.ndarray:
        """``(n, g)`` A: the largest magnitude of the checked groups ``gs`` over the box."""
        n = k.size
        w = np.asarray(charge_a, dtype=np.float64).reshape(n, -1)
        w = np.where(np.isfinite(w), w, 1e9)
        if discharge_a is None:
            d = np.zeros_like(w)
        else:
            d = np.asarray(discharge_a, dtype=np.float64).reshape(n, -1)
            d = np.where(np.isfinite(d), d, 1e9)
        fixed = np.vstack([self._base_a[k], -self._pv_a[k]])  # (2, n) along the base phasor
        out = np.zeros((n, gs.size))
        for col, i in enumerate(gs):
            br = self._g_branch[i]
            amount = np.vstack([w[:, br].T, -d[:, br].T, fixed])
            out[:, col] = self._g_zono[i].max_abs(amount)
        return out

    def _lines_ok(
        self, k: int, after_a: np.ndarray, after_d: np.ndarray | None, times_s: np.ndarray
    ) -> bool:
        """Every exact line row EVSE ``k`` loads is within its limit over the box ``after``, or
        (already over) no higher than with EVSE ``k`` drawing nothing — hence than before."""
        if not self.wired:
            return True
        gs = self._evse_groups[k]
        if not gs.size:
            return True
        kp = self._period(np.asarray(times_s, dtype=np.float64))
        lim = self._lim(kp, gs)
        tol = EPS + PHASOR_RTOL * np.where(np.isfinite(lim), lim, 0.0)
        mag = self._line_mag(after_a, after_d, kp, gs)
        over = mag > lim + tol
        if not over.any():
            return True
        a0 = np.array(after_a, dtype=np.float64)
        a0[:, k] = 0.0
        d0 = None
        if after_d is not None:
            d0 = np.array(after_d, dtype=np.float64)
            d0[:, k] = 0.0
        mag0 = self._line_mag(a0, d0, kp, gs)
        return not bool(np.any(over & (mag > mag0 + tol)))

    def within_for(
        self,
        k: int,
        after_a: np.ndarray,
        times_s: np.ndarray,
        after_discharge_a: np.ndarray | None = None,
        *,
        held_discharge_a: np.ndarray | None = None,
    ) -> bool:
        """Whether every row EVSE ``k`` loads stays within its limit at every sampled instant (and,
        with ``after_discharge_a``, every export row it loads).

        On a wired site every exact line row ``k`` loads must be within its limit with both
        directions at once, or, where it is already over (a limit that dropped, the PV output
        alone), no higher than with ``k`` drawing nothing.

        Parameters
        ----------
        k
            EVSE index.
        after_a
            ``(n, E, 3)`` A per EVSE line (charging).
        times_s
            ``(n,)`` instants (epoch s).
        after_discharge_a
            ``(n, E, 3)`` A per EVSE line discharging (OCPP 2.1 V2X) when ``k`` may discharge
            more; ``None``: not (its export rows are not checked).
        held_discharge_a
            ``(n, E, 3)`` A per EVSE line that may be discharged (the exact line rows see it
            beside the charging); ``None``: ``after_discharge_a``, else none.

        Returns
        -------
        bool
        """
        kp = self._period(np.asarray(times_s, dtype=np.float64))
        if not self._rows_ok(k, self._flat(after_a, kp, self.cur_cap, self.kw_cap, self.imp_cap)):
            return False
        d = after_discharge_a if after_discharge_a is not None else held_discharge_a
        if after_discharge_a is not None and after_discharge_a[:, k].any():
            x = self._flat(after_discharge_a, kp, self.xcur_cap, self.xkw_cap, self.exp_cap)
            if not self._rows_ok(k, x):
                return False
        return self._lines_ok(k, after_a, d, times_s)

    def _rows_ok(self, k: int, x: np.ndarray) -> bool:
        """The per-site-phase, node kW and site rows of EVSE ``k`` in ``x`` (``(n, 3N + N + 1)``)
        are within their limits."""
        N = self.anc.shape[1]
        on = self.anc[k] > 0  # (N,) nodes above EVSE k
        phases = np.zeros(3, dtype=bool)
        phases[self.line_phase[k][self.line_phase[k] >= 0]] = True
        rows = np.concatenate([(on[:, None] & phases[None, :]).reshape(-1), on, [True]])
        assert rows.size == N * 3 + N + 1
        return not bool(np.any(x[:, rows] > EPS))

    def admissible(
        self,
        before_a: np.ndarray,
        after_a: np.ndarray,
        times_s: np.ndarray,
        before_discharge_a: np.ndarray | None = None,
        after_discharge_a: np.ndarray | None = None,
    ) -> bool:
        """Whether going from ``before_a`` to ``after_a`` puts no row over its limit at any sampled
        instant, and raises no row that is already over (import rows; with discharge boxes also
        the export rows; on a wired site the exact line rows with both directions at once).

        Parameters
        ----------
        before_a, after_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).
        before_discharge_a, after_discharge_a
            ``(n, E, 3)`` A per EVSE line discharging (OCPP 2.1 V2X); ``None``: none.

        Returns
        -------
        bool
        """
        xb = self.excess(before_a, times_s, before_discharge_a)
        xa = self.excess(after_a, times_s, after_discharge_a)
        if before_discharge_a is not None or after_discharge_a is not None:
            k = self._period(np.asarray(times_s, dtype=np.float64))
            caps = (self.xcur_cap, self.xkw_cap, self.exp_cap)
            zero = np.zeros_like(np.asarray(after_a, dtype=np.float64))
            db = zero if before_discharge_a is None else before_discharge_a
            da = zero if after_discharge_a is None else after_discharge_a
            xb = np.concatenate([xb, self._flat(db, k, *caps)], axis=1)
            xa = np.concatenate([xa, self._flat(da, k, *caps)], axis=1)
        return not bool(np.any((xa > EPS) & (xa > xb + EPS)))


__all__ = ["EPS", "SiteLimits"]
