"""Sites behind a shared limit: the decomposition on a 2-worker Dask LocalCluster never lets the
sites together exceed the limit, whatever iteration it stops at, and reaches the joint LP."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.fleet.allowance import with_allowance
from loadopt.fleet.coupled import SharedLimit, solve_coupled, solve_joint
from loadopt.safety import project
from loadopt.synthetic import benchmark_scenario

from .test_safety_properties import COMMON, assert_physically_safe, scenarios

pytest.importorskip("distributed")


def fleet(n: int = 3, n_evse: int = 6, T: int = 16, seed: int = 0) -> dict[str, lo.Problem]:
    return {
        f"s{k}": benchmark_scenario(n_evse, n_periods=T, seed=seed + k).compile() for k in range(n)
    }


def combined_import_kw(schedules: dict[str, lo.Schedule]) -> np.ndarray:
    """From the raw currents, independently of the library's rows: Σ_i (Σ_s I·V·phases/1000 +
    base − PV) per period."""
    out = 0.0
    for s in schedules.values():
        p = s.problem
        ev = (s.current * p.session_kw_per_a[:, None]).sum(axis=0)
        out = out + ev + p.base_load_kw - p.pv_kw
    return np.asarray(out)


def check_safe(res, problems, limit_kw) -> None:
    imp = combined_import_kw(res.schedules)
    assert (imp <= limit_kw + 1e-9).all(), f"shared limit exceeded by {(imp - limit_kw).max()}"
    for k, r in res.sites.items():
        assert_physically_safe(problems[k], r.schedule.current)  # each site's own limits
    for rec in res.history:  # every iteration's split of the room
        assert (rec.allowance_sum_kw <= res.room_kw + 1e-9).all()


@pytest.mark.parametrize("share", [0.6, 0.35])
def test_decomposition_reaches_the_joint_lp_and_is_safe_at_every_iteration(share, dask_backend):
    problems = fleet()
    limit_kw = share * sum(p.import_cap_kw.max() for p in problems.values())
    limit = SharedLimit(limit_kw, id="substation")
    joint = solve_joint(problems, limit)
    check_safe(joint, problems, limit_kw)
    full = solve_coupled(problems, limit, dask_backend, rel_gap=1e-5)
    assert full.converged
    check_safe(full, problems, limit_kw)
    tol = 1e-5 * max(1.0, abs(full.history[-1].upper))
    assert joint.objective - 1e-6 <= full.objective <= joint.objective + tol
    for rec in full.history:
        assert rec.lower <= joint.objective + 1e-6 and rec.upper >= joint.objective - 1e-6
    # stopped early at any iteration: still under the shared limit
    for k in range(min(len(full.history), 3)):
        early = solve_coupled(problems, limit, dask_backend, rel_gap=0.0, max_iterations=k)
        assert len(early.history) == k + 1
        check_safe(early, problems, limit_kw)
        assert early.objective >= joint.objective - 1e-6


def test_uncongested_sites_need_one_iteration_and_a_tight_limit_gives_nothing():
    problems = fleet(2, 4, 8, seed=5)
    loose = solve_coupled(problems, SharedLimit(1e6), "sequential")
    assert loose.converged and len(loose.history) == 1
    ref = sum(lo.solve(p).objective for p in problems.values())
    assert loose.objective == pytest.approx(ref, rel=1e-7)
    base = sum(p.base_load_kw - p.pv_kw for p in problems.values())
    tight = solve_coupled(problems, SharedLimit(np.maximum(base - 1.0, 0.0)), "sequential")
    assert tight.notices
    none = tight.room_kw == 0  # the other loads alone break the limit: vehicles get nothing
    assert none.any()
    assert all(not s.current[:, none].any() for s in tight.schedules.values())


def test_a_worker_that_lost_its_sites_gets_them_again(dask_backend):
    """Mid-run every worker forgets the sites' LPs (as after a restart): the coordinator sends
    them again and the decomposition ends where it would have."""
    from loadopt.fleet.worker import clear_state

    problems = fleet(3, 6, 16, seed=7)
    limit = SharedLimit(0.4 * sum(p.import_cap_kw.max() for p in problems.values()))
    ref = solve_coupled(problems, limit, "sequential")
    be = dask_backend

    def forget(rec):
        if rec.iteration == 1:
            for s in be.slots():
                be.client.run(clear_state, workers=[s])

    res = solve_coupled(problems, limit, be, on_iteration=forget)
    assert res.recovery["resent"] == len(problems)
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)
    check_safe(res, problems, limit.import_kw)


def test_errors_and_the_allowance_row():
    problems = fleet(2, 4, 8)
    other = benchmark_scenario(4, n_periods=6).compile()
    with pytest.raises(lo.InputError):
        solve_coupled({"a": problems["s0"], "b": other}, SharedLimit(10.0))
    with pytest.raises(lo.InputError):
        solve_coupled({}, SharedLimit(10.0))
    with pytest.raises(lo.InputError):
        solve_coupled(problems, SharedLimit(-1.0))
    p = problems["s0"]
    q = with_allowance(p, np.full(p.n_periods, 2.0))
    s = lo.solve(q)
    assert ((s.current * p.session_kw_per_a[:, None]).sum(axis=0) <= 2.0 + 1e-9).all()
    with pytest.raises(lo.InputError):
        with_allowance(p, np.zeros(3))


@settings(COMMON, max_examples=40)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_whatever_a_site_proposes_stays_within_its_allowance(p, seed):
    """The last line of the safety argument: any currents, projected onto the problem with the
    allowance rows, keep every raw limit of the site and its EV power under the allowance."""
    rng = np.random.default_rng(seed)
    allowance = rng.choice([0.0, 1.5, 7.0, 40.0, np.inf], size=p.n_periods)
    q = with_allowance(p, allowance)
    cur = project(q, rng.uniform(-5, 60, size=(p.n_sessions, p.n_periods)))
    assert_physically_safe(p, cur)
    ev_kw = (cur * p.session_kw_per_a[:, None]).sum(axis=0)
    assert (ev_kw <= allowance + 1e-9).all()


def test_proportional_split_never_rounds_above_the_room(monkeypatch):
    """No master solved: the sites keep iteration 0's proportional split, which must sum to at
    most the room in floating point (Σ share_i·R can round one ulp above R)."""
    import loadopt.fleet.coupled as coupled

    monkeypatch.setattr(coupled, "_master", lambda *a, **k: None)
    problems = fleet(n=3, n_evse=3, T=4)
    for limit_kw in (7.3, 19.1, 41.7):
        res = solve_coupled(problems, SharedLimit(limit_kw), None, max_iterations=0)
        total = np.sum(list(res.allowance_kw.values()), axis=0)
        fin = np.isfinite(res.room_kw)
        assert (total[fin] <= res.room_kw[fin]).all()
