"""``Schedule.check()`` on a schedule that breaks everything stops at its first 10 violations.

5,000 sessions × 96 periods, every value off the 0.1 A grid, above every vehicle's maximum and
every limit (issue 10: building the whole violation list took 210 ms there). The reference, in
the same run, is the full list (``violations(limit=None)``): the ratio full list / check() says
how much stopping early saves.
Run: ``pytest benchmarks/test_bench_check.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import loadopt as lo
from conftest import RATIOS, problem
from loadopt.safety import violations

G = "check-5000x96-all-violating"
RATIOS.append(("full violation list / check() (first 10)", G, "full list", "check()"))


def _schedule() -> lo.Schedule:
    p = problem(5000)
    cur = np.full((p.n_sessions, p.n_periods), 40.05)
    return lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "test")


def test_check_stops_early(benchmark, rec):
    s = _schedule()

    def run():
        with pytest.raises(lo.SafetyError):
            s.check()

    benchmark.pedantic(run, rounds=5, iterations=1)
    rec(G, "check()")


def test_full_violation_list(benchmark, rec):
    s = _schedule()
    out = benchmark.pedantic(lambda: violations(s.problem, s.current), rounds=1, iterations=1)
    assert len(out) > 400_000
    rec(G, "full list")
