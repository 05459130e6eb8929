"""Benchmark plumbing: cached instances, and a ratio table printed at the end of the run.

Speed is reported as ratios to references measured in the same run (raw HiGHS on the
straightforward model, the same model built with PuLP), never as absolute timed assertions.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

#: (group, label) -> mean seconds, filled by the benchmarks through ``record``.
RESULTS: dict[tuple[str, str], float] = {}
#: (title, numerator label, denominator label) per group, declared by the benchmark modules.
RATIOS: list[tuple[str, str, str, str]] = []
#: member name -> measured row, filled by test_bench_family.py (printed as the family table).
FAMILY: dict[str, dict] = {}
#: horizon variant -> JPL week replay row (test_bench_family.py::test_jpl_week_horizons).
HORIZONS: dict[str, dict] = {}
#: The family's bounds (issue 16): end-to-end / raw HiGHS per member and as a median, and how much
#: faster than PuLP + CBC every member must be.
FAMILY_MAX_RATIO = 1.0
FAMILY_MEDIAN_TARGET = 0.5
FAMILY_MIN_PULP_SPEEDUP = 5.0


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


def family_table(rows: dict[str, dict]) -> list[str]:
    """The family table as lines, with a loud FAIL line for every member past a bound."""
    out = [
        f"{'member':<24} {'S x T':>10} {'loadopt':>10} {'raw HiGHS':>10} {'ratio':>6} "
        f"{'PuLP+CBC':>9} {'PuLP/lo':>7} {'iters lo/raw':>13} {'energy':>7}"
    ]
    ratios = {}
    fails = []
    for name, r in rows.items():
        ratio = r["loadopt_s"] / r["raw_s"]
        ratios[name] = ratio
        pulp = r.get("pulp_s")
        speed = r.get("pulp_over_loadopt")
        it = f"{r['loadopt_iters']}/{r['raw_iters']}" if "raw_iters" in r else "-"
        if r.get("start") == "relaxed":  # solve() started from the relaxed basis
            it = "*" + it
        out.append(
            f"{name:<24} {r['sessions']:>5}x{r['periods']:<4} "
            f"{1e3 * r['loadopt_s']:>8.1f}ms {1e3 * r['raw_s']:>8.1f}ms {ratio:>6.2f} "
            + (f"{pulp:>8.2f}s {speed:>6.1f}x" if pulp is not None else f"{'-':>9} {'-':>7}")
            + f" {it:>13} {r['delivered_pct']:>6.1f}%"
        )
        if ratio > FAMILY_MAX_RATIO:
            fails.append(
                f"FAIL {name}: end-to-end / raw HiGHS = {ratio:.2f} > {FAMILY_MAX_RATIO:.1f}"
            )
        if speed is not None and speed < FAMILY_MIN_PULP_SPEEDUP:
            fails.append(
                f"FAIL {name}: only {speed:.1f}x faster than PuLP + CBC "
                f"(< {FAMILY_MIN_PULP_SPEEDUP:.0f}x)"
            )
    if any(r.get("start") == "relaxed" for r in rows.values()):
        out.append("* solve() started from the relaxed basis (its overload rule took it)")
    if ratios:
        med = float(np.median(list(ratios.values())))
        worst = max(ratios, key=ratios.get)
        out.append(
            f"median end-to-end / raw HiGHS {med:.2f} (target <= {FAMILY_MEDIAN_TARGET}), "
            f"worst {ratios[worst]:.2f} ({worst})"
        )
        if med > FAMILY_MEDIAN_TARGET:
            fails.append(f"FAIL median end-to-end / raw HiGHS {med:.2f} > {FAMILY_MEDIAN_TARGET}")
    bar = "!" * 78
    if fails:
        out += [bar, *fails, bar]
    return out


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if FAMILY:
        tr.section("loadopt: benchmark family (ratios measured in this run)")
        for line in family_table(FAMILY):
            tr.write_line(line, red=line.startswith(("FAIL", "!")), bold=line.startswith("FAIL"))
        out = Path(".benchmarks")
        out.mkdir(exist_ok=True)
        (out / "family.json").write_text(json.dumps(FAMILY, indent=2))
    if HORIZONS:
        tr.section("loadopt: JPL week replay, uniform vs non-uniform horizon (same run)")
        ref = next(iter(HORIZONS.values()))
        for name, r in HORIZONS.items():
            tr.write_line(
                f"{name:<44} step mean {1e3 * r['mean_step_s']:7.2f} ms "
                f"({r['mean_step_s'] / ref['mean_step_s']:.2f}x) max "
                f"{1e3 * r['max_step_s']:7.1f} ms | energy {r['delivered_kwh']:8.1f} kWh "
                f"({r['delivered_pct']:.2f} %) served {r['served']}/{r['sessions']}"
            )
        out = Path(".benchmarks")
        out.mkdir(exist_ok=True)
        (out / "horizons.json").write_text(json.dumps(HORIZONS, indent=2))
    if not RESULTS:
        return
    tr.section("loadopt: ratios measured in this run")
    rows = []
    for title, group, num, den in RATIOS:
        a, b = RESULTS.get((group, num)), RESULTS.get((group, den))
        if a is None or b is None:
            continue
        rows.append(
            {
                "group": group,
                "what": title,
                "numerator": num,
                "denominator": den,
                "numerator_s": a,
                "denominator_s": b,
                "ratio": a / b,
            }
        )
        tr.write_line(
            f"{group:<28} {title:<52} {a * 1e3:10.1f} ms / {b * 1e3:10.1f} ms = {a / b:7.3f}"
        )
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "ratios.json").write_text(json.dumps(rows, indent=2))


@pytest.fixture
def rec(benchmark, request):
    """``rec(group, label)`` after running ``benchmark``: remembers its mean for the ratios."""

    def _rec(group: str, label: str) -> None:
        record(benchmark, group, label)

    return _rec
