"""Controller step time: warm re-solve on a kept model vs a cold rebuild per step, same run.

Two cases (issue 6):

- a 50-EVSE site with 5-minute steps over a day (288 steps, 12 h lookahead = 144 periods);
- 1,000 sessions × 96 periods rolling by one period (a few steps).

Each test records mean and max wall time per ``Controller.step`` in ``extra_info`` for both modes
and prints them; ratios are warm / cold measured in the same run (no absolute timed assertion).
Run: ``pytest benchmarks/test_bench_controller.py --benchmark-only -s``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from loadopt.controller import Controller
from loadopt.synthetic import benchmark_scenario


def _run(sc, now0, n_steps, step_s, n_periods, warm):
    c = Controller(sc.site, signals=sc.signals, objective=sc.objective, step_s=step_s,
                   n_periods=n_periods, time_limit_s=30.0)
    c.warm = warm
    started, stopped = set(), set()
    times = []
    for k in range(n_steps):
        now = now0 + timedelta(seconds=k * step_s)
        for s in sc.sessions:
            if s.id in started and s.id not in stopped and s.departure <= now:
                c.stop_session(s.id, now)
                stopped.add(s.id)
            elif s.id not in started and s.arrival <= now < s.departure:
                c.start_session(s)
                started.add(s.id)
        t0 = time.perf_counter()
        sched = c.step(now)
        times.append(time.perf_counter() - t0)
        assert sched.violations(limit=1) == []
    modes = [r.mode for r in c.log]
    return np.array(times), modes


def _compare(benchmark, sc, now0, n_steps, step_s, n_periods, label):
    out = {}
    for warm in (False, True):
        t, modes = _run(sc, now0, n_steps, step_s, n_periods, warm)
        out["warm" if warm else "cold"] = (t, modes)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    info = {}
    for k, (t, modes) in out.items():
        info[f"{k}_mean_ms"] = round(1e3 * t.mean(), 2)
        info[f"{k}_max_ms"] = round(1e3 * t.max(), 2)
        info[f"{k}_modes"] = {m: modes.count(m) for m in set(modes)}
    info["warm_over_cold_mean"] = round(out["warm"][0].mean() / out["cold"][0].mean(), 3)
    benchmark.extra_info.update(info)
    print(f"\n{label}: {info}")


@pytest.mark.benchmark(group="controller")
def test_50_evse_5min_day(benchmark):
    sc = benchmark_scenario(50, n_periods=288)
    _compare(benchmark, sc, sc.horizon.start, 288, 300, 144, "50 EVSE, 5-min steps, day")


@pytest.mark.benchmark(group="controller")
def test_1000_sessions_roll(benchmark):
    sc = benchmark_scenario(1000)
    now0 = sc.horizon.start.replace(hour=10)
    _compare(benchmark, sc, now0, 5, 900, 96, "1,000 sessions x 96, rolling 1 period")
