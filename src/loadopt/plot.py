"""Plots of a schedule or a simulated day (matplotlib, optional: ``pip install loadopt[plot]``).

One figure, three panels, all against wall-clock time:

1. grid import (kW) with its parts — vehicles, base load, PV — against the grid import limit,
   the grid signals' caps and setpoint, with a cross where a grid signal is missed;
2. current per site phase at the grid connection (A) against the connection's per-phase limit;
3. energy per session: delivered against requested (kWh), sorted by arrival.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .schedule import Schedule


def _figure_class():
    """matplotlib's ``Figure``, used without pyplot: no global backend is chosen or changed
    (a library must not call ``matplotlib.use``; the figure renders itself to a file)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'loadopt[plot]' (or pass --no-plot)"
        ) from exc
    return Figure


def plot_schedule(schedule: Schedule, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of ``schedule`` (site load vs limits, per-phase loads, per-session energy).

    Works for any :class:`~loadopt.schedule.Schedule`, including the record of a simulation
    (:attr:`loadopt.simulate.SimulationResult.schedule`, currents as drawn). Returns the path.
    """
    Figure = _figure_class()
    from matplotlib.dates import DateFormatter

    p = schedule.problem
    T = p.n_periods
    tz = p.horizon.start.tzinfo
    edges = [p.horizon.period_start(k) for k in range(T + 1)]
    t = np.array(edges, dtype=object)

    def steps(y: np.ndarray) -> np.ndarray:
        return np.append(y, y[-1])

    fig = Figure(figsize=(11, 11))
    axes = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 2, 2]})
    ax = axes[0]
    ev = schedule.ev_power_kw
    ax.fill_between(
        t, steps(p.base_load_kw), step="post", color="#bbbbbb", alpha=0.7, label="base load"
    )
    ax.fill_between(
        t,
        steps(p.base_load_kw),
        steps(p.base_load_kw + ev),
        step="post",
        color="#4c72b0",
        alpha=0.75,
        label="vehicles",
    )
    if np.any(p.pv_kw > 0):
        ax.step(t, steps(p.pv_kw), where="post", color="#dd8452", lw=1.5, label="PV output")
    ax.step(
        t, steps(schedule.import_kw), where="post", color="black", lw=1.2, label="net grid import"
    )
    cap = p.import_cap_kw.copy()
    grid = np.full(T, np.inf)
    if p.signals.grid_import_limit_kw is not None:
        from .horizon import sample
        from .signals import split

        grid = sample(*split(p.signals.grid_import_limit_kw), p.horizon, "min")
    if np.isfinite(grid).any():
        ax.step(
            t,
            steps(np.where(np.isfinite(grid), grid, np.nan)),
            where="post",
            color="#c44e52",
            lw=2,
            ls="--",
            label="grid import limit",
        )
    dr = cap < grid - 1e-9
    if dr.any():
        ax.step(
            t,
            steps(np.where(dr, cap, np.nan)),
            where="post",
            color="#8172b2",
            lw=2.5,
            label="grid-signal cap",
        )
    if p.setpoint_kw is not None and np.isfinite(p.setpoint_kw).any():
        ax.step(
            t,
            steps(p.setpoint_kw),
            where="post",
            color="#64b5cd",
            lw=2,
            ls="-.",
            label="grid setpoint (soft)",
        )
    _mark_missed(ax, schedule, edges)
    root = int(np.flatnonzero(p.node_parent < 0)[0])
    for k in np.flatnonzero(np.isfinite(p.node_power_limit_kw).any(axis=1))[:1]:
        ax.step(
            t,
            steps(p.node_power_limit_kw[k]),
            where="post",
            color="#937860",
            lw=1.2,
            ls=":",
            label=f"{p.node_ids[k]} power limit (gross load)",
        )
    ax.set_ylabel("kW")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
    ax.set_title(title or f"{p.site.id}: {p.n_sessions} sessions, {schedule.method}")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)

    ax = axes[1]
    npc = schedule.node_phase_current[root]
    colors = ("#4c72b0", "#55a868", "#c44e52")
    for ph in range(3):
        ax.step(
            t,
            steps(npc[ph]),
            where="post",
            color=colors[ph],
            lw=1.3,
            label=f"phase {'RST'[ph]} (L{ph + 1})",
        )
    lim = p.node_current_limit[root]
    if np.isfinite(lim).any():
        ax.step(
            t,
            steps(lim.min(axis=0)),
            where="post",
            color="black",
            ls="--",
            lw=1.5,
            label=f"{p.node_ids[root]} limit per phase",
        )
    ax.set_ylabel("A at the grid connection")
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.25)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.grid(alpha=0.3)
    for a in axes[:2]:
        a.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))

    ax = axes[2]
    order = np.argsort(np.array([s.arrival.timestamp() for s in p.sessions]), kind="stable")
    req = p.session_energy_kwh[order]
    got = np.minimum(schedule.energy_kwh, p.session_energy_kwh)[order]
    x = np.arange(order.size)
    ax.bar(x, req, color="#dddddd", edgecolor="#999999", lw=0.5, label="requested")
    ax.bar(x, got, color="#55a868", width=0.6, label="delivered")
    ax.set_xlabel("session (by arrival)")
    ax.set_ylabel("kWh")
    k = schedule.kpis()
    pct = 100 * k.delivered_kwh / k.requested_kwh if k.requested_kwh else 100.0
    ax.set_title(
        f"energy per session: {k.delivered_kwh:,.0f} of {k.requested_kwh:,.0f} kWh "
        f"({pct:.1f} %), {k.sessions_served}/{len(k.sessions)} fully served",
        fontsize=10,
    )
    ax.set_ylim(top=ax.get_ylim()[1] * 1.15)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _mark_missed(ax, schedule: Schedule, edges: list) -> None:
    """A red cross at the middle of every period where a grid signal is not met
    (:mod:`loadopt.grid.compliance`), at the load it is judged on."""
    from .grid.compliance import compliance

    xs, ys = [], []
    for c in compliance(schedule):
        for k in np.flatnonzero(~c.met):
            t = int(c.period_index[k])
            xs.append(edges[t] + (edges[t + 1] - edges[t]) / 2)
            ys.append(float(c.planned_kw[k]))
    if xs:
        ax.plot(xs, ys, "x", color="#c44e52", ms=7, mew=2, label="grid signal missed")
