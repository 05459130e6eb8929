"""The benchmark family (issue 16): every member beside raw HiGHS and PuLP + CBC, in one run.

For each member of :mod:`family` (seeded sites unlike each other, and one instance written
without loadopt, :mod:`independent`):

- **loadopt end-to-end**: objects → compile → reduced LP → HiGHS (the library's settings) →
  round, project → safety check — what a site controller pays per call;
- **raw HiGHS**: the straightforward model of the same instance (:mod:`reference`) handed to
  the same highspy with default options (``passModel`` + ``run``);
- **PuLP + CBC**: that straightforward model built as PuLP objects and solved by CBC (build +
  solve, what a PuLP user pays).

loadopt and raw HiGHS alternate within each round (so load from other processes hits both
alike); the ratio is the median of loadopt over the median of raw HiGHS. Both optima are checked
equal (1e-6) before anything is timed. The JPL week is replayed through the rolling
:class:`~loadopt.controller.Controller`; every 12th step's problem is also solved by raw HiGHS
(and every 48th by PuLP + CBC), the ratio being the controller's step time over raw HiGHS on
those steps.

At the end of the run the family table is printed (and written to ``.benchmarks/family.json``):
the median and the worst end-to-end / raw ratio, and a loud ``FAIL`` line for every member above
1.0× raw or less than 5× faster than PuLP + CBC. No assertion on time: a regression shows in the
table, it does not turn a test red. Run: ``pytest benchmarks/test_bench_family.py``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import family
import loadopt as lo
from conftest import FAMILY, HORIZONS
from loadopt.controller import Controller
from loadopt.lp import build_lp
from loadopt.solvers import highs as hs
from reference import straightforward_lp

ROUNDS = {"workplace-congested": 5, "independent-congested": 5}


def _pulp_cbc(lp) -> float:
    """Build ``lp`` as PuLP objects and solve it with CBC; seconds for both."""
    import pulp

    from loadopt.solvers.pulp_backend import build_pulp

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        prob, _ = build_pulp(lp)
        prob.solve(pulp.PULP_CBC_CMD(msg=False))
    assert pulp.LpStatus[prob.status] == "Optimal"
    return time.perf_counter() - t0


def _iterations(lp, options, basis=None) -> int:
    h = hs.new_highs(options)
    hs.pass_lp(h, lp)
    if basis is not None:
        hs.set_basis(h, *basis)
    h.run()
    return int(h.getInfo().simplex_iteration_count)


@pytest.mark.parametrize("name", family.NAMES)
def test_member(benchmark, name):
    m = family.member(name)
    sc = m.scenario
    first = lo.solve(sc.compile())
    assert first.status == lo.ScheduleStatus.OPTIMAL and not first.violations(limit=1)
    raw = hs.solve_lp(m.reference)
    assert raw.status.value == "optimal"
    assert first.objective == pytest.approx(raw.objective, rel=1e-6, abs=1e-6)  # same optimum

    times: dict[str, list[float]] = {"loadopt": [], "raw": []}

    def one_round():
        for k in ("loadopt", "raw") if len(times["raw"]) % 2 == 0 else ("raw", "loadopt"):
            if k == "raw":
                times["raw"].append(hs.solve_lp(m.reference).time_s)
            else:
                t0 = time.perf_counter()
                s = lo.solve(sc.compile())
                times["loadopt"].append(time.perf_counter() - t0)
                assert not s.violations(limit=1)

    benchmark.pedantic(one_round, rounds=ROUNDS.get(name, 3), iterations=1)
    pulp_s = None
    if not benchmark.disabled or name == "depot-timetable":  # smoke run: one PuLP member
        pytest.importorskip("pulp")
        pulp_s = _pulp_cbc(m.reference)
    p = sc.compile()
    lp = build_lp(p)
    start = hs.relaxed_basis(lp)
    lo_s = float(np.median(times["loadopt"]))
    row = {
        "sessions": p.n_sessions,
        "periods": p.n_periods,
        "raw_cols": m.reference.n_cols,
        "raw_rows": m.reference.n_rows,
        "lp_cols": lp.n_cols,
        "lp_rows": lp.n_rows,
        "loadopt_s": lo_s,
        "raw_s": float(np.median(times["raw"])),
        "pulp_s": pulp_s,
        "pulp_over_loadopt": None if pulp_s is None else pulp_s / lo_s,
        # from the start solve() takes (the relaxed start where its rule says so)
        "loadopt_iters": _iterations(lp, hs.LP_OPTIONS, start),
        "start": "relaxed" if start is not None else "slack",
        "raw_iters": _iterations(m.reference, {}),
        "delivered_pct": 100 * first.kpis().delivered_kwh / max(first.kpis().requested_kwh, 1e-9),
    }
    FAMILY[name] = row
    benchmark.extra_info.update(row)


# ------------------------------------------------------------------------------ JPL week
class _Timed(Controller):
    """The controller, its own step timed, and the raw references solved on sampled steps."""

    def __init__(self, *a, raw_every: int, pulp_every: int | None, **kw):
        super().__init__(*a, **kw)
        self.raw_every, self.pulp_every = raw_every, pulp_every
        self.k = 0
        self.step_s_list: list[float] = []
        self.sampled: list[tuple[float, float]] = []  # (controller step, raw HiGHS)
        self.pulp: list[tuple[float, float]] = []

    def step(self, now):
        t0 = time.perf_counter()
        sched = super().step(now)
        dt = time.perf_counter() - t0
        self.step_s_list.append(dt)
        p = sched.problem
        if self.k % self.raw_every == 0 and p.n_vars:
            ref = straightforward_lp(p)
            res = hs.solve_lp(ref)
            if res.status.value == "optimal":
                self.sampled.append((dt, res.time_s))
            if self.pulp_every and self.k % self.pulp_every == 0:
                self.pulp.append((dt, _pulp_cbc(ref)))
        self.k += 1
        return sched


def _replay(
    sc, horizon_h: float = 24.0, raw_every: int = 12, pulp_every: int | None = 48, **ctl_kw
):
    from loadopt.simulate import simulate

    n = round(horizon_h * 3600 / sc.horizon.step_s)
    ctl = _Timed(
        sc.site,
        step_s=sc.horizon.step_s,
        n_periods=n,
        signals=sc.signals,
        objective=sc.objective,
        raw_every=raw_every,
        pulp_every=pulp_every,
        **ctl_kw,
    )
    res = simulate(sc, ctl)
    assert res.n_violations == 0
    return ctl, res


def test_jpl_week_replay(benchmark):
    """The shipped JPL week (339 sessions, 52 stations), 15-minute steps, 24 h lookahead."""
    sc = family.jpl_week_scenario()
    if benchmark.disabled:  # smoke run: the first day only
        sc = sc.model_copy(update={"horizon": sc.horizon.model_copy(update={"n_periods": 96})})
    out = {}

    def run():
        out["ctl"], out["res"] = _replay(sc, pulp_every=None if benchmark.disabled else 48)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ctl, res = out["ctl"], out["res"]
    steps = np.array(ctl.step_s_list)
    samp = np.array(ctl.sampled)
    pulp = np.array(ctl.pulp) if ctl.pulp else None
    k = res.kpis
    row = {
        "sessions": len(k.sessions),
        "periods": ctl.n_periods,
        "steps": int(steps.size),
        "loadopt_s": float(samp[:, 0].mean()),
        "raw_s": float(samp[:, 1].mean()),
        "pulp_s": None if pulp is None else float(pulp[:, 1].mean()),
        "pulp_over_loadopt": None if pulp is None else float(pulp[:, 1].mean() / pulp[:, 0].mean()),
        "mean_step_s": float(steps.mean()),
        "max_step_s": float(steps.max()),
        "delivered_pct": 100 * k.delivered_kwh / max(k.requested_kwh, 1e-9),
        "served": k.sessions_served,
    }
    FAMILY["jpl-week-replay"] = row
    benchmark.extra_info.update(row)


HORIZON_VARIANTS = {
    "uniform 15 min x 96 (24 h)": {"coarse_step_s": None},  # (the default is tiered now)
    "default: 18 periods of 15 min, then hourly (24 h)": {},
    "tiered 15 min for 4 h, then hourly (24 h)": {"coarse_step_s": 3600, "fine_s": 4 * 3600},
    "tiered 15 min for 2 h, then hourly (24 h)": {"coarse_step_s": 3600, "fine_s": 2 * 3600},
}


def test_jpl_week_horizons(benchmark):
    """The JPL week replayed with a uniform and with non-uniform (tiered) horizons: mean and max
    controller step, energy delivered, sessions served. Each variant is replayed twice, the runs
    alternating (uniform, tiered, ..., uniform, tiered, ...) so load from other processes hits
    all alike; the faster of its two runs counts."""
    from loadopt.simulate import simulate

    sc = family.jpl_week_scenario()
    reps = 2
    if benchmark.disabled:  # smoke run: the first day, once
        sc = sc.model_copy(update={"horizon": sc.horizon.model_copy(update={"n_periods": 96})})
        reps = 1
    out: dict[str, list] = {k: [] for k in HORIZON_VARIANTS}

    def run():
        for _ in range(reps):
            for name, kw in HORIZON_VARIANTS.items():
                ctl = Controller(
                    sc.site,
                    step_s=900,
                    n_periods=96,
                    signals=sc.signals,
                    objective=sc.objective,
                    **kw,
                )
                res = simulate(sc, ctl)
                assert res.n_violations == 0
                out[name].append(res)

    benchmark.pedantic(run, rounds=1, iterations=1)
    for name, runs in out.items():
        res = min(runs, key=lambda r: r.step_time_s.mean())
        k = res.kpis
        row = {
            "mean_step_s": float(res.step_time_s.mean()),
            "max_step_s": float(res.step_time_s.max()),
            "delivered_kwh": k.delivered_kwh,
            "delivered_pct": 100 * k.delivered_kwh / max(k.requested_kwh, 1e-9),
            "served": k.sessions_served,
            "sessions": len(k.sessions),
        }
        HORIZONS[name] = row
        benchmark.extra_info[name] = row
