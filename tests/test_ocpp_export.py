"""Transition-safe release in the export direction (OCPP 2.1 V2X): an old discharge setpoint
still held while a new one travels counts until it is resolved, so a new discharge allowance
goes out only when, with both counted, every export row stays within its limit.

The plan's discharge comes from a labelled test seam (the adapter's ``tx_profiles`` turns the
TxProfile of the session named in ``state["v2g"]`` into a V2G one discharging 10 A per phase):
the controller itself plans discharge only for sessions with V2X parameters. Checked after
every message a station applies, from the stations' OWN stores (tests/ocpp_helpers.SimStation,
written from the wire payloads) and the raw site data, in both directions.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter

from .ocpp_helpers import SimStation, deliver_outgoing, site_export_rows, site_rows

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EXPORT_KW = 8.0  # one car discharging 10 A on 3 × 230 V (6.9 kW) fits, two do not
SITE = lo.Site(
    nodes=(lo.Node(id="g", kind="grid_connection", max_current=40.0),),
    evses=tuple(
        lo.Evse(
            id=f"v{i}",
            node="g",
            charge_point_id=f"V{i}",
            connector_id=1,
            max_current=16.0,
            bidirectional=True,
            phase_rotation=rot,
        )
        for i, rot in ((1, "RST"), (2, "STR"))
    ),
)


def _seam(monkeypatch, state):
    import loadopt.ocpp.adapter.targets as targets_mod
    from loadopt.ocpp.profiles import tx_profiles as real

    def v2g(*a, **kw):
        out = []
        for p in real(*a, **kw):
            if p.session_id == state["v2g"]:
                k = p.starts.size
                p = replace(
                    p,
                    limits=np.zeros_like(p.limits),
                    discharge=np.full(k, 100, np.int64),
                    min_rate_da=None,
                )
            out.append(p)
        return out

    monkeypatch.setattr(targets_mod, "tx_profiles", v2g)


class _Run:
    def __init__(self) -> None:
        ctl = Controller(
            SITE,
            step_s=300,
            n_periods=6,
            method="fast",
            signals=lo.Signals(grid_export_limit_kw=EXPORT_KW),
        )
        self.ad = CsmsAdapter(ctl, send_timeout_s=20.0, backoff_s=(5.0, 20.0))
        self.st = {cp: SimStation(cp, "2.1", [e]) for e in SITE.evses for cp in [e.charge_point_id]}
        self.now = T0
        self.inbox: dict[str, list] = {cp: [] for cp in self.st}
        self.answers: list = []
        self.checked = 0
        for cp in self.st:
            assert self.ad.connect(cp, "2.1")
        self.route(self.ad.poll(self.now))
        self.flush()

    def route(self, msgs) -> None:
        for cp, action, payload in msgs:
            self.inbox[cp].append((action, payload))

    def check(self) -> None:
        """Both directions, now and at every minute of the next half hour."""
        for s in range(0, 1800, 60):
            t = self.now.timestamp() + s
            for row, (a, lim) in {
                **site_rows(SITE, self.st, t, None),
                **site_export_rows(SITE, self.st, t, EXPORT_KW),
            }.items():
                assert a <= lim + 1e-6, f"{row} at +{s} s: {a:.2f} > {lim}"
        self.checked += 1

    def apply(self, cp, action, payload, fault="none"):
        sim = self.st[cp]
        sim.now_s = self.now.timestamp()
        if fault == "message lost":
            return
        resp = {"status": "Rejected"} if fault == "reject" else sim.handle(action, payload)
        deliver_outgoing(self.ad, cp, sim)
        self.check()
        if fault != "answer lost":
            self.answers.append((cp, action, payload, resp))

    def answer(self) -> None:
        while self.answers:
            cp, action, payload, resp = self.answers.pop(0)
            self.ad.on_response(cp, action, payload, resp, now=self.now)
            self.route(self.ad.poll(self.now))

    def flush(self, order=("V1", "V2")) -> None:
        for _ in range(6):
            for cp in order:
                while self.inbox[cp]:
                    self.apply(cp, *self.inbox[cp].pop(0))
            self.answer()

    def start(self, cp: str) -> None:
        wire = f"{cp}-tx"
        self.st[cp].tx[1] = wire
        assert self.ad.on_transaction_event(
            cp,
            {
                "eventType": "Started",
                "timestamp": self.now.isoformat(),
                "seqNo": 0,
                "triggerReason": "CablePluggedIn",
                "transactionInfo": {"transactionId": wire},
                "evse": {"id": 1},
            },
        )

    def discharging(self, cp: str) -> float:
        return self.st[cp].may_discharge(1, self.now.timestamp())[0]


@pytest.mark.parametrize("fault", ["none", "reject", "answer lost", "message lost"])
def test_a_discharge_increase_waits_for_the_decrease_it_depends_on(monkeypatch, fault):
    """V1 discharges 10 A; the plan moves the discharge to V2. V1's decrease meets ``fault``
    and V2 answers first: V2's new setpoint must not go out while V1's old one may be held
    (13.8 kW on an 8 kW export limit). Once V1's decrease is confirmed, V2 discharges."""
    state = {"v2g": "V1:V1-tx"}
    _seam(monkeypatch, state)
    r = _Run()
    r.start("V1")
    r.start("V2")
    r.route(r.ad.step(r.now))
    r.flush()
    assert r.discharging("V1") == 10.0 and r.discharging("V2") == 0.0
    # the plan moves the discharge: V1's decrease meets the fault, V2 is served first
    state["v2g"] = "V2:V2-tx"
    r.now += timedelta(seconds=30)
    r.route(r.ad.step(r.now))
    assert any(a == "SetChargingProfile" for a, _ in r.inbox["V1"]), "no decrease for V1"
    action, payload = r.inbox["V1"].pop(0)
    while action != "SetChargingProfile":
        r.apply("V1", action, payload)
        action, payload = r.inbox["V1"].pop(0)
    r.apply("V1", action, payload, fault)
    for _ in range(4):
        r.flush(order=("V2", "V1"))
        r.now += timedelta(seconds=25)
        r.route(r.ad.step(r.now))
    r.flush()
    assert r.checked > 10
    assert r.discharging("V1") == 0.0
    assert r.discharging("V2") == 10.0, "the new setpoint was never released"


def test_the_belief_bounds_what_a_station_may_discharge(monkeypatch):
    """After a random run of V2G sends, answers, losses and rejections, the adapter's belief of
    what each connector may discharge is at least what each simulated store lets it discharge,
    at every instant (and likewise for what it may draw)."""
    rng = np.random.default_rng(7)
    state = {"v2g": "V1:V1-tx"}
    _seam(monkeypatch, state)
    r = _Run()
    r.start("V1")
    r.start("V2")
    for _ in range(30):
        r.now += timedelta(seconds=int(rng.integers(1, 40)))
        state["v2g"] = str(rng.choice(["V1:V1-tx", "V2:V2-tx", "none"]))
        msgs = r.ad.step(r.now) if rng.random() < 0.4 else r.ad.poll(r.now)
        for cp, a, p in msgs:
            x = rng.random()
            if x < 0.15:
                continue  # lost
            r.st[cp].now_s = r.now.timestamp()
            resp = r.st[cp].handle(a, p)
            deliver_outgoing(r.ad, cp, r.st[cp])
            if x < 0.3 and a == "SetChargingProfile":
                resp = {"status": "Rejected"}
            if x > 0.85:
                continue  # applied, answer lost
            r.ad.on_response(cp, a, p, resp, now=r.now)
        ts = np.array([r.now.timestamp() + s for s in (0, 1, 299, 300, 900, 1700)])
        worst_d = r.ad.belief.worst_discharge_a(ts)
        worst_c = r.ad.belief.worst_a(ts)
        for i, e in enumerate(SITE.evses):
            for j, t in enumerate(ts):
                d = r.st[e.charge_point_id].may_discharge(1, t)
                c = r.st[e.charge_point_id].may_draw(1, t)
                assert max(d[:3]) <= worst_d[j, i].max() + 1e-6, (e.id, t, d, worst_d[j, i])
                assert c[0] <= worst_c[j, i, 0] + 1e-6, (e.id, t, c, worst_c[j, i])


def test_dwells_leave_a_v2g_profile_as_planned(monkeypatch):
    """The on/off dwells rebuild a TxProfile's periods; a V2G one (its discharge per period)
    is left as planned (it crashed the step: discharge periods out of step with the limits)."""
    state = {"v2g": "none"}
    _seam(monkeypatch, state)
    r = _Run()
    r.ad.min_on_s = r.ad.min_off_s = 600.0
    r.start("V1")
    r.route(r.ad.step(r.now))
    r.flush()
    assert r.st["V1"].may_draw(1, r.now.timestamp())[0] > 0  # on: the dwell starts
    state["v2g"] = "V1:V1-tx"  # the plan switches it to discharging inside the dwell
    for _ in range(3):
        r.now += timedelta(seconds=60)
        r.route(r.ad.step(r.now))
        r.flush()
    assert r.discharging("V1") == 10.0
    assert not any("failed" in p for p in r.ad.problems)
