"""Time series on the horizon: node limits, the sampled site signals, the grid-operator signals'
caps, prices and setpoints (:mod:`loadopt.grid.arrays`) and the §14a floors they allow.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..horizon import Horizon, sample
from ..problem import Problem
from ..signals import Signals, split
from ..site import Site
from .tree import _site_tree, _SiteTree


def _feasible_floor(problem: Problem, floor_a: np.ndarray) -> np.ndarray:
    """§14a floors (A per variable) that every safety row and every energy need allow.

    Scaled per session so that the floors alone never deliver more than it wants, put on the
    0.1 A grid (down), then through the safety projection: a breaker, a node rating or another
    signal's cap always wins over a floor (the floor only stops *this* signal from dimming below
    it).
    """
    from ..safety import GRID_SNAP, _project_da

    kwh = np.bincount(
        problem.var_session, problem.var_kwh_per_a * floor_a, minlength=problem.n_sessions
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(kwh > problem.session_energy_kwh, problem.session_energy_kwh / kwh, 1.0)
    da = np.floor(floor_a * scale[problem.var_session] * 10.0 + GRID_SNAP)
    return _project_da(problem, da, max_passes=8) / 10.0


def _point(start, value):
    from .._base import SeriesPoint

    return SeriesPoint(start=start, value=float(value))


def _node_limits(
    site: Site, horizon: Horizon, tree: _SiteTree | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(node_cur (N, 3, T) A, node_kw (N, T) kW)``: each node's current and power ratings on
    the horizon (a series narrows its static rating, the minimum over a period; ``inf`` where
    none).

    The static ratings are read once per ``site.nodes`` tuple (kept in the site tree's memo; a
    node limit changed at run time, :meth:`loadopt.controller.Controller.set_node_limit`, is a
    new tuple, so a new tree and a fresh read at the very next compile); nodes with a series are
    sampled at every call. ``tree``: the site's tree the caller holds (default: the one kept on
    the site; another thread may have replaced that one meanwhile)."""
    if tree is None:
        tree = _site_tree(site)
    got = tree.memo.get("node_limits")
    if got is None:
        N = len(site.nodes)
        cur, kw = np.full((N, 3), np.inf), np.full(N, np.inf)
        for k, node in enumerate(site.nodes):
            trip = node.current_triplet()
            if trip is not None:
                cur[k] = np.asarray(trip, dtype=np.float64)
            if node.max_power_kw is not None:
                kw[k] = node.max_power_kw
        timed = tuple(k for k, n in enumerate(site.nodes) if n.current_series or n.power_series_kw)
        cur.setflags(write=False)
        kw.setflags(write=False)
        got = (cur, kw, timed)
        tree.memo["node_limits"] = got
    cur, kw, timed = got
    T = horizon.n_periods
    node_cur = np.repeat(cur[:, :, None], T, axis=2)
    node_kw = np.repeat(kw[:, None], T, axis=1)
    for k in timed:
        node = site.nodes[k]
        if node.current_series:
            trip = node.current_triplet()
            for p in range(3):
                pts = tuple(
                    _point(c.start, c.value if isinstance(c.value, float | int) else c.value[p])
                    for c in node.current_series
                )
                node_cur[k, p] = sample(None if trip is None else trip[p], pts, horizon, "min")
        if node.power_series_kw:
            node_kw[k] = sample(node.max_power_kw, node.power_series_kw, horizon, "min")
    return node_cur, node_kw


class _Sampled(NamedTuple):
    """The site signals on the horizon, (T,) each."""

    base_kw: np.ndarray  #: base load, the period maximum
    pv_kw: np.ndarray  #: PV output, the period minimum
    price: np.ndarray  #: import price, the period mean
    export_price: np.ndarray | None  #: export price, the period mean
    grid_kw: np.ndarray  #: grid import limit, the period minimum
    base_a: np.ndarray  #: base load in A per phase (balanced at the site voltage)


def _sample_signals(signals: Signals, horizon: Horizon, site: Site) -> _Sampled:
    """Sample the site signals on the horizon, each by the rule that keeps a limit safe."""
    base_kw = sample(*split(signals.base_load_kw), horizon, "max")
    pv_kw = sample(*split(signals.pv_kw), horizon, "min")
    price = sample(*split(signals.import_price), horizon, "mean")
    export_price = (
        None
        if signals.export_price is None
        else sample(*split(signals.export_price), horizon, "mean")
    )
    grid_kw = sample(*split(signals.grid_import_limit_kw), horizon, "min")
    base_a = base_kw * 1000.0 / (3.0 * site.voltage_v)
    return _Sampled(base_kw, pv_kw, price, export_price, grid_kw, base_a)
