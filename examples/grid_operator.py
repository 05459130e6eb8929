"""A site controller that follows a grid operator's OpenADR 2.0b VTN for a day.

A real ``openleadr`` VTN runs on 127.0.0.1 (the "grid operator"); loadopt's VEN
(:class:`loadopt.grid.openadr2.OpenAdr2Ven`) polls it and opts into its events; a
:class:`loadopt.Controller` re-plans the public hub every 15 minutes of a simulated day with
whatever signals the VEN holds; the site draws what it is told; each step's metered import goes
back to the VTN in the VEN's compliance report. The VTN announces, for the simulated day:

- 12:00–13:00 a SIMPLE level 2 (site policy: −50 % of the uncontrolled baseline),
- 17:00–19:00 a LOAD_CONTROL cap of 40 kW (``x-loadControlSetpoint``),
- 07:00–09:00 an ELECTRICITY_PRICE adder of 0.20 / kWh (``priceRelative``).

Run: ``python examples/grid_operator.py`` (needs ``loadopt[openadr,plot]``); it writes
``docs/img/grid_operator.png`` (cap vs import) and prints the compliance per event. Real time:
about a minute (the VEN's polls and reports are real HTTP; the day is simulated).
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from openleadr import OpenADRServer

import loadopt as lo
from loadopt.grid.openadr2 import OpenAdr2Ven
from loadopt.synthetic import base_load_profile, make_sessions, make_site

HERE = Path(__file__).parent
# tomorrow: openleadr's VTN and VEN judge event status by the real clock (a past event is
# "completed"), so the simulated day must lie ahead
DAY = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
STEP_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    horizon = lo.Horizon(start=DAY, step_s=STEP_S, n_periods=96)
    site = make_site(
        16,
        evses_per_circuit=2,
        circuit_a=32.0,
        feeder_a=80.0,
        grid_a=125.0,
        transformer_kw=90.0,
        seed=5,
    )
    sessions = sorted(
        make_sessions(site, horizon, kind="public", sessions_per_evse=3.0, seed=5),
        key=lambda s: s.arrival,
    )
    port = free_port()
    vtn = OpenADRServer(
        vtn_id="DSO-VTN",
        http_port=port,
        http_host="127.0.0.1",
        requested_poll_freq=timedelta(seconds=1),
        show_fingerprint=False,
    )
    vtn.add_handler("on_create_party_registration", lambda info: ("hub-ven", "reg-1"))
    reported: list[float] = []

    async def on_register_report(report):
        out = []
        for d in report["report_descriptions"]:
            if d["r_id"] == "import":
                out.append(
                    (
                        d["r_id"],
                        lambda values: reported.extend(v for _, v in values),
                        timedelta(seconds=1),
                    )
                )
        return out

    vtn.add_handler("on_register_report", on_register_report)
    vtn.add_handler(
        "on_created_event",
        lambda ven_id, event_id, opt_type: print(
            f"VTN: {ven_id} answered {opt_type} to {event_id}"
        ),
    )
    await vtn.run()

    now = DAY
    ctl = lo.Controller(
        site,
        step_s=STEP_S,
        n_periods=16,
        signals=lo.Signals(
            base_load_kw=base_load_profile(horizon, 3.0, 8.0), grid_import_limit_kw=85.0
        ),
    )
    ven = OpenAdr2Ven(
        "hub",
        f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b",
        fallback_kw=30.0,
        report_sampling_s=1.0,
        stale_after_s=4 * 3600,
        clock=lambda: now,
        on_signals=lambda sigs: ctl.set_signals(ctl.signals.with_grid_signals("openadr2", sigs)),
    )
    # a first reading before the VEN reports (openleadr 0.5's VTN answers an empty report with 500)
    ven.record(now, 3.0, None)
    await ven.run()
    for eid, name, typ, a, b, v in (
        ("level-noon", "SIMPLE", "level", 12, 13, 2),
        ("cap-evening", "LOAD_CONTROL", "x-loadControlSetpoint", 17, 19, 40.0),
        ("price-morning", "ELECTRICITY_PRICE", "priceRelative", 7, 9, 0.20),
    ):
        vtn.add_event(
            ven_id="hub-ven",
            signal_name=name,
            signal_type=typ,
            event_id=eid,
            intervals=[
                {
                    "dtstart": DAY + timedelta(hours=a),
                    "duration": timedelta(hours=b - a),
                    "signal_payload": v,
                }
            ],
            callback=lambda ven_id, event_id, opt_type: None,
        )
    for _ in range(150):  # the VEN polls every second
        if len(ven.opted) == 3:
            break
        await asyncio.sleep(0.2)
    print("VEN opted:", ven.opted, "problems:", ven.problems)

    pending = list(sessions)
    imp, cap = np.zeros(96), np.full(96, np.nan)
    for k in range(96):
        now = DAY + timedelta(seconds=k * STEP_S)
        while pending and pending[0].arrival <= now:
            s = pending.pop(0)
            ctl.start_session(s)
        for sid in [sid for sid, s in ctl.sessions.items() if s.departure <= now]:
            ctl.stop_session(sid, now)
        ctl.set_signals(ctl.signals.with_grid_signals("openadr2", ven.refresh_validity()))
        sched = ctl.step(now)
        imp[k] = sched.import_kw[0]  # the site draws what it is told
        p = sched.problem
        cap[k] = min(p.import_cap_kw[0], np.inf)
        ven.record(now, imp[k], None if not np.isfinite(cap[k]) else float(cap[k]))
        for sid in ctl.sessions:
            i = p.session_ids.index(sid)
            ctl.meter(
                sid, now + timedelta(seconds=STEP_S - 1), current_a=float(sched.current[i, 0])
            )
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)
    await ven.stop()
    await vtn.stop()

    for name, (a, b) in {"level-noon": (12, 13), "cap-evening": (17, 19)}.items():
        w = slice(a * 4, b * 4)
        print(
            f"{name}: max import {imp[w].max():.1f} kW, cap {np.nanmin(cap[w]):.1f} kW, "
            f"{'met' if np.all(imp[w] <= cap[w] + 1e-6) else 'MISSED'}"
        )
    print(f"reports received by the VTN: {len(reported)} metered values")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    t = [DAY + timedelta(seconds=k * STEP_S) for k in range(96)]
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ax.step(t, imp, where="post", color="black", label="grid import (drawn)")
    ax.step(
        t,
        np.where(cap < 85.0 - 1e-9, cap, np.nan),
        where="post",
        color="#8172b2",
        lw=2.5,
        label="cap from the VTN's events",
    )
    ax.axhline(85.0, color="#c44e52", ls="--", label="connection limit")
    from matplotlib.dates import DateFormatter

    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=UTC))
    ax.set_ylabel("kW")
    ax.set_xlabel("simulated day (UTC)")
    ax.set_title("Public hub following an OpenADR 2.0b VTN for a day")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    out = HERE.parent / "docs" / "img" / "grid_operator.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
