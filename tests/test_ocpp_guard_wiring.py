"""The OCPP transition guard on wired sites (line-to-line EVSEs, delta/wye transformers).

:class:`loadopt.ocpp.guard.SiteLimits` decides whether a profile that raises a connector may go
out while older profiles may still be held. A line carries the phasor sum of its branches, so
the guard must see every line — both lines of a line-to-line pair, the primary lines of a
delta/wye transformer — exactly, with every branch anywhere between 0 and what it may hold.

The checker here is written from the raw site objects with plain complex arithmetic (phase
voltages at 0°, −120°, +120°; a line-to-line branch in phase with ``V_a − V_b``; Dyn11 primary
``I_A = (I_a − I_c)/n``; base load balanced at the site root, PV opposite), not from
``loadopt.wiring`` or the compiled arrays, and tries every vertex of the box of possibly-held
draws (each branch at its charging or its discharging end, base load and PV on or off).
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.acn import jpl_site
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter, SiteLimits

from .conftest import examples
from .ocpp_helpers import SimStation, deliver_outgoing
from .phasors import VOLT, branch_phasors, climb, limit_of

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TOL = 1e-6


def worst_lines(
    site: lo.Site,
    charge: np.ndarray,
    discharge: np.ndarray,
    base_a: float = 0.0,
    pv_a: float = 0.0,
) -> dict[tuple[str, str], float]:
    """Largest magnitude per line over every vertex of the box: each branch ``(e, j)`` at
    ``charge[e, j]`` or at ``-discharge[e, j]``, base load (``base_a`` per phase, balanced at the
    root) and PV (``pv_a``, feeding in there) each on or off."""
    gens: list[tuple[tuple[float, float], dict]] = []
    for e, ev in enumerate(site.evses):
        for j in range(ev.phases):
            hi, lo_ = float(charge[e, j]), -float(discharge[e, j])
            if hi or lo_:
                gens.append(((hi, lo_), climb(site, ev.node, branch_phasors(ev, j))))
    root = next(n.id for n in site.nodes if n.parent is None)
    balanced = climb(site, root, dict(VOLT))
    gens.append(((0.0, base_a), balanced))
    gens.append(((0.0, -pv_a), balanced))
    keys = sorted({key for _, tab in gens for key in tab})
    P = np.array([[tab.get(key, 0) for key in keys] for _, tab in gens], dtype=complex)
    X = np.array(list(itertools.product(*[ends for ends, _ in gens])))  # every vertex
    mag = np.abs(X @ P).max(axis=0)
    return dict(zip(keys, mag, strict=True))


def over(site: lo.Site, worst: dict) -> list[str]:
    return [
        f"{k}: {v:.3f} > {limit_of(site, *k)}"
        for k, v in worst.items()
        if v > limit_of(site, *k) + TOL
    ]


def _evse(k: int, node: str, wiring: str, rot: str, phases: int, **kw) -> lo.Evse:
    return lo.Evse(
        id=f"e{k}",
        node=node,
        charge_point_id=f"CP{k}",
        phases=phases,
        wiring=wiring,
        phase_rotation=rot,
        voltage_v=208.0 if wiring == "line_to_line" else 120.0,
        max_current=32.0,
        **kw,
    )


def _limits(site: lo.Site, signals: lo.Signals | None = None) -> SiteLimits:
    hz = lo.Horizon(start=T0, step_s=900, n_periods=2)
    return SiteLimits(lo.compile_problem(site, [], hz, signals))


def _box(site: lo.Site, amps: dict[int, float]) -> np.ndarray:
    """``(1, E, 3)`` A: EVSE ``e`` at ``amps[e]`` on each of its lines."""
    out = np.zeros((1, len(site.evses), 3))
    for e, a in amps.items():
        out[0, e, : site.evses[e].phases] = a
    return out


def test_a_line_to_line_raise_waits_for_the_other_pair_on_the_shared_line():
    """Regression: the guard counted a line-to-line branch on its first line only. ``e0`` on
    (R, S) may still hold its old 24 A (its decrease to 10 A is in flight) while ``e1`` on
    (S, T) is raised from 10 to 24 A: line S carries 24·|e^{j210°} + e^{j270°}| = 41.6 A on a
    40 A breaker, yet every per-site-phase sum was 24 A, so the raise went out at once."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=40.0),),
        evses=(
            _evse(0, "grid", "line_to_line", "RST", 1),
            _evse(1, "grid", "line_to_line", "STR", 1),
        ),
        voltage_v=120.0,
    )
    lim = _limits(site)
    times = np.array([T0.timestamp()])
    zero = np.zeros((1, 2, 3))
    before, after = _box(site, {0: 24.0, 1: 10.0}), _box(site, {0: 24.0, 1: 24.0})
    worst = worst_lines(site, after[0], zero[0])
    assert worst[("grid", "S")] > 41.5  # what the raise would risk
    assert not lim.within_for(1, after, times)
    assert not lim.admissible(before, after, times)
    assert lim.excess(after, times)[0].max() > 1.5  # the line row shows it
    # once the decrease is accepted the raise goes out (liveness): 30.3 A on line S
    settled = _box(site, {0: 10.0, 1: 24.0})
    assert not over(site, worst_lines(site, settled[0], zero[0]))
    assert lim.within_for(1, settled, times)
    assert lim.admissible(_box(site, {0: 10.0, 1: 10.0}), settled, times)


def test_a_raise_under_a_delta_wye_transformer_respects_its_primary():
    """Regression: the guard did not look at transformer primaries. Under a 1:1 Dyn11
    transformer with 30 A primaries, 20 A on secondary lines R and T is |20 − 20·e^{j120°}| =
    34.6 A on primary line A, while every secondary and per-site-phase sum is 20 A."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=100.0),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=100.0,
                delta_wye=lo.DeltaWye(turns_ratio=1.0, primary_max_current=30.0),
            ),
        ),
        evses=(
            _evse(0, "tx", "line_to_neutral", "RST", 1),  # line R
            _evse(1, "tx", "line_to_neutral", "TRS", 1),  # line T
        ),
        voltage_v=120.0,
    )
    lim = _limits(site)
    times = np.array([T0.timestamp()])
    after = _box(site, {0: 20.0, 1: 20.0})
    assert over(site, worst_lines(site, after[0], np.zeros((2, 3))))
    assert not lim.within_for(1, after, times)
    assert lim.within_for(1, _box(site, {0: 20.0, 1: 10.0}), times)  # 26.5 A on A


@st.composite
def wired_boxes(draw):
    tx = draw(st.booleans())
    nodes = [lo.Node(id="grid", max_current=draw(st.floats(20, 80)))]
    if tx:
        nodes.append(
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=draw(st.floats(20, 80)),
                delta_wye=lo.DeltaWye(
                    turns_ratio=draw(st.sampled_from([1.0, 1.7320508, 4.0])),
                    primary_max_current=draw(st.floats(8, 50)),
                ),
            )
        )
    nodes.append(lo.Node(id="cb", parent=nodes[-1].id, max_current=draw(st.floats(15, 60))))
    n = draw(st.integers(2, 4))
    evses = []
    budget = 9  # branches (the checker enumerates 2^branches vertices)
    for k in range(n):
        wiring = draw(st.sampled_from(["line_to_line", "line_to_neutral"]))
        phases = min(draw(st.sampled_from([1, 1, 2, 3])), max(budget - (n - k - 1), 1))
        budget -= phases
        evses.append(
            _evse(
                k,
                draw(st.sampled_from([x.id for x in nodes])),
                wiring,
                draw(st.sampled_from(["RST", "RTS", "SRT", "STR", "TRS", "TSR"])),
                phases,
            )
        )
    site = lo.Site(nodes=tuple(nodes), evses=tuple(evses), voltage_v=120.0)
    amp = st.sampled_from([0.0, 0.0, 6.0, 10.0, 16.0, 24.0, 32.0])

    def box(scale: float) -> np.ndarray:
        out = np.zeros((2, n, 3))
        for t in range(2):
            for e in range(n):
                out[t, e, : evses[e].phases] = draw(amp) * scale
        return out

    before = box(1.0)
    dis = draw(st.booleans())
    before_d = box(0.5) if dis else np.zeros_like(before)
    k = draw(st.integers(0, n - 1))
    after, after_d = before.copy(), before_d.copy()
    raise_a = draw(st.floats(0.0, 32.0))
    after[:, k, : evses[k].phases] += raise_a
    if dis and draw(st.booleans()):
        after_d[:, k, : evses[k].phases] += draw(st.floats(0.0, 16.0))
    base_kw = draw(st.sampled_from([0.0, 0.0, 3.0, 8.0]))
    pv_kw = draw(st.sampled_from([0.0, 0.0, 4.0, 12.0]))
    return site, k, before, before_d, after, after_d, base_kw, pv_kw


def _brute(site, charge, discharge, base_kw, pv_kw):
    """Per instant, per line: the independent worst magnitude."""
    per_a = 1000.0 / (3.0 * site.voltage_v)
    return [
        worst_lines(site, charge[t], discharge[t], base_kw * per_a, pv_kw * per_a)
        for t in range(charge.shape[0])
    ]


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=wired_boxes())
def test_what_the_guard_admits_keeps_every_line_within_its_limit(case):
    """Whenever :class:`SiteLimits` admits going from the box ``before`` to ``after`` (one
    connector raised, charging and maybe discharging), no line — node line or transformer
    primary — is over its limit at any vertex of ``after``, or, where one already was over
    under ``before``, it did not grow. And conversely (the plan's liveness): a box that the
    independent check finds within every line limit, with a little margin, is admitted."""
    site, k, before, before_d, after, after_d, base_kw, pv_kw = case
    sig = lo.Signals(base_load_kw=base_kw, pv_kw=pv_kw)
    lim = _limits(site, sig)
    times = np.array([T0.timestamp(), (T0 + timedelta(minutes=20)).timestamp()])
    more_d = bool(np.any(after_d[:, k] > before_d[:, k]))
    wb = _brute(site, before, before_d, base_kw, pv_kw)
    wa = _brute(site, after, after_d, base_kw, pv_kw)
    bad = [
        f"t{t} {key}: {wa[t][key]:.3f} > {limit_of(site, *key)} (before {wb[t].get(key, 0.0):.3f})"
        for t in range(2)
        for key in wa[t]
        if wa[t][key] > limit_of(site, *key) + TOL and wa[t][key] > wb[t].get(key, 0.0) + TOL
    ]
    admitted = lim.within_for(
        k, after, times, after_d if more_d else None, held_discharge_a=after_d
    )
    if admitted:
        assert not bad, bad
    if lim.admissible(before, after, times, before_d, after_d):
        assert not bad, bad
    # exact, not just safe: a box clearly within every line limit passes the line rows (no kW
    # or import limit here, and the per-site-phase rows are replaced by the line rows)
    margin = all(
        wa[t][key] <= limit_of(site, *key) * (1 - 1e-6) - 1e-6 for t in range(2) for key in wa[t]
    )
    if margin:
        assert admitted
        assert lim.admissible(before, after, times, before_d, after_d)


def _jpl_adapter():
    site = jpl_site()
    ctl = Controller(site, step_s=900, n_periods=8, method="fast")
    ad = CsmsAdapter(ctl)
    sims = {}
    for e in site.evses:
        sims[e.charge_point_id] = SimStation(e.charge_point_id, "1.6", [e])
        assert ad.connect(e.charge_point_id, "1.6")
    return site, ad, sims


def _deliver(ad, sims, msgs, now, hold=()):
    """Every message to its station and every answer back, except SetChargingProfile to the
    charge points in ``hold`` (kept in flight, returned); then what became safe, until
    nothing is left."""
    held = []
    for sim in sims.values():
        sim.now_s = now.timestamp()
    while msgs:
        for cp, action, payload in msgs:
            if cp in hold and action == "SetChargingProfile":
                held.append((cp, action, payload))
                continue
            ad.on_response(cp, action, payload, sims[cp].handle(action, payload), now=now)
            deliver_outgoing(ad, cp, sims[cp])
        msgs = ad.poll(now)
    return held


def test_a_transition_on_the_jpl_garage_completes_and_waits_for_its_decreases():
    """Liveness on the JPL garage (208 V line-to-line EVSEs under 480/120 V Dyn transformers):
    cars plugged on one sub-panel get their TxProfiles; more cars arrive on the same lines, so
    the plan lowers the first ones and gives the newcomers their share. While the decreases are
    in flight the raises that need them wait; once they are accepted, every profile goes out."""
    site, ad, sims = _jpl_adapter()
    _deliver(ad, sims, ad.poll(T0), T0)
    panel = [e for e in site.evses if e.node == "1f-sp1"]
    first, later = panel[:3], panel[3:9]

    def start(evs, t):
        for e in evs:
            tx = ad.on_start_transaction(
                e.charge_point_id,
                {"connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": t.isoformat()},
            )
            sims[e.charge_point_id].tx[1] = tx

    start(first, T0)
    now = T0 + timedelta(seconds=30)
    _deliver(ad, sims, ad.step(now), now)
    assert ad.waiting() == [] and ad.problems == []
    now += timedelta(minutes=5)
    start(later, now)
    in_flight = {e.charge_point_id for e in first}
    held = _deliver(ad, sims, ad.step(now), now, hold=in_flight)
    assert held  # the first cars' decreases are in flight ...
    assert ad.waiting()  # ... and some raise waits for them
    for cp, action, payload in held:
        ad.on_response(cp, action, payload, sims[cp].handle(action, payload), now=now)
        deliver_outgoing(ad, cp, sims[cp])
    _deliver(ad, sims, ad.poll(now), now)
    assert ad.waiting() == [] and ad.problems == []
    got = {
        e.charge_point_id: sims[e.charge_point_id].may_draw(1, now.timestamp())[0]
        for e in first + later
    }
    assert all(v > 0 for v in got.values()), got


def test_the_adapter_holds_a_line_to_line_raise_until_the_shared_line_is_free():
    """Through the real adapter: three 208 V pairs in a delta on a 40 A breaker. A car on
    (R, S) charges alone; then cars arrive on (S, T) and (T, R), the plan lowers the first and
    shares. While the first car's decrease is in flight, every station may hold its old or its
    new profile: the independent check over that box finds no line over 40 A. Once the
    decrease is answered, every raise goes out."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", kind="grid_connection", max_current=40.0),),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="grid",
                charge_point_id=f"CP{k}",
                phases=1,
                wiring="line_to_line",
                phase_rotation=rot,
                voltage_v=208.0,
                max_current=32.0,
            )
            for k, rot in enumerate(("RST", "STR", "TRS"))
        ),
        voltage_v=120.0,
    )
    ad = CsmsAdapter(Controller(site, step_s=900, n_periods=8, method="fast"))
    sims = {e.charge_point_id: SimStation(e.charge_point_id, "1.6", [e]) for e in site.evses}
    for cp in sims:
        assert ad.connect(cp, "1.6")
    _deliver(ad, sims, ad.poll(T0), T0)

    def start(e, t):
        tx = ad.on_start_transaction(
            e.charge_point_id,
            {"connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": t.isoformat()},
        )
        sims[e.charge_point_id].tx[1] = tx

    start(site.evses[0], T0)
    now = T0 + timedelta(seconds=30)
    _deliver(ad, sims, ad.step(now), now)
    assert sims["CP0"].may_draw(1, now.timestamp())[0] > 20.0
    now += timedelta(minutes=5)
    start(site.evses[1], now)
    start(site.evses[2], now)
    held = _deliver(ad, sims, ad.step(now), now, hold={"CP0"})
    assert held
    # at every instant of the plan, each station may hold its old or its new profile
    for t in now.timestamp() + np.arange(0.0, 8 * 900.0, 300.0):
        box = np.zeros((3, 3))
        for e, ev in enumerate(site.evses):
            cp = ev.charge_point_id
            after = copy.deepcopy(sims[cp])
            for c, action, payload in held:
                if c == cp:
                    after.handle(action, payload)
            box[e, 0] = max(sims[cp].may_draw(1, t)[0], after.may_draw(1, t)[0])
        assert not over(site, worst_lines(site, box, np.zeros((3, 3)))), (t, box)
    assert ad.waiting()  # a raise waits for the decrease
    for cp, action, payload in held:
        ad.on_response(cp, action, payload, sims[cp].handle(action, payload), now=now)
        deliver_outgoing(ad, cp, sims[cp])
    _deliver(ad, sims, ad.poll(now), now)
    assert ad.waiting() == [] and ad.problems == []
    assert all(sims[f"CP{k}"].may_draw(1, now.timestamp())[0] > 0 for k in range(3))
