"""What one controller step costs on the shipped JPL week, beside EDF's in the same run (issue 12).

The JPL garage as published (:func:`loadopt.acn.jpl_site`: 52 line-to-line EVSEs, panels, two
delta/wye transformers), 5-minute control, 12 h look-ahead, replayed by
:func:`loadopt.simulate.simulate` day by day. Per variant, interleaved within each day so that a
machine's load drifts onto every variant alike: ms per ``Controller.step`` call (wall and CPU
time of the process, mean and median over every step of the replay), energy and sessions
served, and the mean's ratio to the EDF baseline of the same run (EDF also runs through a
``Controller``: it compiles its one-period problem every step).

- ``controller (default)``: today's defaults (tiered horizon: 18 five-minute periods, on to the
  next whole hour, then hourly; warm start by size);
- ``controller (fine part 4 h)``: the former default tiered horizon (48 five-minute periods);
- ``controller (uniform horizon)``: 144 five-minute periods;
- ``controller (warm at every size)`` / ``(cold)``: the warm-start rule's two ends;
- ``edf``: the baseline.

``test_incremental_compile``: the compile calls of one controller day replayed on the site the
controller used (every per-site structure cached) and on a fresh copy of the site for every
call (nothing cached), alternating; ratio cached / fresh.

Nothing is asserted on time. Run ``pytest benchmarks/test_bench_step.py --benchmark-only -s``
(``LOADOPT_ACN_DAYS`` days, default 7; one day under ``--benchmark-disable``).
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta

import numpy as np

from loadopt.acn import acn_scenario
from loadopt.controller import Controller
from loadopt.simulate import simulate

FIRST_DAY = "2019-05-06"
STEP_S = 300
HORIZON_H = 12.0

#: name -> (policy, controller options)
VARIANTS: dict[str, tuple[str, dict | None]] = {
    "controller (default)": ("controller", None),
    "controller (fine part 4 h)": ("controller", {"fine_s": 4 * 3600}),
    "controller (uniform horizon)": ("controller", {"coarse_step_s": None}),
    "controller (warm at every size)": ("controller", {"warm_min_rows": 0}),
    "controller (cold)": ("controller", {"warm": False}),
    "edf": ("edf", None),
}


def _days(n: int):
    d0 = date.fromisoformat(FIRST_DAY)
    return [acn_scenario((d0 + timedelta(days=k)).isoformat(), step_s=STEP_S) for k in range(n)]


def replay(days: int, names: list[str] | None = None) -> dict[str, dict]:
    """Every variant on every day (interleaved by day): energy, sessions, ms per call."""
    names = names or list(VARIANTS)
    cpu: list[float] = []
    orig = Controller.step

    def timed(self, now):
        t = time.process_time()
        try:
            return orig(self, now)
        finally:
            cpu.append(time.process_time() - t)

    out = {n: dict(kwh=0.0, req=0.0, served=0, n=0, viol=0, wall=[], cpu=[]) for n in names}
    scs = _days(days)
    # untimed: imports, the fast path's JIT and the compiled loops the controller's LP path
    # loads once a process has used them 8 times (loadopt._csr.LazyKernel), so that the first
    # variant does not pay them
    simulate(scs[0], "edf", horizon_h=HORIZON_H)
    simulate(scs[0], "controller", horizon_h=HORIZON_H)
    Controller.step = timed  # type: ignore[method-assign]
    try:
        for sc in scs:
            for name in names:
                policy, opts = VARIANTS[name]
                cpu.clear()
                r = simulate(sc, policy, horizon_h=HORIZON_H, controller_options=opts)
                o = out[name]
                o["kwh"] += r.kpis.delivered_kwh
                o["req"] += r.kpis.requested_kwh
                o["served"] += r.kpis.sessions_served
                o["n"] += len(r.kpis.sessions)
                o["viol"] += r.n_violations
                o["wall"] += list(r.step_time_s)
                o["cpu"] += cpu
    finally:
        Controller.step = orig  # type: ignore[method-assign]
    return out


def table(res: dict[str, dict]) -> str:
    edf = res.get("edf")
    ref_w = np.mean(edf["wall"]) if edf else np.nan
    ref_c = np.mean(edf["cpu"]) if edf else np.nan
    lines = [
        "| variant | energy | sessions served | exact violations | ms per call, wall mean / "
        "median | CPU mean / median | mean / EDF's (wall, CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, o in res.items():
        w, c = 1e3 * np.asarray(o["wall"]), 1e3 * np.asarray(o["cpu"])
        lines.append(
            f"| {name} | {o['kwh']:,.1f} kWh ({100 * o['kwh'] / o['req']:.2f} %) | "
            f"{o['served']}/{o['n']} | {o['viol']} | {w.mean():.2f} / {np.median(w):.2f} | "
            f"{c.mean():.2f} / {np.median(c):.2f} | "
            f"{w.mean() / (1e3 * ref_w):.2f}× / {c.mean() / (1e3 * ref_c):.2f}× |"
        )
    return "\n".join(lines)


def test_controller_step_vs_edf(benchmark):
    """The JPL replay (``benchmark.pedantic``, one round), the table printed and kept in
    ``extra_info``."""
    days = int(os.environ.get("LOADOPT_ACN_DAYS", "1" if benchmark.disabled else "7"))
    out: dict[str, dict] = {}
    benchmark.pedantic(lambda: out.update(replay(days)), rounds=1, iterations=1)
    text = table(out)
    benchmark.extra_info["table"] = text
    print(f"\nJPL {FIRST_DAY} + {days} day(s), {STEP_S // 60}-min steps, per call:\n{text}")
    assert all(o["viol"] == 0 for n, o in out.items())  # every variant stays exactly safe


def test_incremental_compile(benchmark):
    """One controller day's compile calls: cached site vs a fresh site per call (CPU time)."""
    from loadopt import compile as comp
    from loadopt.site import Site

    calls: list[tuple] = []
    orig = comp.compile_problem

    def rec(site, sessions, horizon, signals=None, objective=None, *, reserved_a=None):
        calls.append((site, list(sessions), horizon, signals, objective, reserved_a))
        return orig(site, sessions, horizon, signals, objective, reserved_a=reserved_a)

    import loadopt.controller.core as core

    core.compile_problem = rec  # type: ignore[assignment]
    try:
        simulate(_days(1)[0], "controller", horizon_h=HORIZON_H)
    finally:
        core.compile_problem = orig  # type: ignore[assignment]
    fresh_sites = {id(c[0]): Site.model_validate(c[0].model_dump()) for c in calls}
    t = {"cached": 0.0, "fresh": 0.0}

    def go():
        for c in calls:
            for how in ("cached", "fresh"):
                site = c[0]
                if how == "fresh":  # a copy with nothing cached on it, every call
                    site = fresh_sites[id(c[0])].model_copy(deep=True)
                t0 = time.process_time()
                orig(site, c[1], c[2], c[3], c[4], reserved_a=c[5])
                t[how] += time.process_time() - t0

    benchmark.pedantic(go, rounds=1, iterations=1)
    n = len(calls)
    line = (
        f"compile per call over {n} controller steps: cached {1e3 * t['cached'] / n:.2f} ms, "
        f"fresh site {1e3 * t['fresh'] / n:.2f} ms (CPU), cached / fresh "
        f"{t['cached'] / t['fresh']:.2f}"
    )
    benchmark.extra_info["compile"] = line
    print("\n" + line)
