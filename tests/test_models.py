"""Bad input gets a clear error that names the object and what is wrong."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

import loadopt as lo
from loadopt.horizon import sample

from .conftest import T0, horizon, one_breaker_site, session


def _err(exc_info) -> str:
    return str(exc_info.value)


def test_unknown_evse_of_session_is_named():
    site = one_breaker_site()
    with pytest.raises(lo.InputError, match=r"session 'a'.*unknown EVSE 'nope'"):
        lo.compile_problem(site, [session("a", "nope", 10)], horizon())


def test_unknown_parent_node_is_named():
    with pytest.raises(ValidationError, match=r"node 'cb'.*parent 'ghost'"):
        lo.Site(nodes=(lo.Node(id="grid"), lo.Node(id="cb", parent="ghost")))


def test_unknown_node_of_evse_is_named():
    with pytest.raises(ValidationError, match=r"EVSE 'e1'.*node 'ghost'"):
        lo.Site(
            nodes=(lo.Node(id="grid"),),
            evses=(lo.Evse(id="e1", node="ghost", charge_point_id="CP"),),
        )


def test_cycle_is_named():
    with pytest.raises(ValidationError, match="cycle"):
        lo.Site(
            nodes=(lo.Node(id="grid"), lo.Node(id="a", parent="b"), lo.Node(id="b", parent="a"))
        )


def test_second_root_is_named():
    with pytest.raises(ValidationError, match=r"exactly one root.*\['g1', 'g2'\]"):
        lo.Site(nodes=(lo.Node(id="g1"), lo.Node(id="g2")))


def test_duplicate_ids():
    with pytest.raises(ValidationError, match=r"duplicate node id.*'a'"):
        lo.Site(nodes=(lo.Node(id="g"), lo.Node(id="a", parent="g"), lo.Node(id="a", parent="g")))
    with pytest.raises(ValidationError, match=r"duplicate EVSE id.*'e'"):
        lo.Site(
            nodes=(lo.Node(id="g"),),
            evses=(
                lo.Evse(id="e", node="g", charge_point_id="A"),
                lo.Evse(id="e", node="g", charge_point_id="B"),
            ),
        )
    site = one_breaker_site()
    with pytest.raises(lo.InputError, match="duplicate session id 'a'"):
        lo.compile_problem(site, [session("a", "e0", 1), session("a", "e1", 1)], horizon())


def test_same_connector_twice():
    with pytest.raises(
        ValidationError, match=r"EVSEs 'x' and 'y'.*'CP' connector 1 is used by more than one"
    ):
        lo.Site(
            nodes=(lo.Node(id="g"),),
            evses=(
                lo.Evse(id="x", node="g", charge_point_id="CP"),
                lo.Evse(id="y", node="g", charge_point_id="CP"),
            ),
        )


def test_two_sessions_on_one_evse_at_once():
    site = one_breaker_site()
    with pytest.raises(lo.InputError, match=r"EVSE 'e0'.*'a'.*'b'.*overlap"):
        lo.compile_problem(
            site,
            [session("a", "e0", 5, dep_h=4), session("b", "e0", 5, arr_h=3, dep_h=6)],
            horizon(),
        )
    # back to back is fine
    lo.compile_problem(
        site, [session("a", "e0", 5, dep_h=4), session("b", "e0", 5, arr_h=4, dep_h=6)], horizon()
    )


def test_departure_before_arrival():
    with pytest.raises(ValidationError, match=r"session 'a'.*departure.*not after arrival"):
        session("a", "e0", 5, arr_h=3, dep_h=2)


@pytest.mark.parametrize(
    "field,value", [("energy_kwh", -1.0), ("max_current", -6.0), ("priority", 0.0)]
)
def test_negative_session_values(field, value):
    kw = {"energy_kwh": 5.0, field: value}
    with pytest.raises(ValidationError, match=field):
        lo.Session(id="a", evse="e0", arrival=T0, departure=T0 + timedelta(hours=1), **kw)


def test_negative_limits():
    with pytest.raises(ValidationError, match="max_current"):
        lo.Node(id="n", max_current=-1)
    with pytest.raises(ValidationError, match="max_power_kw"):
        lo.Node(id="n", max_power_kw=-1)
    with pytest.raises(ValidationError, match="grid_import_limit_kw"):
        lo.Signals(grid_import_limit_kw=-5)
    with pytest.raises(ValidationError, match="base_load_kw"):
        lo.Signals(base_load_kw=-5)


def test_min_above_max():
    with pytest.raises(ValidationError, match=r"EVSE 'e'.*min_current 10.0 A is above max"):
        lo.Evse(id="e", node="n", charge_point_id="c", min_current=10, max_current=8)
    with pytest.raises(ValidationError, match=r"session 'a'.*min_current"):
        lo.Session(
            id="a",
            evse="e",
            arrival=T0,
            departure=T0 + timedelta(hours=1),
            energy_kwh=1,
            min_current=20,
            max_current=16,
        )


def test_bad_phase_rotation():
    with pytest.raises(ValidationError, match="phase_rotation"):
        lo.Evse(id="e", node="n", charge_point_id="c", phase_rotation="RRS")


def test_zero_periods():
    with pytest.raises(ValidationError, match="n_periods"):
        lo.Horizon(start=T0, n_periods=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_rejected_everywhere(bad):
    with pytest.raises(ValidationError):
        lo.Node(id="n", max_current=bad)
    with pytest.raises(ValidationError):
        lo.Session(id="a", evse="e", arrival=T0, departure=T0 + timedelta(hours=1), energy_kwh=bad)
    with pytest.raises(ValidationError):
        lo.Signals(import_price=bad)
    with pytest.raises(ValidationError):
        lo.SeriesPoint(start=T0, value=bad)


def test_naive_datetime_rejected():
    with pytest.raises(ValidationError, match="timezone"):
        lo.Horizon(start=datetime(2026, 1, 1), n_periods=4)
    with pytest.raises(ValidationError, match="timezone"):
        lo.Session(
            id="a",
            evse="e",
            arrival=datetime(2026, 1, 1),
            departure=datetime(2026, 1, 2),
            energy_kwh=1,
        )


def test_extra_fields_rejected():
    with pytest.raises(ValidationError, match="max_curent"):
        lo.Node(id="n", max_curent=5)


def test_dr_event_needs_exactly_one_kind():
    with pytest.raises(ValidationError, match="exactly one"):
        lo.DemandResponseEvent(id="x", start=T0, end=T0 + timedelta(hours=1))
    with pytest.raises(ValidationError, match="exactly one"):
        lo.DemandResponseEvent(
            id="x", start=T0, end=T0 + timedelta(hours=1), import_cap_kw=1, reduction_kw=1
        )


def test_models_are_immutable_and_json_roundtrip(tmp_path):
    from loadopt.scenario import Scenario
    from loadopt.synthetic import demo_scenario

    sc = demo_scenario()
    with pytest.raises(ValidationError):
        sc.site.nodes[0].max_current = 1  # type: ignore[misc]
    path = tmp_path / "s.json"
    sc.dump(path)
    assert Scenario.load(path) == sc


def test_scenario_file_error_names_field(tmp_path):
    from loadopt.scenario import Scenario

    path = tmp_path / "bad.json"
    path.write_text(
        '{"site": {"nodes": [{"id": "g", "max_current": -3}]}, '
        '"horizon": {"start": "2026-01-01T00:00:00Z"}}'
    )
    with pytest.raises(ValidationError, match=r"site\.nodes\.0\.max_current"):
        Scenario.load(path)


def test_sample_min_takes_the_lowest_value_in_force():
    h = horizon(4, 3600)
    pts = (
        lo.SeriesPoint(start=T0 + timedelta(minutes=90), value=5.0),
        lo.SeriesPoint(start=T0 + timedelta(minutes=100), value=7.0),
    )
    assert sample(10.0, pts, h, "min").tolist() == [10.0, 5.0, 7.0, 7.0]
    assert sample(10.0, pts, h, "max").tolist() == [10.0, 10.0, 7.0, 7.0]
    mean = sample(10.0, pts, h, "mean")
    assert mean[1] == pytest.approx((30 * 10 + 10 * 5 + 20 * 7) / 60)
    assert sample(None, None, h, "min").tolist() == [float("inf")] * 4
