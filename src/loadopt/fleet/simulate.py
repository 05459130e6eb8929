"""A generated fleet stepped through time: what ``loadopt fleet simulate`` runs.

Each site is a :func:`~loadopt.synthetic.make_site` tree with a day of
:func:`~loadopt.synthetic.make_sessions` (its own seed), time-of-use prices, and a grid limit at
~30 % of what its EVSEs could draw. Every step the vehicles that arrived plug in, those whose
departure passed leave, and every vehicle reports the energy it drew (it follows its limit of the
previous step until full); then the fleet steps once. The throughput table reports, per step,
sites per second, the coordinator's and the workers' shares, and the fallbacks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ..controller import Controller
from ..horizon import Horizon
from ..session import Session
from ..signals import Signals
from ..synthetic import make_sessions, make_site, tou_prices
from .controller import FleetController, FleetStepRecord


@dataclass
class FleetSite:
    """One generated site: its controller and the sessions that will happen there."""

    key: str
    controller: Controller
    sessions: list[Session]
    delivered_kwh: dict[str, float]


def make_fleet(
    n_sites: int,
    n_evse: int = 50,
    *,
    n_periods: int = 96,
    step_s: int = 900,
    start: datetime | None = None,
    seed: int = 0,
    time_limit_s: float | None = 5.0,
) -> list[FleetSite]:
    """``n_sites`` generated sites (module docstring); site ``k`` uses seed ``seed + k``."""
    from zoneinfo import ZoneInfo

    start = start or datetime(2026, 6, 10, 6, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    day = Horizon(start=start.replace(hour=0), step_s=step_s, n_periods=max(n_periods, 96))
    out = []
    for k in range(n_sites):
        site = make_site(n_evse, seed=seed + k).model_copy(update={"id": f"site{k:05d}"})
        sessions = make_sessions(site, day, kind="workplace", seed=seed + k)
        signals = Signals(
            import_price=tou_prices(day), grid_import_limit_kw=round(0.3 * 32 * 0.69 * n_evse, 1)
        )
        ctl = Controller(
            site, step_s=step_s, n_periods=n_periods, signals=signals, time_limit_s=time_limit_s
        )
        out.append(FleetSite(site.id, ctl, sessions, {}))
    return out


def advance(sites: list[FleetSite], now: datetime, step_s: int) -> None:
    """Vehicles plug in and leave, and report the energy drawn since the last step."""
    for fs in sites:
        ctl = fs.controller
        for s in fs.sessions:
            active = s.id in ctl.sessions
            if active and s.departure <= now:
                ctl.stop_session(s.id, now)
            elif not active and s.arrival <= now < s.departure and s.id not in fs.delivered_kwh:
                ctl.start_session(s)
                fs.delivered_kwh[s.id] = 0.0
        last = ctl.last_schedule
        if last is None:
            continue
        p = last.problem
        first = last.current[:, 0] if p.n_periods else np.zeros(p.n_sessions)
        for i, sid in enumerate(p.session_ids):
            if sid not in ctl.sessions:
                continue
            want = ctl.sessions[sid].energy_kwh
            got = fs.delivered_kwh[sid]
            kwh = min(float(first[i]) * p.session_kw_per_a[i] * step_s / 3600.0, want - got)
            fs.delivered_kwh[sid] = got + max(kwh, 0.0)
            ctl.meter(
                sid,
                now,
                energy_kwh=fs.delivered_kwh[sid],
                current_a=float(first[i]) if kwh > 0 else 0.0,
            )


def run(
    sites: list[FleetSite],
    executor=None,
    *,
    n_steps: int = 8,
    step_s: int = 900,
    start: datetime | None = None,
    deadline_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[FleetStepRecord]:
    """Step the fleet ``n_steps`` times from ``start`` (default 08:00 of the generated day)."""
    start = start or datetime.fromisoformat("2026-06-10T08:00:00+02:00")
    with FleetController(
        {fs.key: fs.controller for fs in sites}, executor, deadline_s=deadline_s
    ) as fleet:
        for k in range(n_steps):
            now = start + timedelta(seconds=k * step_s)
            advance(sites, now, step_s)
            fleet.step(now)
            if progress:
                progress(k + 1, n_steps)
        return list(fleet.log)


def progress_bar(k: int, n: int) -> None:
    w = 30
    f = int(w * k / n)
    print(
        f"\rfleet [{'#' * f}{'.' * (w - f)}] {k}/{n}",
        end="" if k < n else "\n",
        file=sys.stderr,
        flush=True,
    )


def throughput_table(log: list[FleetStepRecord], backend: str) -> str:
    """Per step: sites, tasks, sites/s, coordinator and worker time, fallbacks; then totals."""
    head = (
        f"{'step':>4}  {'sites':>6}  {'tasks':>5}  {'sites/s':>8}  {'prepare s':>9}  "
        f"{'solve s':>8}  {'finish s':>8}  {'wall s':>7}  {'fallback':>8}  {'moved':>5}"
    )
    rows = [f"backend: {backend}", head, "-" * len(head)]
    for k, r in enumerate(log):
        rows.append(
            f"{k:>4}  {r.n_sites:>6}  {r.n_tasks:>5}  {r.n_sites / r.wall_s:>8.1f}  "
            f"{r.prepare_s:>9.3f}  {r.round_s:>8.3f}  {r.finish_s:>8.3f}  "
            f"{r.wall_s:>7.3f}  {r.n_fallback:>8}  {r.n_moved:>5}"
        )
    if log:
        n = sum(r.n_sites for r in log)
        wall = sum(r.wall_s for r in log)
        rows.append("-" * len(head))
        rows.append(
            f"{'all':>4}  {n:>6}  {sum(r.n_tasks for r in log):>5}  {n / wall:>8.1f}  "
            f"{sum(r.prepare_s for r in log):>9.3f}  "
            f"{sum(r.round_s for r in log):>8.3f}  {sum(r.finish_s for r in log):>8.3f}  "
            f"{wall:>7.3f}  {sum(r.n_fallback for r in log):>8}  "
            f"{sum(r.n_moved for r in log):>5}"
        )
        rows.append(
            f"per site and step: {1e3 * wall / n:.2f} ms wall "
            f"({1e3 * sum(r.prepare_s + r.finish_s for r in log) / n:.2f} ms on the "
            "coordinator)"
        )
    return "\n".join(rows)
