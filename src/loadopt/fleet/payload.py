"""What travels between the fleet coordinator and its workers: numpy arrays, not pydantic objects.

A :class:`~loadopt.problem.Problem` holds its inputs twice: as validated objects (site, sessions,
signals) and as the compiled arrays the solvers read. Only the arrays travel
(:func:`pack_problem`), narrowed to the smallest integer type that holds them exactly, with the
safety matrix sent as its structure only when its coefficients follow from the row kinds (1 on a
current row, the session's kW per A on a power or import row) and limits that do not change over
the horizon sent once. For the 50-EVSE × 96-period benchmark site that is ~5× fewer bytes than
pickling the problem, and no model validation on either side.

:func:`unpack_problem` rebuilds a ``Problem`` on the worker with the same arrays. Its object fields
are stand-ins built without validation (``model_construct``) holding exactly what the solvers
still read from objects: the horizon, the objective weights, the peak so far, each session's
departure and each EVSE's allowed currents and phase data. Nothing on the worker produces KPIs or
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

from ..horizon import Horizon
from ..objective import Objective
from ..problem import ROW_NODE_CURRENT, Problem
from ..session import Session
from ..signals import Signals
from ..site import Evse, Node, Site

#: Problem array fields that are not sent: derived on the worker or never read there.
_NOT_SENT = frozenset({"G", "session_anc", "evse_anc", "avail", "node_current_limit",
                       "node_power_limit_kw"})
#: Evse fields the solvers read (allowed levels, phase data); the rest stays at the coordinator.
_EVSE_FIELDS = ("id", "phases", "phase_rotation", "max_current", "min_current", "voltage_v",
                "allowed_currents", "phase_switching")


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
    session_departure_s: np.ndarray  #: (S,) s from the horizon start (unclipped)
    node_ids: tuple[str, ...]
    evses: tuple[dict[str, Any], ...]
    dr_event_ids: tuple[str, ...]
    notices: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, str]
    G_data: np.ndarray | None  #: None: coefficients follow from the row kinds
    limits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    nones: tuple[str, ...] = ()  #: optional array fields that are None

    @property
    def nbytes(self) -> int:
        """Bytes of array data carried (what dominates the pickled size)."""
        n = sum(a.nbytes for a in self.arrays.values()) + self.session_departure_s.nbytes
        n += sum(sum(x.nbytes for x in v) for v in self.limits.values())
        return n + (0 if self.G_data is None else self.G_data.nbytes)


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


def _const_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``(..., T)`` array as (shape, per-row constant value or NaN, the non-constant rows)."""
    T = a.shape[-1]
    rows = a.reshape(-1, T)
    with np.errstate(invalid="ignore"):
        const = np.all(rows == rows[:, :1], axis=1) if T else np.ones(rows.shape[0], bool)
    vals = np.where(const, rows[:, 0] if T else np.nan, np.nan)
    return np.array(a.shape, np.int64), vals, rows[~const]


def _unconst_rows(shape: np.ndarray, vals: np.ndarray, varying: np.ndarray) -> np.ndarray:
    T = int(shape[-1])
    const = ~np.isnan(vals)
    out = np.empty((vals.size, T))
    out[const] = vals[const, None]
    out[~const] = varying
    return out.reshape(tuple(int(s) for s in shape))


def _derived_G_data(row_kind: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                    var_session: np.ndarray, kw_per_a: np.ndarray) -> np.ndarray:
    """Safety-matrix coefficients as compile writes them: 1 on current rows, kW/A elsewhere."""
    kind = np.repeat(row_kind, np.diff(indptr))
    return np.where(kind == ROW_NODE_CURRENT, 1.0, kw_per_a[var_session[indices]])


def pack_problem(problem: Problem, key: str) -> ProblemPayload:
    """The lean payload of ``problem`` for site ``key`` (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    nones: list[str] = []
    for f in dataclasses.fields(problem):
        v = getattr(problem, f.name)
        if f.name in _NOT_SENT or not (v is None or isinstance(v, np.ndarray)):
            continue
        if v is None:  # an optional array (export_price)
            nones.append(f.name)
            continue
        arrays[f.name] = _narrow(v)
        dtypes[f.name] = v.dtype.str
    G = problem.G.tocsr()
    arrays["G_indptr"], dtypes["G_indptr"] = _narrow(G.indptr), G.indptr.dtype.str
    arrays["G_indices"], dtypes["G_indices"] = _narrow(G.indices), G.indices.dtype.str
    derived = _derived_G_data(problem.row_kind, G.indptr, G.indices, problem.var_session,
                              problem.session_kw_per_a)
    # a row kind with other coefficients (added after this was written) travels as it is
    G_data = None if np.array_equal(derived, G.data) else np.asarray(G.data)
    hz = problem.horizon
    site = problem.site
    return ProblemPayload(
        key=key, start=hz.start, step_s=hz.step_s, n_periods=hz.n_periods,
        objective=problem.objective.model_dump(), peak_so_far_kw=problem.signals.peak_so_far_kw,
        session_ids=problem.session_ids,
        session_departure_s=np.array([hz.seconds_from_start(s.departure)
                                      for s in problem.sessions], dtype=np.float64),
        node_ids=problem.node_ids,
        evses=tuple({k: getattr(e, k) for k in _EVSE_FIELDS} for e in site.evses),
        dr_event_ids=problem.dr_event_ids, notices=problem.notices,
        arrays=arrays, dtypes=dtypes, G_data=G_data, nones=tuple(nones),
        limits={"node_current_limit": _const_rows(problem.node_current_limit),
                "node_power_limit_kw": _const_rows(problem.node_power_limit_kw)},
    )


def unpack_problem(payload: ProblemPayload) -> Problem:
    """The worker's :class:`Problem`: the same arrays, stand-in objects (module docstring)."""
    a = {k: v.astype(payload.dtypes[k], copy=False) for k, v in payload.arrays.items()}
    indptr, indices = a.pop("G_indptr"), a.pop("G_indices")
    S, T = len(payload.session_ids), payload.n_periods
    data = (payload.G_data if payload.G_data is not None else
            _derived_G_data(a["row_kind"], indptr, indices, a["var_session"],
                            a["session_kw_per_a"]))
    G = sp.csr_matrix((data, indices, indptr), shape=(a["h"].size, a["var_session"].size))
    N, E = len(payload.node_ids), len(payload.evses)
    session_anc = _ancestors(a["node_parent"], a["evse_node"][a["session_evse"]], N)
    evse_anc = _ancestors(a["node_parent"], a["evse_node"], N)
    limits = {k: _unconst_rows(*v) for k, v in payload.limits.items()}
    horizon = Horizon.model_construct(start=payload.start, step_s=payload.step_s,
                                      n_periods=T)
    evses = tuple(Evse.model_construct(**d) for d in payload.evses)
    site = Site.model_construct(id=payload.key, nodes=tuple(
        Node.model_construct(id=n) for n in payload.node_ids), evses=evses)
    dep = payload.session_departure_s
    sessions = tuple(
        Session.model_construct(id=sid, evse=evses[int(a["session_evse"][i])].id,
                                departure=payload.start + _seconds(dep[i]))
        for i, sid in enumerate(payload.session_ids))
    del S, E
    a["avail"] = np.full((len(sessions), T), np.nan)  # never read on a worker: NaN if it were
    for v in a.values():
        v.setflags(write=False)
    return Problem(
        horizon=horizon, site=site, sessions=sessions,
        signals=Signals.model_construct(peak_so_far_kw=payload.peak_so_far_kw),
        objective=Objective.model_construct(**payload.objective),
        node_ids=payload.node_ids, evse_ids=tuple(e.id for e in evses),
        session_ids=payload.session_ids, dr_event_ids=payload.dr_event_ids,
        notices=payload.notices, G=G, session_anc=session_anc, evse_anc=evse_anc,
        **limits, **a, **dict.fromkeys(payload.nones),
    )


def _seconds(s: float):
    from datetime import timedelta

    return timedelta(seconds=float(s))


def _ancestors(parent: np.ndarray, node: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """(len(node), N) 1 where the node is ``node[i]`` or above it (as compile builds it)."""
    rows, cols = [], []
    cur = node.astype(np.int64)
    alive = np.arange(node.size)
    while alive.size:
        rows.append(alive)
        cols.append(cur)
        nxt = parent[cur]
        keep = nxt >= 0
        alive, cur = alive[keep], nxt[keep]
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(r.size), (r, c)), shape=(node.size, n_nodes))


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


def x_deciamps(problem: Problem, current: np.ndarray) -> np.ndarray:
    """Per-variable deci-amps of a schedule on the 0.1 A grid (exact: integers in int32)."""
    return np.rint(problem.gather(current) * 10.0).astype(np.int32)
