"""``compile_problem``: the orchestration of a compile, in named steps (sessions, variables,
limits, signals, fixed loads, batteries, safety rows, storage, the :class:`Problem`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from itertools import repeat
from operator import attrgetter, sub
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._base import as_model
from ..grid.arrays import _no_signal_arrays, signal_arrays
from ..horizon import Horizon, sample
from ..objective import Objective
from ..problem import Problem, _new_problem
from ..session import Session, as_sessions, check_sessions
from ..signals import Signals, split
from ..site import Site
from ..wiring import branch_coefficients
from .fixed_loads import (
    _base_load_notices,
    _check_reserved,
    _overloaded_reserved,
    _reserved_loads,
)
from .limits import _limits, _raw_limits, _step_limits, _StepLimits
from .lines import _line_currents, _line_shape, _Lines, _reserved_lines
from .rows import _assemble_rows, _group_labels, _row_template
from .series import _feasible_floor
from .storage import _battery_columns, _BatteryColumns, _compile_storage, _v2x_sessions
from .tree import _carries, _session_anc, _site_tree, _SiteTree

#: ``signals=None``: one frozen ``Signals()`` for every call, so that the limits kept per signals
#: object (:mod:`loadopt.compile.limits`) serve a caller that passes none, too.
_NO_SIGNALS = Signals()


def compile_problem(
    site: Site,
    sessions: Iterable[Session],
    horizon: Horizon,
    signals: Signals | None = None,
    objective: Objective | None = None,
    *,
    reserved_a: np.ndarray | None = None,
) -> Problem:
    """Compile a site, its sessions and the signals over ``horizon`` into a :class:`Problem`.

    Sessions that do not overlap the horizon are kept (with no variables: they cannot charge) so
    that ids stay stable; a session that has already left simply gets nothing. A mapping in place
    of a model is validated into it.

    Parameters
    ----------
    site
        The site: node tree (limits in A per phase and kW), EVSEs, batteries.
    sessions
        The sessions (energy in kWh, currents in A, arrival and departure aware datetimes).
    horizon
        The periods to plan.
    signals
        Prices (per kWh), base load, PV and grid limits (kW), grid signals; default none.
    objective
        Weights of the objective; default :class:`Objective`.
    reserved_a
        ``(E, 3, T)`` A per EVSE line L1, L2, L3 (EVSEs in ``site.evses`` order) per period:
        current an EVSE may draw whatever the plan says (a station that has not accepted a lower
        limit, a silent or unknown one at its hardware maximum, a vehicle drawing above its
        limit). It is a fixed load on every limit above the EVSE, exactly like the base load
        (right-hand sides drop, clamped at 0 with a notice); a session on a reserved EVSE is
        planned within ``[0, min(its max, smallest reserved line it draws on)]`` in those
        periods (so what it is sent never exceeds what is counted for it) and its variables
        there carry no safety-row entries (its draw is already counted) — except where the
        fixed loads alone already exceed a limit above the EVSE: there it is planned at 0 A,
        the only limit that helps (``compile.fixed_loads._overloaded_reserved``).

    Returns
    -------
    Problem
        Arrays only: variables (session, period), safety rows ``G r <= h`` (A, kW) with labels,
        EVSE and session arrays, limits and signals per period; ``notices`` say where a fixed
        load alone breaks a limit.

    Raises
    ------
    InputError
        Inconsistent inputs (unknown EVSE, duplicate session, two sessions on one EVSE at once,
        a bad ``reserved_a``) and arguments of the wrong type (a string for the sessions).
    ModelError
        A mapping that is not a valid model.
    """
    site = as_model(site, Site, "site")
    sessions = as_sessions(sessions)
    horizon = as_model(horizon, Horizon, "horizon")
    signals = _NO_SIGNALS if signals is None else as_model(signals, Signals, "signals")
    objective = Objective() if objective is None else as_model(objective, Objective, "objective")
    tree = _site_tree(site)
    T = horizon.n_periods
    S = len(sessions)
    # every field the compile reads, in one C-level pass over the sessions
    fields = _SessionFields(*zip(*map(_FIELDS, sessions), strict=True)) if S else _NO_FIELDS
    ids, on_evse = set(fields.id), set(fields.evse)
    if not (len(ids) == len(on_evse) == S and on_evse <= tree.evse_index.keys()):
        check_sessions(sessions, tree.evse_index)  # (what is wrong, or two at different times)
    notices: list[str] = []

    # --- tree ------------------------------------------------------------------------------
    node_ids, node_index = tree.node_ids, tree.node_index
    parent = tree.parent
    evse_ids = tree.evse_ids
    E_ = len(evse_ids)
    # lines an EVSE does not have carry nothing
    reserved = (
        None
        if reserved_a is None
        else _check_reserved(reserved_a, E_, T, evse_ids) * tree.has_line[:, :, None]
    )
    held = reserved is not None and bool(reserved.any())  # some reserved draw

    # --- sessions and their variables ----------------------------------------------------------
    sa = _session_arrays(tree, fields, horizon)
    vs, vt, var_ub, var_free, var_kwh = _variables(sa, reserved if held else None, horizon.period_s)
    s_anc_csr = _session_anc(tree, sa.s_evse)  # (S, N): sessions under each node

    # --- limits, signals and fixed loads on the horizon (compile.limits) ----------------------
    if not signals.grid_signals and not held:
        lim = _step_limits(site, tree, signals, horizon)  # kept while no time moves it
    else:
        lim = _signal_limits(site, tree, signals, horizon, sa, s_anc_csr, vs, vt, var_ub, reserved)
    sig, node_cur, node_kw, base_a = lim.sig, lim.node_cur, lim.node_kw, lim.base_a
    if reserved is None:
        reserved = _no_reserve(E_, T)

    # --- batteries: charge columns in the same rows (A per phase, balanced over R, S, T) -------
    bat = _battery_columns(site, node_index, parent, T)
    evses = [site.evses[k] for k in sa.s_evse.tolist()]
    if fields.v2x.count(None) != S:
        bidir = _v2x_sessions(sessions, evses, notices)
    else:  # (what _v2x_sessions says without V2X parameters)
        bidir = np.zeros(len(sessions), dtype=bool)

    # --- safety rows -------------------------------------------------------------------------
    sr = _safety_rows(site, tree, sa, s_anc_csr, bat, bidir, vs, vt, var_free, lim)
    lines, h = sr.lines, sr.h
    G, Gb = sr.G, sr.Gb

    if lim.noticed:  # some fixed load alone breaks a limit: say where (the text names periods)
        fixed = "base load and reserved draw" if held else "base load"
        node_res_a = lim.line_reserved[: 3 * len(node_ids)].reshape(len(node_ids), 3, T)
        for k in map(
            int,
            np.flatnonzero(lim.carries | node_res_a.any(axis=(1, 2)) | lim.node_res_kw.any(axis=1)),
        ):
            notices.extend(
                _base_load_notices(node_ids[k], lim.cur_rhs[k], lim.kw_rhs[k], None, horizon, fixed)
            )
        notices.extend(_base_load_notices("", None, None, lim.import_rhs, horizon, fixed))
    if not var_free.all():  # a reservation that does not fit: its vehicle is handed 0 A
        zero = _overloaded_reserved(
            lim.cur_rhs,
            lim.kw_rhs,
            lim.import_rhs,
            lines.limit - lines.base_mag - lines.reserved,
            s_anc_csr,
            vs,
            vt,
            var_free,
        )
        var_ub = np.where(zero, 0.0, var_ub)
    h = np.maximum(h, 0.0)  # where the base load alone breaks a limit, EVs get nothing

    # --- storage: V2X sessions and batteries -------------------------------------------------
    storage = None
    row_kind, row_node, row_phase, row_period, row_facet = (
        sr.row_kind,
        sr.row_node,
        sr.row_phase,
        sr.row_period,
        sr.row_facet,
    )
    if bat.B or bidir.any():
        storage, extra = _compile_storage(
            site,
            sessions,
            evses,
            horizon,
            signals,
            notices,
            bidir=bidir,
            vs=vs,
            vt=vt,
            var_free=var_free,
            avail=sa.avail,
            kw_per_a=sa.kw_per_a,
            phase_mask=sa.phase_mask,
            s_anc=sr.s_anc_csr,
            bat_anc=bat.anc,
            bc=(bat.battery, bat.period),
            Gb=sp.csr_matrix((G.shape[0], 0)) if Gb is None else Gb,
            bat_kw_per_a=bat.kw_per_a,
            node_cur=node_cur,
            node_kw=node_kw,
            carries=lim.carries,
            row_kind=sr.row_kind,
            row_period=sr.row_period,
            node_ids=node_ids,
            lines=lines,
            base_a=base_a,
            sess_var=_variable_sessions(vs, var_free, len(sessions)),
            bat_var=bat.var,
        )
        if extra is not None:  # coupled rows of lines carrying current both ways
            G = sp.vstack([G, extra[0]]).tocsr()
            h, row_kind, row_node, row_phase, row_period, row_facet = (
                np.concatenate([a, b.astype(a.dtype)])
                for a, b in zip(
                    (h, row_kind, row_node, row_phase, row_period, row_facet),
                    extra[1:],
                    strict=True,
                )
            )

    # --- the problem -------------------------------------------------------------------------
    bounds = horizon.period_bounds_s()
    dep_h = np.clip(
        sa.dep_s / 3600.0,
        horizon.step_h,
        T * horizon.step_h if horizon.uniform else bounds[-1] / 3600.0,
    )
    var_reserved = ~var_free
    var_floor_a = np.zeros(vs.size)
    # read-only: what this call made (the rest is already: the site tree's arrays, the step
    # limits', the line shape's)
    for a in (
        *((*sa, vs, vt, var_ub, var_kwh) if S else ()),  # (without sessions: shared, read-only)
        dep_h,
        h,
        row_kind,
        row_node,
        row_phase,
        row_period,
        row_facet,
        var_reserved,
        var_floor_a,
        reserved,
    ):
        a.setflags(write=False)
    ea = tree.evse_arrays
    problem = _new_problem(  # (every field, in field order)
        horizon=horizon,
        site=site,
        sessions=sessions,
        signals=signals,
        objective=objective,
        node_ids=node_ids,
        node_parent=parent,
        evse_ids=evse_ids,
        session_ids=fields.id,
        session_evse=sa.s_evse,
        session_phase_mask=sa.phase_mask,
        session_kw_per_a=sa.kw_per_a,
        session_max_current=sa.max_cur,
        session_min_current=sa.min_cur,
        session_energy_kwh=sa.energy,
        session_priority=sa.prio,
        session_departure_h=dep_h,
        avail=sa.avail,
        session_anc=sr.s_anc_csr,
        evse_node=tree.evse_node,
        evse_phases=ea["evse_phases"],
        evse_site_phases=ea["evse_site_phases"],
        evse_voltage_v=ea["evse_voltage_v"],
        evse_phase_switching=ea["evse_phase_switching"],
        evse_max_current=ea["evse_max_current"],
        evse_min_current=ea["evse_min_current"],
        evse_has_levels=ea["evse_has_levels"],
        evse_levels_ptr=ea["evse_levels_ptr"],
        evse_levels_da=ea["evse_levels_da"],
        session_arrival_s=sa.arr_s,
        session_departure_s=sa.dep_s,
        evse_anc=tree.anc,
        var_session=vs,
        var_period=vt,
        var_ub=var_ub,
        var_kwh_per_a=var_kwh,
        G=G,
        h=h,
        row_kind=row_kind,
        row_node=row_node,
        row_phase=row_phase,
        row_period=row_period,
        row_facet=row_facet,
        line_coef=lines.shape.coef,
        line_coef_l1=lines.shape.coef_l1,
        line_base=lines.shape.base,
        line_limit=lines.limit,
        line_exact=lines.exact,
        line_sector_rad=lines.shape.sector_rad,
        line_reserved_a=lines.reserved,
        facet_loss_bound=lines.loss_bound,
        node_current_limit=node_cur,
        node_power_limit_kw=node_kw,
        base_load_kw=lim.base_kw,
        base_load_a=base_a,
        node_carries_base=lim.carries,
        pv_kw=lim.pv_kw,
        import_price=lim.price,
        export_price=lim.export_price,
        import_cap_kw=lim.import_cap,
        dr_event_ids=sig.ids,
        dr_cap_kw=sig.cap_kw,
        signal_kind=sig.kind,
        signal_node=sig.node,
        signal_required_kw=sig.required_kw,
        signal_floor_kw=sig.floor_kw,
        signal_offset_s=sig.offset_s,
        setpoint_kw=sig.setpoint_kw,
        setpoint_penalty=sig.setpoint_penalty,
        export_cap_kw=sig.export_cap_kw,
        export_penalty=sig.export_penalty,
        var_floor_a=var_floor_a,
        notices=tuple(notices),
        evse_reserved_a=reserved,
        var_reserved=var_reserved,
        storage=storage,
    )
    if sig.floor_a.size and bool((sig.floor_a > 0).any()):
        floor = _feasible_floor(problem, sig.floor_a)
        floor.setflags(write=False)
        object.__setattr__(problem, "var_floor_a", floor)
    return problem


class _SessionArrays(NamedTuple):
    """Per-session arrays (S,) (``phase_mask`` (S, 3), ``avail`` (S, T))."""

    s_evse: np.ndarray  #: EVSE index
    n_ph: np.ndarray  #: phases the session draws on (EVSE and vehicle)
    line_to_line: np.ndarray  #: bool, its EVSE is wired line-to-line
    phase_mask: np.ndarray  #: (S, 3) bool, the site lines the session loads
    kw_per_a: np.ndarray  #: kW per A at its EVSE's voltage and phases
    max_cur: np.ndarray  #: A, EVSE and vehicle
    min_cur: np.ndarray  #: A, the session's or its EVSE's, at most ``max_cur``
    energy: np.ndarray  #: kWh wanted
    prio: np.ndarray  #: priority
    arr_s: np.ndarray  #: s from the horizon start
    dep_s: np.ndarray  #: s from the horizon start
    avail: np.ndarray  #: (S, T) plugged-in fraction of each period


class _SessionFields(NamedTuple):
    """The sessions' fields the compile reads, one tuple each (session order)."""

    id: tuple
    evse: tuple
    phases: tuple
    max_current: tuple
    min_current: tuple
    energy_kwh: tuple
    priority: tuple
    arrival: tuple
    departure: tuple
    v2x: tuple


_FIELDS = attrgetter(*_SessionFields._fields)
_NO_FIELDS = _SessionFields(*((),) * len(_SessionFields._fields))


def _session_arrays(tree: _SiteTree, fields: _SessionFields, horizon: Horizon) -> _SessionArrays:
    """The sessions (their ``fields``) as arrays, each taken by its EVSE from the site's per-EVSE
    arrays (without sessions: the empty arrays of ``T`` periods, shared and read-only)."""
    T = horizon.n_periods
    if not fields.id:
        got = _NO_SESSIONS.get(T)
        if got is None:
            got = _session_arrays_of(tree, fields, horizon)
            for a in got:
                a.setflags(write=False)
            if len(_NO_SESSIONS) >= 64:
                _NO_SESSIONS.clear()
            _NO_SESSIONS[T] = got
        return got
    return _session_arrays_of(tree, fields, horizon)


_NO_SESSIONS: dict[int, _SessionArrays] = {}  # (one per number of periods: a few)


def _session_arrays_of(tree: _SiteTree, fields: _SessionFields, horizon: Horizon) -> _SessionArrays:
    S = len(fields.id)
    T = horizon.n_periods
    phases, max_a, min_a = fields.phases, fields.max_current, fields.min_current
    s_evse = np.fromiter(map(tree.evse_index.__getitem__, fields.evse), np.int64, S)
    ea = tree.evse_arrays  # per-EVSE arrays, taken per session by its EVSE
    # what a k-phase vehicle on EVSE e draws on: row 3e + k - 1 of the site's table
    tbl = _evse_phase_table(tree)
    row = 3 * s_evse + np.array(phases, np.int64) - 1
    n_ph = tbl.n_ph[row]
    line_to_line = tbl.line_to_line[row]
    phase_mask = tbl.phase_mask[row]  # site lines the session loads
    kw_per_a = tbl.kw_per_a[row]
    max_cur = np.minimum(ea["evse_max_current"][s_evse], np.array(max_a, dtype=np.float64))
    n_none = min_a.count(None)
    if n_none == S:  # the EVSEs' minimum for every session
        min_cur = np.minimum(ea["evse_min_current"][s_evse], max_cur)
    elif not n_none:
        min_cur = np.minimum(np.array(min_a, dtype=np.float64), max_cur)
    else:
        s_min = np.array([np.nan if x is None else x for x in min_a], dtype=np.float64)
        min_cur = np.where(np.isnan(s_min), ea["evse_min_current"][s_evse], s_min)
        min_cur = np.minimum(min_cur, max_cur)
    energy = np.array(fields.energy_kwh, dtype=np.float64)
    prio = np.array(fields.priority, dtype=np.float64)
    # s from the horizon start (Horizon.seconds_from_start without a call per session)
    start = repeat(horizon.start_utc)
    arr_s = np.fromiter(map(_SECONDS, map(sub, fields.arrival, start)), np.float64, S)
    dep_s = np.fromiter(map(_SECONDS, map(sub, fields.departure, start)), np.float64, S)
    bounds = horizon.period_bounds_s()
    overlap = np.minimum(dep_s[:, None], bounds[None, 1:]) - np.maximum(
        arr_s[:, None], bounds[None, :-1]
    )
    period_s = horizon.period_s
    avail = np.clip(overlap / period_s[None, :], 0.0, 1.0).reshape(S, T)
    return _SessionArrays(
        s_evse,
        n_ph,
        line_to_line,
        phase_mask,
        kw_per_a,
        max_cur,
        min_cur,
        energy,
        prio,
        arr_s,
        dep_s,
        avail,
    )


_SECONDS = timedelta.total_seconds


class _PhaseTable(NamedTuple):
    """Per EVSE and phase count of the vehicle: row ``3e + k − 1`` for a ``k``-phase vehicle on
    EVSE ``e`` (read-only, kept in the site's tree)."""

    n_ph: np.ndarray  #: (3E,) phases it draws on: min(EVSE phases, k)
    line_to_line: np.ndarray  #: (3E,) bool, the EVSE is wired line-to-line
    phase_mask: np.ndarray  #: (3E, 3) bool, the site lines it loads
    kw_per_a: np.ndarray  #: (3E,) kW per A at the EVSE's voltage on those phases


def _evse_phase_table(tree: _SiteTree) -> _PhaseTable:
    """The site's :class:`_PhaseTable` (built once per site tree)."""
    got = tree.memo.get("phase_table")
    if got is None:
        E = len(tree.evse_ids)
        e = np.repeat(np.arange(E), 3)
        k = np.tile(np.arange(1, 4, dtype=np.int64), E)
        ea = tree.evse_arrays
        n_ph = np.minimum(ea["evse_phases"][e], k)
        got = _PhaseTable(
            n_ph,
            tree.line_to_line[e],
            _evse_phase_masks(tree)[3 * e + n_ph - 1],
            ea["evse_voltage_v"][e] * n_ph / 1000.0,
        )
        for a in got:
            a.setflags(write=False)
        tree.memo["phase_table"] = got
    return got


def _evse_phase_masks(tree: _SiteTree) -> np.ndarray:
    """(3E, 3) bool: row ``3e + k − 1``, the site lines EVSE ``e`` loads drawing ``k`` phases
    (its branches' line phasors, :func:`loadopt.wiring.branch_coefficients`, non-zero); kept in
    the site's tree, read-only."""
    got = tree.memo.get("phase_masks")
    if got is None:
        E = len(tree.evse_ids)
        e = np.repeat(np.arange(E), 3)
        k = np.tile(np.arange(1, 4, dtype=np.int64), E)
        rot = tree.evse_arrays["evse_site_phases"].reshape(E, 3)[e]
        got = np.abs(branch_coefficients(tree.line_to_line[e], rot, k)) > 0
        got.setflags(write=False)
        tree.memo["phase_masks"] = got
    return got


def _variables(
    sa: _SessionArrays, reserved: np.ndarray | None, period_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One column per plugged-in (session, period): ``(var_session, var_period, var_ub A,
    var_free, var_kwh_per_a)``. On a reserved EVSE the session's own draw is inside the
    reservation: its bound is at most the smallest reserved line it draws on and it is not free (no
    safety-row entries). Without sessions: the empty arrays, shared and read-only."""
    if not sa.avail.shape[0]:
        if not _NO_VARIABLES:
            got = _variables_of(sa, None, period_s)
            for a in got:
                a.setflags(write=False)
            _NO_VARIABLES.append(got)
        return _NO_VARIABLES[0]
    return _variables_of(sa, reserved, period_s)


_NO_VARIABLES: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []


def _variables_of(
    sa: _SessionArrays, reserved: np.ndarray | None, period_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # gathers by the int64 positions themselves (an int32 index array is converted first) and
    # from the flat (S·T) array (a 1-D take, not a 2-D fancy index)
    T = sa.avail.shape[1]
    flat = np.flatnonzero((sa.avail > 0) & (sa.max_cur[:, None] > 0))
    vs = flat // T
    vt = flat - vs * T
    V = vs.size
    var_ub = sa.max_cur[vs]
    # reserved EVSEs: the session's own draw is inside the reservation (no safety-row entries)
    if reserved is None:
        var_free = np.ones(V, dtype=bool)
    else:
        held = reserved[sa.s_evse[vs], :, vt]  # (V, 3) A on the EVSE's lines
        var_free = held.max(axis=1, initial=0.0) <= 0
        # the plan must stay inside the reservation on every line the vehicle draws on: the
        # EVSE may draw the larger of the two, and only the reservation is counted
        uses = np.arange(3)[None, :] < sa.n_ph[vs][:, None]
        var_res = np.where(uses, held, np.inf).min(axis=1, initial=np.inf)
        var_ub = np.where(var_free, var_ub, np.minimum(var_ub, var_res))
    var_kwh = sa.kw_per_a[vs] * (period_s[vt] / 3600.0) * sa.avail.reshape(-1)[flat]
    return vs.astype(np.int32), vt.astype(np.int32), var_ub, var_free, var_kwh


class _SafetyRows(NamedTuple):
    """The safety rows ``G r + Gb c <= h`` (``h`` before clamping at 0) and what the notices and
    the storage need of them."""

    G: sp.csr_matrix  #: (R, V) EV columns
    Gb: sp.csr_matrix | None  #: (R, Vb) battery charge columns (None: no battery)
    h: np.ndarray
    row_kind: np.ndarray
    row_node: np.ndarray
    row_phase: np.ndarray
    row_period: np.ndarray
    row_facet: np.ndarray
    lines: _Lines
    s_anc_csr: sp.csr_matrix  #: (S, N) sessions under each node (read-only, shared)


def _safety_rows(
    site: Site,
    tree: _SiteTree,
    sa: _SessionArrays,
    s_anc_csr: sp.csr_matrix,
    bat: _BatteryColumns,
    bidir: np.ndarray,
    vs: np.ndarray,
    vt: np.ndarray,
    var_free: np.ndarray,
    lim: _StepLimits,
) -> _SafetyRows:
    """Every safety row: exact line currents, phasor facets, node power, site import (grid
    limit and DR caps), EV columns beside the battery charge columns.

    The coefficients come from the row template of the line shape (:func:`_row_template`,
    rebuilt only when the vehicles on the EVSEs change); this step supplies only its variables
    (:func:`_assemble_rows`) and the right-hand sides: those of the step's limits ``lim``, the
    facet rows' scaled by the line shape (kept beside the shape while ``lim`` is kept)."""
    T = lim.base_a.size
    N = len(tree.node_ids)
    S = sa.s_evse.size
    V, B = vs.size, bat.B
    m = site.phasor_facets
    shape = _line_shape(
        site,
        sa.s_evse,
        tree.parent,
        sa.n_ph,
        sa.line_to_line,
        lim.k_base,
        lim.has_base,
        bat.node if B else None,
        bidir if bidir.any() else None,
    )
    kept = shape.memo.get("step_rhs")  # {id(lim): (lim, (lines, rhs, finite))}
    got = None if kept is None else kept.get(id(lim))
    if got is not None and got[0] is lim:
        lines, rhs, finite = got[1]
    else:
        lines = _line_currents(shape, lim.line_limit, lim.line_base_mag, lim.line_reserved, m)
        # the other limited lines: facets of the phasor disc over the sector (or magnitude rows)
        room = (lim.line_limit - lim.line_base_mag - lim.line_reserved) * shape.scale[:, None]
        rhs = np.concatenate(
            [
                lim.cur_rhs.reshape(-1),
                np.repeat(room, m, axis=0).reshape(-1),
                lim.kw_rhs.reshape(-1),
                lim.import_rhs,
            ]
        )
        finite = np.isfinite(rhs)
        # the same on every step with these vehicles: kept beside their shape, bounded: ≤ 16
        # limits objects (a tiered horizon has ~10 lengths) and ≤ 4 MB of right-hand sides
        # per shape (none of a site too large for one: each of the shapes vehicles coming and
        # going leave behind would hold its own)
        if lim.kept and rhs.nbytes <= _RHS_BYTES:
            for a in (rhs, finite, lines.exact):
                a.setflags(write=False)
            if kept is None or len(kept) >= 16 or (len(kept) + 1) * rhs.nbytes > _RHS_BYTES:
                kept = shape.memo["step_rhs"] = {}
            kept[id(lim)] = (lim, (lines, rhs, finite))
    tpl = _row_template(shape, s_anc_csr, sa.kw_per_a, bat.anc, bat.kw_per_a, N, m)
    if B:  # the battery charge columns after the vehicles'
        unit = np.concatenate([vs, S + bat.battery])
        period = np.concatenate([vt, bat.period])
        free = np.concatenate([var_free, np.ones(bat.battery.size, dtype=bool)])
    else:
        unit, period, free = vs.astype(np.int64), vt, var_free
    G, Gb, h, group, row_period = _assemble_rows(tpl, unit, period, free, rhs, T, V, finite)
    row_kind, row_node, row_phase, row_facet = (x[group] for x in _group_labels(N, m))
    return _SafetyRows(
        G, Gb, h, row_kind, row_node, row_phase, row_period, row_facet, lines, tpl.s_anc_csr
    )


def _no_reserve(E: int, T: int) -> np.ndarray:
    """The ``(E, 3, T)`` zeros of ``Problem.evse_reserved_a`` without reserved draw (read-only,
    shared by the problems of that size)."""
    got = _ZEROS.get((E, T))
    if got is None:
        got = np.zeros((E, 3, T))
        got.setflags(write=False)
        if len(_ZEROS) >= 8:
            _ZEROS.clear()
        _ZEROS[(E, T)] = got
    return got


_ZEROS: dict[tuple[int, int], np.ndarray] = {}
_RHS_BYTES = 4 * 2**20


def _signal_limits(
    site: Site,
    tree: _SiteTree,
    signals: Signals,
    horizon: Horizon,
    sa: _SessionArrays,
    s_anc_csr: sp.csr_matrix,
    vs: np.ndarray,
    vt: np.ndarray,
    var_ub: np.ndarray,
    reserved: np.ndarray | None,
) -> _StepLimits:
    """The step's limits with grid signals (:mod:`loadopt.grid.arrays`: caps per node, prices,
    setpoints, floors, which depend on the sessions) or reserved draw (a fixed load on every
    limit above its EVSE), built for this call."""
    raw = _raw_limits(site, tree, signals, horizon)
    T = horizon.n_periods
    parent, root, node_index = tree.parent, tree.root, tree.node_index
    sig = (
        _no_signal_arrays(raw.node_kw.shape[0], T, vs.size)
        if not signals.grid_signals
        else signal_arrays(
            signals.grid_signals,
            signals.grid_policy,
            site.id,
            horizon,
            node_index,
            root,
            _carries(
                parent, root if site.base_load_node is None else node_index[site.base_load_node]
            ),
            s_anc_csr,
            sa.kw_per_a * sa.max_cur,
            sa.energy,
            sa.arr_s,
            sa.dep_s,
            sa.avail,
            sample(*split(signals.base_load_kw), horizon, "min"),
            sample(*split(signals.pv_kw), horizon, "max"),
            raw.grid_kw,
            raw.node_kw,
            vs,
            vt,
            var_ub,
            sa.kw_per_a,
        )
    )
    if reserved is None or not reserved.any():
        return _limits(site, tree, signals, raw, sig, None, None)
    # reserved draw per EVSE line -> per site phase, node and kW (fixed loads), and its line
    # magnitudes carried up the tree
    res = _reserved_loads(reserved, tree, T)
    lines_reserved = _reserved_lines(res[0], tree.evse_node, parent, tree.ratio, len(tree.node_ids))
    return _limits(site, tree, signals, raw, sig, res, lines_reserved)


def _variable_sessions(vs: np.ndarray, var_free: np.ndarray, S: int) -> sp.csr_matrix:
    """(V, S) variable -> session incidence of the free variables (the storage rows use it)."""
    free_v = np.flatnonzero(var_free)
    return sp.csr_matrix((np.ones(free_v.size), (free_v, vs[free_v])), shape=(vs.size, S))
