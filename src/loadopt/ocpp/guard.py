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
"""

from __future__ import annotations

import numpy as np

from ..horizon import sample
from ..problem import Problem
from ..signals import split
from .belief import epoch_s

#: Tolerance (A or kW) below which a change does not count.
EPS = 1e-6


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
        self.line_phase = np.full((E, 3), -1, dtype=np.int64)
        for k, e in enumerate(site.evses):
            self.line_phase[k, : e.phases] = e.site_phases[: e.phases]
        self.kw_per_a = np.array([e.voltage_v / 1000.0 for e in site.evses])  # per line
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

    def excess(self, worst_a: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """Load minus room per row.

        Parameters
        ----------
        worst_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, R)`` (``R = 3N + N + 1``; A or kW); > 0 means over the limit.
        """
        k = self._period(np.asarray(times_s, dtype=np.float64))
        cur, kw, imp = self.loads(worst_a)
        with np.errstate(invalid="ignore"):
            c = cur - np.moveaxis(self.cur_cap[:, :, k], 2, 0)
            p = kw - self.kw_cap[:, k].T
            i = imp - self.imp_cap[k]
        out = np.concatenate([c.reshape(len(k), -1), p, i[:, None]], axis=1)
        return np.where(np.isnan(out), -np.inf, out)

    def export_excess(self, discharge_a: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """Discharge minus room per export row (node current per site phase, node kW, grid export).

        Parameters
        ----------
        discharge_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, R)`` (``R = 3N + N + 1``; A or kW); > 0 means over the limit.
        """
        k = self._period(np.asarray(times_s, dtype=np.float64))
        cur, kw, exp = self.loads(discharge_a)
        with np.errstate(invalid="ignore"):
            c = cur - np.moveaxis(self.xcur_cap[:, :, k], 2, 0)
            p = kw - self.xkw_cap[:, k].T
            i = exp - self.exp_cap[k]
        out = np.concatenate([c.reshape(len(k), -1), p, i[:, None]], axis=1)
        return np.where(np.isnan(out), -np.inf, out)

    def within_for(
        self,
        k: int,
        after_a: np.ndarray,
        times_s: np.ndarray,
        after_discharge_a: np.ndarray | None = None,
    ) -> bool:
        """Whether every row EVSE ``k`` loads stays within its limit at every sampled instant (and,
        with ``after_discharge_a``, every export row it loads).

        Parameters
        ----------
        k
            EVSE index.
        after_a
            ``(n, E, 3)`` A per EVSE line (charging).
        times_s
            ``(n,)`` instants (epoch s).
        after_discharge_a
            ``(n, E, 3)`` A per EVSE line discharging (OCPP 2.1 V2X); ``None``: none.

        Returns
        -------
        bool
        """
        if not self._rows_ok(k, self.excess(after_a, times_s)):
            return False
        if after_discharge_a is None or not after_discharge_a[:, k].any():
            return True
        return self._rows_ok(k, self.export_excess(after_discharge_a, times_s))

    def _rows_ok(self, k: int, x: np.ndarray) -> bool:
        N = self.anc.shape[1]
        on = self.anc[k] > 0  # (N,) nodes above EVSE k
        phases = np.zeros(3, dtype=bool)
        phases[self.line_phase[k][self.line_phase[k] >= 0]] = True
        rows = np.concatenate([(on[:, None] & phases[None, :]).reshape(-1), on, [True]])
        assert rows.size == N * 3 + N + 1
        return not bool(np.any(x[:, rows] > EPS))

    def admissible(self, before_a: np.ndarray, after_a: np.ndarray, times_s: np.ndarray) -> bool:
        """Whether going from ``before_a`` to ``after_a`` puts no row over its limit at any sampled
        instant, and raises no row that is already over.

        Parameters
        ----------
        before_a, after_a
            ``(n, E, 3)`` A per EVSE line.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        bool
        """
        xb = self.excess(before_a, times_s)
        xa = self.excess(after_a, times_s)
        return not bool(np.any((xa > EPS) & (xa > xb + EPS)))


__all__ = ["EPS", "SiteLimits"]
