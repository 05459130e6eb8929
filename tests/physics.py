"""An independent check of what a site may draw, written from the raw input objects.

It does not use the library's compiled rows (``G``, ``h``), its phase maps or its ancestor
matrices: it walks the node tree by ``parent``, maps EVSE lines to site phases from the OCPP
``phase_rotation`` string itself, and adds up per phase and per node. Used by property tests to
check schedules against the *original* problem (a wrong row in compile, or a wrong 1-phase
resolution in the MILP, would be caught).

Scope: node current and power limits (constant limits, base load and PV not modelled: callers
use inputs without them) and the vehicle's own maximum current.
"""

from __future__ import annotations

import numpy as np

SITE_PHASES = "RST"


def physical_violations(
    problem,
    current: np.ndarray,
    n_phases: np.ndarray | None = None,
    tol_a: float = 1e-6,
    tol_kw: float = 1e-6,
) -> list[str]:
    """Every node/phase/period where ``current`` ((S, T) A per phase, in the order of
    ``problem.sessions``) breaks a raw limit; ``n_phases`` ((S, T)) the phases actually used
    (1 where phase switching chose one phase; None: the vehicle's own count)."""
    site, sessions, hz = problem.site, problem.sessions, problem.horizon
    T = hz.n_periods
    nodes = {n.id: n for n in site.nodes}
    evses = {e.id: e for e in site.evses}
    cur_load: dict[str, np.ndarray] = {n: np.zeros((3, T)) for n in nodes}
    kw_load: dict[str, np.ndarray] = {n: np.zeros(T) for n in nodes}
    out = []
    for i, s in enumerate(sessions):
        ev = evses[s.evse]
        k = min(ev.phases, s.phases)
        vmax = min(ev.max_current, s.max_current)
        if np.any(current[i] > vmax + tol_a):
            out.append(f"session {s.id}: above its maximum {vmax} A")
        for t in range(T):
            a = float(current[i, t])
            if a <= 0:
                continue
            kt = k if n_phases is None else min(k, int(n_phases[i, t]))
            lines = [SITE_PHASES.index(ev.phase_rotation[j]) for j in range(kt)]
            node = ev.node
            while node is not None:
                for ph in lines:
                    cur_load[node][ph, t] += a
                kw_load[node][t] += a * ev.voltage_v * kt / 1000.0
                node = nodes[node].parent
    for nid, n in nodes.items():
        if n.max_current is not None:
            lim = (
                np.full(3, float(n.max_current))
                if np.isscalar(n.max_current)
                else np.asarray(n.max_current, dtype=float)
            )
            bad = np.argwhere(cur_load[nid] > lim[:, None] + tol_a)
            out += [
                f"node {nid} phase {SITE_PHASES[ph]} period {t}: "
                f"{cur_load[nid][ph, t]:.3f} A > {lim[ph]} A"
                for ph, t in bad
            ]
        if n.max_power_kw is not None:
            bad = np.flatnonzero(kw_load[nid] > n.max_power_kw + tol_kw)
            out += [
                f"node {nid} period {t}: {kw_load[nid][t]:.3f} kW > {n.max_power_kw} kW"
                for t in bad
            ]
    return out
