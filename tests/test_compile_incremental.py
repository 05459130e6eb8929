"""Incremental compile: what a controller's steps reuse is never stale.

``compile_problem`` keeps per-site structures (the site tree, node and primary ratings, line
shapes, the safety-row template of a set of vehicles, session ancestors) beside the site and
reuses them while a step only moves time, meters, limits or signals. These tests drive random
sequences of such changes — time, meters, arrivals and departures, re-sharing caps, node limits
set at run time (a new ``nodes`` tuple, as :meth:`Controller.set_node_limit` does), node limit
series, reservations, base load and grid limits — and compile every state twice: on the site
object that has seen every earlier step (all caches warm) and on a fresh copy of it (no cache).
Every field of the two Problems must be identical (arrays, dtypes, sparse matrices).

A run-time limit change is honoured by the very next step: checked on the controller against
the raw node currents (not the compiled rows).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt import Horizon
from loadopt.acn import jpl_site
from loadopt.compile import compile_problem
from loadopt.site import CurrentPoint, Site
from loadopt.synthetic import benchmark_scenario, v2g_scenario

from .test_compile_paths import _assert_same

T = 12
STEP_S = 900


def _sites():
    """Three kinds of site: line-to-line wiring with delta/wye transformers (facet rows), a
    congested feeder tree with per-node kW limits, batteries beside V2G vehicles."""
    jpl = jpl_site()
    cong = benchmark_scenario(10, n_periods=T, seed=3)
    v2g = v2g_scenario(6, n_periods=T, seed=4, battery_kwh=50.0)[0]
    start = cong.horizon.start.replace(hour=9)
    return {
        "jpl": (jpl, start, lo.Signals()),
        "congested": (cong.site, start, cong.signals),
        "v2g": (v2g.site, v2g.horizon.start.replace(hour=9), v2g.signals),
    }


SITES = _sites()

OPS = st.sampled_from(
    [
        "tick",
        "meter",
        "arrive",
        "leave",
        "cap",
        "limit",
        "series",
        "reserve",
        "signals",
        "price",
        "grid",
        "shape",
    ]
)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(sorted(SITES)),
    ops=st.lists(st.tuples(OPS, st.integers(0, 10**6)), min_size=3, max_size=9),
)
def test_cached_compile_equals_a_fresh_compile_through_any_changes(name, ops):
    site, now, signals = SITES[name]
    site = Site.model_validate(site.model_dump())  # this example's own caches
    evses = [e.id for e in site.evses]
    sessions: dict[str, lo.Session] = {}
    reserved: tuple[int, int] | None = None
    k_sess = 0
    tiered = False
    for op, r in ops:
        rng = np.random.default_rng(r)
        if op == "tick":
            now = now + timedelta(seconds=STEP_S * int(rng.integers(0, 3)))
        elif op == "meter" and sessions:
            sid = sorted(sessions)[int(rng.integers(len(sessions)))]
            s = sessions[sid]
            sessions[sid] = s.model_copy(update={"energy_kwh": round(s.energy_kwh * 0.8, 6)})
        elif op in ("arrive", "meter", "cap") and (op == "arrive" or not sessions):
            free = [e for e in evses if e not in {s.evse for s in sessions.values()}]
            if free:
                e = free[int(rng.integers(len(free)))]
                k_sess += 1
                sessions[f"s{k_sess}"] = lo.Session(
                    id=f"s{k_sess}",
                    evse=e,
                    arrival=now - timedelta(minutes=int(rng.integers(0, 60))),
                    departure=now + timedelta(minutes=int(rng.integers(20, 4 * 60))),
                    energy_kwh=float(rng.uniform(1.0, 40.0)),
                    phases=int(rng.choice([1, 3])),
                )
        elif op == "leave" and sessions:
            del sessions[sorted(sessions)[int(rng.integers(len(sessions)))]]
        elif op == "cap" and sessions:
            sid = sorted(sessions)[int(rng.integers(len(sessions)))]
            cap = float(rng.choice([6.0, 8.0, 12.5]))
            sessions[sid] = sessions[sid].model_copy(update={"max_current": cap})
        elif op in ("limit", "series"):
            k = int(rng.integers(len(site.nodes)))
            node = site.nodes[k]
            if op == "limit":
                upd = {"max_current": [None, float(rng.uniform(5, 200))][int(rng.integers(2))]}
            else:
                upd = {
                    "current_series": (
                        CurrentPoint(
                            start=now + timedelta(seconds=STEP_S * int(rng.integers(0, T))),
                            value=float(rng.uniform(5, 100)),
                        ),
                    )
                }
            new = node.model_validate({**node.model_dump(), **upd})
            nodes = (*site.nodes[:k], new, *site.nodes[k + 1 :])
            site = site.model_copy(update={"nodes": nodes})  # as Controller.set_node_limit
        elif op == "reserve":
            reserved = None
            if rng.integers(2):
                reserved = (int(rng.integers(len(evses))), int(rng.integers(1, T)))
        elif op == "signals":
            signals = signals.model_copy(
                update={
                    "base_load_kw": float(rng.uniform(0, 30)),
                    "grid_import_limit_kw": [None, float(rng.uniform(20, 200))][
                        int(rng.integers(2))
                    ],
                }
            )
        elif op == "price":  # a price series (moves with time) or a flat price
            series = tuple(
                lo.SeriesPoint(start=now + timedelta(hours=h), value=float(rng.uniform(0, 1)))
                for h in range(0, 4 * int(rng.integers(0, 2)))
            )
            signals = signals.model_copy(update={"import_price": series or 0.3})
        elif op == "grid":  # a grid operator's cap on the import, or none
            cap = lo.GridSignal(
                id="dr",
                start=now + timedelta(minutes=30),
                end=now + timedelta(hours=2),
                import_cap_kw=float(rng.uniform(5, 50)),
            )
            signals = signals.model_copy(update={"grid_signals": (cap,) * int(rng.integers(2))})
        elif op == "shape":  # the same horizon length cut into other periods
            tiered = not tiered
        if tiered:
            hz = Horizon.tiered(
                now,
                fine_step_s=STEP_S,
                fine_s=2 * STEP_S,
                coarse_step_s=2 * STEP_S,
                span_s=T * STEP_S,
            )
        else:
            hz = Horizon(start=now, step_s=STEP_S, n_periods=T)
        planned = list(sessions.values())
        held = None
        if reserved is not None:
            held = np.zeros((len(evses), 3, hz.n_periods))
            held[reserved[0], :, : reserved[1]] = 6.0
        cached = compile_problem(site, planned, hz, signals, reserved_a=held)
        fresh_site = Site.model_validate(site.model_dump())  # nothing cached on it
        fresh_signals = lo.Signals.model_validate(signals.model_dump())
        fresh = compile_problem(fresh_site, planned, hz, fresh_signals, reserved_a=held)
        _assert_same(fresh, cached)


def _line_currents_a(problem: lo.Problem, current: np.ndarray, node: int) -> np.ndarray:
    """(3, T) A on the site phases of ``node``, summed from the raw sessions (not from G, nor the
    library's phase map): every session under the node adds its current on each site phase its
    EVSE line lands on, read from the OCPP ``phase_rotation`` letters themselves."""
    out = np.zeros((3, current.shape[1]))
    site = problem.site
    below = {node}
    for _ in range(len(site.nodes)):
        below |= {
            k for k, n in enumerate(site.nodes) if n.parent in {site.nodes[j].id for j in below}
        }
    ids = {site.nodes[j].id for j in below}
    for i, s in enumerate(problem.sessions):
        ev = site.evse(s.evse)
        if ev.node not in ids:
            continue
        for line in range(min(ev.phases, s.phases)):
            out["RST".index(ev.phase_rotation[line])] += current[i]
    return out


@pytest.mark.parametrize("new_a", [10.0, 60.0])
def test_a_node_limit_set_at_run_time_holds_from_the_very_next_step(new_a):
    sc = benchmark_scenario(12, n_periods=16, seed=7)
    ctl = lo.Controller(sc.site, step_s=900, n_periods=16, signals=sc.signals)
    now = sc.horizon.start.replace(hour=10)
    for s in sc.sessions:
        if s.arrival <= now < s.departure:
            ctl.start_session(s)
    assert ctl.sessions, "the scenario has vehicles plugged in at 10:00"
    ctl.step(now)  # every cache warm
    feeder = next(k for k, n in enumerate(ctl.site.nodes) if n.parent is not None)
    node_id = ctl.site.nodes[feeder].id
    ctl.set_node_limit(node_id, max_current=new_a)
    sched = ctl.step(now + timedelta(minutes=15))
    p = sched.problem
    assert np.all(p.node_current_limit[feeder] == new_a)
    amps = _line_currents_a(p, np.asarray(sched.current), feeder)
    assert amps.max() <= new_a + 1e-6
    assert sched.violations() == []
    if new_a == 10.0:  # the feeder binds: the lower limit is what cut the plan
        assert amps[:, 0].max() > 10.0 - 1.0


def test_step_limits_are_kept_per_site_signals_and_horizon_shape_and_never_stale():
    """The limits a step does not move are kept per (site object, signals object, number of
    periods): reused when only time moves, rebuilt when any of the three changes, never kept
    where a series moves them with time, and the store stays bounded."""
    from loadopt.compile import limits as L
    from loadopt.compile.tree import _site_tree

    L._KEPT.clear()  # (room for this test's entries: the store clears itself when full)
    site = Site.model_validate(jpl_site().model_dump())
    tree = _site_tree(site)
    now = SITES["jpl"][1]
    hz = Horizon(start=now, step_s=STEP_S, n_periods=T)
    sig = lo.Signals(base_load_kw=20.0, grid_import_limit_kw=300.0)
    a = L._step_limits(site, tree, sig, hz)
    assert a.kept and not a.node_cur.flags.writeable and not a.cur_rhs.flags.writeable
    later = Horizon(start=now + timedelta(minutes=5), step_s=STEP_S, n_periods=T)
    assert L._step_limits(site, tree, sig, later) is a  # only time moved
    # a changed input is a new entry with its own values
    sig2 = sig.model_copy(update={"base_load_kw": 60.0})
    b = L._step_limits(site, tree, sig2, hz)
    assert b is not a and np.all(b.base_kw == 60.0) and np.all(a.base_kw == 20.0)
    node = site.nodes[1]
    site2 = site.model_copy(
        update={
            "nodes": (site.nodes[0], node.model_copy(update={"max_current": 7.0}), *site.nodes[2:])
        }
    )
    c = L._step_limits(site2, _site_tree(site2), sig, hz)
    assert c is not a and np.all(c.node_cur[1] == 7.0) and not np.all(a.node_cur[1] == 7.0)
    tiered = Horizon.tiered(
        now, fine_step_s=STEP_S, fine_s=2 * STEP_S, coarse_step_s=2 * STEP_S, span_s=T * STEP_S
    )
    d = L._step_limits(site, tree, sig, tiered)  # another number of periods
    assert d is not a and d.base_kw.size == tiered.n_periods != T
    cut = Horizon.non_uniform(now, [STEP_S] * (T - 2) + [2 * STEP_S] * 2)
    assert (
        L._step_limits(site, tree, sig, cut) is a
    )  # constant values: period lengths do not matter
    # a series moves with time: built per call, sampled at each start
    priced = sig.model_copy(
        update={
            "import_price": (
                lo.SeriesPoint(start=now, value=0.1),
                lo.SeriesPoint(start=now + timedelta(hours=1), value=0.5),
            )
        }
    )
    e1 = L._step_limits(site, tree, priced, hz)
    e2 = L._step_limits(
        site, tree, priced, Horizon(start=now + timedelta(hours=1), step_s=STEP_S, n_periods=T)
    )
    assert not e1.kept and e1.price[0] == 0.1 and e2.price[0] == 0.5
    # bounded
    for k in range(L._KEPT_MAX + 5):
        L._step_limits(site, tree, sig.model_copy(update={"base_load_kw": float(k)}), hz)
    assert len(L._KEPT) <= L._KEPT_MAX


def test_every_array_of_a_problem_is_read_only_on_every_path():
    """Kept limits are shared between problems: every array a problem holds is read-only,
    whether the call kept its limits, had reserved draw, grid signals, storage or no session."""
    import dataclasses

    for name, (site, now, signals) in SITES.items():
        hz = Horizon(start=now, step_s=STEP_S, n_periods=T)
        s = lo.Session(
            id="a",
            evse=site.evses[0].id,
            arrival=now,
            departure=now + timedelta(hours=2),
            energy_kwh=10.0,
        )
        held = np.zeros((len(site.evses), 3, T))
        held[1, :, :3] = 6.0
        cap = lo.GridSignal(id="dr", start=now, end=now + timedelta(hours=1), import_cap_kw=20.0)
        for kw in (
            {},
            {"reserved_a": held},
            {"signals": signals.model_copy(update={"grid_signals": (cap,)})},
        ):
            for planned in ([s], []):  # (without sessions: shared empty arrays)
                p = compile_problem(
                    site, planned, hz, kw.get("signals", signals), reserved_a=kw.get("reserved_a")
                )
                for f in dataclasses.fields(p):
                    x = getattr(p, f.name)
                    if isinstance(x, np.ndarray):
                        assert not x.flags.writeable, (name, kw.keys(), f.name)


def test_right_hand_sides_kept_beside_a_line_shape_are_bounded_and_per_limits():
    """The facet right-hand sides kept beside a line shape are per kept limits object (the same
    vehicles on horizons of other lengths get their own), equal a fresh compile's, and stay
    bounded however many lengths come by."""
    from loadopt.compile import lines as L

    site, now, signals = SITES["jpl"]
    site = Site.model_validate(site.model_dump())
    s = lo.Session(
        id="a",
        evse=site.evses[0].id,
        arrival=now,
        departure=now + timedelta(hours=30),
        energy_kwh=30.0,
    )
    for n in range(2, 40):
        hz = Horizon(start=now, step_s=STEP_S, n_periods=n)
        got = compile_problem(site, [s], hz, signals)
        fresh = compile_problem(Site.model_validate(site.model_dump()), [s], hz, signals)
        _assert_same(fresh, got)
    shapes = [v[1] for v in L._SHAPES.values() if v[0] is site]
    assert shapes and all(len(sh.memo.get("step_rhs", {})) <= 16 for sh in shapes)


def test_right_hand_sides_larger_than_the_bound_are_not_kept_beside_a_shape(monkeypatch):
    """A step's right-hand sides are kept beside its line shape only within the per-shape
    bound: one step's larger than it (a large site: 28 N T floats) are not kept at all (each
    of the 16 shapes a site with vehicles coming and going leaves behind would otherwise hold
    one, ~9 MB each at 600 nodes, which cost 1.8 GB of RSS and 2.5x the CPU per compile)."""
    from loadopt.compile import core as C
    from loadopt.compile import lines as L

    site, now, signals = SITES["jpl"]
    site = Site.model_validate(site.model_dump())
    s = lo.Session(
        id="a", evse=site.evses[0].id, arrival=now, departure=now + timedelta(hours=5), energy_kwh=9
    )
    hz = Horizon(start=now, step_s=STEP_S, n_periods=T)
    monkeypatch.setattr(C, "_RHS_BYTES", 1000)  # smaller than this step's right-hand sides
    for _ in range(2):
        got = compile_problem(site, [s], hz, signals)
        _assert_same(compile_problem(Site.model_validate(site.model_dump()), [s], hz, signals), got)
    shapes = [v[1] for v in L._SHAPES.values() if v[0] is site]
    assert shapes
    for sh in shapes:
        kept = sh.memo.get("step_rhs", {})
        assert sum(v[1][1].nbytes for v in kept.values()) <= 1000


def test_step_limits_too_large_to_keep_are_not_marked_kept(monkeypatch):
    """Limits larger than the whole store are built per call and not marked ``kept`` (nothing
    else keeps right-hand sides for an object no later call can get back)."""
    from loadopt.compile import limits as L
    from loadopt.compile.tree import _site_tree

    site = Site.model_validate(jpl_site().model_dump())
    hz = Horizon(start=SITES["jpl"][1], step_s=STEP_S, n_periods=T)
    sig = lo.Signals(base_load_kw=20.0)
    monkeypatch.setattr(L, "_KEPT_MAX_BYTES", 100)
    a = L._step_limits(site, _site_tree(site), sig, hz)
    assert not a.kept
    assert L._step_limits(site, _site_tree(site), sig, hz) is not a


def test_line_shape_store_survives_another_thread_evicting_the_same_entry(monkeypatch):
    """The bounded line-shape store drops its oldest entry when full; another thread (a fleet's
    thread pool compiles several sites at once) may drop that same entry in between: the
    compile must not fail (it did with a KeyError)."""
    from loadopt.compile import lines as L

    class Racing(dict):
        def __iter__(self):
            k = next(dict.__iter__(self))
            dict.pop(self, k)  # another thread evicts it right after this one picked it
            return iter((k,))

    full = Racing({("other", i): (None, None) for i in range(L._SHAPES_MAX)})
    monkeypatch.setattr(L, "_SHAPES", full)
    site, now, signals = SITES["jpl"]
    site = Site.model_validate(site.model_dump())
    s = lo.Session(
        id="a", evse=site.evses[0].id, arrival=now, departure=now + timedelta(hours=5), energy_kwh=9
    )
    hz = Horizon(start=now, step_s=STEP_S, n_periods=T)
    got = compile_problem(site, [s], hz, signals)
    assert got.n_vars > 0 and len(full) <= L._SHAPES_MAX


def test_step_limits_read_the_node_ratings_of_the_tree_they_were_given():
    """Two threads compiling one new site at once may each build its tree, and the one the
    site keeps is the other thread's: the limits of a compile come from the tree that compile
    holds (they failed with a KeyError reading it)."""
    from loadopt.compile import limits as L
    from loadopt.compile.tree import _site_tree

    site = Site.model_validate(jpl_site().model_dump())
    mine = _site_tree(site)
    del site.__dict__["_site_tree"]
    theirs = _site_tree(site)  # another thread's, kept on the site
    assert theirs is not mine
    hz = Horizon(start=SITES["jpl"][1], step_s=STEP_S, n_periods=T)
    lim = L._step_limits(site, mine, lo.Signals(base_load_kw=3.0), hz)
    assert lim.kept and lim.node_cur.shape == (len(site.nodes), 3, T)


def test_compiles_without_signals_share_the_kept_limits():
    """``signals=None`` is one frozen default object: the limits kept per (site, signals, number
    of periods) serve those calls too (a new ``Signals()`` per call never hit them)."""
    import loadopt.compile.limits as lim_mod

    from .conftest import horizon as make_horizon
    from .conftest import session as make_session

    site = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=40.0),),
        evses=(lo.Evse(id="e1", node="g", charge_point_id="A"),),
    )
    hz = make_horizon(4)
    a = lo.compile_problem(site, [make_session("s1", "e1", 10.0)], hz)
    b = lo.compile_problem(site, [make_session("s1", "e1", 10.0)], hz)
    assert a.signals is b.signals
    key = (id(site), id(a.signals), hz.n_periods)
    assert key in lim_mod._KEPT and lim_mod._KEPT[key].site is site
