"""Fast path: one-interval allocation at 1,000 / 10,000 / 100,000 EVSEs, JIT compile and cached
start, and quality against the LP on the demo site.

Instance: ``make_site`` (grid connection → transformer → feeders → circuits → EVSEs; the feeder →
circuit → EVSE part is the 3-level tree under the site limits), one workplace session per EVSE,
one 15-minute period at noon (every session plugged in), minimum current 6 A. Timed after
compilation. Reference in the same run: one sparse mat-vec ``G_t @ x`` over the same period's
safety rows with scipy (touching every entry once: the least any allocator has to do). The
fast path works on the rows left after its once-per-problem reduction (``rows_reduced``,
``nnz_reduced`` in ``extra_info``); the reference uses the full matrix.

Run: ``pytest benchmarks/test_bench_fast.py``; the ratios print at the end, and the compile and
quality numbers are in each benchmark's ``extra_info`` and printed with ``-s``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import loadopt as lo
from conftest import RATIOS
from loadopt import fast
from loadopt.fast._prepared import prepared
from loadopt.synthetic import demo_scenario, make_sessions, make_site

SIZES = [1_000, 10_000, 100_000]
ROUNDS = {1_000: 200, 10_000: 50, 100_000: 5}
for _n in SIZES:
    RATIOS.append(
        ("fast allocate (fair) / scipy G_t @ x", f"fast-{_n}", "allocate fair", "scipy matvec")
    )
    RATIOS.append(
        ("fast allocate (edf) / scipy G_t @ x", f"fast-{_n}", "allocate edf", "scipy matvec")
    )


@cache
def one_period(n: int) -> lo.Problem:
    tz = ZoneInfo("Europe/Berlin")
    site = make_site(n, seed=1)
    day = lo.Horizon(start=datetime(2026, 6, 10, tzinfo=tz), step_s=900, n_periods=96)
    noon = lo.Horizon(start=datetime(2026, 6, 10, 12, tzinfo=tz), step_s=900, n_periods=1)
    return lo.compile_problem(site, make_sessions(site, day, seed=1), noon)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("policy", ["fair", "edf"])
def test_allocate_one_interval(benchmark, rec, n, policy):
    p = one_period(n)
    fast.allocate(p, 0, policy)  # compile (or load from cache) and prepare outside the timing
    x = benchmark.pedantic(
        lambda: fast.allocate(p, 0, policy), rounds=ROUNDS[n], iterations=1, warmup_rounds=2
    )
    pp = prepared(p)
    benchmark.extra_info.update(
        evses=n,
        vars=p.n_vars,
        rows=int(p.G.shape[0]),
        nnz=int(p.G.nnz),
        rows_reduced=int(pp.row_orig.size),
        nnz_reduced=int(pp.indptr[-1]),
        numba=fast.NUMBA,
        delivered_a=float(x.sum()),
    )
    assert lo.Schedule(p, x[:, None], lo.ScheduleStatus.FEASIBLE, "fast").violations() == []
    rec(f"fast-{n}", f"allocate {policy}")


@pytest.mark.parametrize("n", SIZES)
def test_reference_matvec(benchmark, rec, n):
    p = one_period(n)
    G = p.G.tocsr()
    x = np.ones(p.n_vars)
    benchmark.pedantic(lambda: G @ x, rounds=ROUNDS[n], iterations=1, warmup_rounds=2)
    rec(f"fast-{n}", "scipy matvec")


_START = (
    "import time; t0 = time.perf_counter()\n"
    "from loadopt import fast\n"
    "from loadopt.synthetic import demo_scenario\n"
    "p = demo_scenario().compile()\n"
    "t1 = time.perf_counter(); fast.allocate(p, 40); t2 = time.perf_counter()\n"
    "print(t1 - t0, t2 - t1, fast.NUMBA)\n"
)


def _start(env: dict[str, str]) -> tuple[float, float, bool]:
    out = subprocess.run(
        [sys.executable, "-c", _START],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    a, b, c = out.stdout.split()[-3:]
    return float(a), float(b), c == "True"


def test_compile_and_cached_start(benchmark):
    """First call in a fresh process: with an empty JIT cache (compiles), with the cache filled
    by that run (loads), and with numba disabled (the pure path), each in its own subprocess."""
    with tempfile.TemporaryDirectory() as d:
        cold = _start({"NUMBA_CACHE_DIR": d})
        warm = benchmark.pedantic(lambda: _start({"NUMBA_CACHE_DIR": d}), rounds=3, iterations=1)
    pure = _start({"LOADOPT_DISABLE_NUMBA": "1"})
    benchmark.extra_info.update(
        import_and_compile_problem_s=cold[0],
        first_call_compile_s=cold[1],
        first_call_cached_s=warm[1],
        first_call_pure_s=pure[1],
    )
    print(
        f"\nfast path first call: compile {cold[1]:.2f} s, from cache {warm[1] * 1e3:.0f} ms, "
        f"pure (numba disabled) {pure[1] * 1e3:.0f} ms; import+compile_problem {cold[0]:.2f} s"
    )
    assert cold[2] and warm[2] and not pure[2]


def test_quality_against_the_lp(benchmark):
    """Energy delivered over the demo day: fast path (each policy) beside the LP, same run."""
    p = demo_scenario().compile()
    lp = lo.solve(p)
    got = {"lp": lp.kpis().delivered_kwh}
    for pol in ("fair", "edf", "llf"):
        got[pol] = lo.solve(p, method="fast", policy=pol).kpis().delivered_kwh
    t0 = time.perf_counter()
    benchmark.pedantic(lambda: fast.allocate_horizon(p), rounds=20, iterations=1)
    req = float(p.session_energy_kwh.sum())
    benchmark.extra_info.update(requested_kwh=req, **{f"{k}_kwh": v for k, v in got.items()})
    print(
        f"\ndemo day: requested {req:.1f} kWh; delivered: "
        + ", ".join(f"{k} {v:.1f} kWh ({v / got['lp']:.1%} of LP)" for k, v in got.items())
        + f"; LP solve {lp.solve_time_s:.3f} s, {time.perf_counter() - t0:.3f} s for 20 "
        "fast horizons"
    )
    assert all(v <= got["lp"] + 1e-6 for v in got.values())
