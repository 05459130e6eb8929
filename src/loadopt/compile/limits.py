"""The limits of one compile on the horizon and what is left of them for the vehicles: node
ratings after the grid signals' caps, the site signals, the fixed loads (base load, reserved EVSE
draw) and the right-hand sides of the safety rows before the vehicles' line shape scales them.

None of it depends on the sessions. While the inputs it comes from are the same objects and do
not move with time — the same site and signals objects, no node limit series, no site signal
series, no grid signal, no reserved draw — it is the same on every step of a controller, on any
horizon of as many periods (constant values do not care where a period starts or how long it
is): it is built once and kept (:func:`_step_limits`, read-only arrays) and a step pays only for
what its sessions change. Anything else is built fresh on every call, by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..grid.arrays import SignalArrays, _no_signal_arrays
from ..horizon import Horizon
from ..signals import Signals
from ..site import Site
from .lines import _base_phasors
from .series import _node_limits, _sample_signals
from .tree import _carries, _SiteTree


@dataclass(frozen=True, eq=False)
class _Raw:
    """Node ratings and site signals sampled on the horizon, before any grid signal."""

    node_cur: np.ndarray  #: (N, 3, T) A
    node_kw: np.ndarray  #: (N, T) kW
    base_kw: np.ndarray  #: (T,) base load, the period maximum
    pv_kw: np.ndarray  #: (T,) PV output, the period minimum
    price: np.ndarray  #: (T,) import price
    export_price: np.ndarray | None  #: (T,) export price
    grid_kw: np.ndarray  #: (T,) grid import limit
    base_a: np.ndarray  #: (T,) base load per phase (A)
    timeless: bool  #: no series anywhere: the same on every horizon of this shape


@dataclass(frozen=True, eq=False)
class _StepLimits:
    """A compile's limits and fixed loads on the horizon (see the module docstring); every
    array read-only, shared between calls when :attr:`kept`."""

    site: Site  #: the objects it was built from (identity: the cache key)
    signals: Signals
    sig: SignalArrays  #: the grid signals on the horizon (none: :func:`_no_signal_arrays`)
    node_cur: np.ndarray  #: (N, 3, T) A, ratings under the signals' current caps
    node_kw: np.ndarray  #: (N, T) kW, ratings under the signals' caps (not the root's)
    import_cap: np.ndarray  #: (T,) kW, grid limit and the root's signal caps
    price: np.ndarray  #: (T,) import price with the signals' adders
    export_price: np.ndarray | None  #: (T,)
    base_kw: np.ndarray  #: (T,)
    pv_kw: np.ndarray  #: (T,)
    grid_kw: np.ndarray  #: (T,) the grid import limit alone
    base_a: np.ndarray  #: (T,)
    has_base: bool  #: some period has a base load
    k_base: int  #: node the base load hangs from
    carries: np.ndarray  #: (N,) bool, the base load flows through the node
    res_site: np.ndarray  #: (E, 3, T) A, reserved draw per EVSE and site phase
    node_res_kw: np.ndarray  #: (N, T) kW reserved under each node
    site_res_kw: np.ndarray  #: (T,) kW reserved at the grid connection
    line_limit: np.ndarray  #: (6N, T) A, line groups (node lines, then delta/wye primaries)
    line_base_mag: np.ndarray  #: (6N, T) A, the base load's line current magnitudes
    line_reserved: np.ndarray  #: (6N, T) A, the reserved draw's line magnitudes
    cur_rhs: np.ndarray  #: (N, 3, T) A, left of the node currents for the vehicles
    kw_rhs: np.ndarray  #: (N, T) kW, left of the node powers
    import_rhs: np.ndarray  #: (T,) kW, left of the grid import
    #: some fixed load alone breaks a limit (or some node carries reserved draw): notices to
    #: write (their text names the horizon's periods, so it is written per call)
    noticed: bool
    kept: bool  #: shared between calls (read-only arrays)


def _raw_limits(site: Site, tree: _SiteTree, signals: Signals, horizon: Horizon) -> _Raw:
    """Node ratings and site signals on the horizon (:mod:`loadopt.compile.series`)."""
    node_cur, node_kw = _node_limits(site, horizon, tree)  # (its memo: read below)
    s = _sample_signals(signals, horizon, site)
    series = (
        signals.base_load_kw,
        signals.pv_kw,
        signals.import_price,
        signals.export_price,
        signals.grid_import_limit_kw,
    )
    timeless = not tree.memo["node_limits"][2] and not any(
        isinstance(v, tuple) and v for v in series
    )
    return _Raw(node_cur, node_kw, *s, timeless)


def _limits(
    site: Site,
    tree: _SiteTree,
    signals: Signals,
    raw: _Raw,
    sig: SignalArrays,
    res: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    lines_reserved: np.ndarray | None,
    kept: bool = False,
) -> _StepLimits:
    """:class:`_StepLimits` of the raw limits, the grid signals ``sig`` and the reserved draw
    ``res`` (``(res_site (E, 3, T), node_res_kw (N, T), site_res_kw (T,))``, its line magnitudes
    ``lines_reserved`` (6N, T); None: no reserved draw)."""
    parent, root, N = tree.parent, tree.root, len(tree.node_ids)
    T = raw.base_kw.size
    # the grid signals' caps: on the node powers and currents, the root's on the net import
    root_cap = sig.node_cap_kw[root].copy()
    sig_node_cap = sig.node_cap_kw.copy()
    sig_node_cap[root] = np.inf  # the root's signal caps bound the net import, not the node kW
    node_kw = np.minimum(raw.node_kw, sig_node_cap)
    node_cur = np.minimum(raw.node_cur, sig.node_cap_a[:, None, :])
    import_cap = np.minimum(raw.grid_kw, root_cap)
    price = raw.price + sig.import_adder
    export_price = raw.export_price
    if np.any(sig.export_adder != 0):
        export_price = (0.0 if export_price is None else export_price) + sig.export_adder
    # the base load sits under site.base_load_node (default: the root) and loads its whole path
    k_base = root if site.base_load_node is None else tree.node_index[site.base_load_node]
    carries = _carries(parent, k_base)
    if res is None:
        E = len(tree.evse_ids)
        res = (np.zeros((E, 3, T)), np.zeros((N, T)), np.zeros(T))
        lines_reserved = np.zeros((6 * N, T))
    assert lines_reserved is not None
    res_site, node_res_kw, site_res_kw = res
    # line groups: the node lines' ratings, then the delta/wye primaries' (per site.nodes tuple)
    primary = tree.memo.get("primary_limits")
    if primary is None:  # (3N,) A, delta/wye primary lines (+inf: none)
        primary = np.full(3 * N, np.inf)
        for k, n in enumerate(site.nodes):
            trip = None if n.delta_wye is None else n.delta_wye.primary_triplet()
            if trip is not None:
                primary[3 * k : 3 * k + 3] = np.asarray(trip, dtype=np.float64)
        primary.setflags(write=False)
        tree.memo["primary_limits"] = primary
    limit = np.empty((6 * N, T))
    limit[: 3 * N] = node_cur.reshape(3 * N, T)
    limit[3 * N :] = primary[:, None]
    base_a = raw.base_a
    has_base = bool(np.max(base_a, initial=0.0) > 0)
    base_mag = np.abs(_base_phasors(site, parent, tree.ratio, k_base))[:, None] * base_a[None, :]
    node_res_a = lines_reserved[: 3 * N].reshape(N, 3, T)
    # exact rows: lines whose branches (and base load) are all in phase, unit coefficients
    cur_rhs = node_cur - node_res_a
    cur_rhs[carries] -= base_a[None, None, :]
    # per node and period: Σ EV kW ≤ limit (minus the base load where it flows)
    kw_rhs = node_kw - node_res_kw
    kw_rhs[carries] -= raw.base_kw[None, :]
    # per period: EV kW + base − PV ≤ grid limit and DR caps
    import_rhs = import_cap - raw.base_kw + raw.pv_kw - site_res_kw
    noticed = bool(
        (cur_rhs < 0).any()
        or (kw_rhs < 0).any()
        or (import_rhs < 0).any()
        or node_res_a.any()
        or node_res_kw.any()
    )
    out = _StepLimits(
        site=site,
        signals=signals,
        sig=sig,
        node_cur=node_cur,
        node_kw=node_kw,
        import_cap=import_cap,
        price=price,
        export_price=export_price,
        base_kw=raw.base_kw,
        pv_kw=raw.pv_kw,
        grid_kw=raw.grid_kw,
        base_a=base_a,
        has_base=has_base,
        k_base=k_base,
        carries=carries,
        res_site=res_site,
        node_res_kw=node_res_kw,
        site_res_kw=site_res_kw,
        line_limit=limit,
        line_base_mag=base_mag,
        line_reserved=lines_reserved,
        cur_rhs=cur_rhs,
        kw_rhs=kw_rhs,
        import_rhs=import_rhs,
        noticed=noticed,
        kept=kept,
    )
    # read-only, kept or not: the problem takes them as they are
    for a in (*vars(out).values(), *vars(sig).values()):
        if isinstance(a, np.ndarray):
            a.setflags(write=False)
    return out


#: Limits of recent (site, signals, number of periods) triples that no time moves (a controller
#: compiles the same site and signals every step; a tiered horizon has a few lengths, ~10).
#: Bounded in entries and in bytes (all of it is dropped when full: no iteration, safe beside
#: other threads).
_KEPT: dict[tuple, _StepLimits] = {}
_KEPT_MAX = 64
_KEPT_MAX_BYTES = 32 * 2**20
_KEPT_BYTES = [0]


def _step_limits(site: Site, tree: _SiteTree, signals: Signals, horizon: Horizon) -> _StepLimits:
    """The limits of a compile without grid signals and reserved draw: kept per (site object,
    signals object, number of periods) where no series moves them with time (then shared and
    read-only), else built for this call."""
    # without a series every value is the same in every period: the limits depend on the
    # horizon only through its number of periods (not their lengths, nor the start)
    key = (id(site), id(signals), horizon.n_periods)
    got = _KEPT.get(key)
    if got is not None and got.site is site and got.signals is signals:
        return got
    raw = _raw_limits(site, tree, signals, horizon)
    sig = _no_signal_arrays(len(tree.node_ids), horizon.n_periods, 0)
    out = _limits(site, tree, signals, raw, sig, None, None, kept=raw.timeless)
    if out.kept:
        size = sum(a.nbytes for a in vars(out).values() if isinstance(a, np.ndarray))
        if size > _KEPT_MAX_BYTES:  # too large to keep: no later call gets it back
            return replace(out, kept=False)
        if len(_KEPT) >= _KEPT_MAX or _KEPT_BYTES[0] + size > _KEPT_MAX_BYTES:
            _KEPT.clear()
            _KEPT_BYTES[0] = 0
        _KEPT[key] = out
        _KEPT_BYTES[0] += size
    return out
