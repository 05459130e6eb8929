"""Core optimizer: compile + build + solve + round + check, beside raw HiGHS and PuLP.

Issue targets (2-core machine): 1,000 × 96 end-to-end ≤ 1.1 × raw HiGHS solving the
straightforward model with default options, and then below it; building ≥ 100 × faster than PuLP.
Run: ``pytest benchmarks/test_bench_core.py``; the ratio table is printed at the end.
"""

from __future__ import annotations

import pytest

import loadopt as lo
from conftest import RATIOS, problem, scenario
from loadopt.lp import build_lp
from loadopt.solvers import highs as hs
from reference import straightforward_lp

SIZES = [100, 1000, 5000]
ROUNDS = {100: 5, 1000: 3, 5000: 1}

for n in SIZES:
    g = f"core-{n}x96"
    RATIOS.append(
        (
            "end-to-end / raw HiGHS (straightforward model)",
            g,
            "loadopt end-to-end",
            "raw HiGHS solve",
        )
    )
    RATIOS.append(("loadopt solve only / raw HiGHS", g, "loadopt HiGHS solve", "raw HiGHS solve"))
    RATIOS.append(("PuLP build / loadopt compile+build", g, "PuLP build", "loadopt compile+build"))
    RATIOS.append(("PuLP build / loadopt build (same arrays in)", g, "PuLP build", "loadopt build"))


@pytest.mark.parametrize("n", SIZES)
def test_loadopt_end_to_end(benchmark, rec, n):
    """Objects → compile → LP → HiGHS → round → project → check, as a controller calls it."""
    sc = scenario(n)

    def run():
        s = lo.solve(sc.compile())
        assert not s.violations()
        return s

    s = benchmark.pedantic(run, rounds=ROUNDS[n], iterations=1, warmup_rounds=0)
    assert s.status == lo.ScheduleStatus.OPTIMAL
    rec(f"core-{n}x96", "loadopt end-to-end")


@pytest.mark.parametrize("n", SIZES)
def test_loadopt_solve_only(benchmark, rec, n):
    lp = build_lp(problem(n))
    res = benchmark.pedantic(
        lambda: hs.solve_lp(lp, options=hs.LP_OPTIONS), rounds=ROUNDS[n], iterations=1
    )
    assert res.status.value == "optimal"
    rec(f"core-{n}x96", "loadopt HiGHS solve")


@pytest.mark.parametrize("n", SIZES)
def test_raw_highs_straightforward(benchmark, rec, n):
    """The reference: the straightforward model, handed to the same highspy, default options."""
    p = problem(n)
    ref = straightforward_lp(p)
    res = benchmark.pedantic(lambda: hs.solve_lp(ref), rounds=ROUNDS[n], iterations=1)
    assert res.status.value == "optimal"
    ours = hs.solve_lp(build_lp(p), options=hs.LP_OPTIONS)
    assert ours.objective == pytest.approx(res.objective, rel=1e-7)  # same optimum
    rec(f"core-{n}x96", "raw HiGHS solve")


@pytest.mark.parametrize("n", SIZES)
def test_loadopt_compile_and_build(benchmark, rec, n):
    sc = scenario(n)
    benchmark.pedantic(lambda: build_lp(sc.compile()), rounds=ROUNDS[n] + 2, iterations=1)
    rec(f"core-{n}x96", "loadopt compile+build")


@pytest.mark.parametrize("n", SIZES)
def test_loadopt_build(benchmark, rec, n):
    """Compiled arrays → reduced LP: the same input the PuLP build below starts from."""
    p = problem(n)
    benchmark.pedantic(lambda: build_lp(p), rounds=ROUNDS[n] + 2, iterations=1)
    rec(f"core-{n}x96", "loadopt build")


@pytest.mark.parametrize("n", [100, 1000])
def test_pulp_build(benchmark, rec, n):
    """The same reduced model built as PuLP objects (what a PuLP user would pay)."""
    pytest.importorskip("pulp")
    from loadopt.solvers.pulp_backend import build_pulp

    lp = build_lp(problem(n))
    benchmark.pedantic(lambda: build_pulp(lp), rounds=2 if n == 1000 else 3, iterations=1)
    rec(f"core-{n}x96", "PuLP build")
