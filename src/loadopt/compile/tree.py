"""The per-site static part of a compile: the site's tree (parents, EVSE ancestors) and its
per-EVSE arrays, built once per ``site.nodes``/``site.evses`` tuple and kept beside the site (a
controller compiles every step on the same site), plus the tree walks the compiler shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._csr import csr, take_rows
from ..site import Site


def _carries(parent: np.ndarray, k: int) -> np.ndarray:
    """Node ``k`` and every node above it (where a load hung at ``k`` flows)."""
    out = np.zeros(parent.size, dtype=bool)
    while k >= 0:
        out[k] = True
        k = int(parent[k])
    return out


def _ancestors(nodes: np.ndarray, parent: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """(K, N) 1 where node ``n`` is ``nodes[k]`` or above it."""
    r, c = [], []
    cur, alive = nodes.copy(), np.arange(nodes.size)
    while alive.size:
        r.append(alive)
        c.append(cur)
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur = alive[keep], nxt[keep]
    rr = np.concatenate(r) if r else np.zeros(0, np.int64)
    cc = np.concatenate(c) if c else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(rr.size), (rr, cc)), shape=(nodes.size, n_nodes))


def snap_levels_da(allowed_a: tuple[float, ...]) -> np.ndarray:
    """The one snapping rule for discrete pilot steps (``Evse.allowed_currents``): each level
    rounded *down* to the 0.1 A grid an OCPP limit is emitted on (never up: a rounded-up step
    could exceed a limit), sorted, duplicates merged, and 0 added (a pause is always allowed,
    IEC 61851-1).

    Parameters
    ----------
    allowed_a
        Allowed currents (A).

    Returns
    -------
    numpy.ndarray
        Levels in deci-amps, sorted, 0 first.
    """
    from ..safety import GRID_SNAP

    lv = np.floor(np.asarray(allowed_a, dtype=np.float64) * 10.0 + GRID_SNAP)
    return np.unique(np.r_[0.0, lv])


@dataclass(frozen=True, eq=False)
class _SiteTree:
    """What ``compile_problem`` needs of a site's tree and EVSEs that no session, time or signal
    changes (built once per ``site.nodes``/``site.evses`` pair, :func:`_site_tree`)."""

    nodes: tuple  #: the ``site.nodes`` it was built from (identity: the cache key)
    evses: tuple  #: the ``site.evses`` it was built from
    node_ids: tuple[str, ...]
    node_index: dict[str, int]
    parent: np.ndarray  #: (N,) parent node, -1 at the root
    root: int
    evse_ids: tuple[str, ...]
    evse_index: dict[str, int]
    evse_node: np.ndarray  #: (E,)
    anc: sp.csr_matrix  #: (E, N) 1 where the node is the EVSE's or above it
    anc_t: sp.csr_matrix  #: (N, E)
    has_line: np.ndarray  #: (E, 3) bool, the EVSE has line L1/L2/L3
    line_to_line: np.ndarray  #: (E,) bool, the EVSE is wired line-to-line
    evse_arrays: dict[str, np.ndarray]  #: :func:`evse_arrays`, read-only
    ratio: np.ndarray  #: (N,) delta/wye turns ratio, 0 = none
    memo: dict = field(default_factory=dict)  #: more per-site arrays, built when first needed


def _site_tree(site: Site) -> _SiteTree:
    """The site's :class:`_SiteTree`, kept beside the site (a controller compiles every step on
    the same site) and rebuilt when the ``nodes`` or ``evses`` tuple it was built from is not
    the site's (a ``model_copy`` with new nodes or EVSEs). Arrays are read-only."""
    cached = site.__dict__.get("_site_tree")
    if isinstance(cached, _SiteTree) and cached.nodes is site.nodes and cached.evses is site.evses:
        return cached
    node_ids = tuple(n.id for n in site.nodes)
    node_index = {nid: k for k, nid in enumerate(node_ids)}
    N = len(node_ids)
    parent = np.array([-1 if n.parent is None else node_index[n.parent] for n in site.nodes])
    evse_ids = tuple(e.id for e in site.evses)
    E = len(evse_ids)
    evse_node = np.array([node_index[e.node] for e in site.evses], dtype=np.int64)
    # ancestors of every EVSE (its node and everything up to the root), walked by depth
    anc_rows, anc_cols = [], []
    cur = evse_node.copy()
    alive = np.arange(E)
    while alive.size:
        anc_rows.append(alive)
        anc_cols.append(cur)
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur = alive[keep], nxt[keep]
    anc = sp.csr_matrix(
        (
            np.ones(sum(a.size for a in anc_rows)),
            (
                np.concatenate(anc_rows) if anc_rows else np.zeros(0, np.int64),
                np.concatenate(anc_cols) if anc_cols else np.zeros(0, np.int64),
            ),
        ),
        shape=(E, N),
    )
    arrays = _site_evse_arrays(site)
    ratio = np.array([0.0 if n.delta_wye is None else n.delta_wye.turns_ratio for n in site.nodes])
    tree = _SiteTree(
        nodes=site.nodes,
        evses=site.evses,
        node_ids=node_ids,
        node_index=node_index,
        parent=parent,
        root=int(np.flatnonzero(parent < 0)[0]),
        evse_ids=evse_ids,
        evse_index={eid: k for k, eid in enumerate(evse_ids)},
        evse_node=evse_node,
        anc=anc,
        anc_t=anc.T.tocsr(),
        has_line=np.arange(3)[None, :] < arrays["evse_phases"].reshape(E, 1),
        line_to_line=np.array([e.wiring == "line_to_line" for e in site.evses], dtype=bool),
        evse_arrays=arrays,
        ratio=ratio,
    )
    for a in (parent, evse_node, tree.has_line, tree.line_to_line, ratio):
        a.setflags(write=False)
    # an object compared by identity: pydantic's ``Site ==`` first compares ``__dict__`` and,
    # when that differs, only the fields
    site.__dict__["_site_tree"] = tree
    return tree


def _session_anc(tree: _SiteTree, s_evse: np.ndarray) -> sp.csr_matrix:
    """(S, N) 1 where a node is above the session's EVSE (the last one kept in the tree's memo:
    the same vehicles are plugged in from one step to the next). Read-only."""
    key = s_evse.tobytes()
    got = tree.memo.get("s_anc")
    if got is None or got[0] != key:
        a = tree.anc
        m = csr(*take_rows(a.indptr, a.indices, a.data, s_evse), (s_evse.size, a.shape[1]))
        for a in (m.data, m.indices, m.indptr):
            a.setflags(write=False)
        got = (key, m)
        tree.memo["s_anc"] = got
    return got[1]


def _site_evse_arrays(site: Site) -> dict[str, np.ndarray]:
    """:func:`evse_arrays`, built once per ``site.evses`` tuple (a controller compiles every
    step on the same site): kept beside the site, read-only, rebuilt when the tuple it was built
    from is not the site's (a ``model_copy`` with new EVSEs)."""
    cached = site.__dict__.get("_evse_arrays")
    if not isinstance(cached, _EvseArrays) or cached.evses is not site.evses:
        arrays = evse_arrays(site)
        for a in arrays.values():
            a.setflags(write=False)
        cached = _EvseArrays(site.evses, arrays)
        site.__dict__["_evse_arrays"] = cached  # compared by identity (see _site_tree)
    return dict(cached.arrays)


@dataclass(frozen=True, eq=False)
class _EvseArrays:
    evses: tuple  #: the ``site.evses`` the arrays were built from
    arrays: dict[str, np.ndarray]


def evse_arrays(site: Site) -> dict[str, np.ndarray]:
    """Per-EVSE arrays of the :class:`~loadopt.problem.Problem` (``E`` EVSEs, order of
    ``site.evses``).

    Parameters
    ----------
    site
        The site.

    Returns
    -------
    dict of str to numpy.ndarray
        ``evse_phases`` (E,), ``evse_site_phases`` (E, 3) site phase of each EVSE line (OCPP
        phase rotation), ``evse_voltage_v`` (E,) V, ``evse_phase_switching`` (E,),
        ``evse_max_current`` / ``evse_min_current`` (E,) A, ``evse_has_levels`` (E,), and the
        discrete levels as CSR: ``evse_levels_ptr`` (E+1,), ``evse_levels_da`` (K,) deci-amps
        (an EVSE without ``allowed_currents`` has none).
    """
    ev = site.evses
    E = len(ev)
    levels = [
        snap_levels_da(e.allowed_currents) if e.allowed_currents is not None else np.zeros(0)
        for e in ev
    ]
    return dict(
        evse_phases=np.array([e.phases for e in ev], dtype=np.int64).reshape(E),
        evse_site_phases=np.array([e.site_phases for e in ev], dtype=np.int64).reshape(E, 3),
        evse_voltage_v=np.array([e.voltage_v for e in ev], dtype=np.float64).reshape(E),
        evse_phase_switching=np.array([e.phase_switching for e in ev], dtype=bool).reshape(E),
        evse_max_current=np.array([e.max_current for e in ev], dtype=np.float64).reshape(E),
        evse_min_current=np.array([e.min_current for e in ev], dtype=np.float64).reshape(E),
        evse_has_levels=np.array([e.allowed_currents is not None for e in ev], dtype=bool).reshape(
            E
        ),
        evse_levels_ptr=np.r_[0, np.cumsum([lv.size for lv in levels])].astype(np.int64),
        evse_levels_da=(np.concatenate(levels) if levels else np.zeros(0)).astype(np.float64),
    )
