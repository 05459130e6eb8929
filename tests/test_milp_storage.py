"""The MILP with storage columns (``loadopt.milp.storage``): known optima, integer rules on the
charge currents next to discharge, binaries only where the documented condition says so."""

from __future__ import annotations

import numpy as np
import pytest

import loadopt as lo
from loadopt.milp import build_milp
from loadopt.options import IntegerOptions, MilpOptions
from loadopt.session import V2xParameters

from .test_storage import KW_PER_A3, T0, _independent_check, _v2g_site, at, battery, steps


def test_milp_battery_shaves_a_demand_charge_peak_to_the_lp_optimum():
    """Base load 10 kW, 40 kW for one hour, a 20 kW battery holding 20 kWh: peak 20 kW, the
    objective the LP's (demand charge on 20 kW plus the wear of 20 kWh), no binary needed."""
    site = lo.Site(nodes=(lo.Node(id="grid", max_current=200.0),), batteries=(battery(),))
    hz = lo.Horizon(start=T0, step_s=900, n_periods=16)
    sig = lo.Signals(base_load_kw=steps((0, 10.0), (1, 40.0), (2, 10.0)))
    p = lo.compile_problem(site, [], hz, sig, lo.Objective(demand_charge_per_kw=10.0))
    model = build_milp(p, IntegerOptions())
    assert not model.integrality.any()  # positive prices, no export: nothing to choose
    s = lo.solve(p, method="milp")
    s.check()
    assert s.method == "milp" and s.status == lo.ScheduleStatus.OPTIMAL
    np.testing.assert_allclose(s.battery_a[0, 4:8], -28.9)
    assert s.kpis().peak_import_kw == pytest.approx(40.0 - 28.9 * KW_PER_A3)
    assert s.objective == pytest.approx(10.0 * 20.0 + 0.001 * 20.0, rel=1e-6)


def test_milp_v2g_discharges_at_the_peak_with_its_minimum_current_kept():
    """A V2G car with an 8 A minimum: charges at 0 or ≥ 8 A (never a trickle), discharges 16 A
    through the price peak and departs at its target — the LP's plan, made integer."""
    hz = lo.Horizon(start=T0, step_s=900, n_periods=32)
    price = steps((0, 0.1), (2, 1.0), (3, 0.1))
    car = lo.Session(
        id="s1",
        evse="e1",
        arrival=T0,
        departure=at(8),
        energy_kwh=20.0,
        min_current=8.0,
        v2x=V2xParameters(
            min_v2x_energy_kwh=-10.0, max_v2x_energy_kwh=40.0, max_discharge_current=16.0
        ),
    )
    site = _v2g_site()
    sig = lo.Signals(import_price=price, export_price=price)
    p = lo.compile_problem(site, [car], hz, sig)
    s = lo.solve(p, MilpOptions(integer=IntegerOptions(min_current=True)))
    s.check()
    assert s.method == "milp"
    peak = np.zeros(32, dtype=bool)
    peak[8:12] = True
    np.testing.assert_allclose(s.discharge[0, peak], 16.0)
    assert not s.discharge[0, ~peak].any()
    on = s.current[0] > 0
    assert (s.current[0][on] >= 8.0).all()  # the integer rule
    assert s.soc_kwh[0, -1] == pytest.approx(20.0, abs=0.05)
    lp = lo.solve(p)
    assert ((lp.current[0] > 0) & (lp.current[0] < 8.0)).any()  # the LP trickles; the MILP not
    assert s.objective == pytest.approx(lp.objective, rel=1e-3)
    assert (
        _independent_check(
            site, [car], hz, 0.0, 0.0, None, None, s.current, s.discharge, np.zeros((0, 32))
        )
        == []
    )


def test_milp_exclusivity_binary_only_at_prices_that_pay_for_burning_energy():
    """Negative prices: charging and discharging one battery at once would burn energy in its
    losses for money — the MILP carries exactly the LP's binaries there (and none elsewhere),
    and the schedule never does both."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=100.0),),
        batteries=(battery(charge_efficiency=0.9, discharge_efficiency=0.9),),
    )
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    sig = lo.Signals(import_price=steps((0, -1.0), (1, 0.2)))
    p = lo.compile_problem(site, [], hz, sig)
    model = build_milp(p, IntegerOptions())
    lp_int = model.lp.integrality
    assert lp_int is not None and (model.integrality[: lp_int.size] == lp_int).all()
    zx = model.lp.cols["zx"]
    assert sorted(set(p.storage.bc_period[zx.index].tolist())) == [0, 1, 2, 3]
    s = lo.solve(p, method="milp")
    s.check()
    # negative price: the battery charges (is paid to), never charges and discharges at once
    assert (s.battery_a[0, :4] >= 0).all() and (s.battery_a[0, :4] > 0).any()
