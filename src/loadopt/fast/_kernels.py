"""One-interval allocation kernels, written once in the subset of Python that numba compiles.

Every function here is plain Python over numpy arrays, compiled below with
``numba.njit(cache=True)`` when numba is importable and ``LOADOPT_DISABLE_NUMBA`` is not
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
``r = row - r0``. The rows are the reduced ones of :mod:`loadopt.fast._prepared` (one-variable
rows turned into the bounds ``hi_da``, rows that cannot be over-full dropped, duplicates merged),
and the variables of a period are stored in admission order (priority ↓, departure ↑).

One call of the fair policy (:func:`allocate_period`): bounds of the period (O(variables)) →
:func:`fill` (admission by :func:`admit` only when the minimum currents do not all fit) →
discrete steps (a second fill, only where EVSEs have steps) → :func:`finish`: floor to whole
deci-amps, one pass over the rows summing the loads afresh, the 0.1 A hand-on, and the exact
check of every row and bound (repairs by :func:`enforce`, never expected to run).
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
    _jit = njit(cache=True, nogil=True)  # kernels touch no Python object: threads overlap
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
def _heap_swap(hk, hid, a, b):
    tk = hk[a]
    hk[a] = hk[b]
    hk[b] = tk
    ti = hid[a]
    hid[a] = hid[b]
    hid[b] = ti


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
        _heap_swap(hk, hid, par, pos)
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
        _heap_swap(hk, hid, best, pos)
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
def row_key(cap_r, const_r, slope_r, lam):
    """Water level at which a row fills up (never below the current level ``lam``)."""
    k = (cap_r - const_r) / slope_r
    return k if k > lam else lam


@_jit
def rebuild_heap(hk, hid, nr, cap, const, slope, cnt, full_possible, sat, lam):
    """All rows that can still fill, keyed afresh; return the heap size."""
    n = 0
    for r in range(nr):
        if not sat[r] and cnt[r] > 0 and full_possible[r] > cap[r]:
            hk[n] = row_key(cap[r], const[r], slope[r], lam)
            hid[n] = r
            n += 1
    heapify(hk, hid, n)
    return n


@_jit
def freeze(j, xj, v0, r0, cptr, cidx, cdata, w, slope, const, cnt):
    """A growing variable stops at ``xj``: its rows lose its slope and keep its load."""
    v = v0 + j
    for q in range(cptr[v], cptr[v + 1]):
        rr = cidx[q] - r0
        g = cdata[q]
        slope[rr] -= g * w[j]
        const[rr] += g * xj
        cnt[rr] -= 1


@_jit
def row_state(r0, nr, v0, indptr, indices, data, status, x, w, const, slope, cnt):
    """Row loads afresh (one pass over the rows): ``const`` from variables that do not grow
    (at ``x``), ``slope`` and ``cnt`` from those that do."""
    for r in range(nr):
        c = 0.0
        sl = 0.0
        k = 0
        for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
            j = indices[p] - v0
            if status[j] == 2:
                sl += data[p] * w[j]
                k += 1
            else:
                c += data[p] * x[j]
        const[r] = c
        slope[r] = sl
        cnt[r] = k


@_jit
def fill(
    r0,
    nr,
    v0,
    nv,
    indptr,
    indices,
    data,
    cptr,
    cidx,
    cdata,
    cap,
    lo,
    hi,
    w,
    starts,
    caps,
    strict,
    slope0,
    cnt0,
    full0,
    floor0,
    hi0,
    lo0,
    may_jump,
    x,
):
    """Weighted max-min fair progressive filling of one period, written into ``x`` (deci-amps).

    Each variable follows ``x_j(λ) = clip(w_j · λ, lo_j, hi_j)`` as the water level ``λ`` rises,
    and freezes when a safety row it loads becomes full (``Σ G_rj x_j = cap_r``). The result is
    the weighted max-min fair allocation with floors ``lo`` and caps ``hi``: no variable could get
    more without taking from one whose ``x/w`` is no larger, unless it is at its cap.

    ``starts`` / ``caps``: the local variables in order of ``lo/w`` / ``hi/w`` (ties in any fixed
    order); entries whose variable is not waiting / growing are skipped, so a static order that
    covers more variables is fine. Requires ``w > 0``.

    Returns ``λ``, or (with ``strict``) ``-1.0`` when the floors do not fit (``G · lo > cap`` in
    some row, counting ``lo`` of the variables with ``hi > 0``): then nothing is filled and the
    caller must run :func:`admit` first. Without ``strict`` (a re-fill from a previous fill's
    values, full rows up to float noise) such a row simply fills at once.

    ``may_jump=False`` disables the jump to the highest floor level (below; for tests: both
    must give the same allocation). ``slope0 = G w``, ``cnt0`` (entries per row),
    ``full0 = G hi0``, ``floor0 = G lo0``: the per-row sums of the problem with every variable
    growing between its static bounds ``lo0``/``hi0`` (see :mod:`loadopt.fast._prepared`); the
    jump state starts from them and corrects only the columns of the variables that differ, so
    the common case costs O(rows) instead of a pass over the matrix.

    Jump: let λf be the highest floor level ``max lo/w``. Loads only rise with λ, so if no row
    is full at λf, no row fills before it, and every floor start and every cap below λf happens
    before any row event: the fill starts at λf directly. Otherwise (some row full of floors
    early) it starts at 0 and steps through the floor levels.

    Events come from three sources in ``λ`` order: the two presorted variable streams (floor
    starts, caps; all events of one level are one batch) and a binary heap of rows keyed by the
    level at which they fill. A row's level only rises as its variables stop, so stale row
    entries are re-keyed lazily when popped; floor starts lower the level of the rows they touch,
    which are pushed again (or, when a batch covers most of the matrix, the rows are summed afresh
    and the heap rebuilt). A row that fills and stops every variable still live ends the fill
    without updating the columns. Cost: O(rows + columns of the variables off their static
    bounds) for the set-up, O(column) per variable stopped, O(log rows) per row event.
    """
    status = np.empty(nv, np.int8)  # 1 waiting at floor, 2 growing, 3 done
    ns = starts.size
    # λf: the highest floor level (the last waiting variable in the floor order)
    lamf = 0.0
    for i in range(ns - 1, -1, -1):
        j = starts[i]
        if lo[j] > 0.0 and hi[j] > lo[j]:
            lamf = lo[j] / w[j]
            break
    slope = np.empty(nr)  # Σ G w over growing variables
    const = np.empty(nr)  # load = const + slope · λ
    cnt = np.empty(nr, np.int64)  # growing variables per row
    full_possible = np.empty(nr)  # Σ G hi: the row can only fill if this exceeds cap
    sat = np.zeros(nr, np.bool_)
    lam = 0.0
    ps = 0
    live = 0
    jump = may_jump and lamf > 0.0
    if jump:
        # Jump: if no row is full at λf (loads only rise with λ, so none fills before it),
        # every floor start and every cap below λf comes before any row event: start at λf.
        for j in range(nv):
            if hi[j] <= lo[j]:
                status[j] = 3
                x[j] = hi[j]
            elif hi[j] / w[j] <= lamf:
                status[j] = 3
                x[j] = hi[j]
            else:
                status[j] = 2
                x[j] = lo[j]  # the floor (what the admission test counts)
                live += 1
        floors_r = floor0.copy()
        for r in range(nr):
            slope[r] = slope0[r]
            const[r] = 0.0
            cnt[r] = cnt0[r]
            full_possible[r] = full0[r]
        for j in range(nv):
            d_hi = hi[j] - hi0[j]
            if status[j] == 2:
                d_lo = lo[j] - lo0[j]
            else:
                d_lo = (lo[j] if lo[j] < x[j] else x[j]) - lo0[j]
            if d_hi != 0.0 or d_lo != 0.0 or status[j] != 2:
                v = v0 + j
                for q in range(cptr[v], cptr[v + 1]):
                    rr = cidx[q] - r0
                    g = cdata[q]
                    full_possible[rr] += g * d_hi
                    floors_r[rr] += g * d_lo
                    if status[j] != 2:
                        slope[rr] -= g * w[j]
                        const[rr] += g * x[j]
                        cnt[rr] -= 1
        for r in range(nr):
            if strict and floors_r[r] > cap[r]:
                return -1.0
            if full_possible[r] > cap[r] and const[r] + slope[r] * lamf >= cap[r]:
                jump = False
        if jump:
            lam = lamf
            ps = ns
    if not jump:
        live = 0
        growing = 0
        for j in range(nv):
            if hi[j] <= lo[j]:
                status[j] = 3
                x[j] = hi[j]
            elif lo[j] > 0.0:
                status[j] = 1
                x[j] = lo[j]
                live += 1
            else:
                status[j] = 2
                x[j] = 0.0
                live += 1
                growing += 1
        if growing == 0:
            # nothing grows until the first floor level: no row can fill before it, so that
            # start batch is applied before the rows are summed (x stays at its floor)
            while ps < ns and status[starts[ps]] != 1:
                ps += 1
            if ps < ns:
                lam = lo[starts[ps]] / w[starts[ps]]
                while ps < ns:
                    j = starts[ps]
                    if status[j] == 1:
                        if lo[j] / w[j] != lam:
                            break
                        status[j] = 2
                    ps += 1
        for r in range(nr):
            c = 0.0
            sl = 0.0
            k = 0
            f = 0.0
            floors = 0.0
            for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
                j = indices[p] - v0
                g = data[p]
                f += g * hi[j]
                floors += g * x[j]
                if status[j] == 2:
                    sl += g * w[j]
                    k += 1
                else:
                    c += g * x[j]
            if strict and floors > cap[r]:
                return -1.0
            slope[r] = sl
            const[r] = c
            cnt[r] = k
            full_possible[r] = f
    size = nr + (cptr[v0 + nv] - cptr[v0]) + 1
    hk = np.empty(size)
    hid = np.empty(size, np.int64)
    n = rebuild_heap(hk, hid, nr, cap, const, slope, cnt, full_possible, sat, lam)

    mark = np.zeros(nr, np.int64)
    touched = np.empty(nr, np.int64)
    stamp = 0
    pc = 0
    nc = caps.size
    nnz = indptr[r0 + nr] - indptr[r0]
    inf = np.inf
    while live > 0:
        while ps < ns and status[starts[ps]] != 1:
            ps += 1
        while pc < nc and status[caps[pc]] == 3:
            pc += 1
        ks = lo[starts[ps]] / w[starts[ps]] if ps < ns else inf
        kc = hi[caps[pc]] / w[caps[pc]] if pc < nc else inf
        kr = hk[0] if n > 0 else inf
        if n > 0 and kr <= ks and kr <= kc:  # a row fills up
            r = hid[0]
            n = heap_pop(hk, hid, n)
            if sat[r] or cnt[r] == 0:
                continue
            k = row_key(cap[r], const[r], slope[r], lam)
            if k > kr:  # stale: its variables stopped since it was keyed
                n = heap_push(hk, hid, n, k, r)
                continue
            lam = k
            sat[r] = True
            p0 = indptr[r0 + r]
            p1 = indptr[r0 + r + 1]
            last = False
            if p1 - p0 >= live:  # does this row stop every variable still live?
                m = 0
                for p in range(p0, p1):
                    if status[indices[p] - v0] != 3:
                        m += 1
                last = m == live
            if last:  # then nobody reads the row loads again: no column updates
                for p in range(p0, p1):
                    j = indices[p] - v0
                    if status[j] == 2:
                        xj = w[j] * lam
                        if xj > hi[j]:
                            xj = hi[j]
                        if xj < lo[j]:
                            xj = lo[j]
                        x[j] = xj
                    status[j] = 3
                break
            for p in range(p0, p1):
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
                    freeze(j, xj, v0, r0, cptr, cidx, cdata, w, slope, const, cnt)
        elif ps < ns and ks <= kc:  # variables leave their floor and start growing
            if ks > lam:
                lam = ks
            # the batch: every start at this level (floors are few distinct levels)
            pe = ps
            bnnz = 0
            while pe < ns:
                j = starts[pe]
                if status[j] == 1:
                    if lo[j] / w[j] != ks:
                        break
                    bnnz += cptr[v0 + j + 1] - cptr[v0 + j]
                pe += 1
            if 2 * bnnz > nnz:  # most of the matrix: sum the rows afresh, re-key them all
                for i in range(ps, pe):
                    if status[starts[i]] == 1:
                        status[starts[i]] = 2
                row_state(r0, nr, v0, indptr, indices, data, status, x, w, const, slope, cnt)
                n = rebuild_heap(hk, hid, nr, cap, const, slope, cnt, full_possible, sat, lam)
                ps = pe
                continue
            stamp += 1
            nt = 0
            for i in range(ps, pe):
                j = starts[i]
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
            ps = pe
            if 4 * nt > nr:
                n = rebuild_heap(hk, hid, nr, cap, const, slope, cnt, full_possible, sat, lam)
            else:
                for t in range(nt):
                    rr = touched[t]
                    if not sat[rr] and full_possible[rr] > cap[rr]:
                        n = heap_push(hk, hid, n, row_key(cap[rr], const[rr], slope[rr], lam), rr)
        elif pc < nc:  # variables reach their cap (every one at this level)
            if kc > lam:
                lam = kc
            while pc < nc:
                j = caps[pc]
                if status[j] != 3:
                    if hi[j] / w[j] != kc:
                        break
                    if status[j] == 1:  # cannot happen (lo < hi): still waiting, jumps to cap
                        v = v0 + j
                        for q in range(cptr[v], cptr[v + 1]):
                            const[cidx[q] - r0] += cdata[q] * (hi[j] - lo[j])
                    else:
                        freeze(j, hi[j], v0, r0, cptr, cidx, cdata, w, slope, const, cnt)
                    x[j] = hi[j]
                    status[j] = 3
                    live -= 1
                pc += 1
        else:  # no event left (cannot happen: every live variable has a cap event)
            break
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
def finish(
    r0,
    nr,
    v0,
    nv,
    indptr,
    indices,
    data,
    cptr,
    cidx,
    cdata,
    cap,
    chk,
    order,
    lo,
    hi,
    sess,
    aptr,
    has_steps,
    top,
    x,
):
    """Round down, hand on what the rounding left, and check every row exactly; returns the
    number of rows :func:`enforce` had to repair (0 expected).

    ``x`` (deci-amps) is floored to whole deci-amps (after a ``SNAP_DA`` snap). With ``top``:
    in ``order``, +0.1 A to each session that is below its cap, is not paused (``x = 0`` with a
    floor), has no discrete steps and fits under every row it loads (against ``cap``). The row
    loads are summed afresh from ``x`` (one pass over the rows, independent of the fill's own
    bookkeeping) and kept up to date by the top-up; every row is then compared with ``chk`` and
    every variable with ``hi`` — current rows in exact integers. Anything over (never expected)
    goes to :func:`enforce`.
    """
    for j in range(nv):
        x[j] = math.floor(x[j] + SNAP_DA)
    load = np.empty(nr)
    for r in range(nr):
        acc = 0.0
        for p in range(indptr[r0 + r], indptr[r0 + r + 1]):
            acc += data[p] * x[indices[p] - v0]
        load[r] = acc
    if top:
        for idx in range(order.size):
            j = order[idx]
            v = v0 + j
            if x[j] + 1.0 > hi[j] or (x[j] <= 0.0 and lo[j] > 0.0):
                continue
            if has_steps:
                s = sess[v]
                if aptr[s + 1] > aptr[s]:
                    continue
            ok = True
            for q in range(cptr[v], cptr[v + 1]):
                rr = cidx[q] - r0
                if load[rr] + cdata[q] > cap[rr]:
                    ok = False
                    break
            if ok:
                x[j] += 1.0
                for q in range(cptr[v], cptr[v + 1]):
                    load[cidx[q] - r0] += cdata[q]
    bad = False
    for j in range(nv):
        if not x[j] <= hi[j]:
            x[j] = hi[j] if hi[j] > 0.0 else 0.0
            bad = True
    for r in range(nr):
        if load[r] > chk[r]:
            bad = True
    if bad:
        return 1 + enforce(r0, nr, v0, nv, indptr, indices, data, chk, x)
    return 0


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
def scatter_amps(x, sess, v0, n_sessions):
    """Per-session amps ``(S,)`` from the deci-amps of one period's local variables."""
    out = np.zeros(n_sessions)
    for j in range(x.size):
        out[sess[v0 + j]] = x[j] / 10.0
    return out


@_jit
def sorted_by_level(vals, w, nv):
    """Local variables in order of ``vals / w`` (stable)."""
    key = np.empty(nv)
    for j in range(nv):
        key[j] = vals[j] / w[j]
    return np.argsort(key, kind="mergesort")


@_jit
def allocate_period(
    r0,
    nr,
    v0,
    nv,
    indptr,
    indices,
    data,
    cptr,
    cidx,
    cdata,
    cap_fill,
    chk,
    ub_da,
    hi_da,
    lo_da,
    kwh_per_a,
    w,
    sess,
    dep_s,
    kw_per_a,
    aptr,
    avals,
    has_steps,
    fair_order,
    edf_order,
    start_order,
    cap_order,
    row_slope0,
    row_cnt0,
    row_full0,
    row_floor0,
    energy_left,
    t_start_s,
    policy,
    x,
):
    """Allocate one period into ``x`` (deci-amps, local variables of the period).

    Caps: the variable's bound ``hi_da`` (maximum current, tightened by one-variable rows) and
    the energy the session still wants (``energy_left / kWh per A``, rounded up so that it
    finishes); a session that wants energy but less than its minimum current's worth gets its
    minimum (the vehicle stops when full). ``policy``: 0 weighted max-min fair (weights =
    priority), 1 earliest departure first, 2 least laxity first (laxity from ``ub_da``). Returns
    the number of rows :func:`enforce` had to repair (0 expected).
    """
    cap = cap_fill[r0 : r0 + nr]
    lo = np.empty(nv)
    hi = np.empty(nv)
    n_energy = 0  # variables whose cap is not hi_da (energy still wanted, or paused)
    for j in range(nv):
        v = v0 + j
        e = energy_left[sess[v]]
        lo[j] = lo_da[v]
        if not e > 1e-9:
            hi[j] = 0.0
            lo[j] = 0.0
        else:
            need = math.ceil(e / kwh_per_a[v] * 10.0 - 1e-9)
            hi[j] = need if need < hi_da[v] else hi_da[v]
            if hi[j] < lo[j]:
                hi[j] = lo[j]
        if hi[j] != hi_da[v]:
            n_energy += 1
    top = False
    if policy == POLICY_FAIR:
        top = True
        # run-time bools, not literals: a literal True/False would compile one more copy of
        # fill per combination (seconds of JIT each)
        on = policy == POLICY_FAIR
        off = not on
        wl = w[v0 : v0 + nv]
        starts = start_order[v0 : v0 + nv]
        # cap events: the static order for variables at hi_da, merged with the few capped by
        # energy (sorted per call)
        if n_energy == 0:
            caps = cap_order[v0 : v0 + nv]
        else:
            dyn = np.empty(n_energy, np.int64)
            k = 0
            for j in range(nv):
                if hi[j] != hi_da[v0 + j]:
                    dyn[k] = j
                    k += 1
            dyn = dyn[:k]
            dkey = np.empty(k)
            for i in range(k):
                dkey[i] = hi[dyn[i]] / wl[dyn[i]]
            dsort = np.argsort(dkey, kind="mergesort")
            caps = np.empty(nv, np.int64)
            m = 0
            i = 0
            for idx in range(nv):
                j = cap_order[v0 + idx]
                if hi[j] != hi_da[v0 + j]:
                    continue
                kj = hi[j] / wl[j]
                while i < k and dkey[dsort[i]] < kj:
                    caps[m] = dyn[dsort[i]]
                    m += 1
                    i += 1
                caps[m] = j
                m += 1
            while i < k:
                caps[m] = dyn[dsort[i]]
                m += 1
                i += 1
            caps = caps[:m]
        hi0 = hi_da[v0 : v0 + nv]
        lo0 = lo_da[v0 : v0 + nv]
        sl0 = row_slope0[r0 : r0 + nr]
        cn0 = row_cnt0[r0 : r0 + nr]
        fu0 = row_full0[r0 : r0 + nr]
        fl0 = row_floor0[r0 : r0 + nr]
        if (
            fill(
                r0,
                nr,
                v0,
                nv,
                indptr,
                indices,
                data,
                cptr,
                cidx,
                cdata,
                cap,
                lo,
                hi,
                wl,
                starts,
                caps,
                on,
                sl0,
                cn0,
                fu0,
                fl0,
                hi0,
                lo0,
                on,
                x,
            )
            < 0.0
        ):
            # the floors do not all fit: minimum currents in order, the rest paused
            admit(r0, nr, v0, nv, cptr, cidx, cdata, cap, fair_order[v0 : v0 + nv], lo, hi)
            fill(
                r0,
                nr,
                v0,
                nv,
                indptr,
                indices,
                data,
                cptr,
                cidx,
                cdata,
                cap,
                lo,
                hi,
                wl,
                starts,
                caps,
                off,
                sl0,
                cn0,
                fu0,
                fl0,
                hi0,
                lo0,
                on,
                x,
            )
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
                fill(
                    r0,
                    nr,
                    v0,
                    nv,
                    indptr,
                    indices,
                    data,
                    cptr,
                    cidx,
                    cdata,
                    cap,
                    lo,
                    hi,
                    wl,
                    sorted_by_level(lo, wl, nv),
                    sorted_by_level(hi, wl, nv),
                    off,
                    sl0,
                    cn0,
                    fu0,
                    fl0,
                    hi0,
                    lo0,
                    on,
                    x,
                )
    elif policy == POLICY_EDF:
        greedy(
            r0,
            nr,
            v0,
            nv,
            cptr,
            cidx,
            cdata,
            cap,
            edf_order[v0 : v0 + nv],
            lo,
            hi,
            sess,
            aptr,
            avals,
            x,
        )
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
    return finish(
        r0,
        nr,
        v0,
        nv,
        indptr,
        indices,
        data,
        cptr,
        cidx,
        cdata,
        cap,
        chk[r0 : r0 + nr],
        fair_order[v0 : v0 + nv],
        lo,
        hi,
        sess,
        aptr,
        has_steps,
        top,
        x,
    )
