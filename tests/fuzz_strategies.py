"""Hypothesis strategies for the fuzz suite: random valid sites/sessions/signals, and malformed
inputs (every crash class of issue 10 among them)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

import loadopt as lo

ROTATIONS = ["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
#: Horizon starts: plain UTC, and local midnights on both DST days of two zones.
STARTS = [
    datetime(2026, 3, 2, 8, tzinfo=UTC),
    datetime(2026, 3, 29, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2026, 10, 25, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2026, 3, 8, 0, tzinfo=ZoneInfo("America/Los_Angeles")),
    datetime(2026, 11, 1, 0, tzinfo=ZoneInfo("America/Los_Angeles")),
]

amps = st.sampled_from([0.0, 6.0, 8.5, 10.0, 13.0, 16.0, 20.0, 25.0, 32.0, 40.0, 63.0])


@st.composite
def instances(
    draw, max_evses: int = 6, max_sessions: int = 6, max_periods: int = 8, w_units: bool = True
):
    """``(site, sessions, horizon, signals)``: a random valid instance."""
    start = draw(st.sampled_from(STARTS))
    step = draw(st.sampled_from([300, 900, 3600]))
    T = draw(st.integers(1, max_periods))
    horizon = lo.Horizon(start=start, step_s=step, n_periods=T)
    span = step * T

    def later(t, seconds):  # real-time arithmetic, the result in the horizon's zone
        return (t.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(start.tzinfo)

    def when():  # an instant around the horizon (before, inside, after)
        return later(start, draw(st.integers(-span // 2, span + span // 2)))

    def instants(n):  # distinct, in real-time order (a ZoneInfo sorts by wall clock)
        by_ts = {t.timestamp(): t for t in (when() for _ in range(n))}
        return [by_ts[k] for k in sorted(by_ts)]

    n_nodes = draw(st.integers(1, 4))
    nodes = []
    for k in range(n_nodes):
        parent = None if k == 0 else f"n{draw(st.integers(0, k - 1))}"
        max_current = draw(st.one_of(st.none(), amps, st.tuples(amps, amps, amps)))
        series = None
        if draw(st.booleans()) and draw(st.booleans()):
            times = instants(draw(st.integers(1, 3)))
            series = tuple(lo.CurrentPoint(start=t, value=draw(amps)) for t in times)
        power = draw(st.one_of(st.none(), st.sampled_from([0.0, 3.0, 7.4, 11.0, 22.0, 50.0])))
        nodes.append(
            lo.Node(
                id=f"n{k}",
                parent=parent,
                max_current=max_current,
                max_power_kw=power,
                current_series=series,
            )
        )
    n_evses = draw(st.integers(1, max_evses))
    evses = []
    for k in range(n_evses):
        phases = draw(st.sampled_from([1, 3]))
        unit = "A"
        if w_units:
            unit = draw(st.sampled_from(["A", "W"]))
        mx = draw(st.sampled_from([16.0, 32.0]))
        evses.append(
            lo.Evse(
                id=f"e{k}",
                node=f"n{draw(st.integers(0, n_nodes - 1))}",
                charge_point_id=f"CP{k // 2}",
                connector_id=k % 2 + 1,
                phases=phases,
                phase_rotation=draw(st.sampled_from(ROTATIONS)),
                max_current=mx,
                min_current=draw(st.sampled_from([0.0, 6.0])),
                voltage_v=draw(st.sampled_from([230.0, 240.0, 120.0])),
                rate_unit=unit,
                max_periods=draw(st.sampled_from([1, 3, 24])),
            )
        )
    base_node = draw(st.sampled_from([None] + [n.id for n in nodes]))
    site = lo.Site(id="fuzz", nodes=tuple(nodes), evses=tuple(evses), base_load_node=base_node)
    sessions = []
    for k in range(draw(st.integers(0, max_sessions))):
        e = evses[k % n_evses]
        a = when()
        d = later(a, draw(st.integers(60, 2 * span)))
        if any(s.evse == e.id and a < s.departure and s.arrival < d for s in sessions):
            continue
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=e.id,
                arrival=a,
                departure=d,
                energy_kwh=draw(st.sampled_from([0.0, 1.0, 5.0, 20.0, 80.0])),
                max_current=draw(st.sampled_from([6.0, 10.0, 16.0, 32.0])),
                phases=draw(st.sampled_from([1, 2, 3])),
                priority=draw(st.sampled_from([1.0, 2.0])),
            )
        )

    def series_or_const(values):
        if draw(st.booleans()):
            return draw(st.sampled_from(values))
        times = instants(draw(st.integers(1, 3)))
        return tuple(lo.SeriesPoint(start=t, value=draw(st.sampled_from(values))) for t in times)

    grid_signals = []
    for k in range(draw(st.integers(0, 2))):
        a = when()
        b = later(a, draw(st.integers(60, span)))
        kind = draw(st.sampled_from(["cap", "node-cap", "reduction", "stale"]))
        kw = dict(id=f"g{k}", start=a, end=b)
        if kind == "cap":
            kw["import_cap_kw"] = draw(st.sampled_from([0.0, 2.0, 5.0, 12.0]))
        elif kind == "node-cap":
            kw["import_cap_kw"] = draw(st.sampled_from([0.0, 3.0, 8.0]))
            kw["node"] = draw(st.sampled_from([n.id for n in nodes]))
        elif kind == "reduction":
            kw["reduction_kw"] = draw(st.sampled_from([1.0, 5.0]))
            kw["baseline_kw"] = draw(st.sampled_from([4.0, 10.0, 30.0]))
        else:
            kw["import_cap_kw"] = 20.0
            kw["valid_until"] = when()
            kw["fallback_kw"] = draw(st.sampled_from([0.0, 4.0]))
        grid_signals.append(lo.GridSignal(**kw))
    signals = lo.Signals(
        import_price=series_or_const([0.1, 0.3, -0.05]),
        base_load_kw=series_or_const([0.0, 1.0, 4.0, 15.0]),
        pv_kw=series_or_const([0.0, 2.0, 6.0]),
        grid_import_limit_kw=draw(st.one_of(st.none(), st.sampled_from([0.0, 5.0, 11.0, 40.0]))),
        grid_signals=tuple(grid_signals),
    )
    return site, tuple(sessions), horizon, signals


# ------------------------------------------------------------------------------ bad inputs
GARBAGE = [
    None,
    "abc",
    "",
    -1,
    -1e9,
    0,
    10**30,
    math.nan,
    math.inf,
    -math.inf,
    [],
    {},
    [1, 2],
    {"x": 1},
    "2026-01-01T00:00:00",
    "9999-12-31T23:59:59Z",
    datetime(2026, 1, 1),
    datetime(9999, 12, 31, tzinfo=UTC),
    True,
    b"\xff",
    object(),
]


@st.composite
def malformed(draw, valid: dict):
    """``valid`` (a model dump) with one field, at any depth, replaced by garbage, removed, or an
    unknown field added."""
    import copy

    d = copy.deepcopy(valid)
    paths = []

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                paths.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                paths.append((*path, i))
                walk(v, (*path, i))

    walk(d, ())
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    if not paths or action == "extra":
        d["not_a_field"] = draw(st.sampled_from(GARBAGE))
        return d
    path = draw(st.sampled_from(paths))
    parent = d
    for p in path[:-1]:
        parent = parent[p]
    if isinstance(parent, tuple):  # model_dump gives lists, but be safe
        return d
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(st.sampled_from(GARBAGE))
    return d
