"""Charging-schedule periods: merge equal neighbours, then merge down to a station's maximum.

A schedule here is a step function: ``starts`` (K,) integer seconds from ``startSchedule``
(strictly increasing, ``starts[0] == 0``), ``limits`` (K, 3) integer **deci-amps** per EVSE line
L1, L2, L3 (0.1 A each, so that no binary float can round anything up), and ``phases`` (K,) the
``numberPhases`` of each period. Period ``k`` holds from ``starts[k]`` until ``starts[k + 1]``; the
last one holds until ``end_s`` (used only to weigh it) and, on the station, for as long as the
profile is in force (OCPP: without ``duration`` the last period continues).

OCPP rules implemented:

- ``startPeriod`` starts at 0 and strictly increases (1.6 §7.13, 2.x ChargingSchedulePeriodType);
- a station accepts at most ``ChargingScheduleMaxPeriods`` (1.6) / ``PeriodsPerSchedule`` (2.x)
  periods; merging to fit takes, for the merged period, the **minimum** of the limits and of the
  phase counts (fewer phases at a lower current never loads any line more), so a limit in force
  is never raised by merging.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def dedupe(
    starts: np.ndarray, limits: np.ndarray, phases: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop every period whose limits and phase count equal those of the period before it.

    Parameters
    ----------
    starts
        ``(K,)`` period starts (s from the schedule start).
    limits
        ``(K, 3)`` deci-amps per line.
    phases
        ``(K,)`` ``numberPhases``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(starts, limits, phases)`` without the repeats.
    """
    starts = np.asarray(starts, dtype=np.int64)
    limits = np.asarray(limits, dtype=np.int64).reshape(starts.size, 3)
    phases = np.asarray(phases, dtype=np.int64)
    if starts.size <= 1:
        return starts, limits, phases
    same = np.all(limits[1:] == limits[:-1], axis=1) & (phases[1:] == phases[:-1])
    keep = np.concatenate(([True], ~same))
    return starts[keep], limits[keep], phases[keep]


def merge_periods(
    starts: np.ndarray, limits: np.ndarray, phases: np.ndarray, max_periods: int, end_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge to at most ``max_periods`` periods without raising any limit at any instant.

    First equal neighbours are merged (lossless). While too many periods remain, the adjacent
    pair whose merge withholds the least charge (Σ over lines of the lost deci-amps × seconds,
    plus a phase-count change weighed the same way) is replaced by one period holding the minimum
    of both. Greedy, deterministic (ties go to the earliest pair), O(K²) in numpy for K periods.

    Parameters
    ----------
    starts
        ``(K,)`` period starts (s from the schedule start).
    limits
        ``(K, 3)`` deci-amps per line.
    phases
        ``(K,)`` ``numberPhases``.
    max_periods
        The station's ``ChargingScheduleMaxPeriods`` / ``PeriodsPerSchedule``.
    end_s
        End of the last period (s), to weigh it.

    Returns
    -------
    tuple of numpy.ndarray
        ``(starts, limits, phases)`` with at most ``max_periods`` periods.
    """
    if max_periods < 1:
        raise InputError(f"max_periods must be >= 1, got {max_periods}")
    s, lim, ph = dedupe(starts, limits, phases)
    s, lim, ph = s.copy(), lim.copy(), ph.copy()
    while s.size > max_periods:
        ends = np.append(s[1:], max(int(end_s), int(s[-1]) + 1))
        dur = (ends - s).astype(np.float64)
        a, b = lim[:-1], lim[1:]
        m = np.minimum(a, b)
        # charge withheld (deci-amp-seconds per line) by merging pair (i, i+1); phase counts
        # are weighed by the lines they switch off at the merged current
        pa = ph[:-1] * m.max(axis=1)
        pb = ph[1:] * m.max(axis=1)
        pm = np.minimum(ph[:-1], ph[1:]) * m.max(axis=1)
        loss = ((a - m).sum(axis=1) + (pa - pm)) * dur[:-1] + (
            (b - m).sum(axis=1) + (pb - pm)
        ) * dur[1:]
        i = int(np.argmin(loss))
        lim[i] = m[i]
        ph[i] = min(ph[i], ph[i + 1])
        s = np.delete(s, i + 1)
        lim = np.delete(lim, i + 1, axis=0)
        ph = np.delete(ph, i + 1)
        s, lim, ph = dedupe(s, lim, ph)
    return s, lim, ph


def value_at(starts: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The value in force at each time ``t`` (seconds) of a step function (last one persists).

    Times before ``starts[0]`` get the first value's row index -1 clipped to 0: callers only ask
    for ``t >= starts[0]``.
    """
    idx = np.searchsorted(np.asarray(starts), np.asarray(t), side="right") - 1
    return np.asarray(values)[np.clip(idx, 0, None)]
