"""One meter: import and export are one direction at a time, on every problem (docs/formulation.md,
"When charging and discharging one unit at once could pay")."""

from __future__ import annotations

import pytest

import loadopt as lo

from .test_storage import T0, at


@pytest.mark.parametrize("method", ["lp", "milp"])
def test_charge_only_pv_site_never_imports_and_exports_at_once(method):
    """PV above the base load and a feed-in tariff above the import price: the car runs on PV
    (forgoing export at 0.3) — not "imported at 0.1 while all PV is sold" (fake revenue)."""
    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=100.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="C", max_current=16.0),),
    )
    car = lo.Session(id="s", evse="e", arrival=T0, departure=at(2), energy_kwh=11.04)
    hz = lo.Horizon(start=T0, step_s=3600, n_periods=2)
    sig = lo.Signals(pv_kw=20.0, import_price=0.1, export_price=0.3)
    p = lo.compile_problem(site, [car], hz, sig)
    assert p.storage is None
    s = lo.solve(p, method=method)
    s.check()
    assert s.kpis().delivered_kwh == pytest.approx(11.04)
    # exports: 40 kWh of PV less the car's 11.04 kWh, at 0.3; nothing imported
    assert s.kpis().energy_cost == pytest.approx(-0.3 * (40.0 - 11.04), abs=1e-6)
    assert s.objective == pytest.approx(-0.3 * (40.0 - 11.04), abs=0.02)
