"""Bidirectional: 200 V2G sessions × 96 periods plus a depot battery, beside the charge-only
model of the same site (issue 14).

Same site, sessions, prices and objective (:func:`loadopt.synthetic.v2g_scenario`); the
bidirectional model adds per session a discharge column per period and an energy state per
period (with its balance row and a soft target), the battery's charge/discharge/state columns,
the export-direction rows, and binaries only where simultaneous charge and discharge could pay
(never here: prices are positive). End to end = compile + build + HiGHS + two-way projection +
check. Run: ``pytest benchmarks/test_bench_v2g.py``; the ratio is printed at the end.
"""

from __future__ import annotations

from functools import cache

import pytest

import loadopt as lo
from conftest import RATIOS
from loadopt.lp import build_lp
from loadopt.synthetic import v2g_scenario

N = 200
G = f"v2g-{N}x96"
RATIOS.append(
    (
        "V2G + battery / charge-only (end to end, same site)",
        G,
        "bidirectional end-to-end",
        "charge-only end-to-end",
    )
)
RATIOS.append(
    ("V2G + battery / charge-only (HiGHS only)", G, "bidirectional HiGHS", "charge-only HiGHS")
)


@cache
def scenarios():
    return v2g_scenario(N)


def _end_to_end(sc):
    s = lo.solve(sc.compile())
    assert not s.violations()
    return s


@pytest.mark.parametrize("kind", ["bidirectional", "charge-only"])
def test_end_to_end(benchmark, rec, kind):
    sc = scenarios()[0 if kind == "bidirectional" else 1]
    s = benchmark.pedantic(lambda: _end_to_end(sc), rounds=3, iterations=1, warmup_rounds=0)
    assert s.status == lo.ScheduleStatus.OPTIMAL
    if kind == "bidirectional":
        k = s.kpis()
        assert k.storage is not None and k.storage.discharged_kwh > 0
        lp = build_lp(s.problem)
        assert lp.integrality is None  # positive prices: no binary needed
        benchmark.extra_info.update(
            cols=lp.n_cols,
            rows=lp.n_rows,
            discharged_kwh=round(k.storage.discharged_kwh, 1),
            revenue=round(k.storage.revenue, 2),
            peak_shaved_kw=round(k.storage.peak_shaved_kw, 1),
        )
    rec(G, f"{kind} end-to-end")


@pytest.mark.parametrize("kind", ["bidirectional", "charge-only"])
def test_highs_only(benchmark, rec, kind):
    from loadopt.solvers import highs as hs

    lp = build_lp(scenarios()[0 if kind == "bidirectional" else 1].compile())
    res = benchmark.pedantic(lambda: hs.solve_lp(lp, options=hs.LP_OPTIONS), rounds=3, iterations=1)
    assert res.status.value == "optimal"
    rec(G, f"{kind} HiGHS")


RATIOS.append(
    (
        "V2G + battery / charge-only (fast path, with its discharge policy)",
        G,
        "bidirectional fast",
        "charge-only fast",
    )
)


@pytest.mark.parametrize("kind", ["bidirectional", "charge-only"])
def test_fast(benchmark, rec, kind):
    """The fast path (and every solver fallback): with storage its discharge policy
    (``loadopt.fast.storage``) and the two-way projection, beside the charge-only fast path."""
    p = scenarios()[0 if kind == "bidirectional" else 1].compile()
    lo.solve(p, method="fast")  # numba compile and per-problem arrays out of the timing
    s = benchmark.pedantic(lambda: lo.solve(p, method="fast"), rounds=3, iterations=1)
    assert not s.violations()
    if kind == "bidirectional":
        k = s.kpis()
        assert k.storage is not None and k.storage.discharged_kwh > 0
        benchmark.extra_info.update(
            discharged_kwh=round(k.storage.discharged_kwh, 1),
            energy_cost=round(k.energy_cost, 2),
            peak_import_kw=round(k.peak_import_kw, 1),
        )
    rec(G, f"{kind} fast")
