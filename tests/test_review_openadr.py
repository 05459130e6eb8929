"""Second review: an OpenADR VEN's staleness rule holds on the VEN's node whatever its events
target (prices live at the grid connection)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

import loadopt as lo

pytest.importorskip("openleadr")

from loadopt.grid.openadr2 import OpenAdr2Ven, event_to_signals

from .test_grid_openadr2 import T0, event


def test_stale_price_only_stream_still_caps_the_vens_node():
    """Regression: a VEN for node "feeder" whose only event was a price put its fallback on
    the price signal's node (the grid connection); with PV there the feeder drew 44 kW where
    the stale stream's fallback allows 10 kW."""
    now = T0
    ven = OpenAdr2Ven(
        "ven",
        "http://127.0.0.1:9/x",
        fallback_kw=10.0,
        stale_after_s=600.0,
        node="feeder",
        clock=lambda: now,
    )
    ven.events = {"p": event_to_signals(event("ELECTRICITY_PRICE", "price", [0.1, 0.2]))}
    sigs = ven.signals()
    site = lo.Site(
        nodes=(lo.Node(id="grid"), lo.Node(id="feeder", parent="grid")),
        evses=tuple(lo.Evse(id=f"e{k}", node="feeder", charge_point_id=f"CP{k}") for k in range(2)),
    )
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0,
            departure=T0 + timedelta(hours=3),
            energy_kwh=100.0,
        )
        for k in range(2)
    ]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    p = lo.compile_problem(
        site, sessions, hz, lo.Signals(grid_signals=sigs, pv_kw=40.0, import_price=0.1)
    )
    sched = lo.solve(p)
    # from the raw currents: 3 phases × 230 V per EV
    feeder_kw = sched.current.sum(axis=0) * 3 * 230.0 / 1000.0
    stale = np.ones(8, dtype=bool)  # stale from 600 s on: period 0 on (a period touched counts)
    assert np.all(feeder_kw[stale] <= 10.0 + 1e-6), feeder_kw
    assert feeder_kw[stale].max() > 9.0  # and the fallback is used, not zero


def test_a_ven_on_a_node_without_events_has_a_valid_staleness_rule():
    """Regression: with no event, a VEN configured for a node built its staleness rule as a
    price adder on that node, which GridSignal rejects (prices live at the grid connection):
    ``signals()`` raised ModelError instead of returning the fallback."""
    ven = OpenAdr2Ven(
        "ven", "http://127.0.0.1:9/x", fallback_kw=4.0, node="feeder", clock=lambda: T0
    )
    (s,) = ven.signals()
    assert s.node == "feeder" and s.fallback_kw == 4.0
