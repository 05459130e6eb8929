"""The hindsight bound of a replay (:func:`loadopt.simulate.hindsight`): no policy delivers more
in :func:`loadopt.simulate.simulate`, and where the site never binds it is attained."""

from __future__ import annotations

import pytest

import loadopt as lo
from loadopt.simulate import hindsight, simulate

from .conftest import horizon, one_breaker_site, session

AMPS = tuple(float(a) for a in range(6, 33))


def scenario(breaker_a: float) -> lo.Scenario:
    """Five cars on four whole-amp EVSEs behind one breaker, 15-min steps over 10 h; arrivals
    off the step grid, energies that make them taper, two too short to be served in full."""
    site = one_breaker_site(breaker_a, n_evse=4, phases=1, min_current=6.0, allowed_currents=AMPS)
    sessions = (
        session("a", "e0", 18.0, arr_h=0.1, dep_h=4.0, phases=1),
        session("b", "e1", 12.5, arr_h=0.3, dep_h=2.2, phases=1),
        session("c", "e2", 25.0, arr_h=1.05, dep_h=9.0, phases=1),
        session("d", "e3", 10.0, arr_h=0.0, dep_h=1.6, phases=1),
        session("e", "e3", 12.0, arr_h=2.0, dep_h=6.5, phases=1),
    )
    return lo.Scenario(
        site=site,
        horizon=horizon(40, 900),
        sessions=sessions,
        objective=lo.Objective(charge_early_per_kwh_h=0.05),
    )


@pytest.mark.parametrize("breaker_a", [30.0, 200.0])
def test_no_policy_beats_the_bound(breaker_a):
    sc = scenario(breaker_a)
    bound = hindsight(sc).kpis()
    alone = hindsight(sc, site_limits=False).kpis()
    assert bound.delivered_kwh <= alone.delivered_kwh + 1e-6
    for policy in ("controller", "edf", "llf", "equal_share"):
        r = simulate(sc, policy, horizon_h=10.0)
        assert r.kpis.delivered_kwh <= bound.delivered_kwh + 1e-6, policy
    # every car on its own: nobody gets more than charging flat out from its plug-in step
    got = {k.session_id: k.delivered_kwh for k in alone.sessions}
    free = simulate(sc, "uncontrolled").kpis.sessions
    for k in free:
        assert k.delivered_kwh <= got[k.session_id] + 0.01 * k.requested_kwh


def test_the_bound_is_attained_where_the_site_never_binds():
    """200 A never binds: the bound with the limits equals the cars alone, and uncontrolled
    charging (every car at its maximum, tapering as the simulator says) reaches it within the
    meter's 0.1 A resolution — the taper relaxation is tight where it matters."""
    sc = scenario(200.0)
    bound = hindsight(sc).kpis().delivered_kwh
    assert bound == pytest.approx(hindsight(sc, site_limits=False).kpis().delivered_kwh)
    free = simulate(sc, "uncontrolled").kpis.delivered_kwh
    assert free <= bound + 1e-6
    assert free >= bound * (1 - 2e-3)
    # the former bound (plain LP: no taper, plug-in mid-period) is well above what is possible
    assert lo.solve(sc.compile()).kpis().delivered_kwh > bound + 0.5


def test_bad_taper_is_an_input_error():
    with pytest.raises(lo.InputError, match="taper_from"):
        hindsight(scenario(30.0), taper_from=1.0)
