"""Controller step time: warm start from the previous step's mapped basis vs a cold solve.

Every step builds the reduced LP cold either way; ``warm`` hands HiGHS the previous optimal basis
mapped onto it by stable keys (``loadopt.solvers.warm``). Cases (issue 6), each run cold and warm in
the same process, same steps, same session events, the controllers stepped in lockstep:

- a 50-EVSE site with 5-minute steps over a day (288 steps, 12 h lookahead = 144 periods);
- 1,000 sessions × 96 periods rolling by one 15-minute period (5 steps);
- the same 1,000 × 96 roll with the grid limit halved over the whole horizon at step 2 (4 steps):
  cold, warm (default: the cut step is solved cold), and warm forced through the cut.

Each test records mean and max wall time per ``Controller.step`` (compile + LP + solve + safety
projection), the solver time, the modes taken and the largest relative objective difference
against cold in ``extra_info`` and prints them; ratios are warm / cold from the same run (no
absolute timed assertion). Run: ``pytest benchmarks/test_bench_controller.py --benchmark-only -s``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from loadopt.controller import Controller
from loadopt.synthetic import benchmark_scenario


def _run(sc, now0, n_steps, step_s, n_periods, variants, cut_at=None):
    """Drive one controller per variant through the same steps in lockstep (each step, every
    variant in turn, the order rotating), so that load from other processes hits all alike."""
    ctls = {}
    for name, v in variants.items():
        c = Controller(
            sc.site,
            signals=sc.signals,
            objective=sc.objective,
            step_s=step_s,
            n_periods=n_periods,
            time_limit_s=30.0,
            warm=v["warm"],
            cold_after_limit_cut=v.get("cold_after_cut", True),
            # the warm start's mechanism on the uniform horizon these figures were taken on
            # (the defaults solve LPs under 1,000 rows cold and tier the horizon)
            warm_min_rows=0,
            coarse_step_s=None,
        )
        ctls[name] = c
    names = list(ctls)
    times = {n: [] for n in names}
    objs = {n: [] for n in names}
    started, stopped = set(), set()
    for k in range(n_steps):
        now = now0 + timedelta(seconds=k * step_s)
        for s in sc.sessions:
            if s.id in started and s.id not in stopped and s.departure <= now:
                for c in ctls.values():
                    c.stop_session(s.id, now)
                stopped.add(s.id)
            elif s.id not in started and s.arrival <= now < s.departure:
                for c in ctls.values():
                    c.start_session(s)
                started.add(s.id)
        if cut_at is not None and k == cut_at:
            lim = sc.signals.grid_import_limit_kw
            for c in ctls.values():
                c.set_signals(sc.signals.model_copy(update={"grid_import_limit_kw": 0.5 * lim}))
        for i in range(len(names)):
            name = names[(i + k) % len(names)]
            t0 = time.perf_counter()
            sched = ctls[name].step(now)
            times[name].append(time.perf_counter() - t0)
            objs[name].append(sched.objective)
            assert sched.violations(limit=1) == []
    return {n: (np.array(times[n]), ctls[n].log, np.array(objs[n], dtype=float)) for n in names}


def _compare(benchmark, label, variants, *args, **kw):
    out = _run(*args, variants, **kw)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    ref_t, _, ref_obj = out["cold"]
    info = {}
    for name, (t, log, obj) in out.items():
        modes = [r.mode for r in log]
        info[f"{name}_mean_ms"] = round(1e3 * t.mean(), 2)
        info[f"{name}_max_ms"] = round(1e3 * t.max(), 2)
        info[f"{name}_mean_after_first_ms"] = round(1e3 * t[1:].mean(), 2)  # step 0 is cold
        info[f"{name}_solve_mean_ms"] = round(1e3 * np.mean([r.solve_s for r in log]), 2)
        info[f"{name}_modes"] = {m: modes.count(m) for m in sorted(set(modes))}
        if name != "cold":
            info[f"{name}_over_cold_mean"] = round(t.mean() / ref_t.mean(), 3)
            info[f"{name}_obj_rel_diff"] = float(
                np.max(np.abs(obj - ref_obj) / np.maximum(1.0, np.abs(ref_obj)))
            )
        if "cut_at" in kw:
            k = kw["cut_at"]
            info[f"{name}_cut_step_ms"] = round(1e3 * t[k], 1)
            info[f"{name}_cut_step_mode"] = log[k].mode
    benchmark.extra_info.update(info)
    print(f"\n{label}: {info}")
    return info


WARM = {"cold": {"warm": False}, "warm": {"warm": True}}


@pytest.mark.benchmark(group="controller")
def test_50_evse_5min_day(benchmark):
    sc = benchmark_scenario(50, n_periods=288)
    _compare(benchmark, "50 EVSE, 5-min steps, day", WARM, sc, sc.horizon.start, 288, 300, 144)


@pytest.mark.benchmark(group="controller")
def test_1000_sessions_roll(benchmark):
    sc = benchmark_scenario(1000)
    now0 = sc.horizon.start.replace(hour=10)
    _compare(benchmark, "1,000 sessions x 96, rolling 1 period", WARM, sc, now0, 5, 900, 96)


@pytest.mark.benchmark(group="controller")
def test_1000_sessions_limit_cut(benchmark):
    sc = benchmark_scenario(1000)
    now0 = sc.horizon.start.replace(hour=10)
    variants = {**WARM, "warm_through_cut": {"warm": True, "cold_after_cut": False}}
    _compare(
        benchmark,
        "1,000 x 96, grid limit halved over the horizon at step 2",
        variants,
        sc,
        now0,
        4,
        900,
        96,
        cut_at=2,
    )
