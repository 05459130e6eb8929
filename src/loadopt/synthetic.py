"""Seeded generators of realistic sites, sessions and signals (tests, benchmarks, the demo).

Everything is reproducible from ``seed``. Numbers follow common European AC sites: 230 V
phase-to-neutral, 16/32 A EVSEs, a share of single-phase vehicles (many PHEVs and older EVs
charge on one phase), phase rotation alternated so single-phase load spreads over R, S and T.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from ._base import SeriesPoint
from .horizon import Horizon
from .objective import Objective
from .scenario import Scenario
from .session import Session
from .signals import DemandResponseEvent, Signals
from .site import Evse, Node, Site

#: Rotations that put EVSE L1 on R, S and T in turn (the usual installer practice).
BALANCED_ROTATIONS = ("RST", "STR", "TRS")


def make_site(
    n_evse: int,
    *,
    evses_per_circuit: int = 2,
    circuits_per_feeder: int = 5,
    circuit_a: float = 40.0,
    feeder_a: float = 125.0,
    grid_a: float | None = None,
    transformer_kw: float | None = None,
    share_single_phase_evse: float = 0.1,
    seed: int = 0,
) -> Site:
    """A grid connection → transformer → feeders → circuits → EVSEs tree.

    ``grid_a`` defaults to about 35 % of what all EVSEs could draw: a congested site, as real
    ones are (nobody sizes the connection for every car at 32 A).
    """
    rng = np.random.default_rng(seed)
    n_circuits = max(1, -(-n_evse // evses_per_circuit))
    n_feeders = max(1, -(-n_circuits // circuits_per_feeder))
    if grid_a is None:
        grid_a = max(63.0, round(0.35 * 32.0 * n_evse))
    nodes = [Node(id="grid", kind="grid_connection", max_current=grid_a)]
    nodes.append(
        Node(
            id="trafo",
            parent="grid",
            kind="transformer",
            max_power_kw=transformer_kw or round(0.9 * grid_a * 3 * 0.23, 1),
        )
    )
    for f in range(n_feeders):
        nodes.append(Node(id=f"feeder{f}", parent="trafo", kind="feeder", max_current=feeder_a))
    for c in range(n_circuits):
        nodes.append(
            Node(
                id=f"circuit{c}",
                parent=f"feeder{c // circuits_per_feeder}",
                kind="circuit",
                max_current=circuit_a,
            )
        )
    single = rng.random(n_evse) < share_single_phase_evse
    evses = [
        Evse(
            id=f"evse{k}",
            node=f"circuit{k // evses_per_circuit}",
            charge_point_id=f"CP{k // 2:04d}",
            connector_id=k % 2 + 1,
            phases=1 if single[k] else 3,
            phase_rotation=BALANCED_ROTATIONS[k % 3],
            max_current=32.0 if not single[k] else 16.0,
        )
        for k in range(n_evse)
    ]
    return Site(id="synthetic", nodes=tuple(nodes), evses=tuple(evses))


def make_sessions(
    site: Site,
    horizon: Horizon,
    *,
    kind: str = "workplace",
    sessions_per_evse: float = 1.0,
    seed: int = 0,
) -> list[Session]:
    """Sessions over the horizon, at most one per EVSE at a time.

    ``kind``: ``"workplace"`` (arrive 7–10 h, stay 6–10 h), ``"depot"`` (buses in at 18–21 h,
    out at 5–6 h, large batteries) or ``"public"`` (arrivals all day, 0.5–3 h stays).
    ``sessions_per_evse`` > 1 puts consecutive sessions on the same EVSE.
    """
    rng = np.random.default_rng(seed)
    evses = site.evses
    n = round(len(evses) * sessions_per_evse)
    day0 = horizon.start.replace(hour=0, minute=0, second=0, microsecond=0)
    span_h = horizon.n_periods * horizon.step_h
    out: list[Session] = []
    free_at = {e.id: horizon.start for e in evses}
    for k in range(n):
        e = evses[k % len(evses)]
        if kind == "workplace":
            arr_h = rng.normal(8.5, 1.0)
            dwell = float(np.clip(rng.normal(8.0, 1.5), 2.0, 11.0))
            energy = float(rng.uniform(5.0, 40.0))
        elif kind == "depot":
            arr_h = rng.uniform(18.0, 21.0)
            dwell = float(rng.uniform(8.0, 11.0))
            energy = float(rng.uniform(60.0, 200.0))
        elif kind == "public":
            arr_h = rng.uniform(0.0, max(span_h - 1.0, 0.5))
            dwell = float(rng.uniform(0.5, 3.0))
            energy = float(rng.uniform(5.0, 30.0))
        else:
            raise ValueError(f"unknown session kind {kind!r}")
        arrival = max(day0 + timedelta(hours=float(arr_h)), free_at[e.id])
        if k >= len(evses):  # later sessions on the same EVSE: after the previous one
            arrival = free_at[e.id] + timedelta(minutes=float(rng.uniform(5, 60)))
        departure = arrival + timedelta(hours=dwell)
        free_at[e.id] = departure
        one_phase_car = rng.random() < 0.25
        out.append(
            Session(
                id=f"tx{k:05d}",
                evse=e.id,
                arrival=_minute(arrival),
                departure=_minute(departure),
                energy_kwh=round(energy, 2),
                max_current=float(rng.choice([16.0, 32.0])),
                phases=1 if one_phase_car else 3,
                priority=float(rng.choice([1.0, 1.0, 1.0, 2.0])),
            )
        )
    return out


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def tou_prices(
    horizon: Horizon, peak: float = 0.38, shoulder: float = 0.26, off_peak: float = 0.14
) -> tuple[SeriesPoint, ...]:
    """Time-of-use import prices per kWh: off-peak 22–7 h, peak 17–21 h, shoulder otherwise."""
    day0 = horizon.start.replace(hour=0, minute=0, second=0, microsecond=0)
    pts = []
    for d in range(int(np.ceil(horizon.n_periods * horizon.step_h / 24)) + 1):
        base = day0 + timedelta(days=d)
        pts += [
            SeriesPoint(start=base, value=off_peak),
            SeriesPoint(start=base + timedelta(hours=7), value=shoulder),
            SeriesPoint(start=base + timedelta(hours=17), value=peak),
            SeriesPoint(start=base + timedelta(hours=21), value=shoulder),
            SeriesPoint(start=base + timedelta(hours=22), value=off_peak),
        ]
    return tuple(pts)


def pv_profile(horizon: Horizon, peak_kw: float) -> tuple[SeriesPoint, ...]:
    """A clear-sky PV bell from 6 h to 20 h peaking at 13 h, one point per period (kW)."""
    pts = []
    for k in range(horizon.n_periods):
        t = horizon.period_start(k)
        hour = t.hour + t.minute / 60
        v = peak_kw * max(np.sin(np.pi * (hour - 6.0) / 14.0), 0.0) ** 1.5 if 6 < hour < 20 else 0
        pts.append(SeriesPoint(start=t, value=round(float(v), 3)))
    return tuple(pts)


def base_load_profile(horizon: Horizon, night_kw: float, day_kw: float) -> tuple[SeriesPoint, ...]:
    """Building load: ``day_kw`` on 7–19 h, ``night_kw`` otherwise (kW)."""
    pts = []
    for k in range(horizon.n_periods):
        t = horizon.period_start(k)
        pts.append(SeriesPoint(start=t, value=day_kw if 7 <= t.hour < 19 else night_kw))
    return tuple(pts)


def demo_scenario(start: datetime | None = None, n_evse: int = 40, seed: int = 7) -> Scenario:
    """The README's demo: a 40-EVSE workplace for one day in 15-minute periods.

    Grid connection 160 A → 100 kW transformer (which also feeds the office's base load) →
    4 feeders of 63 A → 20 circuits of 32 A with two EVSEs each (a tenth single-phase, rotations
    alternated), a day of workplace sessions, time-of-use prices, a 60 kWp PV roof, and a
    demand-response event capping import at 45 kW from 17:00 to 18:30.
    """
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")
    start = start or datetime(2026, 6, 10, tzinfo=tz)
    horizon = Horizon(start=start, step_s=900, n_periods=96)
    site = make_site(
        n_evse,
        evses_per_circuit=2,
        circuits_per_feeder=5,
        circuit_a=32.0,
        feeder_a=63.0,
        grid_a=160.0,
        transformer_kw=100.0,
        seed=seed,
    )
    site = site.model_copy(update={"base_load_node": "trafo"})  # the office shares the trafo
    sessions = make_sessions(site, horizon, kind="workplace", seed=seed)
    signals = Signals(
        import_price=tou_prices(horizon),
        export_price=0.07,
        base_load_kw=base_load_profile(horizon, night_kw=6.0, day_kw=18.0),
        pv_kw=pv_profile(horizon, peak_kw=60.0),
        grid_import_limit_kw=100.0,
        demand_response=(
            DemandResponseEvent(
                id="dr-evening",
                start=start.replace(hour=17),
                end=start.replace(hour=18, minute=30),
                import_cap_kw=45.0,
            ),
        ),
    )
    return Scenario(
        site=site,
        horizon=horizon,
        sessions=tuple(sessions),
        signals=signals,
        objective=Objective(demand_charge_per_kw=0.05),
    )


def benchmark_scenario(n_sessions: int, n_periods: int = 96, seed: int = 0) -> Scenario:
    """The congested instance the benchmarks use: ``n_sessions`` workplace sessions on as many
    EVSEs (feeders at ~40 % of what their EVSEs could draw, a grid connection at ~35 %), 15-minute
    periods over a day, time-of-use prices, PV and base load scaled to the site, and a
    demand-response cap in the evening."""
    from zoneinfo import ZoneInfo

    start = datetime(2026, 6, 10, tzinfo=ZoneInfo("Europe/Berlin"))
    horizon = Horizon(start=start, step_s=86_400 // n_periods, n_periods=n_periods)
    site = make_site(n_sessions, seed=seed)
    sessions = make_sessions(site, horizon, kind="workplace", seed=seed)
    scale = n_sessions / 40.0
    grid_kw = 0.3 * 32 * 0.69 * n_sessions
    signals = Signals(
        import_price=tou_prices(horizon),
        base_load_kw=base_load_profile(horizon, night_kw=6.0 * scale, day_kw=18.0 * scale),
        pv_kw=pv_profile(horizon, peak_kw=60.0 * scale),
        grid_import_limit_kw=round(grid_kw, 1),
        demand_response=(
            DemandResponseEvent(
                id="dr",
                start=start.replace(hour=17),
                end=start.replace(hour=18, minute=30),
                import_cap_kw=round(0.45 * grid_kw, 1),
            ),
        ),
    )
    return Scenario(site=site, horizon=horizon, sessions=tuple(sessions), signals=signals)


def v2g_scenario(
    n_sessions: int, n_periods: int = 96, seed: int = 0, *, battery_kwh: float | None = None
) -> tuple[Scenario, Scenario]:
    """A bus/van depot that can discharge, and the same depot charge-only.

    ``(bidirectional, charge_only)``: :func:`benchmark_scenario`'s site, sessions and signals,
    with every EVSE bidirectional (OCPP 2.1), every vehicle announcing ISO 15118-20 V2X
    parameters (it may give back up to 30 % of a 60 kWh pack, 90 % efficient discharging, wear
    0.02 per kWh), a stationary battery at the grid connection (``battery_kwh``, default 5 kWh
    per session; half full, 0.5 C each way, terminal value at the night price), an export price
    of 80 % of the import price and a demand charge. The charge-only twin has the same site
    without the battery, the same sessions without V2X parameters, the same signals.
    """
    from .session import V2xParameters
    from .site import Battery

    base = benchmark_scenario(n_sessions, n_periods, seed)
    rng = np.random.default_rng(seed + 1)
    cap = float(battery_kwh if battery_kwh is not None else 5.0 * n_sessions)
    prices = base.signals.import_price
    night = min(p.value for p in prices) if isinstance(prices, tuple) else float(prices)
    bat = Battery(
        id="depot-battery",
        node="grid",
        capacity_kwh=cap,
        soc=0.5,
        min_soc=0.1,
        max_soc=0.95,
        max_charge_kw=0.5 * cap,
        max_discharge_kw=0.5 * cap,
        degradation_per_kwh=0.02,
        terminal_value_per_kwh=night,
    )
    site = base.site.model_copy(
        update={
            "evses": tuple(e.model_copy(update={"bidirectional": True}) for e in base.site.evses),
            "batteries": (bat,),
        }
    )
    sessions = []
    for s in base.sessions:
        give = float(rng.uniform(0.1, 0.3)) * 60.0
        sessions.append(
            s.model_copy(
                update={
                    "v2x": V2xParameters(
                        min_v2x_energy_kwh=-give,
                        max_v2x_energy_kwh=s.energy_kwh + 20.0,
                        max_discharge_current=16.0,
                        charge_efficiency=1.0,
                        discharge_efficiency=0.9,
                        degradation_per_kwh=0.02,
                    )
                }
            )
        )
    signals = base.signals.model_copy(
        update={
            "export_price": tuple(SeriesPoint(start=p.start, value=0.8 * p.value) for p in prices)
            if isinstance(prices, tuple)
            else 0.8 * float(prices)
        }
    )
    objective = Objective(demand_charge_per_kw=0.3)
    bidir = Scenario(
        site=site,
        horizon=base.horizon,
        sessions=tuple(sessions),
        signals=signals,
        objective=objective,
    )
    plain = Scenario(
        site=base.site,
        horizon=base.horizon,
        sessions=base.sessions,
        signals=signals,
        objective=objective,
    )
    return bidir, plain
