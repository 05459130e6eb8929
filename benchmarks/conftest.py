"""Benchmark plumbing: cached instances, and a ratio table printed at the end of the run.

Speed is reported as ratios to references measured in the same run (raw HiGHS on the
straightforward model, the same model built with PuLP), never as absolute timed assertions.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

#: (group, label) -> mean seconds, filled by the benchmarks through ``record``.
RESULTS: dict[tuple[str, str], float] = {}
#: (title, numerator label, denominator label) per group, declared by the benchmark modules.
RATIOS: list[tuple[str, str, str, str]] = []


def mean_s(benchmark) -> float:
    """Mean seconds of a benchmark that ran; NaN under ``--benchmark-disable`` (a smoke run)."""
    return benchmark.stats.stats.mean if benchmark.stats is not None else float("nan")


def record(benchmark, group: str, label: str) -> None:
    if benchmark.stats is not None:
        RESULTS[(group, label)] = benchmark.stats.stats.mean


@cache
def scenario(n_sessions: int):
    from loadopt.synthetic import benchmark_scenario

    return benchmark_scenario(n_sessions)


@cache
def problem(n_sessions: int):
    return scenario(n_sessions).compile()


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("loadopt: ratios measured in this run")
    rows = []
    for title, group, num, den in RATIOS:
        a, b = RESULTS.get((group, num)), RESULTS.get((group, den))
        if a is None or b is None:
            continue
        rows.append({"group": group, "what": title, "numerator": num, "denominator": den,
                     "numerator_s": a, "denominator_s": b, "ratio": a / b})
        tr.write_line(f"{group:<28} {title:<52} {a * 1e3:10.1f} ms / {b * 1e3:10.1f} ms "
                      f"= {a / b:7.3f}")
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "ratios.json").write_text(json.dumps(rows, indent=2))


@pytest.fixture
def rec(benchmark, request):
    """``rec(group, label)`` after running ``benchmark``: remembers its mean for the ratios."""
    def _rec(group: str, label: str) -> None:
        record(benchmark, group, label)
    return _rec
