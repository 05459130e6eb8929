"""Line currents as phasors, written from the raw site objects for the wiring tests.

Plain complex arithmetic, independent of ``loadopt.wiring`` and the compiled arrays: phase
voltages at 0°, −120°, +120°; a line-to-neutral branch on its site line in phase with that
line's voltage; a line-to-line branch in phase with ``V_a − V_b``, out of line ``a`` and back
on line ``b``; a Dyn11 transformer's primary lines ``I_A = (I_a − I_c)/n`` (and cyclic).
"""

from __future__ import annotations

import cmath
import math
from typing import Any

import loadopt as lo

VOLT = {p: cmath.rect(1.0, math.radians(a)) for p, a in (("R", 0), ("S", -120), ("T", 120))}


def branch_phasors(ev: lo.Evse, j: int) -> dict[str, complex]:
    """Site-line current (per A) of branch ``j`` of ``ev`` (what flows on its line ``Lj``)."""
    rot = ev.phase_rotation
    if ev.wiring == "line_to_neutral":
        return {rot[j]: VOLT[rot[j]]}
    a, b = rot[j], rot[(j + 1) % 3]
    u = (VOLT[a] - VOLT[b]) / abs(VOLT[a] - VOLT[b])
    return {a: u, b: -u}


def climb(site: lo.Site, at_node: str, lines: dict[str, Any], into: dict | None = None) -> dict:
    """``{(node, line): phasor}``: a load with site-line phasors ``lines`` (complex, or complex
    arrays per period) hung at ``at_node``, seen on every node line above it and on the primary
    lines (``A``, ``B``, ``C``) of every delta/wye transformer on the way; added into ``into``."""
    by_id = {n.id: n for n in site.nodes}
    out: dict = {} if into is None else into
    lines = dict(lines)
    node: str | None = at_node
    while node is not None:
        n = by_id[node]
        for p, z in lines.items():
            out[(node, p)] = out.get((node, p), 0) + z
        if n.delta_wye is not None:
            k = n.delta_wye.turns_ratio
            a, b, c = (lines.get(p, 0) for p in "RST")
            lines = {"R": (a - c) / k, "S": (b - a) / k, "T": (c - b) / k}
            for p, q in zip("RST", "ABC", strict=True):
                out[(node, q)] = out.get((node, q), 0) + lines[p]
        node = n.parent
    return out


def limit_of(site: lo.Site, node: str, line: str) -> float:
    """The rating (A) of ``line`` at ``node``: node lines ``R``/``S``/``T`` from
    ``Node.current_triplet()``, delta/wye primary lines ``A``/``B``/``C`` from
    ``DeltaWye.primary_triplet()``; ``inf`` where there is none."""
    n = next(x for x in site.nodes if x.id == node)
    if line in "ABC":
        trip = None if n.delta_wye is None else n.delta_wye.primary_triplet()
        return math.inf if trip is None else float(trip["ABC".index(line)])
    trip = n.current_triplet()
    return math.inf if trip is None else float(trip["RST".index(line)])


def line_breaches(site: lo.Site, sessions, current, tol_a: float = 1e-6) -> list[str]:
    """Every (node, line, period) whose phasor line current exceeds its rating: node lines
    ``R``/``S``/``T`` against ``Node.max_current``, delta/wye primary lines ``A``/``B``/``C``
    against ``DeltaWye.primary_max_current``. ``current`` is (S, T) A per branch in the order of
    ``sessions``; a session uses ``min(EVSE phases, vehicle phases)`` branches. Written from the
    raw site and sessions only (no compiled array); base load and kW ratings are not modelled,
    so callers check that their site has none."""
    import numpy as np

    by_id = {n.id: n for n in site.nodes}
    evses = {e.id: e for e in site.evses}
    cur = np.asarray(current, dtype=float)
    loads: dict = {}
    for i, s in enumerate(sessions):
        ev = evses[s.evse]
        lines: dict[str, Any] = {}
        for j in range(min(ev.phases, s.phases)):
            for p, z in branch_phasors(ev, j).items():
                lines[p] = lines.get(p, 0) + z * cur[i]
        climb(site, ev.node, lines, into=loads)
    out = []
    for (node, line), z in sorted(loads.items()):
        n = by_id[node]
        limit = (
            n.max_current
            if line in "RST"
            else (n.delta_wye.primary_max_current if n.delta_wye is not None else None)
        )
        if limit is None:
            continue
        mag = np.abs(np.asarray(z, dtype=complex)) * np.ones(cur.shape[1])
        for t in np.flatnonzero(mag > limit + tol_a):
            out.append(f"{node} line {line} period {t}: {mag[t]:.3f} A > {limit} A")
    return out
