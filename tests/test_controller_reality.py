"""Controller hardening (issue 10): bad calls rejected at the call and never poisoning later steps,
meter readings it can trust, observed reality over the plan, re-planning between steps, real time
across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.errors import InputError, LoadoptError

from .fuzz_checker import Limits
from .physics import physical_violations

T0 = datetime(2026, 6, 10, 8, tzinfo=UTC)


def _site(breaker_a: float = 32.0, n: int = 2) -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid"), lo.Node(id="cb", parent="grid", max_current=breaker_a)),
        evses=tuple(lo.Evse(id=f"e{k}", node="cb", charge_point_id=f"CP{k}") for k in range(n)),
    )


def _sess(
    sid: str, evse: str, kwh: float = 60.0, hours: float = 8.0, arrival=T0, **kw
) -> lo.Session:
    return lo.Session(
        id=sid,
        evse=evse,
        arrival=arrival,
        departure=arrival + timedelta(hours=hours),
        energy_kwh=kwh,
        **kw,
    )


# ------------------------------------------------------------------------------ bad calls
@pytest.mark.parametrize("at", [datetime(2026, 6, 10, 8, 15), "2026-06-10T08:15:00Z", 1.7e9, None])
def test_meter_with_a_naive_or_non_datetime_is_rejected_at_the_call(at):
    c = Controller(_site(), step_s=900, n_periods=4)
    c.start_session(_sess("a", "e0"))
    c.step(T0)
    with pytest.raises(InputError, match="meter reading of session 'a'"):
        c.meter("a", at, energy_kwh=1.0)
    # the loop is not poisoned: later steps work
    c.meter("a", T0 + timedelta(minutes=15), energy_kwh=2.0, current_a=16.0)
    sched = c.step(T0 + timedelta(minutes=15))
    assert sched.violations() == []
    assert physical_violations(sched.problem, sched.current, sched.n_phases) == []


def test_start_transaction_stamped_9999_is_an_input_error_not_an_overflow():
    c = Controller(_site(), step_s=900, n_periods=4)
    with pytest.raises(InputError, match="supported range"):
        c.new_session("tx", "e0", datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    with pytest.raises(InputError, match="supported range"):
        c.new_session("tx", "e0", T0, departure=datetime(9999, 12, 31, tzinfo=UTC))
    with pytest.raises(InputError, match="start_session: session must be a Session"):
        c.start_session("tx")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="step: now"):
        c.step("now")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        c.stop_session("tx", T0)
    s0 = c.step(T0)
    assert s0.violations() == []
    assert physical_violations(s0.problem, s0.current, s0.n_phases) == []


# ------------------------------------------------------------------------------ readings
def test_stale_future_and_out_of_order_readings_are_rejected_with_a_record():
    c = Controller(_site(), step_s=900, n_periods=4)
    c.start_session(_sess("a", "e0"))
    c.step(T0 + timedelta(hours=1))
    t = T0 + timedelta(hours=1, minutes=10)
    assert c.meter("a", t, energy_kwh=10.0)
    assert not c.meter("a", t - timedelta(minutes=1), energy_kwh=9.0)  # out of order
    assert not c.meter("a", t + timedelta(minutes=1), energy_kwh=8.0)  # energy went down
    assert not c.meter("a", T0 + timedelta(minutes=5), current_a=3.0)  # stale (55 min old)
    assert not c.meter("a", t + timedelta(days=3), energy_kwh=50.0)  # from the future
    reasons = [r.reason for r in c.rejected_readings]
    assert [r.split(":")[0].split(" ")[0] for r in reasons] == [
        "out",
        "cumulative",
        "stale",
        "from",
    ]
    assert all(r.session_id == "a" for r in c.rejected_readings)
    c.step(t + timedelta(minutes=5))
    assert c._state["a"].read_kwh == 10.0
    assert any("rejected" in e for e in c.log[-1].events)


def test_a_clock_going_backwards_never_double_counts_estimated_energy():
    """Issue 10: 16.6 -> 22.1 kWh. One car at 16 A (11.04 kW) with no readings: the estimate
    after steps at 10:00, 11:00, (back to) 10:30, 11:30 covers 1.5 h, not 2 h."""
    c = Controller(_site(16.0), step_s=900, n_periods=4, reshare=False)
    c.start_session(_sess("a", "e0", kwh=100.0, arrival=T0 + timedelta(hours=2)))
    for h in (2.0, 3.0, 2.5, 3.5):
        c.step(T0 + timedelta(hours=h))
    kw = 16.0 * 230 * 3 / 1000
    st = c._state["a"]
    assert st.delivered_kwh == pytest.approx(kw * 1.5)
    assert any("backwards" in e for r in c.log for e in r.events)


# ------------------------------------------------------------------------------ observed reality
def test_a_vehicle_above_its_limit_is_budgeted_at_what_it_draws():
    """Issue 10: an EV that ignores its limit. 32 A breaker, two cars at 16 A; car a draws 32 A:
    from the next step on, b gets what is left (0 A) until a complies, then both share again."""
    site = _site(32.0)
    c = Controller(site, step_s=900, n_periods=4)
    for sid, ev in (("a", "e0"), ("b", "e1")):
        c.start_session(_sess(sid, ev, max_current=16.0))
    s0 = c.step(T0)
    assert s0.current[:, 0].tolist() == [16.0, 16.0]
    now = T0 + timedelta(minutes=15)
    assert c.meter("a", now, current_a=(32.0, 32.0, 32.0))
    assert c.meter("b", now, current_a=16.0)
    s1 = c.step(now)
    i = {sid: k for k, sid in enumerate(s1.problem.session_ids)}
    assert s1.current[i["b"], 0] == 0.0
    assert s1.current[i["a"], 0] <= 16.0  # its own limit is not raised
    assert "e0" in c.reservations and "32.0 A" in c.reservations["e0"].reason
    assert any("draws 32.0 A above its limit 16.0 A" in e for e in c.log[-1].events)
    # physically: a at 32 A (metered) + b as planned keeps the breaker
    lim = Limits(site, s1.problem.sessions, s1.problem.horizon, c.signals)
    assert (
        lim.breaches(s1.current, s1.problem.session_ids, reserved={"e0": (32.0, 32.0, 32.0)}) == []
    )
    # without the reservation the old plan would have broken it
    assert (
        lim.breaches(s0.current[:, :4], s1.problem.session_ids, reserved={"e0": (32.0, 32.0, 32.0)})
        != []
    )
    # a complies: the reservation is lifted, both share again
    now2 = now + timedelta(minutes=15)
    assert c.meter("a", now2, current_a=s1.current[i["a"], 0])
    s2 = c.step(now2)
    assert "e0" not in c.reservations
    assert any("complies again" in e for e in c.log[-1].events)
    assert s2.current[:, 0].sum() == pytest.approx(32.0)


def test_overdraw_within_tolerance_is_not_a_reservation():
    c = Controller(_site(32.0), step_s=900, n_periods=4, overdraw_tolerance_a=1.0)
    c.start_session(_sess("a", "e0"))
    c.start_session(_sess("b", "e1"))
    c.step(T0)
    now = T0 + timedelta(minutes=15)
    c.meter("a", now, current_a=16.9)
    c.step(now)
    assert c.reservations == {}


# ------------------------------------------------------------------------------ re-planning
def test_a_grid_signal_between_steps_is_obeyed_at_once():
    """Issue 10: a DR event arriving between steps was obeyed only at the next step."""
    site = _site(63.0)
    c = Controller(site, step_s=900, n_periods=8)
    c.start_session(_sess("a", "e0"))
    c.start_session(_sess("b", "e1"))
    assert c.step(T0).import_kw[0] > 20.0
    now = T0 + timedelta(minutes=4)
    cap = lo.GridSignal(id="dr1", start=now, end=now + timedelta(hours=1), import_cap_kw=11.0)
    sched = c.on_signal(cap, now)
    assert sched.problem.horizon.start == now
    assert sched.import_kw[:4].max() <= 11.0 + 1e-9
    assert c.log[-1].reason.startswith("replan: grid signal(s) ['dr1']")
    # the same id replaces the signal; new Signals replace everything
    c.on_signal(cap.model_copy(update={"import_cap_kw": 5.0}), now + timedelta(minutes=1))
    assert [g.import_cap_kw for g in c.signals.grid_signals] == [5.0]
    c.on_signal(lo.Signals(), now + timedelta(minutes=2))
    assert c.signals.grid_signals == ()
    with pytest.raises(InputError, match="GridSignal"):
        c.on_signal("cap", now)  # type: ignore[arg-type]


def test_replan_after_a_session_change_lists_it():
    c = Controller(_site(), step_s=900, n_periods=4)
    c.start_session(_sess("a", "e0"))
    c.step(T0)
    c.start_session(_sess("b", "e1", arrival=T0 + timedelta(minutes=3)))
    sched = c.replan(T0 + timedelta(minutes=3), "plug-in")
    assert set(sched.problem.session_ids) == {"a", "b"}
    rec = c.log[-1]
    assert rec.reason.startswith("replan: plug-in")
    assert any("'b' started" in e for e in rec.events)


# ------------------------------------------------------------------------------ DST
@pytest.mark.parametrize(
    "tz,day",
    [
        ("Europe/Berlin", datetime(2026, 3, 29)),
        ("Europe/Berlin", datetime(2026, 10, 25)),
        ("America/Los_Angeles", datetime(2026, 3, 8)),
        ("America/Los_Angeles", datetime(2026, 11, 1)),
    ],
)
def test_controller_time_is_real_time_across_dst(tz, day):
    zone = ZoneInfo(tz)
    arrival = day.replace(hour=0, tzinfo=zone)
    c = Controller(_site(), step_s=3600, n_periods=6, default_dwell_h=8.0)
    s = c.new_session("a", "e0", arrival)
    assert s.departure.timestamp() - arrival.timestamp() == 8 * 3600
    c.start_session(s)
    c.reserve("e1", 5.0, until=day.replace(hour=4, tzinfo=zone))
    sched = c.step(arrival)
    k = int((day.replace(hour=4, tzinfo=zone).timestamp() - arrival.timestamp()) // 3600)
    assert sched.problem.evse_reserved_a[1, 0].tolist() == [5.0] * k + [0.0] * (6 - k)
    # 10 real hours later the car has overstayed its 8 h: extended from now, in real time
    later = datetime.fromtimestamp(arrival.timestamp() + 10 * 3600, tz=zone)
    sched = c.step(later)
    dep = sched.problem.sessions[0].departure
    assert dep.timestamp() - later.timestamp() == c.overstay_extension_h * 3600


def test_every_bad_call_is_a_loadopt_error():
    c = Controller(_site(), step_s=900, n_periods=4)
    c.start_session(_sess("a", "e0"))
    calls = [
        lambda: c.meter("a", T0, energy_kwh="abc"),
        lambda: c.meter("a", T0, current_a=(1.0, 2.0)),
        lambda: c.meter("a", T0, current_a=float("nan")),
        lambda: c.meter("zz", T0, energy_kwh=1.0),
        lambda: c.reserve("e0", 5.0, until="tomorrow"),
        lambda: c.reserve("e9", 5.0),
        lambda: c.set_signals({"grid_import_limit_kw": 3}),
        lambda: c.expect_session(None),
        lambda: c.new_session("x", "e1", "08:00"),
        lambda: c.new_session("x", "e1", T0, energy_kwh=-1),
        lambda: c.meter(["a"], T0, energy_kwh=1.0),
        lambda: c.reserve(None, 1.0),
        lambda: c.cancel_expected({}),
        lambda: Controller("site"),
        lambda: Controller(_site(), planner="nope"),
        lambda: Controller(_site(), signals="x"),
        lambda: Controller(_site(), default_dwell_h=float("nan")),
        lambda: Controller(_site(), step_s=-1),
        lambda: Controller(_site(), time_limit_s=-1.0),
    ]
    for call in calls:
        with pytest.raises(LoadoptError):
            call()
    s0 = c.step(T0)
    assert s0.violations() == []
    assert physical_violations(s0.problem, s0.current, s0.n_phases) == []
    assert np.isfinite(c._state["a"].delivered_kwh)
