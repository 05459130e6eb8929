"""The time structure the integer rules walk: each session's chain of slots and its runs.

A *slot* is a problem variable (one session, one period). Variables are ordered by session then
period (:func:`loadopt.compile.compile_problem`), so a session's plugged-in periods form a chain
``prev``/``next``; a *segment* is a maximal stretch of a chain with the same on/off state (a run
when on, a pause when off). Written once here for the model (run/pause rows), the repair
(:func:`loadopt.milp.repair.enforce`) and the incumbent heuristics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..problem import Problem


def prev_slot(problem: Problem) -> np.ndarray:
    """(V,) the variable of the same session in the previous period, or −1."""
    vs, vt = problem.var_session, problem.var_period
    prev = np.full(vs.size, -1, dtype=np.int64)
    if vs.size > 1:
        same = (vs[1:] == vs[:-1]) & (vt[1:] == vt[:-1] + 1)
        prev[1:][same] = np.arange(vs.size - 1)[same]
    return prev


def next_slot(prev: np.ndarray) -> np.ndarray:
    """(V,) the variable of the same session in the next period, or −1 (inverse of ``prev``)."""
    nxt = np.full(prev.size, -1, dtype=np.int64)
    has = np.flatnonzero(prev >= 0)
    nxt[prev[has]] = has
    return nxt


@dataclass(frozen=True, eq=False)
class Segments:
    """Maximal runs of equal on/off state along the session chains (``K`` segments)."""

    rid: np.ndarray  #: (V,) segment of each slot
    first: np.ndarray  #: (K,) first slot
    last: np.ndarray  #: (K,) last slot
    length: np.ndarray  #: (K,) slots
    on: np.ndarray  #: (K,) bool, a run (else a pause)
    at_start: np.ndarray  #: (K,) bool, starts the session's chain
    at_end: np.ndarray  #: (K,) bool, ends it (departure or horizon end)


def segments(on: np.ndarray, prev: np.ndarray, nxt: np.ndarray) -> Segments:
    """The runs and pauses of the slot pattern ``on`` ((V,) bool); empty when ``V == 0``."""
    V = on.size
    if V == 0:
        e = np.zeros(0, dtype=np.int64)
        b = np.zeros(0, dtype=bool)
        return Segments(e, e, e, e, b, b, b)
    new = (prev < 0) | (on != on[np.maximum(prev, 0)])
    rid = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.r_[first[1:] - 1, V - 1]
    return Segments(rid, first, last, np.bincount(rid), on[first], prev[first] < 0, nxt[last] < 0)


def level_groups(
    levels_da: list[np.ndarray | None], n_sessions: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Sessions grouped by their set of allowed levels: ``(levels in deci-amps, (S,) mask)`` per
    distinct set, so that level rounding is one vectorised pass per set, not per session."""
    groups: dict[bytes, list[int]] = {}
    for i, lv in enumerate(levels_da):
        if lv is not None:
            groups.setdefault(np.asarray(lv, dtype=np.float64).tobytes(), []).append(i)
    out = []
    for key, members in groups.items():
        mask = np.zeros(n_sessions, dtype=bool)
        mask[members] = True
        out.append((np.frombuffer(key, dtype=np.float64).copy(), mask))
    return tuple(out)
