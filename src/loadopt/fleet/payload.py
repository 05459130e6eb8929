"""What travels between the fleet coordinator and its workers: numpy arrays, not pydantic objects.

A :class:`~loadopt.problem.Problem` holds its inputs twice: as validated objects (site, sessions,
signals) and as the compiled arrays the solvers read. Only the arrays travel
(:func:`pack_problem`), narrowed to the smallest integer type that holds them exactly, with the
safety matrix sent as its structure only when its coefficients follow from the row kinds (1 on a
current row, the session's kW per A on a power or import row) and limits that do not change over
the horizon sent once. For the 50-EVSE × 96-period benchmark site that is ~6× fewer bytes than
pickling the problem, and no model validation on either side.

:func:`unpack_problem` rebuilds a ``Problem`` on the worker with the same arrays. Everything after
``compile`` reads arrays only, so its object fields are stand-ins built without validation
(``model_construct``) holding only what is still read from objects: the horizon, the objective
weights and the peak so far; the site and the sessions are empty. Nothing on the worker produces
KPIs or
OCPP payloads: the worker returns per-variable deci-amps (:class:`SolveOutcome`) and the
coordinator builds the :class:`~loadopt.schedule.Schedule` on the original problem, after
:func:`loadopt.safety.project` on it (which leaves a feasible schedule unchanged).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..compile.tree import _ancestors
from ..horizon import Horizon
from ..objective import Objective
from ..problem import ROW_NODE_CURRENT, Problem
from ..signals import Signals
from ..site import Site

#: Problem fields that are not sent: derived on the worker or never read there.
_NOT_SENT = frozenset({"G", "session_anc", "evse_anc", "avail"})
#: The object fields: rebuilt on the worker as stand-ins.
_OBJECTS = frozenset({"horizon", "site", "sessions", "signals", "objective"})


@dataclass(frozen=True, eq=False)
class ProblemPayload:
    """The arrays of one problem as they travel to a worker (see the module docstring)."""

    key: str  #: the site's key in the fleet
    start: datetime  #: horizon start (aware)
    step_s: int
    n_periods: int
    objective: dict[str, float]
    peak_so_far_kw: float
    session_ids: tuple[str, ...]
    node_ids: tuple[str, ...]
    evse_ids: tuple[str, ...]
    dr_event_ids: tuple[str, ...]
    notices: tuple[str, ...]
    #: field name -> encoded array (:func:`_encode`); None for an optional array that is None
    arrays: dict[str, tuple | None]
    other: dict[str, Any] = field(default_factory=dict)  #: small non-array fields
    #: period lengths of a non-uniform horizon (:attr:`loadopt.Horizon.periods_s`)
    periods_s: tuple[int, ...] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of array data carried (what dominates the pickled size)."""
        return sum(
            x.nbytes
            for e in self.arrays.values()
            if e is not None
            for x in e
            if isinstance(x, np.ndarray)
        )


def _narrow(a: np.ndarray) -> np.ndarray:
    """The smallest signed integer type that holds ``a`` exactly (others unchanged)."""
    if a.dtype.kind not in "iu" or a.size == 0:
        return a
    lo, hi = int(a.min()), int(a.max())
    for t in (np.int8, np.int16, np.int32):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return a.astype(t)
    return a


def _encode(a: np.ndarray) -> tuple:
    """An exact, compact form of ``a``: one value when all entries are equal, rows constant
    over the last axis (limits that do not change over the horizon) as one value each, integers
    narrowed; NaN entries always travel as they are."""
    dt = a.dtype.str
    flat = a.reshape(-1)
    if flat.size and a.dtype.kind != "O":
        with np.errstate(invalid="ignore"):
            if bool(np.all(flat == flat[0])):
                return ("const", a.shape, flat[0].item(), dt)
    if a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] > 1:
        rows = a.reshape(-1, a.shape[-1])
        with np.errstate(invalid="ignore"):
            const = np.all(rows == rows[:, :1], axis=1)
        if const.any():
            return ("rows", a.shape, np.where(const, rows[:, 0], np.nan), rows[~const], dt)
    return ("raw", _narrow(a), dt)


def _decode(e: tuple) -> np.ndarray:
    kind = e[0]
    if kind == "const":
        _, shape, value, dt = e
        return np.full(shape, value, dtype=dt)
    if kind == "rows":
        _, shape, vals, varying, dt = e
        const = ~np.isnan(vals)
        out = np.empty((vals.size, shape[-1]), dtype=dt)
        out[const] = vals[const, None]
        out[~const] = varying
        return out.reshape(shape)
    _, arr, dt = e
    return arr.astype(dt, copy=False)


def _derived_G_data(
    row_kind: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    var_session: np.ndarray,
    kw_per_a: np.ndarray,
) -> np.ndarray:
    """Safety-matrix coefficients as compile writes them: 1 on current rows, kW/A elsewhere."""
    kind = np.repeat(row_kind, np.diff(indptr))
    return np.where(kind == ROW_NODE_CURRENT, 1.0, kw_per_a[var_session[indices]])


def pack_problem(problem: Problem, key: str) -> ProblemPayload:
    """The lean payload of ``problem`` for site ``key`` (see the module docstring)."""
    arrays: dict[str, tuple | None] = {}
    other: dict[str, Any] = {}
    for f in dataclasses.fields(problem):
        if f.name in _NOT_SENT or f.name in _OBJECTS:
            continue
        v = getattr(problem, f.name)
        if isinstance(v, np.ndarray):
            arrays[f.name] = _encode(v)
        elif v is None:
            arrays[f.name] = None
        else:  # ids, notices, signal kinds: small tuples of strings
            other[f.name] = v
    G = problem.G.tocsr()
    arrays["G_indptr"] = _encode(G.indptr)
    arrays["G_indices"] = _encode(G.indices)
    derived = _derived_G_data(
        problem.row_kind, G.indptr, G.indices, problem.var_session, problem.session_kw_per_a
    )
    # a row kind with other coefficients (added after this was written) travels as it is
    if not np.array_equal(derived, G.data):
        arrays["G_data"] = _encode(np.asarray(G.data))
    hz = problem.horizon
    return ProblemPayload(
        key=key,
        start=hz.start,
        step_s=hz.step_s,
        n_periods=hz.n_periods,
        objective=problem.objective.model_dump(),
        peak_so_far_kw=problem.signals.peak_so_far_kw,
        session_ids=problem.session_ids,
        node_ids=problem.node_ids,
        evse_ids=problem.evse_ids,
        dr_event_ids=problem.dr_event_ids,
        notices=problem.notices,
        arrays=arrays,
        other=other,
        periods_s=hz.periods_s,
    )


def unpack_problem(payload: ProblemPayload) -> Problem:
    """The worker's :class:`Problem`: the same arrays, stand-in objects (module docstring)."""
    a: dict[str, Any] = {k: (None if e is None else _decode(e)) for k, e in payload.arrays.items()}
    indptr, indices = a.pop("G_indptr"), a.pop("G_indices")
    G_data = a.pop("G_data", None)
    T = payload.n_periods
    data = (
        G_data
        if G_data is not None
        else _derived_G_data(
            a["row_kind"], indptr, indices, a["var_session"], a["session_kw_per_a"]
        )
    )
    G = sp.csr_matrix((data, indices, indptr), shape=(a["h"].size, a["var_session"].size))
    N = len(payload.node_ids)
    session_anc = _ancestors(
        a["evse_node"][a["session_evse"]].astype(np.int64), a["node_parent"], N
    )
    evse_anc = _ancestors(a["evse_node"].astype(np.int64), a["node_parent"], N)
    horizon = Horizon.model_construct(
        start=payload.start, step_s=payload.step_s, n_periods=T, periods_s=payload.periods_s
    )
    site = Site.model_construct(id=payload.key, nodes=(), evses=())
    a["avail"] = np.full((len(payload.session_ids), T), np.nan)  # never read on a worker
    for v in a.values():
        if v is not None:
            v.setflags(write=False)
    other = {
        k: v
        for k, v in payload.other.items()
        if k not in ("node_ids", "evse_ids", "session_ids", "dr_event_ids", "notices")
    }
    return Problem(
        horizon=horizon,
        site=site,
        sessions=(),
        signals=Signals.model_construct(peak_so_far_kw=payload.peak_so_far_kw),
        objective=Objective.model_construct(None, **payload.objective),
        node_ids=payload.node_ids,
        evse_ids=payload.evse_ids,
        session_ids=payload.session_ids,
        dr_event_ids=payload.dr_event_ids,
        notices=payload.notices,
        G=G,
        session_anc=session_anc,
        evse_anc=evse_anc,
        **other,
        **a,
    )


@dataclass(frozen=True, eq=False)
class SolveOutcome:
    """What a worker returns for one site: per-variable deci-amps and how they were found."""

    key: str
    x_da: np.ndarray | None  #: (V,) deci-amps (None: the worker produced nothing usable)
    status: str  #: a :class:`~loadopt.schedule.ScheduleStatus` value, or "expired"/"error"
    method: str
    objective: float | None = None
    solve_time_s: float = 0.0
    message: str = ""
    mode: str = ""  #: warm-start mode of a controller step ("warm", "cold", …)
    reason: str = ""
    worker: str = ""  #: where it ran (host:pid)
    build_s: float = 0.0
    total_s: float = 0.0
    values: dict[str, Any] | None = None  #: other results (the coupled sites' proposals)


def x_deciamps(problem: Problem, current: np.ndarray) -> np.ndarray:
    """Per-variable deci-amps of a schedule on the 0.1 A grid (exact: integers in int32)."""
    return np.rint(problem.gather(current) * 10.0).astype(np.int32)
