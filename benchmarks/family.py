"""The benchmark family (issue 16): sites unlike each other, each from a fixed seed or shipped data.

Every member is a :class:`Member`: the loadopt input (a :class:`~loadopt.scenario.Scenario`) and
the reference LP of the same instance — the straightforward model of :mod:`reference` (every
safety row as compiled, no reductions), or, for ``independent-congested``, a model written from
the instance's own arrays without loadopt (:mod:`independent`). The JPL week is not a one-shot
problem but a controller replay (:func:`jpl_week`), timed step by step.

Members (sizes chosen so the whole family runs in a few minutes on two shared cores):

- ``workplace-congested``: loadopt's own benchmark instance (1,000 sessions × 96, feeders at
  ~40 %, grid at ~35 % of what the EVSEs could draw, DR cap in the evening);
- ``workplace-uncongested``: 600 sessions, generous circuits/feeders/grid, TOU prices, PV: few
  rows can bind;
- ``depot-timetable``: 150 bus bays, buses in on a timetable 18–22 h and out 4:30–6:30 h in the
  same order, 150–300 kWh each, a 1.2 MW transformer; noon-to-noon horizon;
- ``public-hub-dr``: 250 EVSEs, four short public sessions each over the day, a demand charge, a
  DR reduction below the uncontrolled baseline and a DR cap;
- ``single-phase-heavy``: 800 EVSEs, 80 % single-phase EVSEs and vehicles, phases rotated;
- ``three-phase-heavy``: 800 three-phase EVSEs and vehicles (identical R/S/T rows everywhere);
- ``independent-congested``: issue 16's instance, 1,000 sessions, five nodes with per-phase
  limits, 70 % three-phase, TOU, energy 60–100 % of what each window allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np

import independent
from loadopt import DemandResponseEvent, Horizon, Objective, Signals
from loadopt.lp import LinearProgram
from loadopt.scenario import Scenario
from loadopt.session import Session
from loadopt.synthetic import (
    base_load_profile,
    benchmark_scenario,
    make_sessions,
    make_site,
    pv_profile,
    tou_prices,
)
from reference import straightforward_lp

TZ = ZoneInfo("Europe/Berlin")
DAY = datetime(2026, 6, 10, tzinfo=TZ)


@dataclass(frozen=True)
class Member:
    name: str
    scenario: Scenario
    reference: LinearProgram  #: the straightforward model of the same instance


def _ref(sc: Scenario) -> LinearProgram:
    return straightforward_lp(sc.compile())


def workplace_congested() -> Scenario:
    return benchmark_scenario(1000)


def workplace_uncongested() -> Scenario:
    hz = Horizon(start=DAY, step_s=900, n_periods=96)
    site = make_site(
        600, circuit_a=80.0, feeder_a=400.0, grid_a=30 * 600.0, transformer_kw=12_000.0, seed=3
    )
    sessions = make_sessions(site, hz, kind="workplace", seed=3)
    sig = Signals(
        import_price=tou_prices(hz),
        pv_kw=pv_profile(hz, 400.0),
        base_load_kw=base_load_profile(hz, 40.0, 120.0),
    )
    return Scenario(site=site, horizon=hz, sessions=tuple(sessions), signals=sig)


def depot_timetable(n_bays: int = 150) -> Scenario:
    """Buses arrive on a timetable (every ~1.6 min from 18:00) and leave in the same order from
    4:30; 3-phase 32 A bays, four bays per circuit, a transformer well below all bays at once."""
    start = DAY.replace(hour=12)
    hz = Horizon(start=start, step_s=900, n_periods=96)
    site = make_site(
        n_bays,
        evses_per_circuit=4,
        circuits_per_feeder=6,
        circuit_a=100.0,
        feeder_a=400.0,
        grid_a=0.5 * 32 * n_bays,
        transformer_kw=0.5 * 22 * n_bays,
        share_single_phase_evse=0.0,
        seed=5,
    )
    rng = np.random.default_rng(5)
    arr = start.replace(hour=18) + np.arange(n_bays) * timedelta(minutes=240 / n_bays)
    dep = (
        start.replace(hour=4, minute=30)
        + timedelta(days=1)
        + np.arange(n_bays) * timedelta(minutes=120 / n_bays)
    )
    sessions = [
        Session(
            id=f"bus{k:03d}",
            evse=f"evse{k}",
            arrival=arr[k].replace(microsecond=0),
            departure=dep[k].replace(microsecond=0),
            energy_kwh=round(float(rng.uniform(150, 300)), 1),
            max_current=32.0,
        )
        for k in range(n_bays)
    ]
    sig = Signals(import_price=tou_prices(hz), base_load_kw=base_load_profile(hz, 30.0, 60.0))
    return Scenario(site=site, horizon=hz, sessions=tuple(sessions), signals=sig)


def public_hub_dr(n_evse: int = 250) -> Scenario:
    hz = Horizon(start=DAY, step_s=900, n_periods=96)
    site = make_site(
        n_evse,
        evses_per_circuit=2,
        circuits_per_feeder=10,
        circuit_a=63.0,
        feeder_a=250.0,
        grid_a=0.45 * 32 * n_evse,
        seed=7,
    )
    sessions = make_sessions(site, hz, kind="public", sessions_per_evse=4.0, seed=7)
    sig = Signals(
        import_price=tou_prices(hz),
        pv_kw=pv_profile(hz, 0.5 * n_evse),
        base_load_kw=base_load_profile(hz, 0.1 * n_evse, 0.3 * n_evse),
        demand_response=(
            DemandResponseEvent(
                id="shed",
                start=DAY.replace(hour=11),
                end=DAY.replace(hour=13),
                reduction_kw=0.5 * n_evse,
            ),
            DemandResponseEvent(
                id="cap",
                start=DAY.replace(hour=17),
                end=DAY.replace(hour=19, minute=30),
                import_cap_kw=2.0 * n_evse,
            ),
        ),
    )
    return Scenario(
        site=site,
        horizon=hz,
        sessions=tuple(sessions),
        signals=sig,
        objective=Objective(demand_charge_per_kw=0.05),
    )


def _phase_mix(n: int, single_share: float, seed: int) -> Scenario:
    hz = Horizon(start=DAY, step_s=900, n_periods=96)
    site = make_site(n, share_single_phase_evse=single_share, seed=seed)
    rng = np.random.default_rng(seed)
    sessions = [
        s.model_copy(update={"phases": 1 if rng.random() < single_share else 3})
        for s in make_sessions(site, hz, kind="workplace", seed=seed)
    ]
    grid_kw = 0.3 * 32 * 0.69 * n
    sig = Signals(import_price=tou_prices(hz), grid_import_limit_kw=round(grid_kw, 1))
    return Scenario(site=site, horizon=hz, sessions=tuple(sessions), signals=sig)


def single_phase_heavy() -> Scenario:
    return _phase_mix(800, 0.8, seed=11)


def three_phase_heavy() -> Scenario:
    return _phase_mix(800, 0.0, seed=13)


BUILDERS = {
    "workplace-congested": workplace_congested,
    "workplace-uncongested": workplace_uncongested,
    "depot-timetable": depot_timetable,
    "public-hub-dr": public_hub_dr,
    "single-phase-heavy": single_phase_heavy,
    "three-phase-heavy": three_phase_heavy,
}
NAMES = [*BUILDERS, "independent-congested"]


@cache
def member(name: str) -> Member:
    if name == "independent-congested":
        inst = independent.generate()
        return Member(name, independent.as_scenario(inst), independent.raw_lp(inst))
    sc = BUILDERS[name]()
    return Member(name, sc, _ref(sc))


# ------------------------------------------------------------------------------ JPL week
def jpl_week_scenario(step_s: int = 900) -> Scenario:
    """The shipped JPL week (ACN-Data, 2019-05-06 .. 05-12) as one replay: every station, every
    session, the default site (:func:`loadopt.acn.acn_site`), an 80 kW grid import limit."""
    from loadopt.acn import TZ as ACN_TZ
    from loadopt.acn import acn_site, read_acn_csv, to_sessions

    recs = read_acn_csv()
    sessions, _ = to_sessions(recs)
    site = acn_site(sorted({r.station_id for r in recs}))
    start = datetime(2019, 5, 6, tzinfo=ACN_TZ)
    end = max(s.departure for s in sessions)
    n = int(np.ceil((end - start).total_seconds() / step_s))
    hz = Horizon(start=start, step_s=step_s, n_periods=n)
    return Scenario(
        site=site,
        horizon=hz,
        sessions=tuple(sessions),
        signals=Signals(grid_import_limit_kw=80.0),
        objective=Objective(charge_early_per_kwh_h=0.05),
    )
