"""The shipped JPL week as the regression set: every controller method and baseline, replayed.

ACN-Data, JPL, 2019-05-06 .. 05-12 (``loadopt/data``), on the garage as ACN-Sim publishes it
(:func:`loadopt.acn.jpl_site`: 52 line-to-line 208 V EVSEs, AeroVironment pilots 0 / 6–32 A,
panels, two delta/wye transformers of 45 and 150 kW), 5-minute control, 12 h look-ahead for the
controllers, known departures and energies, the simulator's battery taper and the EVSEs' real
pilot steps (:func:`loadopt.simulate.evse_pilot`). Printed per policy: energy delivered (% of
what the vehicles took in reality), sessions fully served, violations under the exact phasor
check (:func:`loadopt.safety.violations`), mean and max ms per call — beside the **hindsight
LP**: one LP per day with full knowledge of every arrival, departure and energy (no taper, no
pilot steps), the most energy the limits allow.

Not a timed test: nothing is asserted on time. Run ``pytest benchmarks/test_bench_acn_week.py
--benchmark-only -s`` (``LOADOPT_ACN_DAYS=2`` for a shorter replay), or
``python benchmarks/test_bench_acn_week.py [days] ["name;name"]``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from loadopt.acn import acn_scenario
from loadopt.simulate import simulate
from loadopt.solve import solve

FIRST_DAY = "2019-05-06"
STEP_S = 300
HORIZON_H = 12.0

#: name -> (policy, controller options): the regression set
POLICIES: dict[str, tuple[str, dict]] = {
    "controller (lp, default)": ("controller", {}),
    "llf": ("llf", {}),
    "controller (fast edf)": ("controller", {"method": "fast", "policy": "edf"}),
    "equal_share": ("equal_share", {}),
    "edf": ("edf", {}),
    "uncontrolled": ("uncontrolled", {}),
}
#: More variants, by name (``python benchmarks/test_bench_acn_week.py 1 "name;name"``): slower
#: (the MILP: ~0.6 s per call) or diagnostic.
VARIANTS: dict[str, tuple[str, dict]] = {
    "controller (auto: milp)": ("controller", {"method": "auto", "time_limit_s": 1.0}),
    "controller (lp, cold: no warm start)": ("controller", {"warm": False}),
    "controller (lp, no pilot rounding)": ("controller", {"pilots": False}),
    "controller (fast llf)": ("controller", {"method": "fast", "policy": "llf"}),
    "controller (fast fair)": ("controller", {"method": "fast", "policy": "fair"}),
}


@dataclass
class Row:
    name: str
    delivered_kwh: float
    requested_kwh: float
    served: int
    sessions: int
    violations: int
    ms_mean: float
    ms_max: float
    wall_s: float


def scenarios(days: int):
    """One scenario per day (local midnight to midnight, sessions arriving that day)."""
    from datetime import date, timedelta

    d0 = date.fromisoformat(FIRST_DAY)
    return [acn_scenario((d0 + timedelta(days=k)).isoformat(), step_s=STEP_S) for k in range(days)]


def replay(name: str, days: int) -> Row:
    policy, opts = {**POLICIES, **VARIANTS}[name]
    got = req = 0.0
    served = n = viol = 0
    times: list[np.ndarray] = []
    t0 = time.perf_counter()
    for sc in scenarios(days):
        r = simulate(sc, policy, horizon_h=HORIZON_H, controller_options=opts or None)
        got += r.kpis.delivered_kwh
        req += r.kpis.requested_kwh
        served += r.kpis.sessions_served
        n += len(r.kpis.sessions)
        viol += r.n_violations
        times.append(r.step_time_s)
    t = np.concatenate(times)
    return Row(
        name, got, req, served, n, viol, 1e3 * t.mean(), 1e3 * t.max(), time.perf_counter() - t0
    )


def hindsight(days: int) -> Row:
    """One LP per day with every session known in advance (an upper bound on what any online
    policy can deliver under the same limits, without taper or pilot steps)."""
    got = req = 0.0
    served = n = 0
    t0 = time.perf_counter()
    for sc in scenarios(days):
        k = solve(sc.compile()).kpis()
        got += k.delivered_kwh
        req += k.requested_kwh
        served += k.sessions_served
        n += len(k.sessions)
    return Row(
        "hindsight LP (full knowledge)",
        got,
        req,
        served,
        n,
        0,
        float("nan"),
        float("nan"),
        time.perf_counter() - t0,
    )


def table(rows: list[Row], best: Row) -> str:
    out = [
        "| policy | energy delivered | vs hindsight | sessions served | exact violations "
        "| ms per call mean / max | mean / EDF's |",
        "|---|---|---|---|---|---|---|",
    ]
    # per-call cost beside EDF's measured in the same run (benchmarks/test_bench_step.py times
    # the controller's variants alone, interleaved by day, wall and CPU)
    edf = next((r.ms_mean for r in rows if r.name == "edf"), float("nan"))
    for r in rows:
        pct = 100.0 * r.delivered_kwh / r.requested_kwh
        ratio = 100.0 * r.delivered_kwh / best.delivered_kwh
        ms = "—" if np.isnan(r.ms_mean) else f"{r.ms_mean:.1f} / {r.ms_max:.0f}"
        vs_edf = "—" if np.isnan(r.ms_mean) else f"{r.ms_mean / edf:.2f}×"
        out.append(
            f"| {r.name} | {r.delivered_kwh:,.1f} kWh ({pct:.2f} %) | {ratio:.2f} % | "
            f"{r.served}/{r.sessions} | {r.violations} | {ms} | {vs_edf} |"
        )
    return "\n".join(out)


def run(days: int, names: list[str] | None = None) -> str:
    best = hindsight(days)
    rows = [replay(n, days) for n in (names or list(POLICIES))]
    return table([best, *rows], best)


def test_jpl_week(benchmark):
    """Replays the week once (``benchmark.pedantic``, one round) and prints the table (one day
    under ``--benchmark-disable``, a smoke run)."""
    days = int(os.environ.get("LOADOPT_ACN_DAYS", "1" if benchmark.disabled else "7"))
    out: dict[str, str] = {}

    def go():
        out["table"] = run(days)

    benchmark.pedantic(go, rounds=1, iterations=1)
    benchmark.extra_info["table"] = out["table"]
    print(f"\nJPL {FIRST_DAY} + {days} day(s), {STEP_S // 60}-min steps:\n{out['table']}")


if __name__ == "__main__":
    n_days = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    picked = sys.argv[2].split(";") if len(sys.argv) > 2 else None
    print(run(n_days, picked))
