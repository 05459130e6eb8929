"""Batteries and V2G sessions: known optima, both directions of every limit, energy states.

The property test checks with its own physics, written from the site and session objects
(parents walked by id, phase rotation read from the EVSE, energy states summed from the
efficiencies), not from the library's safety rows or storage arrays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import loadopt as lo
from loadopt.errors import LoadoptError
from loadopt.lp import build_lp, exclusive_periods
from loadopt.safety import project_storage
from loadopt.session import V2xParameters
from loadopt.site import Battery

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KW_PER_A3 = 3 * 230.0 / 1000.0  # kW per A of a balanced three-phase load at 230 V


def at(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def steps(*pts: tuple[float, float]) -> tuple[lo.SeriesPoint, ...]:
    return tuple(lo.SeriesPoint(start=at(h), value=v) for h, v in pts)


def v2g_and_two_site() -> lo.Site:
    """Three 16 A three-phase EVSEs on a 100 A connection; ``e0`` is bidirectional."""
    return lo.Site(
        nodes=(lo.Node(id="grid", max_current=100.0),),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="grid",
                charge_point_id=f"CP{k}",
                max_current=16.0,
                bidirectional=k == 0,
            )
            for k in range(3)
        ),
    )


def battery(**kw) -> Battery:
    args = dict(
        id="bat",
        node="grid",
        capacity_kwh=40.0,
        soc=0.5,
        max_charge_kw=20.0,
        max_discharge_kw=20.0,
        charge_efficiency=1.0,
        discharge_efficiency=1.0,
        degradation_per_kwh=0.001,
    )
    return Battery(**{**args, **kw})


# --------------------------------------------------------------------------- known optima
def test_battery_shaves_a_demand_charge_peak():
    """Base load 10 kW, 40 kW for one hour; a 20 kW battery holding 20 kWh: the best peak is
    40 − 20 = 20 kW (discharge 20 kW through the whole peak hour), reached to the 0.1 A grid."""
    site = lo.Site(nodes=(lo.Node(id="grid", max_current=200.0),), batteries=(battery(),))
    hz = lo.Horizon(start=T0, step_s=900, n_periods=16)
    sig = lo.Signals(base_load_kw=steps((0, 10.0), (1, 40.0), (2, 10.0)))
    p = lo.compile_problem(site, [], hz, sig, lo.Objective(demand_charge_per_kw=10.0))
    s = lo.solve(p)
    s.check()
    assert s.status == lo.ScheduleStatus.OPTIMAL
    peak_hour = slice(4, 8)
    # −20 kW is 28.98… A per phase, rounded toward zero to 28.9 A
    np.testing.assert_allclose(s.battery_a[0, peak_hour], -28.9)
    assert s.kpis().peak_import_kw == pytest.approx(40.0 - 28.9 * KW_PER_A3)
    assert s.kpis().storage.peak_shaved_kw == pytest.approx(28.9 * KW_PER_A3)
    # the LP optimum itself: demand charge on exactly 20 kW plus the wear of 20 kWh
    assert s.objective == pytest.approx(10.0 * 20.0 + 0.001 * 20.0, rel=1e-6)
    # the energy state never leaves [0, capacity]
    assert s.soc_kwh.min() >= -1e-9 and s.soc_kwh.max() <= 40.0 + 1e-9


def test_discharge_never_breaches_a_node_limit_in_the_export_direction():
    """A 30 kW battery under a 20 A feeder, export paid 1.0/kWh: it exports, but never more
    than 20 A per phase through the feeder, nor past the grid export contract."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=100.0),
            lo.Node(id="feeder", parent="grid", max_current=20.0),
        ),
        batteries=(battery(node="feeder", max_discharge_kw=30.0, soc=1.0),),
    )
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    for export_limit, expect_a in ((None, 20.0), (9.0, np.floor(9.0 / KW_PER_A3 * 10) / 10)):
        sig = lo.Signals(import_price=0.1, export_price=1.0, grid_export_limit_kw=export_limit)
        s = lo.solve(lo.compile_problem(site, [], hz, sig))
        s.check()
        np.testing.assert_allclose(s.battery_a[0], -expect_a)
        feeder = s.problem.node_ids.index("feeder")
        assert s.node_phase_current[feeder].min() >= -20.0 - 1e-9
        # the projection holds it there even when asked for everything
        _, _, bat = project_storage(s.problem, s.current, None, None, np.full((1, 8), 1e6))
        np.testing.assert_allclose(bat[0], -expect_a)


def test_pv_counts_in_the_export_direction():
    """PV feeding in where the base load hangs takes export capacity first (its period max)."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=30.0),),
        batteries=(battery(max_discharge_kw=30.0, soc=1.0),),
    )
    hz = lo.Horizon(start=T0, step_s=900, n_periods=4)
    sig = lo.Signals(export_price=1.0, pv_kw=steps((0, 6.9)))  # 6.9 kW = 10 A per phase
    s = lo.solve(lo.compile_problem(site, [], hz, sig))
    s.check()
    np.testing.assert_allclose(s.battery_a[0], -20.0)


def _v2g_site(**evse_kw) -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", max_current=63.0),),
        evses=(
            lo.Evse(
                id="e1",
                node="grid",
                charge_point_id="CP1",
                max_current=16.0,
                bidirectional=True,
                **evse_kw,
            ),
        ),
    )


def test_v2g_car_discharges_at_the_price_peak_and_departs_at_its_target():
    hz = lo.Horizon(start=T0, step_s=900, n_periods=32)
    price = steps((0, 0.1), (2, 1.0), (3, 0.1))
    s1 = lo.Session(
        id="s1",
        evse="e1",
        arrival=T0,
        departure=at(8),
        energy_kwh=20.0,
        v2x=V2xParameters(
            min_v2x_energy_kwh=-10.0, max_v2x_energy_kwh=40.0, max_discharge_current=16.0
        ),
    )
    p = lo.compile_problem(
        _v2g_site(), [s1], hz, lo.Signals(import_price=price, export_price=price)
    )
    s = lo.solve(p)
    s.check()
    peak = np.zeros(32, dtype=bool)
    peak[8:12] = True
    np.testing.assert_allclose(s.discharge[0, peak], 16.0)  # full discharge current
    assert not s.discharge[0, ~peak].any()
    assert not (s.current[0] * s.discharge[0]).any()  # never both at once
    assert s.soc_kwh[0, -1] == pytest.approx(20.0, abs=0.01)  # departs at its target
    assert s.soc_kwh[0].min() >= -10.0 - 1e-9
    k = s.kpis()
    assert k.sessions_served == 1
    assert k.storage.v2g_discharged_kwh == pytest.approx(4 * 0.25 * 16 * KW_PER_A3)
    assert k.storage.revenue > 0


def test_v2g_floor_holds_and_a_car_below_its_v2x_minimum_is_not_discharged():
    hz = lo.Horizon(start=T0, step_s=900, n_periods=16)
    price = steps((0, 0.1), (1, 5.0), (3, 0.1))
    v2x = V2xParameters(min_v2x_energy_kwh=-2.0, max_v2x_energy_kwh=30.0)
    s1 = lo.Session(id="s1", evse="e1", arrival=T0, departure=at(4), energy_kwh=0.0, v2x=v2x)
    s = lo.solve(
        lo.compile_problem(
            _v2g_site(), [s1], hz, lo.Signals(import_price=price, export_price=price)
        )
    )
    s.check()
    assert s.discharge.any()
    assert s.soc_kwh[0].min() >= -2.0 - 1e-9
    below = V2xParameters(min_v2x_energy_kwh=3.0, max_v2x_energy_kwh=30.0)
    s2 = s1.model_copy(update={"v2x": below})
    p = lo.compile_problem(
        _v2g_site(), [s2], hz, lo.Signals(import_price=price, export_price=price)
    )
    assert any("below its V2X minimum" in n for n in p.notices)
    s = lo.solve(p)
    s.check()
    assert not s.discharge.any()


def test_dr_cap_met_by_discharge_instead_of_curtailing_other_cars():
    """Two cars need full power all along; a grid-operator cap of 11.04 kW for one hour. With a
    V2G car discharging 16 A in that hour the cars keep charging; without it they are cut."""
    site = v2g_and_two_site()
    hz = lo.Horizon(start=T0, step_s=900, n_periods=16)
    need = 4 * 16 * KW_PER_A3  # 4 h at 16 A
    sig = lo.Signals(
        grid_signals=(lo.GridSignal(id="dr", start=at(1), end=at(2), import_cap_kw=16 * KW_PER_A3),)
    )

    def run(v2x):
        ss = [lo.Session(id="v", evse="e0", arrival=T0, departure=at(4), energy_kwh=0.0, v2x=v2x)]
        ss += [
            lo.Session(id=f"c{k}", evse=f"e{k}", arrival=T0, departure=at(4), energy_kwh=need)
            for k in (1, 2)
        ]
        s = lo.solve(lo.compile_problem(site, ss, hz, sig))
        s.check()
        return s

    with_v2g = run(V2xParameters(min_v2x_energy_kwh=-15.0, max_v2x_energy_kwh=30.0))
    without = run(None)
    got = with_v2g.energy_kwh[1:]
    assert got.sum() >= 0.995 * 2 * need  # 0.1 A rounding is all they lose
    assert without.energy_kwh[1:].sum() <= 2 * need - 10.0  # a quarter of the cap hour each
    np.testing.assert_allclose(with_v2g.discharge[0, 4:8], 16.0)
    dr = with_v2g.kpis().demand_response[0]
    assert dr.compliant and dr.discharged_kwh == pytest.approx(16 * KW_PER_A3)
    # physical rows give no credit: on the breaker the cars still count in full
    assert with_v2g.node_phase_current[0].max() <= 100.0


def test_simultaneous_charge_and_discharge_gets_a_binary_only_where_it_could_pay():
    """A lossy battery (η_c η_d = 0.81) at its ceiling: at a price of −1.0 burning energy pays
    (−1·0.19 + 0.001·0.81 < 0); the binary forbids doing both at once."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=100.0),),
        batteries=(battery(soc=1.0, charge_efficiency=0.9, discharge_efficiency=0.9),),
    )
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    price = steps((0, 0.2), (1, -1.0))
    p = lo.compile_problem(site, [], hz, lo.Signals(import_price=price, export_price=price))
    pays = exclusive_periods(p)
    assert not pays[0, :4].any() and pays[0, 4:].all()
    lp = build_lp(p)
    assert lp.integrality is not None and lp.integrality.sum() == 4
    s = lo.solve(p)
    s.check()
    assert s.status == lo.ScheduleStatus.OPTIMAL
    # prices never negative enough: a plain LP
    p2 = lo.compile_problem(site, [], hz, lo.Signals(import_price=0.2, export_price=0.1))
    assert not exclusive_periods(p2).any() and build_lp(p2).integrality is None


# --------------------------------------------------------------------------- inputs
def test_bad_storage_inputs_name_the_object():
    with pytest.raises(LoadoptError, match="battery 'bat': node 'nowhere'"):
        lo.Site(nodes=(lo.Node(id="grid"),), batteries=(battery(node="nowhere"),))
    with pytest.raises(LoadoptError, match="duplicate battery"):
        lo.Site(nodes=(lo.Node(id="grid"),), batteries=(battery(), battery()))
    with pytest.raises(ValidationError, match="min_soc"):
        battery(min_soc=0.8, max_soc=0.2)
    with pytest.raises(ValidationError):
        battery(charge_efficiency=1.5)
    with pytest.raises(ValidationError, match="min_v2x_energy_kwh"):
        V2xParameters(min_v2x_energy_kwh=5.0, max_v2x_energy_kwh=1.0)
    with pytest.raises(ValidationError, match="above its max_v2x_energy_kwh"):
        lo.Session(
            id="s",
            evse="e1",
            arrival=T0,
            departure=at(1),
            energy_kwh=50.0,
            v2x=V2xParameters(min_v2x_energy_kwh=-1.0, max_v2x_energy_kwh=10.0),
        )
    v = V2xParameters.from_soc(60.0, soc=0.5, min_soc=0.2, max_soc=0.9)
    assert (v.min_v2x_energy_kwh, v.max_v2x_energy_kwh) == pytest.approx((-18.0, 24.0))
    with pytest.raises(ValueError, match="soc"):
        V2xParameters.from_soc(60.0, soc=1.2, min_soc=0.2)


def test_v2x_on_a_charge_only_evse_charges_only_and_says_so():
    site = _v2g_site().model_copy(
        update={"evses": (lo.Evse(id="e1", node="grid", charge_point_id="CP1"),)}
    )
    s1 = lo.Session(
        id="s1",
        evse="e1",
        arrival=T0,
        departure=at(2),
        energy_kwh=5.0,
        v2x=V2xParameters(min_v2x_energy_kwh=-5.0, max_v2x_energy_kwh=10.0),
    )
    p = lo.compile_problem(
        site,
        [s1],
        lo.Horizon(start=T0, step_s=900, n_periods=8),
        lo.Signals(import_price=0.1, export_price=5.0),
    )
    assert p.storage is None
    assert any("not bidirectional" in n for n in p.notices)
    s = lo.solve(p)
    assert s.discharge is None and s.energy_kwh[0] == pytest.approx(5.0, abs=0.05)


def test_fast_path_on_a_storage_problem_with_flat_prices_stays_idle_and_safe():
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=32.0),),
        evses=(lo.Evse(id="e1", node="grid", charge_point_id="CP1", bidirectional=True),),
        batteries=(battery(),),
    )
    s1 = lo.Session(
        id="s1",
        evse="e1",
        arrival=T0,
        departure=at(2),
        energy_kwh=4.0,
        v2x=V2xParameters(min_v2x_energy_kwh=-5.0, max_v2x_energy_kwh=4.0),
    )
    p = lo.compile_problem(site, [s1], lo.Horizon(start=T0, step_s=900, n_periods=8))
    s = lo.solve(p, method="fast")
    s.check()
    # flat prices: no discharge pays for its recharge (losses, wear), so nothing discharges
    assert not s.discharge.any() and not (s.battery_a < 0).any()
    # a full-current fallback would overshoot the 4 kWh ceiling; the projection stops it there
    assert s.soc_kwh[0].max() <= 4.0 + 1e-9
    assert s.soc_kwh[0, -1] == pytest.approx(4.0, abs=0.1)
    cur = lo.safety.project(p, np.full((1, 8), 32.0))
    assert lo.safety.soc_path(p, cur)[0].max() <= 4.0 + 1e-9


# --------------------------------------------------------------------------- properties
def _independent_check(
    site: lo.Site,
    sessions: list[lo.Session],
    hz: lo.Horizon,
    base_kw: float,
    pv_kw: float,
    grid_kw: float | None,
    export_kw: float | None,
    cur: np.ndarray,
    dis: np.ndarray,
    bat: np.ndarray,
) -> list[str]:
    """Every limit in both directions and every energy bound, from the raw objects."""
    T = hz.n_periods
    dt = hz.step_s / 3600.0
    bad: list[str] = []
    parent = {n.id: n.parent for n in site.nodes}
    root = next(n.id for n in site.nodes if n.parent is None)
    base_node = site.base_load_node or root

    def path(node):
        while node is not None:
            yield node
            node = parent[node]

    on_base = set(path(base_node))
    imp = {(n.id, p): np.zeros(T) for n in site.nodes for p in range(3)}
    exp = {(n.id, p): np.zeros(T) for n in site.nodes for p in range(3)}
    imp_kw = {n.id: np.zeros(T) for n in site.nodes}
    exp_kw = {n.id: np.zeros(T) for n in site.nodes}
    net_kw = np.full(T, base_kw - pv_kw)
    for n in on_base:
        for p in range(3):
            imp[n, p] += base_kw * 1000 / (3 * site.voltage_v)
            exp[n, p] += pv_kw * 1000 / (3 * site.voltage_v)
        imp_kw[n] += base_kw
        exp_kw[n] += pv_kw
    evse = {e.id: e for e in site.evses}
    for i, s in enumerate(sessions):
        e = evse[s.evse]
        lines = ["RST".index(c) for c in e.phase_rotation][: min(e.phases, s.phases)]
        kw = e.voltage_v * len(lines) / 1000.0
        if dis[i].any() and not (e.bidirectional and s.v2x is not None):
            bad.append(f"{s.id} discharges on a charge-only EVSE")
        if (cur[i] * dis[i]).any():
            bad.append(f"{s.id} charges and discharges at once")
        if s.v2x is not None:
            lim = min(
                e.max_current if e.max_discharge_current is None else e.max_discharge_current,
                s.v2x.max_discharge_current,
            )
            if (dis[i] > lim + 1e-9).any():
                bad.append(f"{s.id} discharge above its limit")
            # energy state, relative to now, with the fraction of each period plugged in
            a = np.clip(
                (
                    np.minimum(
                        (s.departure - hz.start).total_seconds(), np.arange(1, T + 1) * hz.step_s
                    )
                    - np.maximum((s.arrival - hz.start).total_seconds(), np.arange(T) * hz.step_s)
                )
                / hz.step_s,
                0,
                1,
            )
            e_path = np.cumsum(
                cur[i] * kw * dt * a * s.v2x.charge_efficiency
                - dis[i] * kw * dt * a / s.v2x.discharge_efficiency
            )
            if (e_path < min(s.v2x.min_v2x_energy_kwh, 0.0) - 1e-6).any():
                bad.append(f"{s.id} below its V2X floor")
            if (e_path > max(s.v2x.max_v2x_energy_kwh, 0.0) + 1e-6).any():
                bad.append(f"{s.id} above its V2X ceiling")
        for n in path(e.node):
            for p in lines:
                imp[n, p] += cur[i]
                exp[n, p] += dis[i]
            imp_kw[n] += cur[i] * kw
            exp_kw[n] += dis[i] * kw
        net_kw += (cur[i] - dis[i]) * kw
    for b, bt in enumerate(site.batteries):
        a = bat[b]
        if (a > bt.max_charge_kw / (3 * site.voltage_v / 1000) + 1e-9).any() or (
            -a > bt.max_discharge_kw / (3 * site.voltage_v / 1000) + 1e-9
        ).any():
            bad.append(f"battery {bt.id} above its power")
        kw = a * 3 * site.voltage_v / 1000.0
        e_path = bt.soc * bt.capacity_kwh + np.cumsum(
            np.maximum(kw, 0) * dt * bt.charge_efficiency
            - np.maximum(-kw, 0) * dt / bt.discharge_efficiency
        )
        lo_e = min(bt.min_soc, bt.soc) * bt.capacity_kwh
        hi_e = max(bt.max_soc, bt.soc) * bt.capacity_kwh
        if (e_path < lo_e - 1e-6).any() or (e_path > hi_e + 1e-6).any():
            bad.append(f"battery {bt.id} outside its band")
        for n in path(bt.node):
            for p in range(3):
                imp[n, p] += np.maximum(a, 0)
                exp[n, p] += np.maximum(-a, 0)
            imp_kw[n] += np.maximum(kw, 0)
            exp_kw[n] += np.maximum(-kw, 0)
        net_kw += kw
    for n in site.nodes:
        trip = n.current_triplet()
        for p in range(3):
            if trip is not None:
                for d, load in (("import", imp[n.id, p]), ("export", exp[n.id, p])):
                    # vehicles get nothing where fixed loads alone break a limit
                    if (
                        load
                        > max(
                            trip[p],
                            (base_kw if d == "import" else pv_kw)
                            * 1000
                            / (3 * site.voltage_v)
                            * (n.id in on_base),
                        )
                        + 1e-6
                    ).any():
                        bad.append(f"node {n.id} phase {p} {d} over")
        if n.max_power_kw is not None:
            for d, load in (("import", imp_kw[n.id]), ("export", exp_kw[n.id])):
                fixed = (base_kw if d == "import" else pv_kw) * (n.id in on_base)
                if (load > max(n.max_power_kw, fixed) * (1 + 1e-9) + 1e-9).any():
                    bad.append(f"node {n.id} {d} kW over")
    if grid_kw is not None and (net_kw > max(grid_kw, base_kw - pv_kw) + 1e-6).any():
        bad.append("grid import contract over")
    if export_kw is not None:
        if (exp_kw[root] > max(export_kw, pv_kw) + 1e-6).any():  # PV + all discharge
            bad.append("grid export contract over")
    return bad


@st.composite
def bidirectional_sites(draw):
    n_nodes = draw(st.integers(1, 3))
    nodes = [
        lo.Node(
            id="n0",
            max_current=draw(st.sampled_from([None, 16.0, 40.0, 63.0])),
            max_power_kw=draw(st.sampled_from([None, 15.0, 40.0])),
        )
    ]
    for k in range(1, n_nodes):
        nodes.append(
            lo.Node(
                id=f"n{k}",
                parent=f"n{draw(st.integers(0, k - 1))}",
                max_current=draw(st.sampled_from([None, 10.0, 20.0, 32.0])),
                max_power_kw=draw(st.sampled_from([None, 8.0, 20.0])),
            )
        )
    n_evse = draw(st.integers(0, 4))
    evses = tuple(
        lo.Evse(
            id=f"e{k}",
            node=f"n{draw(st.integers(0, n_nodes - 1))}",
            charge_point_id=f"CP{k}",
            phases=draw(st.sampled_from([1, 3])),
            phase_rotation=draw(st.sampled_from(["RST", "STR", "TSR"])),
            max_current=draw(st.sampled_from([16.0, 32.0])),
            bidirectional=draw(st.booleans()),
            max_discharge_current=draw(st.sampled_from([None, 10.0])),
        )
        for k in range(n_evse)
    )
    bats = tuple(
        Battery(
            id=f"b{k}",
            node=f"n{draw(st.integers(0, n_nodes - 1))}",
            capacity_kwh=draw(st.sampled_from([5.0, 20.0])),
            soc=draw(st.floats(0, 1)),
            min_soc=draw(st.sampled_from([0.0, 0.2])),
            max_soc=draw(st.sampled_from([0.8, 1.0])),
            max_charge_kw=draw(st.sampled_from([5.0, 30.0])),
            max_discharge_kw=draw(st.sampled_from([5.0, 30.0])),
            charge_efficiency=draw(st.sampled_from([0.9, 1.0])),
            discharge_efficiency=draw(st.sampled_from([0.85, 1.0])),
        )
        for k in range(draw(st.integers(0, 2)))
    )
    site = lo.Site(nodes=tuple(nodes), evses=evses, batteries=bats)
    sessions = []
    for k, e in enumerate(evses):
        if not draw(st.booleans()):
            continue
        lo_e = draw(st.sampled_from([-10.0, -1.0, 0.0, 2.0]))
        hi_e = draw(st.sampled_from([5.0, 30.0]))
        v2x = (
            V2xParameters(
                min_v2x_energy_kwh=lo_e,
                max_v2x_energy_kwh=hi_e,
                max_discharge_current=draw(st.sampled_from([6.0, 32.0])),
                charge_efficiency=draw(st.sampled_from([0.9, 1.0])),
                discharge_efficiency=draw(st.sampled_from([0.9, 1.0])),
            )
            if draw(st.booleans())
            else None
        )
        energy = draw(st.sampled_from([0.0, 4.0, 20.0]))
        if v2x is not None:
            energy = min(energy, hi_e)
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=e.id,
                arrival=at(draw(st.sampled_from([-1.0, 0.0, 0.3]))),
                departure=at(draw(st.sampled_from([0.7, 1.5, 4.0]))),
                energy_kwh=energy,
                phases=draw(st.sampled_from([1, 3])),
                v2x=v2x,
            )
        )
    return site, sessions


@settings(max_examples=40, deadline=None)
@given(data=st.data(), case=bidirectional_sites())
def test_projection_and_solve_keep_every_limit_and_energy_bound_both_ways(data, case):
    site, sessions = case
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    base = data.draw(st.sampled_from([0.0, 5.0, 50.0]))
    pv = data.draw(st.sampled_from([0.0, 3.0, 30.0]))
    grid = data.draw(st.sampled_from([None, 10.0, 30.0]))
    export = data.draw(st.sampled_from([None, 0.0, 8.0]))
    price = data.draw(st.sampled_from([0.1, -0.5]))
    sig = lo.Signals(
        base_load_kw=base,
        pv_kw=pv,
        grid_import_limit_kw=grid,
        grid_export_limit_kw=export,
        import_price=steps((0, price), (1, 0.8)),
        export_price=0.3,
    )
    p = lo.compile_problem(site, sessions, hz, sig, lo.Objective(demand_charge_per_kw=0.5))
    S, B = len(sessions), len(site.batteries)
    # anything a solver or a user could hand in: huge, negative, NaN, off-grid
    pool = st.sampled_from([0.0, 3.33, 16.0, 100.0, -5.0, float("nan"), 1e9])

    def arr(n):
        return np.array(
            data.draw(st.lists(pool, min_size=n * 8, max_size=n * 8)), dtype=float
        ).reshape(n, 8)

    if p.storage is None:
        cur = lo.safety.project(p, arr(S))
        dis, bat = np.zeros((S, 8)), np.zeros((B, 8))
    else:
        cur, dis, bat = project_storage(p, arr(S), arr(S), arr(B), arr(B))
    assert _independent_check(site, sessions, hz, base, pv, grid, export, cur, dis, bat) == []
    assert lo.safety.violations(p, cur, discharge=dis, battery_a=bat) == []
    s = lo.solve(p)
    s.check()
    assert (
        _independent_check(
            site,
            sessions,
            hz,
            base,
            pv,
            grid,
            export,
            s.current,
            np.zeros((S, 8)) if s.discharge is None else s.discharge,
            np.zeros((B, 8)) if s.battery_a is None else s.battery_a,
        )
        == []
    )


def test_controller_replans_discharge_and_keeps_the_v2x_floor():
    """A rolling controller with a V2G van: each step plans from what was metered in and what
    it told the van to give back; the van (simulated: it follows its limit and its setpoint)
    discharges at the price peak, never below its V2X floor, and leaves at its target."""
    price = steps((0, 0.1), (2, 1.0), (3, 0.1))
    site = _v2g_site()
    v2x = V2xParameters(min_v2x_energy_kwh=-6.0, max_v2x_energy_kwh=40.0)
    van = lo.Session(id="van", evse="e1", arrival=T0, departure=at(6), energy_kwh=15.0, v2x=v2x)
    ctl = lo.Controller(
        site, n_periods=24, step_s=900, signals=lo.Signals(import_price=price, export_price=price)
    )
    ctl.start_session(van)
    kw_per_a = 3 * 230.0 / 1000.0
    imported = stored = 0.0
    low = 0.0
    gave = []
    for k in range(24):
        now = at(k * 0.25)
        if k:
            ctl.meter("van", now, energy_kwh=imported)
        s = ctl.step(now)
        s.check()
        i = s.problem.session_index("van")
        c = s.current[i, 0]
        d = 0.0 if s.discharge is None else s.discharge[i, 0]
        assert c == 0 or d == 0
        imported += c * kw_per_a * 0.25
        stored += (c - d) * kw_per_a * 0.25
        low = min(low, stored)
        gave.append(d)
    assert max(gave[8:12]) > 0  # it gives back at the peak
    assert not any(gave[:8]) and not any(gave[12:])
    assert low >= -6.0 - 1e-6  # never below its V2X floor
    assert stored == pytest.approx(15.0, abs=0.2)  # departs at its target
