"""The safety-row builder (``G r <= h`` as COO triplets with row labels) and the helpers that
stack battery charge columns under the EV columns of a row family.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp


def _with_batteries(
    ev: sp.csr_matrix, bat_var: sp.csr_matrix, per_battery: Callable[[], sp.csr_matrix]
) -> sp.coo_matrix:
    """The (V + Vb, groups) coefficients of a row family: the EV columns ``ev`` above the battery
    charge columns ``bat_var @ per_battery()`` (nothing to stack on a site without batteries)."""
    if bat_var.shape[0] == 0:
        return ev.tocoo()
    return sp.vstack([ev, bat_var @ per_battery()]).tocoo()


def _on_all_phases(anc: sp.csr_matrix) -> sp.csr_matrix:
    """(K, N) ancestors -> (K, 3N) with column ``3n + p`` for every phase ``p``."""
    a = anc.tocoo()
    rr = np.repeat(a.row, 3)
    cc = (a.col[:, None] * 3 + np.arange(3)[None, :]).ravel()
    return sp.csr_matrix((np.ones(rr.size), (rr, cc)), shape=(anc.shape[0], 3 * anc.shape[1]))


class _RowBuilder:
    """Collects safety rows ``Σ_v coef · r_v ≤ rhs`` as COO triplets and labels, then one CSR."""

    def __init__(self, n_vars: int, n_periods: int) -> None:
        self.V, self.T = n_vars, n_periods
        self.n = 0
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.labels: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        var_group: sp.coo_matrix,
        var_period: np.ndarray,
        rhs_flat: np.ndarray,
        kind,
        node_of=None,
        phase_of=None,
        facet_of=None,
    ) -> None:
        """Add a row for every (group, period) with a finite limit.

        ``var_group`` is a (V, n_groups) incidence/coefficient matrix; variable ``v`` sits in the
        row of group ``g`` and its own period, ``rhs_flat[g * T + var_period[v]]``. A label
        function left ``None`` labels every row ``-1`` (site-wide / all phases / no facet).
        """
        T = self.T
        ids = var_group.col.astype(np.int64) * T + var_period[var_group.row]
        finite = np.isfinite(rhs_flat[ids])
        ids, cols, vals = ids[finite], var_group.row[finite], var_group.data[finite]
        if ids.size == 0:
            return
        # the row ids are dense integers below rhs_flat.size: number them without sorting
        present = np.zeros(rhs_flat.size, dtype=bool)
        present[ids] = True
        uniq = np.flatnonzero(present)
        self.r.append((np.cumsum(present) - 1)[ids] + self.n)
        self.c.append(cols)
        self.v.append(vals)
        group = uniq // T
        kinds = kind(group) if callable(kind) else np.full(uniq.size, kind)

        def label(of):
            return np.full(uniq.size, -1) if of is None else of(group)

        self.labels.append(
            (rhs_flat[uniq], kinds, label(node_of), label(phase_of), uniq % T, label(facet_of))
        )
        self.n += uniq.size

    def build(self):
        """``(G, h, row_kind, row_node, row_phase, row_period, row_facet)``."""
        if not self.labels:
            z = np.zeros(0)
            return (
                sp.csr_matrix((0, self.V)),
                z,
                z.astype(np.int8),
                z.astype(np.int32),
                z.astype(np.int8),
                z.astype(np.int32),
                z.astype(np.int8),
            )
        G = sp.csr_matrix(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n, self.V),
        )
        h, kind, node, phase, period, facet = (
            np.concatenate(x) for x in zip(*self.labels, strict=True)
        )
        return (
            G,
            h,
            kind.astype(np.int8),
            node.astype(np.int32),
            phase.astype(np.int8),
            period.astype(np.int32),
            facet.astype(np.int8),
        )
