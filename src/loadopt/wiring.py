"""Line currents as phasors, and the linear inner approximation the solvers use.

Physics (IEC 60038 three-phase systems, positive sequence, unity power factor):

- Site phases R, S, T (L1, L2, L3) carry line-to-neutral voltages at 0°, −120°, +120°.
- A **line-to-neutral** EVSE branch on phase ``p`` draws ``r`` A in phase with ``V_p``: it adds
  ``r·e^{jθ_p}`` to line ``p``.
- A **line-to-line** branch between lines ``a`` and ``b`` (a US 208 V EVSE, any delta-connected
  load) draws ``r`` A in phase with ``V_a − V_b``: it adds ``r·u_ab`` to line ``a`` and
  ``−r·u_ab`` to line ``b`` (``u_ab`` the unit phasor of ``V_a − V_b``, 30° ahead of ``V_a``).
- An EVSE drawing ``n`` phases uses ``n`` branches along its rotation ``(p0, p1, p2)``:
  line-to-neutral ``p0..p(n-1)``; line-to-line ``(p0,p1)``, ``(p1,p2)``, ``(p2,p0)`` — so 1 is
  one pair, 2 two pairs sharing ``p1`` (split-phase / open delta), 3 a full delta.
- A **delta/wye transformer** (Dyn11, delta primary) with turns ratio ``n`` (delta turns over wye
  turns = primary line-to-line over secondary line-to-neutral voltage, 480 V / 120 V = 4) has
  primary line currents ``I_A = (I_a − I_c)/n``, ``I_B = (I_b − I_a)/n``, ``I_C = (I_c − I_b)/n``
  (the form ACN-Sim uses); nodes above it see the primary currents.

A line current is ``|Σ_i r_i c_i + b|`` with complex coefficients ``c_i`` and the base-load
phasor ``b``. Its limit ``|·| ≤ L`` is a second-order cone, not a linear row. Because every
``r_i ≥ 0``, ``z = Σ r_i c_i`` lies in the sector spanned by the ``c_i`` (width ``Δ``, at most 60°
on a node's lines, 120° on a delta/wye primary). :func:`facets` cuts the disc over that sector by
``m`` chords: facet ``k`` with normal ``ψ_k`` (the middle of the ``k``-th of ``m`` equal
sub-sectors) is ``Σ_i max(Re(c_i e^{-jψ_k}), 0)·r_i ≤ (L − |b|)·cos(Δ/2m)``. Every point it admits
has ``|z| ≤ L − |b|`` hence ``|z + b| ≤ L`` (inner: never unsafe); see :func:`facet_loss_bound`
for what it gives away. Coefficients are clipped at 0 so that ``G ≥ 0`` (what makes
:func:`loadopt.safety.project` exact in one pass); for ``r ≥ 0`` the clipped row implies the
unclipped one, so it stays inner.
"""

from __future__ import annotations

import numpy as np

#: Unit phasors of the site phases' line-to-neutral voltages (R, S, T).
PHASE_UNIT = np.exp(1j * np.array([0.0, -2.0 * np.pi / 3.0, 2.0 * np.pi / 3.0]))
#: Sectors at least this wide (rad) are not cut into facets: their row sums magnitudes
#: (``Σ |c_i| r_i ≤ L − |b|``, the triangle inequality, always inner).
MAX_FACET_SECTOR_RAD = np.pi - 1e-6
#: Coefficients within this angle (rad) count as one direction (one exact linear row).
COLLINEAR_RAD = 1e-9


def pair_unit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unit phasor of ``V_a − V_b`` (site phase indices, any shape)."""
    d = PHASE_UNIT[a] - PHASE_UNIT[b]
    return d / np.abs(d)


def branch_coefficients(
    line_to_line: np.ndarray, rotation: np.ndarray, n_phases: np.ndarray
) -> np.ndarray:
    """``(S, 3)`` complex: line current (A, per site line) per A of per-branch current.

    ``line_to_line`` (S,) bool, ``rotation`` (S, 3) site phase of EVSE L1, L2, L3, ``n_phases``
    (S,) branches drawn (module docstring).
    """
    S = rotation.shape[0]
    out = np.zeros((S, 3), dtype=np.complex128)
    rows = np.arange(S)
    for k in range(3):
        use = n_phases > k
        a = rotation[:, k]
        ln = use & ~line_to_line
        np.add.at(out, (rows[ln], a[ln]), PHASE_UNIT[a[ln]])
        ll = use & line_to_line
        b = rotation[:, (k + 1) % 3]
        u = pair_unit(a[ll], b[ll])
        np.add.at(out, (rows[ll], a[ll]), u)
        np.add.at(out, (rows[ll], b[ll]), -u)
    out[np.abs(out) < 1e-12] = 0.0
    return out


def branch_lines(line_to_line: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``(E, 3, 3)`` 0/1: branch ``j`` of an EVSE (what flows on its line ``Lj``) loads site line
    ``p``.

    Line-to-neutral: line ``rotation[j]`` only. Line-to-line: both lines of the pair
    ``(rotation[j], rotation[j+1])`` (module docstring), each by the branch current's magnitude.
    Summing a branch's current over the lines it loads is the in-phase (triangle-inequality)
    bound of the line phasors, what a fixed draw of unknown split is counted as.
    """
    rot = np.asarray(rotation, dtype=np.int64).reshape(-1, 3)
    ll = np.asarray(line_to_line, dtype=bool).reshape(-1)
    E = rot.shape[0]
    out = np.zeros((E, 3, 3))
    rows = np.arange(E)
    for j in range(3):
        out[rows, j, rot[:, j]] = 1.0
        out[rows[ll], j, rot[ll, (j + 1) % 3]] = 1.0
    return out


def branch_line_weights(
    line_to_line: np.ndarray,
    rotation: np.ndarray,
    n_lines: np.ndarray,
    evse_node: np.ndarray,
    parent: np.ndarray,
    turns_ratio: np.ndarray,
) -> np.ndarray:
    """``(3E, 6N)``: A of line magnitude per A on each EVSE branch (row ``3e + j``), an upper
    bound (triangle inequality) on every node line (column ``3n + p``) and delta/wye primary line
    (column ``3N + 3n + p``) it reaches, walked up the tree.

    A branch weighs 1 on each line it loads (:func:`branch_lines`); through a transformer of
    ratio ``r`` the lines above carry the primary currents, ``I_A = (I_a − I_c)/r`` weighing
    ``(w_a + w_c)/r`` and so on. Branches an EVSE lacks (``j ≥ n_lines[e]``) weigh nothing.
    ``Σ_branches weight · |current|`` bounds every line's magnitude whatever the phases, which
    is what a fixed or worst-case draw of unknown split is counted as.
    """
    rot = np.asarray(rotation, dtype=np.int64).reshape(-1, 3)
    E = rot.shape[0]
    ratio = np.asarray(turns_ratio, dtype=np.float64)
    N = ratio.size
    has = np.arange(3)[None, :] < np.asarray(n_lines).reshape(E, 1)
    x = (branch_lines(line_to_line, rot) * has[:, :, None]).reshape(3 * E, 3)
    out = np.zeros((3 * E, 6 * N))
    row, cur = np.arange(3 * E), np.repeat(np.asarray(evse_node, dtype=np.int64), 3)
    three = np.arange(3)
    while row.size:
        out[row[:, None], cur[:, None] * 3 + three] += x
        tr = ratio[cur] > 0
        if tr.any():
            x = x.copy()
            x[tr] = (x[tr] + np.roll(x[tr], 1, axis=1)) / ratio[cur[tr]][:, None]
            out[row[tr][:, None], (N + cur[tr])[:, None] * 3 + three] += x[tr]
        nxt = np.asarray(parent)[cur]
        keep = nxt >= 0
        row, cur, x = row[keep], nxt[keep], x[keep]
    return out


def delta_wye_primary(coef: np.ndarray, turns_ratio: np.ndarray | float) -> np.ndarray:
    """Primary line currents of a delta/wye transformer from its secondary ones (``(..., 3)``).

    ``I_A = (I_a − I_c)/n``, ``I_B = (I_b − I_a)/n``, ``I_C = (I_c − I_b)/n``.
    """
    n = np.asarray(turns_ratio, dtype=np.float64)
    return (coef - np.roll(coef, 1, axis=-1)) / (n[..., None] if n.ndim else n)


def zonotope_max_abs(coef: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Largest line-current magnitude (A) any instant reaches when each load may draw anything
    between 0 and its amount: ``max |Σ_i t_i·amount_i·coef_i|`` over ``t ∈ [0, 1]^K``, exact.

    ``coef`` ``(K,)`` complex line coefficients (A of line current per A), ``amount`` ``(K, n)``
    signed A (a negative amount is a segment along ``−coef``: discharge, PV), one column per
    instant; returns ``(n,)``. The set of reachable phasors is the zonotope ``Σ_i [0, v_i]`` and
    ``|·|`` is convex, so the maximum is at a vertex; every vertex is ``Σ_{Re(v_i e^{-jψ}) > 0}
    v_i`` for a ``ψ`` between two consecutive angles ``arg(±v_i) ± 90°``, so one sum per arc
    between those breakpoints is exact (the breakpoints depend only on the directions). Segments
    along one direction add up to one segment first (exact), so the cost grows with the number
    of distinct directions, not of loads. Where the same ``coef`` is evaluated again and again
    (the OCPP guard's admission test), prepare it once: :class:`Zonotope`.
    """
    return Zonotope(coef).max_abs(amount)


class Zonotope:
    """:func:`zonotope_max_abs` with its directions prepared once: the breakpoints, arcs and
    per-direction sums depend only on ``coef``, so an evaluation is one ``(arcs, 2K)`` complex
    matrix product with the amounts.

    Parameters
    ----------
    coef
        ``(K,)`` complex line coefficients (A of line current per A).
    """

    def __init__(self, coef: np.ndarray) -> None:
        c = np.asarray(coef, dtype=np.complex128).reshape(-1)
        self.n_loads = c.size
        mag = np.abs(c)
        self._nz = np.flatnonzero(mag > 0)
        c, mag = c[self._nz], mag[self._nz]
        self._scale = np.tile(mag, 2)  # A of a load -> length of its segment
        self._vertex: np.ndarray | None = None
        if c.size == 0:
            return
        u = np.concatenate([c / mag, -c / mag])  # charge along +c, discharge/PV along −c
        key, inv = np.unique(np.round(np.mod(np.angle(u), 2.0 * np.pi), 12), return_inverse=True)
        cut = np.unique(
            np.round(np.mod(key[:, None] + [0.5 * np.pi, 1.5 * np.pi], 2.0 * np.pi), 12)
        )
        mids = cut + np.diff(np.concatenate([cut, cut[:1] + 2.0 * np.pi])) / 2.0
        on = (np.exp(1j * (key[None, :] - mids[:, None]))).real > 0  # (arcs, directions)
        # the vertex of each arc: the segments whose direction points into its half-plane
        self._vertex = on[:, inv.reshape(-1)] * u[None, :]  # (arcs, 2K) complex

    def max_abs(self, amount: np.ndarray) -> np.ndarray:
        """The largest magnitude (A) over the box of ``amount``.

        Parameters
        ----------
        amount
            ``(K, n)`` signed A per load, one column per instant.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` A.
        """
        a = np.asarray(amount, dtype=np.float64).reshape(self.n_loads, -1)
        if self._vertex is None:
            return np.zeros(a.shape[1])
        a = a[self._nz]
        amt = np.concatenate([np.maximum(a, 0.0), np.maximum(-a, 0.0)]) * self._scale[:, None]
        return np.abs(self._vertex @ amt).max(axis=0)


def facet_loss_bound(sector_rad: float | np.ndarray, m: int) -> np.ndarray:
    """Worst-case relative capacity the ``m`` clipped facets give away on a sector of width ``Δ``.

    The largest ``1 − t`` such that some exactly feasible ``r ≥ 0`` (``|Σ r_i c_i| ≤ L``, every
    ``c_i`` in the sector) is admitted by the facets only when scaled by ``t``:

    - ``Δ = 0``: 0 (one exact row);
    - no coefficient clipped, i.e. ``Δ·(1 − 1/2m) ≤ 90°``: ``1 − cos(Δ/2m)`` (m = 4: 0.86 % on
      60°); this is also the loss in any single direction for every ``Δ``;
    - clipped (``Δ·(1 − 1/2m) > 90°``, e.g. m = 4 on a 120° delta/wye primary):
      ``1 − min(cos(Δ/2m), sin Δ)`` — a heavy load on one edge of the sector and a light one on
      the other partly cancel in the phasor sum, which the clipped row does not credit
      (120°: 13.4 %, against 3.4 % in any single direction);
    - ``Δ ≥ 180°`` (magnitude rows; the phasors can cancel completely): 1.
    """
    d = np.asarray(sector_rad, dtype=np.float64)
    base = np.cos(d / (2.0 * m))
    clipped = d * (1.0 - 1.0 / (2.0 * m)) > np.pi / 2.0 + 1e-12
    t = np.where(clipped, np.minimum(base, np.sin(np.minimum(d, np.pi))), base)
    t = np.where(d >= MAX_FACET_SECTOR_RAD, 0.0, t)
    return np.where(d < COLLINEAR_RAD, 0.0, 1.0 - t)


def sectors(
    coef: np.ndarray, group: np.ndarray, n_groups: int, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group, the angular sector its non-zero coefficients span.

    ``coef`` (P,) complex entries of groups ``group`` (P,); ``extra`` (n_groups,) complex, one
    more direction per group (0 = none; used for the base load, which must share the direction
    for a row to be exact). Returns ``(ref, lo, width)`` in rad: the sector is
    ``[ref + lo, ref + lo + width]``; ``width`` is ``+inf`` where the directions are not within
    a half-plane (they can cancel).
    """
    unit = np.zeros(n_groups, dtype=np.complex128)
    nz = np.abs(coef) > 0
    np.add.at(unit, group[nz], coef[nz] / np.abs(coef[nz]))
    if extra is not None:
        en = np.abs(extra) > 0
        unit[en] += extra[en] / np.abs(extra[en])
    ref = np.angle(unit)
    ang = [np.angle(coef[nz]) - ref[group[nz]]]
    grp = [group[nz]]
    if extra is not None:
        ang.append(np.angle(extra[en]) - ref[en])
        grp.append(np.flatnonzero(en))
    a = np.concatenate(ang)
    g = np.concatenate(grp)
    a = (a + np.pi) % (2.0 * np.pi) - np.pi
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    np.minimum.at(lo, g, a)
    np.maximum.at(hi, g, a)
    width = np.where(np.isfinite(lo), hi - lo, 0.0)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    # directions that are not within an open half-plane (or sum to ~0) can cancel
    width = np.where((np.abs(unit) < 1e-9) & (width > 0), np.inf, width)
    width = np.where(width >= MAX_FACET_SECTOR_RAD, np.inf, width)
    return ref, lo, width


def facets(
    coef: np.ndarray, group: np.ndarray, ref: np.ndarray, lo: np.ndarray, width: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The clipped facet coefficients of every entry: ``(entry, facet, value, scale)``.

    For a group of sector ``width`` ``Δ`` (``0 < Δ < 180°``): facet ``k`` of ``m`` has normal
    ``ψ_k = ref + lo + (k + ½)Δ/m``, entry value ``max(Re(c·e^{-jψ_k}), 0)`` and right-hand-side
    scale ``cos(Δ/2m)`` (``scale`` is per group). Groups with ``Δ = +inf`` get one row with
    ``|c|`` and scale 1. Returns arrays over (entry × facet) for the cut groups followed by the
    entries of the magnitude groups (facet 0).
    """
    w = width[group]
    cut = np.isfinite(w)
    e_cut = np.flatnonzero(cut)
    k = np.arange(m)
    psi = (ref[group[e_cut]] + lo[group[e_cut]])[:, None] + (k[None, :] + 0.5) * (
        w[e_cut][:, None] / m
    )
    val = np.maximum((coef[e_cut][:, None] * np.exp(-1j * psi)).real, 0.0)
    e_mag = np.flatnonzero(~cut)
    entry = np.concatenate([np.repeat(e_cut, m), e_mag])
    facet = np.concatenate([np.tile(k, e_cut.size), np.zeros(e_mag.size, np.int64)])
    value = np.concatenate([val.ravel(), np.abs(coef[e_mag])])
    scale = np.where(
        np.isfinite(width), np.cos(np.where(np.isfinite(width), width, 0.0) / (2.0 * m)), 1.0
    )
    return entry, facet, value, scale


def circle_facet_count(m: int) -> int:
    """Facets ``M = clip(4m, 12, 60)`` around the whole circle of a line that carries current
    both ways and whose sector is wider than :data:`SEPARATED_SECTOR_RAD`
    (:func:`two_way_facets`; ``m`` the site's ``phasor_facets``)."""
    return int(min(max(4 * m, 12), 60))


#: A line whose charging sector is at most this wide (rad) needs no coupled rows when it also
#: carries discharge: every charging phasor is at least 120° from every exporting one, so
#: ``|z_c + z_x| ≤ max(|z_c|, |z_x|)`` and the facets of each direction alone suffice.
SEPARATED_SECTOR_RAD = np.pi / 3.0 + 1e-9


def two_way_facets(
    coef: np.ndarray, group: np.ndarray, ref: np.ndarray, lo: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full-circle clipped facets of lines carrying signed currents: ``(entry, facet, charge,
    discharge)``.

    A unit ``i`` with line coefficient ``c`` adds ``c·r`` charging and ``−c·d`` discharging
    (``r, d ≥ 0``). With normals ``ψ_k = ref + lo + (k + ½)·2π/n`` (``n`` facets around the whole
    circle, ``k = 0..n−1``), row ``k`` is ``Σ max(Re(c·e^{-jψ_k}), 0)·r + Σ max(Re(−c·e^{-jψ_k}),
    0)·d ≤ L·cos(π/n) − (fixed loads' clipped projections)``. Every instant's line phasor ``z``
    (any subset of units on, each at most its setpoint) has ``Re(z·e^{-jψ_k}) ≤`` the row's left
    side for every ``k``, and its angle is within ``π/n`` of some ``ψ_k``, so ``|z| ≤ L``: inner
    for both directions at once, every coefficient ≥ 0.
    """
    psi = (ref + lo)[group][:, None] + (np.arange(n)[None, :] + 0.5) * (2.0 * np.pi / n)
    proj = (coef[:, None] * np.exp(-1j * psi)).real
    entry = np.repeat(np.arange(coef.size), n)
    facet = np.tile(np.arange(n), coef.size)
    return entry, facet, np.maximum(proj, 0.0).ravel(), np.maximum(-proj, 0.0).ravel()


def two_way_fixed(
    base: np.ndarray, ref: np.ndarray, lo: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(G, n)`` clipped projections of a fixed load's phasor ``base`` (per A; the base load)
    and of a generator at the same place (``−base``, PV) on the normals of
    :func:`two_way_facets`: what each takes from a row at its worst (on or off)."""
    psi = (ref + lo)[:, None] + (np.arange(n)[None, :] + 0.5) * (2.0 * np.pi / n)
    proj = (base[:, None] * np.exp(-1j * psi)).real
    return np.maximum(proj, 0.0), np.maximum(-proj, 0.0)
