"""One-interval allocation kernels, written once in the subset of Python that numba compiles.

Every function here is plain Python over numpy arrays. :mod:`loadopt.fast._jit` compiles them
with ``numba.njit(cache=True)`` when numba is importable and ``LOADOPT_DISABLE_NUMBA`` is not
set; otherwise the very same source runs uncompiled (the pure-numpy path). Both paths execute the
same floating-point operations in the same order, so their results are identical, not merely
close (the tests compare them with ``==``).

Units inside: currents in **deci-amps** (0.1 A, the OCPP grid), so that rounding to what OCPP can
carry is a ``floor`` and current rows compare in exact integers. Row capacities are in the units
of ``G @ deciamps`` (see :func:`loadopt.safety.row_capacity_da`).

Layout: the safety rows and the variables of the problem are permuted so that those of one period
are contiguous (rows ``r0 .. r0+nr``, variables ``v0 .. v0+nv``). ``indptr/indices/data`` is that
permuted ``G`` in CSR (column indices global), ``cptr/cidx/cdata`` the same in CSC (row indices
global). A kernel works on one period's block and uses local indices ``j = v - v0`` and
``r = row - r0``.
"""

from __future__ import annotations

import math
import os

import numpy as np

#: Set by :func:`loadopt.fast._backend.pure_kernels` before executing a second, uncompiled copy.
_FORCE_PURE = bool(globals().get("_FORCE_PURE", False))
DISABLED = os.environ.get("LOADOPT_DISABLE_NUMBA", "").strip() not in ("", "0")

try:
    if _FORCE_PURE or DISABLED:
        raise ImportError("numba disabled")
    from numba import njit

    NUMBA = True
    _jit = njit(cache=True)
except ImportError:  # numba missing or disabled: the same source runs as plain Python
    NUMBA = False

    def _jit(f):
        return f

POLICY_FAIR = 0
POLICY_EDF = 1
POLICY_LLF = 2

#: Snap applied before flooring a fill level to whole deci-amps (absorbs float noise such as
#: 59.9999999999 → 60). The fill aims below capacity by this much per entry of the row.
SNAP_DA = 1e-6


# --- a binary min-heap on (key, id) in two preallocated arrays ----------------------------------

@_jit
def heap_push(hk, hid, n, key, ident):
    """Insert ``(key, ident)``; return the new size."""
    pos = n
    hk[pos] = key
    hid[pos] = ident
    while pos > 0:
        par = (pos - 1) >> 1
        if hk[par] <= hk[pos]:
            break
        tk = hk[par]
        hk[par] = hk[pos]
        hk[pos] = tk
        ti = hid[par]
        hid[par] = hid[pos]
        hid[pos] = ti
        pos = par
    return n + 1


@_jit
def heap_sift_down(hk, hid, n, pos):
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        best = left
        right = left + 1
        if right < n and hk[right] < hk[left]:
            best = right
        if hk[pos] <= hk[best]:
            return
        tk = hk[best]
        hk[best] = hk[pos]
        hk[pos] = tk
        ti = hid[best]
        hid[best] = hid[pos]
        hid[pos] = ti
        pos = best


@_jit
def heap_pop(hk, hid, n):
    """Remove the top (read it from ``hk[0], hid[0]`` first); return the new size."""
    n -= 1
    hk[0] = hk[n]
    hid[0] = hid[n]
    heap_sift_down(hk, hid, n, 0)
    return n


@_jit
def heapify(hk, hid, n):
    for pos in range(n // 2 - 1, -1, -1):
        heap_sift_down(hk, hid, n, pos)


# --- weighted max-min fair progressive filling --------------------------------------------------

@_jit
def fill(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap, lo, hi, w, x):
    """Weighted max-min fair progressive filling of one period, written into ``x`` (deci-amps).

    Each variable follows ``x_j(λ) = clip(w_j · λ, lo_j, hi_j)`` as the water level ``λ`` rises,
    and freezes when a safety row it loads becomes full (``Σ G_rj x_j = cap_r``). The result is
    the weighted max-min fair allocation with floors ``lo`` and caps ``hi``: no variable could get
    more without taking from one whose ``x/w`` is no larger, unless it is at its cap.

    Requires ``lo ≤ hi`` and ``G · lo ≤ cap`` (the admission step guarantees it). Events (a
    variable reaching its floor level ``lo/w`` or its cap level ``hi/w``; a row filling up) are
    processed in ``λ`` order from one heap; a row's fill level only rises as its variables stop,
    so stale row entries are re-keyed lazily when popped. Cost: O(nnz · log) per call.
    """
    slope = np.zeros(nr)  # Σ G w over growing variables
    const = np.zeros(nr)  # load = const + slope · λ
    cnt = np.zeros(nr, np.int64)  # growing variables per row
    full_possible = np.zeros(nr)  # Σ G hi: the row can only fill if this exceeds cap
    sat = np.zeros(nr, np.bool_)
    status = np.zeros(nv, np.int8)  # 1 waiting at floor, 2 growing, 3 done
    size = 2 * nr + 2 * nv + (cptr[v0 + nv] - cptr[v0]) + 1
    hk = np.empty(size)
    hid = np.empty(size, np.int64)
    n = 0
    live = 0  # variables not done: the loop stops when none is left
    for j in range(nv):
        v = v0 + j
        if hi[j] <= lo[j]:
            status[j] = 3
            x[j] = hi[j]
        elif lo[j] > 0.0:
            status[j] = 1
            x[j] = lo[j]
            hk[n] = lo[j] / w[j]
            hid[n] = nr + j
            n += 1
        else:
            status[j] = 2
            x[j] = 0.0
        if status[j] != 3:
            live += 1
            hk[n] = hi[j] / w[j]
            hid[n] = nr + nv + j
            n += 1
        for p in range(cptr[v], cptr[v + 1]):
            r = cidx[p] - r0
            g = cdata[p]
            full_possible[r] += g * hi[j]
            if status[j] == 2:
                slope[r] += g * w[j]
                cnt[r] += 1
            else:
                const[r] += g * x[j]
    for r in range(nr):
        if cnt[r] > 0 and full_possible[r] > cap[r]:
            k = (cap[r] - const[r]) / slope[r]
            hk[n] = k if k > 0.0 else 0.0
            hid[n] = r
            n += 1
    heapify(hk, hid, n)

    mark = np.zeros(nr, np.int64)
    touched = np.empty(nr, np.int64)
    stamp = 0
    lam = 0.0
    while n > 0 and live > 0:
        key = hk[0]
        ident = hid[0]
        n = heap_pop(hk, hid, n)
        if ident < nr:  # a row fills up
            r = ident
            if sat[r] or cnt[r] == 0:
                continue
            k = (cap[r] - const[r]) / slope[r]
            if k < lam:
                k = lam
            if k > key:  # stale: its variables stopped since it was keyed
                n = heap_push(hk, hid, n, k, r)
                continue
            lam = k
            sat[r] = True
            for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
                j = indices[p] - v0
                if status[j] == 1:
                    status[j] = 3
                    live -= 1
                elif status[j] == 2:
                    live -= 1
                    xj = w[j] * lam
                    if xj > hi[j]:
                        xj = hi[j]
                    if xj < lo[j]:
                        xj = lo[j]
                    x[j] = xj
                    status[j] = 3
                    v = v0 + j
                    for q in range(cptr[v], cptr[v + 1]):
                        rr = cidx[q] - r0
                        g = cdata[q]
                        slope[rr] -= g * w[j]
                        const[rr] += g * xj
                        cnt[rr] -= 1
        elif ident < nr + nv:  # variables leave their floor and start growing
            if key > lam:
                lam = key
            # every start event at this level at once (floors are few distinct levels), then
            # re-key each touched row once
            stamp += 1
            nt = 0
            j = ident - nr
            while True:
                if status[j] == 1:
                    status[j] = 2
                    v = v0 + j
                    for q in range(cptr[v], cptr[v + 1]):
                        rr = cidx[q] - r0
                        g = cdata[q]
                        const[rr] -= g * lo[j]
                        slope[rr] += g * w[j]
                        cnt[rr] += 1
                        if mark[rr] != stamp:
                            mark[rr] = stamp
                            touched[nt] = rr
                            nt += 1
                if n > 0 and hk[0] == key and nr <= hid[0] < nr + nv:
                    j = hid[0] - nr
                    n = heap_pop(hk, hid, n)
                else:
                    break
            for t in range(nt):
                rr = touched[t]
                if not sat[rr] and full_possible[rr] > cap[rr]:
                    k = (cap[rr] - const[rr]) / slope[rr]
                    n = heap_push(hk, hid, n, k if k > lam else lam, rr)
        else:  # a variable reaches its cap
            j = ident - nr - nv
            if status[j] != 2:
                continue
            if key > lam:
                lam = key
            x[j] = hi[j]
            status[j] = 3
            live -= 1
            v = v0 + j
            for q in range(cptr[v], cptr[v + 1]):
                rr = cidx[q] - r0
                g = cdata[q]
                slope[rr] -= g * w[j]
                const[rr] += g * hi[j]
                cnt[rr] -= 1
    return lam


@_jit
def admit(r0, nr, v0, nv, cptr, cidx, cdata, cap, order, lo, hi):
    """Give floors (minimum currents) in ``order`` while they fit; pause the rest (lo = hi = 0).

    IEC 61851: a vehicle offered less than its minimum current does not charge, so a session that
    cannot get its minimum is paused and its share stays with the others.
    """
    res = cap.copy()
    for idx in range(order.size):
        j = order[idx]
        if lo[j] <= 0.0 or hi[j] <= 0.0:
            continue
        v = v0 + j
        ok = True
        for q in range(cptr[v], cptr[v + 1]):
            if cdata[q] * lo[j] > res[cidx[q] - r0]:
                ok = False
                break
        if ok:
            for q in range(cptr[v], cptr[v + 1]):
                res[cidx[q] - r0] -= cdata[q] * lo[j]
        else:
            lo[j] = 0.0
            hi[j] = 0.0


@_jit
def round_allowed(val, s, aptr, avals, floor_da):
    """Largest allowed step (deci-amps) ≤ ``val`` and ≥ ``floor_da``, else 0."""
    best = 0.0
    for p in range(aptr[s], aptr[s + 1]):
        a = avals[p]
        if a <= val + SNAP_DA and a >= floor_da and a > best:
            best = a
    return best


@_jit
def greedy(r0, nr, v0, nv, cptr, cidx, cdata, cap, order, lo, hi, sess, aptr, avals, x):
    """Sorted policy: in ``order``, each session takes all it can (its cap, the room left in every
    row it loads), rounded to whole deci-amps and down to an allowed step; less than its minimum
    means paused (0). What one leaves is there for the next."""
    res = cap.copy()
    for idx in range(order.size):
        j = order[idx]
        v = v0 + j
        amt = hi[j]
        for q in range(cptr[v], cptr[v + 1]):
            g = cdata[q]
            if g > 0.0:
                room = res[cidx[q] - r0] / g
                if room < amt:
                    amt = room
        amt = math.floor(amt + SNAP_DA)
        s = sess[v]
        if aptr[s + 1] > aptr[s]:
            amt = round_allowed(amt, s, aptr, avals, lo[j])
        if amt < lo[j] or amt <= 0.0:
            x[j] = 0.0
            continue
        x[j] = amt
        for q in range(cptr[v], cptr[v + 1]):
            res[cidx[q] - r0] -= cdata[q] * amt


@_jit
def top_up(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap, order, lo, hi, sess,
           aptr, x):
    """Hand on what flooring to whole deci-amps left: in ``order``, +0.1 A to each session that
    is below its cap, is not paused, has no discrete steps and fits under every row it loads."""
    res = cap.copy()
    for r in range(nr):
        for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
            res[r] -= data[p] * x[indices[p] - v0]
    for idx in range(order.size):
        j = order[idx]
        v = v0 + j
        s = sess[v]
        if x[j] + 1.0 > hi[j] or (x[j] <= 0.0 and lo[j] > 0.0) or aptr[s + 1] > aptr[s]:
            continue
        ok = True
        for q in range(cptr[v], cptr[v + 1]):
            if cdata[q] > res[cidx[q] - r0]:
                ok = False
                break
        if ok:
            x[j] += 1.0
            for q in range(cptr[v], cptr[v + 1]):
                res[cidx[q] - r0] -= cdata[q]


@_jit
def enforce(r0, nr, v0, nv, indptr, indices, data, chk, x):
    """Last line of defence: every row of the period holds on ``x`` (whole deci-amps), exactly.

    Over-full rows (never expected: the fills aim below capacity) get their variables scaled by
    ``chk/load`` and floored, up to 8 passes, then zeroed. Returns how many rows needed it.
    """
    fixed = 0
    for it in range(9):
        bad = 0
        for r in range(nr):
            load = 0.0
            for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
                load += data[p] * x[indices[p] - v0]
            if load > chk[r]:
                bad += 1
                f = chk[r] / load
                for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
                    j = indices[p] - v0
                    x[j] = math.floor(x[j] * f) if it < 8 else 0.0
        fixed += bad
        if bad == 0:
            break
    return fixed


@_jit
def allocate_period(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap_fill, chk,
                    ub_da, lo_da, kwh_per_a, w, sess, dep_s, kw_per_a, aptr, avals, has_steps,
                    fair_order, edf_order, energy_left, t_start_s, policy, x):
    """Allocate one period into ``x`` (deci-amps, local variables of the period).

    Caps: the variable's maximum current and the energy the session still wants
    (``energy_left / kWh per A``, rounded up so that it finishes); a session that wants energy
    but less than its minimum current's worth gets its minimum (the vehicle stops when full).
    ``policy``: 0 weighted max-min fair (weights = priority), 1 earliest departure first,
    2 least laxity first. Returns the number of rows :func:`enforce` had to repair (0 expected).
    """
    cap = cap_fill[r0:r0 + nr]
    lo = np.empty(nv)
    hi = np.empty(nv)
    for j in range(nv):
        v = v0 + j
        e = energy_left[sess[v]]
        lo[j] = lo_da[v]
        if not e > 1e-9:
            hi[j] = 0.0
            lo[j] = 0.0
            continue
        need = math.ceil(e / kwh_per_a[v] * 10.0 - 1e-9)
        hi[j] = ub_da[v] if ub_da[v] < need else need
        if hi[j] < lo[j]:
            hi[j] = lo[j]
    if policy == POLICY_FAIR:
        admit(r0, nr, v0, nv, cptr, cidx, cdata, cap, fair_order[v0:v0 + nv], lo, hi)
        fill(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap, lo, hi, w[v0:v0 + nv],
             x)
        if has_steps:
            # discrete steps: round down, fix them, hand what they free to the others
            any_steps = False
            for j in range(nv):
                s = sess[v0 + j]
                if aptr[s + 1] > aptr[s]:
                    any_steps = True
                    val = round_allowed(math.floor(x[j] + SNAP_DA), s, aptr, avals, lo[j])
                    lo[j] = val
                    hi[j] = val
                else:
                    lo[j] = x[j]
            if any_steps:
                fill(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap, lo, hi,
                     w[v0:v0 + nv], x)
        for j in range(nv):
            x[j] = math.floor(x[j] + SNAP_DA)
        top_up(r0, nr, v0, nv, indptr, indices, data, cptr, cidx, cdata, cap,
               fair_order[v0:v0 + nv], lo, hi, sess, aptr, x)
    else:
        if policy == POLICY_EDF:
            greedy(r0, nr, v0, nv, cptr, cidx, cdata, cap, edf_order[v0:v0 + nv], lo, hi, sess,
                   aptr, avals, x)
        else:
            lax = np.empty(nv)
            for j in range(nv):
                v = v0 + j
                s = sess[v]
                rate_kw = ub_da[v] * 0.1 * kw_per_a[s]
                e = energy_left[s]
                if not e > 0.0:
                    e = 0.0
                hours = e / rate_kw if rate_kw > 0.0 else 1e9
                lax[j] = (dep_s[s] - t_start_s) / 3600.0 - hours
            order = np.argsort(lax, kind="mergesort")
            greedy(r0, nr, v0, nv, cptr, cidx, cdata, cap, order, lo, hi, sess, aptr, avals, x)
    return enforce(r0, nr, v0, nv, indptr, indices, data, chk[r0:r0 + nr], x)
