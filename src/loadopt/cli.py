"""The ``loadopt`` command line.

::

    loadopt demo                         # solve the built-in workplace day, print KPIs, plot
    loadopt solve SCENARIO.json          # one schedule for a scenario file, as JSON
    loadopt solve SCENARIO.json --ocpp 2.0.1   # ... with OCPP SetChargingProfile payloads
    loadopt simulate SCENARIO.json       # replay the sessions through the controller + baselines
    loadopt simulate --acn               # replay the shipped real ACN-Data day (Caltech JPL)
    loadopt fleet simulate --sites 20   # a generated fleet on a thread pool, Dask or Ray
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import InputError, LoadoptError

DESCRIPTION = """\
loadopt shares a charging site's grid connection among the vehicles plugged in: it computes a
current limit (A) per vehicle and 15-minute (or any) period that never exceeds a breaker, phase,
grid or demand-response limit, and turns it into OCPP SetChargingProfile payloads.

Start with `loadopt demo`. A scenario file is JSON with the keys site, horizon, sessions,
signals and objective (see examples/*.json and `loadopt demo --save-scenario demo.json`).
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="loadopt",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="solve a built-in 40-EVSE workplace day and show the result",
        description="Build the demo scenario (40 EVSEs, PV, time-of-use prices, a "
        "demand-response event), solve it, print the KPIs and write a plot.",
    )
    d.add_argument(
        "--plot",
        default="loadopt-demo.png",
        metavar="PNG",
        help="where to write the plot (default: %(default)s)",
    )
    d.add_argument("--no-plot", action="store_true", help="do not write a plot")
    d.add_argument(
        "--method",
        choices=("lp", "fast"),
        default="lp",
        help="LP on HiGHS (default) or the fast allocator",
    )
    d.add_argument(
        "--save-scenario",
        metavar="JSON",
        help="also write the demo scenario as a scenario file to start from",
    )

    s = sub.add_parser(
        "solve",
        help="compute one schedule for a scenario file (JSON out)",
        description="Solve one scenario file and print the schedule as JSON: per "
        "session the limit (A) per period, the KPIs and the status.",
    )
    s.add_argument("scenario", type=Path, help="scenario JSON file")
    s.add_argument("--method", choices=("lp", "fast"), default="lp")
    s.add_argument(
        "--time-limit",
        type=_seconds,
        default=None,
        metavar="S",
        help="solver time limit in seconds (the fast path is used if it runs out)",
    )
    s.add_argument(
        "--ocpp",
        choices=("1.6", "2.0.1", "2.1"),
        help="also emit SetChargingProfile payloads for this OCPP version",
    )
    s.add_argument(
        "--transaction-id",
        action="append",
        default=[],
        metavar="SESSION=ID",
        help="OCPP transactionId of a session (repeatable; 1.6 needs integers: "
        "sessions whose id is not one and that are not given here are numbered "
        "from 1, the mapping is in the output)",
    )
    s.add_argument("-o", "--output", type=Path, help="write the JSON here instead of stdout")

    m = sub.add_parser(
        "simulate",
        help="replay a scenario's sessions through the controller",
        description="Replay the sessions of a scenario file (or the shipped "
        "ACN-Data sample with --acn) step by step: the controller re-plans every "
        "step, vehicles follow their limits with a simple battery model. Prints "
        "KPIs beside the baselines (uncontrolled, equal share, earliest deadline "
        "first) and writes a plot.",
    )
    m.add_argument("scenario", type=Path, nargs="?", help="scenario JSON file")
    m.add_argument(
        "--acn",
        action="store_true",
        help="replay a day of the shipped Caltech ACN-Data sample (JPL) instead",
    )
    m.add_argument("--day", default=None, help="with --acn: the day (YYYY-MM-DD) to replay")
    m.add_argument(
        "--baselines",
        default="uncontrolled,equal_share,edf",
        help="comma-separated baselines to compare (default: %(default)s; '' = none)",
    )
    m.add_argument(
        "--unknown-departure",
        action="store_true",
        help="the controller does not know departures (it assumes a default dwell)",
    )
    m.add_argument(
        "--forecast",
        action="store_true",
        help="the controller is told every arrival in advance (a depot timetable, "
        "reservations); baselines are not",
    )
    m.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="vehicles draw up to this fraction below their limit at random",
    )
    m.add_argument("--plot", default="loadopt-simulation.png", metavar="PNG")
    m.add_argument("--no-plot", action="store_true")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    from .fleet.cli import add_parser as add_fleet_parser

    add_fleet_parser(sub)  # loadopt fleet simulate (src/loadopt/fleet/cli.py)
    return ap


def _seconds(text: str) -> float:
    """A time limit: a finite number of seconds > 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 0
    try:
        return {"demo": _demo, "solve": _solve, "simulate": _simulate, "fleet": _fleet}[
            args.command
        ](args)
    except (LoadoptError, ValueError) as exc:  # bad input: models, files, calls, arguments
        print(f"loadopt: invalid input: {exc}", file=sys.stderr)
        return 2


def _fleet(args) -> int:
    from .fleet.cli import run

    return run(args)


def _maybe_plot(schedule, path: str, no_plot: bool, title: str | None = None) -> None:
    if no_plot:
        return
    try:
        from .plot import plot_schedule

        out = plot_schedule(schedule, path, title=title)
    except ImportError as exc:
        print(f"(no plot: {exc})")
        return
    print(f"plot written to {out}")


def _demo(args) -> int:
    from .solve import solve
    from .synthetic import demo_scenario

    sc = demo_scenario()
    if args.save_scenario:
        sc.dump(args.save_scenario)
        print(f"scenario written to {args.save_scenario}")
    problem = sc.compile()
    sched = solve(problem, method=args.method)
    print(
        f"loadopt demo: {len(sc.site.evses)} EVSEs, {len(sc.sessions)} sessions, "
        f"{problem.n_periods} periods of {problem.horizon.step_s // 60} min from "
        f"{problem.horizon.start:%Y-%m-%d %H:%M %Z}"
    )
    print(
        f"status {sched.status.value} via {sched.method} in {sched.solve_time_s * 1e3:.0f} ms; "
        f"limit violations: {len(sched.violations())}"
    )
    print()
    print(sched.kpis().table())
    for n in sched.notices:
        print(f"notice: {n}")
    _maybe_plot(sched, args.plot, args.no_plot, title="loadopt demo: 40-EVSE workplace day")
    return 0


def _transaction_ids(
    given: list[str], session_ids: tuple[str, ...], version: str
) -> dict[str, int | str]:
    """``SESSION=ID`` pairs → session id → OCPP transactionId. OCPP 1.6 ids are integers:
    a session id that is one is kept, the others are numbered from 1 (skipping ids in use)."""
    out: dict[str, int | str] = {}
    for pair in given:
        sid, sep, tx = pair.partition("=")
        if not sep or not sid or not tx:
            raise InputError(f"--transaction-id {pair!r}: expected SESSION=ID")
        if version == "1.6":
            try:
                out[sid] = int(tx)
            except ValueError:
                raise InputError(
                    f"--transaction-id {pair!r}: OCPP 1.6 transaction ids are integers"
                ) from None
        else:
            out[sid] = tx
    if version == "1.6":
        for sid in session_ids:
            if sid not in out and sid.isdigit():
                out[sid] = int(sid)
        used = set(out.values())
        n = 1
        for sid in session_ids:
            if sid in out:
                continue
            while n in used:
                n += 1
            out[sid] = n
            used.add(n)
    return out


def _solve(args) -> int:
    from .scenario import Scenario
    from .solve import solve

    sc = Scenario.load(args.scenario)
    sched = solve(sc.compile(), method=args.method, time_limit_s=args.time_limit)
    out = schedule_to_json(sched)
    if args.ocpp:
        from .ocpp import set_charging_profiles

        txs = _transaction_ids(args.transaction_id, sched.problem.session_ids, args.ocpp)
        out["transactionIds"] = txs
        out["ocpp"] = [
            {"chargePointId": cp, "action": action, "payload": payload}
            for cp, action, payload in set_charging_profiles(sched, args.ocpp, transaction_ids=txs)
        ]
    text = json.dumps(out, indent=2)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    return 0


def schedule_to_json(sched) -> dict:
    """The schedule as a JSON-able dict: status, KPIs and per-session limits (A) per period."""
    p = sched.problem
    k = sched.kpis()
    return {
        "status": sched.status.value,
        "method": sched.method,
        "solve_time_s": round(sched.solve_time_s, 6),
        "violations": len(sched.violations()),
        "notices": list(sched.notices),
        "horizon": {
            "start": p.horizon.start.isoformat(),
            "step_s": p.horizon.step_s,
            "n_periods": p.n_periods,
        },
        "kpis": {
            "requested_kwh": round(k.requested_kwh, 3),
            "delivered_kwh": round(k.delivered_kwh, 3),
            "sessions_served": k.sessions_served,
            "peak_import_kw": round(k.peak_import_kw, 3),
            "energy_cost": round(k.energy_cost, 4),
            "demand_response": [
                {
                    "event": d.event_id,
                    "compliant": d.compliant,
                    "max_import_kw": round(d.max_import_kw, 3),
                }
                for d in k.demand_response
            ],
        },
        "sessions": [
            {
                "id": sid,
                "evse": p.sessions[i].evse,
                "energy_kwh": round(float(sched.energy_kwh[i]), 3),
                "limits_a": [round(float(v), 1) for v in sched.current[i]],
            }
            for i, sid in enumerate(p.session_ids)
        ],
    }


def _simulate(args) -> int:
    from .simulate import BASELINES, compare, simulation_table

    if args.acn:
        from .acn import acn_scenario

        sc = acn_scenario(day=args.day)
    elif args.scenario is None:
        print("loadopt simulate: give a SCENARIO.json or --acn", file=sys.stderr)
        return 2
    else:
        from .scenario import Scenario

        sc = Scenario.load(args.scenario)
    names = [b for b in args.baselines.split(",") if b]
    for b in names:
        if b not in BASELINES:
            print(
                f"loadopt simulate: unknown baseline {b!r}; choose from {', '.join(BASELINES)}",
                file=sys.stderr,
            )
            return 2
    results = compare(
        sc,
        baselines=names,
        known_departure=not args.unknown_departure,
        forecast=args.forecast,
        noise=args.noise,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(simulation_table(results))
    _maybe_plot(
        results[0].schedule,
        args.plot,
        args.no_plot,
        title=f"{sc.site.id}: replay through the loadopt controller",
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
