"""Fleets on a real 2-worker Dask LocalCluster (and the thread pool): same answers as the
sequential loop, deadlines, killed workers, pinning, saved state."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.fleet import FleetController, solve_many
from loadopt.fleet.dispatch import assign, batches
from loadopt.fleet.many import finish
from loadopt.fleet.payload import SolveOutcome, pack_problem, unpack_problem
from loadopt.fleet.simulate import advance, make_fleet
from loadopt.fleet.worker import SolveTask
from loadopt.synthetic import benchmark_scenario

from .test_safety_properties import COMMON, assert_physically_safe, scenarios

distributed = pytest.importorskip("distributed")

START = datetime.fromisoformat("2026-06-10T08:00:00+02:00")


@pytest.fixture(scope="module")
def problems():
    return [
        benchmark_scenario(n, n_periods=24, seed=k).compile()
        for k, n in enumerate((4, 12, 6, 20, 8, 3, 16, 10))
    ]


def same(a: lo.Schedule, b: lo.Schedule) -> bool:
    return (
        np.array_equal(a.current, b.current)
        and a.status == b.status
        and a.method == b.method
        and a.objective == b.objective
    )


# ---------------------------------------------------------------------------- payload
def test_payload_is_lean_and_solves_to_the_same_schedule(problems):
    p = benchmark_scenario(50).compile()
    pl = pack_problem(p, "s")
    assert len(pickle.dumps(pl)) < len(pickle.dumps(p)) / 3
    q = unpack_problem(pickle.loads(pickle.dumps(pl)))
    assert (q.G != p.G).nnz == 0 and np.array_equal(q.h, p.h)
    np.testing.assert_array_equal(q.node_current_limit, p.node_current_limit)
    for method in ("lp", "fast"):
        assert same(lo.solve(q, method=method), lo.solve(p, method=method))


@settings(COMMON, max_examples=40)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_any_worker_answer_becomes_a_safe_schedule(p, seed):
    """Whatever comes back from a worker (garbage, wrong length, nothing), the coordinator
    emits a schedule within every raw limit."""
    q = unpack_problem(pickle.loads(pickle.dumps(pack_problem(p, "s"))))
    np.testing.assert_array_equal(lo.solve(q).current, lo.solve(p).current)
    rng = np.random.default_rng(seed)
    n = p.n_vars + int(rng.integers(-1, 2)) * int(rng.integers(0, 2))
    x = rng.choice([-50, 0, 33, 10**6], size=max(n, 0)).astype(np.int32)
    status = str(rng.choice(["optimal", "feasible", "expired", "error"]))
    for o in (SolveOutcome("s", x, status, "lp"), None):
        sched, _ = finish(p, o, "deadline")
        assert_physically_safe(p, sched.current)


# ---------------------------------------------------------------------------- pinning, batching
def test_assign_keeps_live_pins_and_balances_the_rest():
    pins = assign(
        ["a", "b", "c", "d"], [10, 10, 10, 30], ["w1", "w2"], {"a": "w1", "b": "gone", "c": "w2"}
    )
    assert pins["a"] == "w1" and pins["c"] == "w2"
    assert pins["d"] != pins["b"]  # the big one and the orphan spread over the two
    with pytest.raises(ValueError):
        assign(["a"], [1], [])
    ts = [SolveTask(key=str(k), n_vars=n) for k, n in enumerate((5, 5, 20, 1, 1, 1))]
    assert [[t.key for t in b] for b in batches(ts, 10)] == [["0", "1"], ["2"], ["3", "4", "5"]]


# ---------------------------------------------------------------------------- solve_many
@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_solve_many_equals_the_sequential_loop_locally(problems, executor):
    ref = [lo.solve(p) for p in problems]
    res = solve_many(problems, executor, batch_vars=300)
    assert all(same(a, b) for a, b in zip(res.schedules, ref, strict=True))
    assert res.fallbacks == {}


def test_solve_many_on_dask_equals_the_sequential_loop(problems, dask_backend):
    for kw in ({}, {"method": "fast"}):
        ref = [lo.solve(p, **kw) for p in problems]
        res = solve_many(problems, _two_workers(dask_backend), batch_vars=300, **kw)
        assert all(same(a, b) for a, b in zip(res.schedules, ref, strict=True))
        assert res.fallbacks == {}
        assert res.n_tasks < len(problems)  # small sites were batched
        assert len({r.worker for r in res}) == 2  # both workers took sites


def _two_workers(be):
    """After a test killed one, wait for the nanny's replacement."""
    be.client.wait_for_workers(2, timeout=60)
    while len(be.refresh()) < 2:
        time.sleep(0.1)
    return be


def _block(be, slot, seconds):
    """Occupy ``slot``'s only thread so that what is pinned there waits behind it."""
    fut = be.submit(slot, time.sleep, seconds)
    time.sleep(0.3)
    return fut


def test_a_site_that_misses_the_deadline_gets_its_fast_path(problems, dask_backend):
    be = _two_workers(dask_backend)
    slot = sorted(be.slots())[0]
    pins = {str(k): be.slots()[k % 2] for k in range(len(problems))}
    blocker = _block(be, slot, 8.0)
    try:  # the other worker has ample time for its sites even on a loaded machine
        res = solve_many(problems, be, deadline_s=3.0, slot_of=pins)
    finally:
        blocker.cancel()
    late = {k for k, s in pins.items() if s == slot}
    assert set(res.fallbacks) == late and set(res.fallbacks.values()) == {"deadline"}
    for k, r in res.sites.items():
        assert_physically_safe(problems[int(k)], r.schedule.current)
        if k in late:
            assert r.schedule.status == lo.ScheduleStatus.TIME_LIMIT_FALLBACK
            assert r.schedule.method == "fleet-deadline->fast"
        else:
            assert same(r.schedule, lo.solve(problems[int(k)]))


def _kill_later(be, slot, delay_s):
    pid = be.client.run(os.getpid, workers=[slot])[slot]
    t = threading.Timer(delay_s, os.kill, (pid, signal.SIGKILL))
    t.start()
    return t


def test_a_killed_workers_sites_are_rerun_elsewhere(dask_backend):
    be = _two_workers(dask_backend)
    sites = make_fleet(4, 6, n_periods=16, seed=3)
    twins = make_fleet(4, 6, n_periods=16, seed=3)
    fleet = FleetController({s.key: s.controller for s in sites}, be)
    now = START
    advance(sites, now, 900)
    advance(twins, now, 900)
    fleet.step(now)
    for t in twins:
        t.controller.step(now)
    victim = fleet.slot_of[sites[0].key]
    on_victim = {k for k, s in fleet.slot_of.items() if s == victim}
    blocker = _block(be, victim, 30.0)
    killer = _kill_later(be, victim, 0.5)
    now += timedelta(minutes=15)
    advance(sites, now, 900)
    advance(twins, now, 900)
    try:
        res = fleet.step(now, deadline_s=60.0)
    finally:
        killer.join()
        blocker.cancel()
    assert res.fallbacks == {}
    assert {k for k, r in res.sites.items() if r.moved} == on_victim
    for s, t in zip(sites, twins, strict=True):
        r = res[s.key]
        assert_physically_safe(r.schedule.problem, r.schedule.current)
        ref = t.controller.step(now)
        if s.key in on_victim:  # its warm start died with the worker: solved cold, same optimum
            assert s.controller.log[-1].mode in ("cold", "lp-separable")
            assert r.schedule.objective == pytest.approx(ref.objective, rel=1e-7)
        else:
            assert same(r.schedule, ref)
    assert victim not in fleet.backend.alive()
    # the next step runs on what is left (and the restarted worker), losing no session
    now += timedelta(minutes=15)
    advance(sites, now, 900)
    res = fleet.step(now, deadline_s=60.0)
    assert res.fallbacks == {}
    for s in sites:
        assert set(res[s.key].schedule.problem.session_ids) >= set(s.controller.sessions)


def test_a_killed_worker_with_no_time_left_means_fast_path_for_its_sites(problems, dask_backend):
    """Both workers busy, one killed: nothing can be re-run before the deadline, so every site
    gets its fast path in time, and the killed worker's sites are accounted for."""
    be = _two_workers(dask_backend)
    a, b = sorted(be.slots())
    pins = {str(k): (a, b)[k % 2] for k in range(len(problems))}
    # margins for a loaded machine: the kill lands after solve_many has submitted to ``a`` and
    # well before the deadline, and ``b`` stays busy past the deadline
    blockers = [_block(be, a, 30.0), _block(be, b, 6.0)]
    killer = _kill_later(be, a, 0.5)
    try:
        res = solve_many(problems, be, deadline_s=2.0, slot_of=pins)
    finally:
        killer.join()
        for f in blockers:
            f.cancel()
    assert set(res.fallbacks) == set(pins)
    assert {k for k, r in res.sites.items() if r.moved} == {k for k, s in pins.items() if s == a}
    for k, r in res.sites.items():
        assert r.schedule.status == lo.ScheduleStatus.TIME_LIMIT_FALLBACK
        assert_physically_safe(problems[int(k)], r.schedule.current)


# ---------------------------------------------------------------------------- FleetController
@pytest.mark.parametrize("executor", ["threads", "dask"])
def test_fleet_controller_equals_stepping_each_controller(executor, dask_backend):
    ex = _two_workers(dask_backend) if executor == "dask" else executor
    sites = make_fleet(5, 6, n_periods=16, seed=1)
    twins = make_fleet(5, 6, n_periods=16, seed=1)
    for s in (*sites, *twins):  # the warm start at every size (by default small LPs solve cold)
        s.controller.warm_min_rows = 0
    for t in twins:  # the fleet's pilot re-solve is cold (the solved model stays on the worker):
        t.controller.planner.hot_resolve = False  # the twins re-solve cold too, bit for bit
    with FleetController({s.key: s.controller for s in sites}, ex, batch_vars=200) as fleet:
        warm = 0
        for k in range(3):
            # 9:00, when vehicles are plugged in (an LP with no current column is "empty")
            now = START.replace(hour=9) + timedelta(minutes=15 * k)
            advance(sites, now, 900)
            advance(twins, now, 900)
            res = fleet.step(now)
            assert res.fallbacks == {}
            for s, t in zip(sites, twins, strict=True):
                assert same(res[s.key].schedule, t.controller.step(now))
                if k:  # the warm start survived on the site's worker: same path as the twin
                    assert s.controller.log[-1].mode == t.controller.log[-1].mode
                    warm += s.controller.log[-1].mode == "warm"
        assert len(fleet.log) == 3
        assert warm >= 8  # of 10 site-steps after the first (a site where most vehicles are
        # new since the last step solves cold by rule)


def test_fleet_controller_errors():
    sites = make_fleet(1, 2, n_periods=4)
    fleet = FleetController({s.key: s.controller for s in sites}, "sequential")
    with pytest.raises(lo.InputError):
        fleet.step(datetime(2026, 6, 10, 8))
    with pytest.raises(lo.InputError):
        fleet.add_site(sites[0].key, sites[0].controller)
    with pytest.raises(lo.InputError):
        fleet.add_site("x", object())  # type: ignore[arg-type]
    with pytest.raises(lo.InputError):
        fleet.remove_site("nope")
    fleet.close()


# ---------------------------------------------------------------------------- saved state
@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_restored_fleet_continues_without_losing_sessions(tmp_path, where):
    path = str(tmp_path / "fleet.json") if where == "file" else "memory://loadopt/fleet.json"
    sites = make_fleet(3, 6, n_periods=16, seed=2)
    fleet = FleetController({s.key: s.controller for s in sites}, "sequential")
    for k in range(2):
        now = START + timedelta(minutes=15 * k)
        advance(sites, now, 900)
        fleet.step(now)
    sites[0].controller.expect_session(
        lo.Session(
            id="later",
            evse="evse5",
            arrival=START + timedelta(hours=9),
            departure=START + timedelta(hours=11),
            energy_kwh=10,
        )
    )
    sites[1].controller.reserve("evse2", 10.0, until=START + timedelta(hours=2), reason="silent")
    fleet.save(path)
    restored = FleetController.restore(path, "sequential")
    now = START + timedelta(minutes=30)
    for s in sites:
        a, b = s.controller, restored[s.key]
        assert a.sessions == b.sessions and a.expected == b.expected
        assert a.reservations == b.reservations and a.planner.options == b.planner.options
        assert a._state == b._state and a._last_now == b._last_now
        assert a.planned_sessions(now) == b.planned_sessions(now)
    ra, rb = fleet.step(now), restored.step(now)
    for s in sites:
        assert rb[s.key].schedule.objective == pytest.approx(ra[s.key].schedule.objective, rel=1e-7)
    with pytest.raises(lo.InputError):
        from loadopt.fleet.state import loads

        loads('{"format": "something else"}')


# ---------------------------------------------------------------------------- Ray (optional)
def test_the_ray_adapter_equals_the_sequential_loop(problems):
    ray = pytest.importorskip("ray")
    from loadopt.fleet import RayBackend

    try:
        be = RayBackend(2, num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"ray.init() does not start a local Ray here: {exc!r}")
    try:
        res = solve_many(problems, be, batch_vars=300)
        ref = [lo.solve(p) for p in problems]
        assert all(same(a, b) for a, b in zip(res.schedules, ref, strict=True))
    finally:
        be.close()
        ray.shutdown()


# ---------------------------------------------------------------------------- CLI
def test_cli_fleet_simulate(capsys):
    from loadopt.cli import main

    assert (
        main(
            [
                "fleet",
                "simulate",
                "--sites",
                "3",
                "--evses",
                "4",
                "--periods",
                "8",
                "--steps",
                "2",
                "--backend",
                "threads",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 sites x 4 EVSEs x 8 periods, 2 steps" in out and "sites/s" in out
    assert out.count("\n   ") >= 2  # a row per step
    assert main(["fleet", "simulate", "--sites", "0"]) == 2
    assert "--sites must be at least 1" in capsys.readouterr().err
    assert main(["fleet"]) == 2


def test_no_live_worker_at_all_means_fast_path_for_every_site(problems):
    """A backend whose cluster has no worker (a stand-in Backend: every worker restarting) —
    the round does not raise: every site gets its fast path, marked ``worker_lost``."""
    from loadopt.fleet import Backend

    class NoWorkers(Backend):
        def slots(self):
            return []

    res = solve_many(problems[:3], NoWorkers(), deadline_s=0.3)
    assert set(res.fallbacks.values()) == {"worker_lost"} and len(res.fallbacks) == 3
    for p, s in zip(problems, res.schedules, strict=False):
        assert_physically_safe(p, s.current)


def test_the_same_code_on_a_cluster_reached_by_its_scheduler_address(problems, dask_backend):
    """What a real deployment does: connect by the scheduler's address (here the test cluster's
    own tcp:// address, as `dask scheduler` prints it) and run the same fleet code."""
    from loadopt.fleet import DaskBackend

    be = DaskBackend(_two_workers(dask_backend).client.scheduler.address)
    try:
        assert be.client is not dask_backend.client
        res = solve_many(problems[:4], be)
        assert all(same(a, lo.solve(p)) for a, p in zip(res.schedules, problems, strict=False))
    finally:
        be.close()  # closes only its own client: the cluster stays up
    assert len(dask_backend.alive()) == 2
