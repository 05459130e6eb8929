"""Shared builders and checks for the OCPP tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

import loadopt as lo
from loadopt.ocpp import Profile, validate
from loadopt.ocpp.merge import value_at
from loadopt.safety import project
from loadopt.schedule import Schedule, ScheduleStatus

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def site(n_cp: int = 3, conns: int = 2, breaker_a: float = 40.0, grid_a: float = 63.0,
         grid_kw: float | None = None, rotations=("RST", "STR", "TRS"), phases=(3, 3, 1),
         rate_units=("A", "W"), max_periods=(24, 5)) -> lo.Site:
    nodes = [lo.Node(id="grid", kind="grid_connection", max_current=grid_a,
                     max_power_kw=grid_kw),
             lo.Node(id="f1", parent="grid", kind="feeder", max_current=breaker_a),
             lo.Node(id="f2", parent="grid", kind="feeder", max_current=(breaker_a, 25.0, 30.0))]
    evses = []
    for c in range(n_cp):
        for k in range(1, conns + 1):
            i = c * conns + k
            evses.append(lo.Evse(
                id=f"e{c}-{k}", node="f1" if c % 2 == 0 else "f2", charge_point_id=f"CP{c}",
                connector_id=k, phases=phases[i % len(phases)],
                phase_rotation=rotations[i % len(rotations)],
                rate_unit=rate_units[c % len(rate_units)],
                max_periods=max_periods[c % len(max_periods)],
                phase_switching=(i % 4 == 0)))
    return lo.Site(nodes=tuple(nodes), evses=tuple(evses))


def sessions(s: lo.Site, n: int, rng: np.random.Generator, start: datetime = T0,
             ) -> list[lo.Session]:
    out = []
    evs = list(s.evses)
    rng.shuffle(evs)
    for k, e in enumerate(evs[:n]):
        out.append(lo.Session(
            id=str(1000 + k), evse=e.id,
            arrival=start - timedelta(minutes=int(rng.integers(1, 60))),
            departure=start + timedelta(minutes=int(rng.integers(30, 600))),
            energy_kwh=float(rng.uniform(1, 40)), phases=int(rng.choice([1, 3])),
            max_current=float(rng.choice([16.0, 32.0]))))
    return out


def random_schedule(s: lo.Site, sess: list[lo.Session], rng: np.random.Generator,
                    n: int = 12, step_s: int = 900, signals: lo.Signals | None = None,
                    start: datetime = T0) -> Schedule:
    """A safe schedule without a solver: random currents projected onto the limits."""
    p = lo.compile_problem(s, sess, lo.Horizon(start=start, step_s=step_s, n_periods=n), signals)
    raw = rng.uniform(0, 32, size=(p.n_sessions, p.n_periods))
    raw[rng.random(raw.shape) < 0.3] = 0.0
    return Schedule(p, project(p, raw), ScheduleStatus.FEASIBLE, "test")


def validate_all(msgs, version) -> None:
    for _cp, action, payload in msgs:
        validate(action, payload, version)


def worst_case_violations(schedule: Schedule, profiles: list[Profile]) -> list[str]:
    """Every limit broken if every plugged session draws its TxProfile limit and a newcomer on
    every idle EVSE draws its TxDefaultProfile limit on each of its lines, in every period;
    and whether each station's cap is ≥ 0 and ≤ what its EVSEs could draw under those profiles
    is irrelevant to safety, but the station caps alone must also hold when the station draws
    them (checked per node with the other stations at their own caps)."""
    p = schedule.problem
    T = p.n_periods
    starts = np.arange(T) * p.horizon.step_s
    tx_default = {(pr.charge_point_id, pr.connector): value_at(pr.starts, pr.limits, starts).T
                  for pr in profiles if pr.purpose == "tx_default"}  # (3, T) deci-amps
    node_index = {n: k for k, n in enumerate(p.node_ids)}
    extra_a = np.zeros((len(p.node_ids), 3, T))
    extra_kw = np.zeros((len(p.node_ids), T))
    for e in p.site.evses:
        lim = tx_default.get((e.charge_point_id, e.connector_id))
        if lim is None:
            continue
        node = node_index[e.node]
        chain = []
        while node >= 0:
            chain.append(node)
            node = int(p.node_parent[node])
        for j in range(e.phases):
            ph = e.site_phases[j]
            # a newcomer (idle periods) or a car whose TxProfile is gone (busy periods)
            add = lim[j] / 10.0
            for n in chain:
                extra_a[n, ph] += add
                extra_kw[n] += add * e.voltage_v / 1000.0
    bad = []
    load = schedule.node_phase_current + extra_a
    over = load > p.node_current_limit + 1e-6
    for n, ph, t in zip(*np.nonzero(over), strict=True):
        bad.append(f"node {p.node_ids[n]} phase {ph} period {t}: {load[n, ph, t]:.2f} > "
                   f"{p.node_current_limit[n, ph, t]}")
    kw = schedule.node_power_kw + extra_kw
    for n, t in zip(*np.nonzero(kw > p.node_power_limit_kw + 1e-6), strict=True):
        bad.append(f"node {p.node_ids[n]} power period {t}")
    root = int(np.flatnonzero(p.node_parent < 0)[0])
    imp = schedule.import_kw + extra_kw[root]
    for t in np.flatnonzero(imp > p.import_cap_kw + 1e-6):
        bad.append(f"import period {t}")
    return bad


def station_cap_violations(schedule: Schedule, profiles: list[Profile]) -> list[str]:
    """Every node/phase limit broken if every station draws its station-max cap in full (per
    line, as emitted), counted on every site phase its EVSEs use."""
    p = schedule.problem
    node_index = {n: k for k, n in enumerate(p.node_ids)}
    T = p.n_periods
    starts = np.arange(T) * p.horizon.step_s
    extra = np.zeros((len(p.node_ids), 3, T))
    for pr in profiles:
        if pr.purpose != "station_max":
            continue
        k_of = np.searchsorted(pr.starts, starts, side="right") - 1
        evs = [e for e in p.site.evses if e.charge_point_id == pr.charge_point_id]
        phases_used = sorted({e.site_phases[j] for e in evs for j in range(e.phases)})
        nodes = set()
        for e in evs:
            n = node_index[e.node]
            while n >= 0:
                nodes.add(n)
                n = int(p.node_parent[n])
        rots = {e.site_phases for e in evs}
        for ph in phases_used:
            if len(rots) == 1:
                j = next(iter(rots)).index(ph)
                val = pr.limits[k_of, j] / 10.0
            else:
                val = pr.limits[k_of].min(axis=1) / 10.0
            for n in nodes:
                extra[n, ph] += val
    base = np.zeros_like(extra)
    base[p.node_carries_base] += p.base_load_a[None, None, :]
    load = base + extra
    over = load > p.node_current_limit + 1e-6
    return [f"node {p.node_ids[n]} phase {ph} period {t}: {load[n, ph, t]:.2f} > "
            f"{p.node_current_limit[n, ph, t]}" for n, ph, t in zip(*np.nonzero(over),
                                                                     strict=True)]
