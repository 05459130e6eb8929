"""The ACN garages as published (ACN-Sim's network models) and replays on them."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

import loadopt as lo
from loadopt.acn import (
    JPL_PANELS,
    acn_scenario,
    caltech_site,
    jpl_site,
    network_site,
    read_acn_csv,
)
from loadopt.simulate import compare, evse_pilot

from .phasors import line_breaches

ANGLE = {"RST": 30.0, "STR": -90.0, "TRS": 150.0}  # ACN-Sim's phase angles of AB, BC, CA


def acnsim_line_currents(
    site: lo.Site, evse_ids: list[str], amps: np.ndarray
) -> dict[str, complex]:
    """Secondary line currents as ACN-Sim writes them: I_a = AB − CA, I_b = BC − AB,
    I_c = CA − BC, each EVSE current a phasor at its registered angle."""
    pair = {"RST": 0.0j, "STR": 0.0j, "TRS": 0.0j}
    for eid, a in zip(evse_ids, amps, strict=True):
        rot = site.evse(eid).phase_rotation
        pair[rot] += a * cmath.rect(1.0, math.radians(ANGLE[rot]))
    ab, bc, ca = pair["RST"], pair["STR"], pair["TRS"]
    return {"a": ab - ca, "b": bc - ab, "c": ca - bc}


def test_jpl_network_as_published():
    site = jpl_site()
    assert len(site.evses) == 52
    assert all(
        e.wiring == "line_to_line" and e.voltage_v == 208.0 and e.phases == 1 for e in site.evses
    )
    assert {e.id for e in site.evses} >= {r.station_id for r in read_acn_csv()}
    tx = {n.id: n for n in site.nodes}
    assert tx["tx-1f"].delta_wye.turns_ratio == 4.0
    assert tx["tx-1f"].max_current == pytest.approx(45_000 / 3 / 120)
    assert tx["tx-34f"].max_current == pytest.approx(150_000 / 3 / 120)
    assert tx["3f"].max_current == 225.0 and tx["1f-sp1"].max_current == 100.0
    third = [e for e in site.evses if e.node == "3f"]
    assert [sum(e.phase_rotation == r for e in third) for r in ("RST", "STR", "TRS")] == [
        len(x) for x in JPL_PANELS["3f"]
    ]
    assert site.evse("AG-1F10").node == "tx-1f"  # main-panel EVSEs hang off the transformer
    assert site.evse("AG-3F15").allowed_currents[0] == 6.0
    assert network_site(["AG-3F15"]).id == "jpl"
    with pytest.raises(lo.InputError, match="neither"):
        network_site(["AG-3F15", "CA-148"])


def test_caltech_network_as_published():
    site = caltech_site()
    assert len(site.evses) == 54
    assert site.evse("CA-322").allowed_currents == (8.0, 16.0, 24.0, 32.0)
    assert site.evse("CA-322").node == "cc-pod" and site.evse("CA-324").node == "av-pod"
    tx = next(n for n in site.nodes if n.id == "tx")
    assert tx.delta_wye.primary_max_current == pytest.approx(150_000 / 3 / 277)


def test_line_currents_match_acnsim_formulas():
    site = jpl_site()
    ids = [e.id for e in site.evses if e.node == "3f"]
    hz = lo.Horizon(start=read_acn_csv()[0].arrival, step_s=3600, n_periods=1)
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=eid,
            arrival=hz.start,
            departure=hz.start + (hz.end - hz.start),
            energy_kwh=10.0,
            phases=1,
        )
        for k, eid in enumerate(ids)
    ]
    p = lo.compile_problem(site, sessions, hz)
    amps = np.random.default_rng(3).uniform(0, 32, len(ids)).round(1)
    sched = lo.Schedule(p, amps[:, None], lo.ScheduleStatus.FEASIBLE, "user")
    ref = acnsim_line_currents(site, ids, amps)
    k3 = p.node_ids.index("3f")
    np.testing.assert_allclose(
        sched.node_phase_current[k3, :, 0], [abs(ref[x]) for x in "abc"], rtol=1e-12
    )
    # the transformer primary: (I_a − I_c)/4, … (the 4th floor is empty)
    N = len(p.node_ids)
    ktx = p.node_ids.index("tx-34f")
    prim = sched.line_current[3 * (N + ktx) : 3 * (N + ktx) + 3, 0]
    np.testing.assert_allclose(
        prim,
        [abs(ref["a"] - ref["c"]) / 4, abs(ref["b"] - ref["a"]) / 4, abs(ref["c"] - ref["b"]) / 4],
        rtol=1e-12,
    )


def test_evse_pilot_steps_and_minimum():
    site = caltech_site()
    sc = acn_scenario("2019-05-06", step_s=3600)  # JPL data on the JPL network
    assert sc.site.id == "jpl"
    hz = sc.horizon
    sessions = [
        lo.Session(
            id="cc", evse="CA-322", arrival=hz.start, departure=hz.end, energy_kwh=5.0, phases=1
        ),
        lo.Session(
            id="av", evse="CA-324", arrival=hz.start, departure=hz.end, energy_kwh=5.0, phases=1
        ),
    ]
    p = lo.compile_problem(site, sessions, hz)
    pilot = evse_pilot(p)
    np.testing.assert_array_equal(pilot(np.array([23.9, 23.9])), [16.0, 23.0])
    np.testing.assert_array_equal(pilot(np.array([7.9, 5.9])), [0.0, 0.0])
    np.testing.assert_array_equal(pilot(np.array([32.0, 6.0])), [32.0, 6.0])


def test_replay_on_the_published_network_is_exactly_safe():
    sc = acn_scenario("2019-05-06", step_s=1800, first_transformer_kw=20.0)
    sc = sc.model_copy(update={"sessions": sc.sessions[:30]})
    res = compare(sc, baselines=("uncontrolled", "edf"), horizon_h=4.0)
    by = {r.name: r for r in res}
    assert by["controller"].n_violations == 0 and by["edf"].n_violations == 0
    bad = lo.safety.violations(
        by["uncontrolled"].schedule.problem, by["uncontrolled"].schedule.current
    )
    assert any(v.kind == "line current (phasor)" for v in bad)
    # the same verdicts from the independent phasor checker (raw site and sessions only)
    site = sc.site
    assert not any(n.max_power_kw for n in site.nodes) and not sc.signals.base_load_kw
    for name in ("controller", "edf"):
        sched = by[name].schedule
        assert line_breaches(site, sched.problem.sessions, sched.current) == [], name
    unc = by["uncontrolled"].schedule
    assert line_breaches(site, unc.problem.sessions, unc.current)
