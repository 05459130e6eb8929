"""Second review: an IEEE 2030.5 DefaultDERControl holds whenever no control is *in force*;
a randomised control is in force only from its (delayed) start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo

sep2 = pytest.importorskip("envoy_schema.server.schema.sep2.der")
from envoy_schema.server.schema.sep2.der_control_types import ActivePower  # noqa: E402

from loadopt.grid.csip import der_controls_to_signals  # noqa: E402

from .test_grid_csip import control, xml_default, xml_list  # noqa: E402

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_default_control_covers_the_randomised_delay_of_a_control():
    """Regression: the default was laid only over the gaps between the controls' nominal
    intervals, so from a randomised control's nominal start until its delayed start neither it
    nor the default capped the import (no limit at all for up to ``randomizeStart`` s)."""
    out = der_controls_to_signals(
        xml_list(control("a1", 1, 1, rand=1800, opModImpLimW=ActivePower(multiplier=3, value=20))),
        now=T0,
        default_xml=xml_default(opModImpLimW=ActivePower(multiplier=3, value=30)),
        span_s=4 * 3600,
    )
    site_id = next(
        sid for sid in (f"site{k}" for k in range(100)) if out.signals[0].offset_s(sid) > 600
    )
    # every second of the span is capped at the grid connection by some signal in force
    # (windows delayed by each signal's own offset at this site)
    covered = np.zeros(4 * 3600, dtype=bool)
    for s in out.signals:
        if s.import_cap_kw is None or s.node is not None:
            continue
        off = s.offset_s(site_id)
        a = int((s.start - T0).total_seconds()) + off
        b = int((s.end - T0).total_seconds()) + off
        covered[max(a, 0) : max(min(b, covered.size), 0)] = True
    assert covered.all(), np.flatnonzero(~covered)[[0, -1]]
    # and the plan: a site that could draw 40 kW imports at most the default in that gap
    site = lo.Site(
        id=site_id,
        nodes=(lo.Node(id="grid"),),
        evses=tuple(lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"CP{k}") for k in range(3)),
    )
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0,
            departure=T0 + timedelta(hours=4),
            energy_kwh=200.0,
        )
        for k in range(3)
    ]
    p = lo.compile_problem(
        site,
        sessions,
        lo.Horizon(start=T0, step_s=600, n_periods=24),
        lo.Signals(grid_signals=out.signals),
    )
    assert np.all(p.import_cap_kw <= 30.0 + 1e-9)
    sched = lo.solve(p)
    assert np.all(sched.import_kw <= 30.0 + 1e-6)
