"""Sites behind a shared limit, solved by decomposition across workers, safe at every iteration.

A substation, a feeder shared by several sites or a fleet-wide contract caps what the sites import
together: per period ``t``

    Σ_i import_i,t = Σ_i (EV_i,t + base_i,t − PV_i,t) ≤ L_t        (kW)

where ``EV_i,t`` is what site ``i``'s vehicles draw (kW per A of each session times its current,
as in the site's own import row). With the base loads and PV fixed, the room the vehicles share is
``R_t = L_t − Σ_i (base_i,t − PV_i,t)`` (clamped at 0, with a notice, where the other loads alone
already exceed ``L_t``).

**Decomposition** (Dantzig–Wolfe; price coordination on the shared rows). Each site keeps its own
LP (:func:`loadopt.lp.build_lp`) on its worker. The coordinator holds a small *master* LP over
convex combinations ``λ_i,k`` of the proposals ``k`` each site has made (proposal: its EV power per
period and its LP objective):

    min Σ_i,k f_i,k λ_i,k   s.t.   Σ_k λ_i,k = 1 (each site),   Σ_i,k EV_i,k,t λ_i,k ≤ R_t.

The duals of the shared rows are prices ``π_t ≥ 0`` (currency per kW of the period). Each iteration
every site solves its own LP with ``π_t · EV_i,t`` added to its cost (its HiGHS model is kept on
its worker, so this is a warm re-solve) and returns the new proposal. Two bounds bracket the joint
optimum ``J*`` (the optimum of the one LP with every site and the shared rows):

- upper ``U`` = the master's objective (a feasible joint point: the combinations respect every
  site's own limits — convexity — and the shared rows);
- lower ``B = Σ_i min_x (f_i + π·EV_i) − π·R`` (Lagrangian duality), whenever every site's
  priced LP was solved to optimality.

It stops when ``U − B ≤ rel_gap · max(1, |U|)`` (then ``U ≤ J* + rel_gap·max(1,|U|)``), at
``max_iterations`` or at the deadline. Dantzig–Wolfe converges finitely on LPs.

**Safe at every iteration.** At any iteration the master's combination gives each site an
*allowance* ``a_i,t = Σ_k λ_i,k EV_i,k,t`` with ``Σ_i a_i,t ≤ R_t`` (the master's shared rows).
Whenever it stops, each site solves its LP once more with the rows ``EV_i,t ≤ a_i,t`` added (at
least as good as its combination, which satisfies them) and its schedule is
:func:`loadopt.safety.project`-ed onto its problem *with those allowance rows* — so each site
stays under its own allowance on the 0.1 A grid, and the sites together under the shared limit,
whichever iteration it stopped at. A site whose final solve does not come back in time gets the
fast path on the same allowance-augmented problem (safe by construction). The initial allowance
split (before any price) is proportional to what each site could draw; it sums to ``R_t`` too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..lp import LinearProgram, blocks_of, build_lp
from ..problem import Problem
from ..safety import project
from ..schedule import Schedule, ScheduleStatus
from .allowance import ev_matrix, with_allowance
from .backends import Backend, as_backend
from .dispatch import BATCH_VARS, assign, run_round
from .many import FALLBACK_DEADLINE, FALLBACK_LOST, SiteResult, fallback_schedule, make_task
from .payload import SolveOutcome
from .worker import CoupledTask, SolveTask, drop_state

#: Relative gap ``(U − B) / max(1, |U|)`` at which the decomposition stops by default.
REL_GAP = 1e-4


@dataclass(frozen=True)
class SharedLimit:
    """A cap on the sites' combined net import (kW): a number, or one value per period of the
    sites' common horizon (``+inf``: no cap in that period). ``id`` names it in messages."""

    import_kw: float | np.ndarray
    id: str = "shared"


@dataclass(frozen=True)
class IterationRecord:
    """One decomposition iteration: the bounds and the allowance split in force after it."""

    iteration: int
    upper: float  #: master objective (a feasible joint point)
    lower: float  #: Lagrangian bound (-inf when a site's priced LP was not optimal)
    gap: float  #: (upper − lower) / max(1, |upper|)
    allowance_sum_kw: np.ndarray  #: (T,) Σ_i a_i,t — never above the room R_t
    wall_s: float


@dataclass
class CoupledResult:
    """The sites' schedules under the shared limit, and how the decomposition went."""

    sites: dict[str, SiteResult]
    allowance_kw: dict[str, np.ndarray]  #: (T,) EV kW allowance of each site
    room_kw: np.ndarray  #: (T,) R_t: the shared limit minus the other loads
    history: list[IterationRecord]
    converged: bool
    objective: float  #: Σ of the sites' LP objectives of their final solves
    wall_s: float
    notices: tuple[str, ...] = ()
    #: Recovery counts: sites sent again to a worker that lost them, sites moved.
    recovery: dict[str, int] = field(default_factory=dict)

    @property
    def schedules(self) -> dict[str, Schedule]:
        return {k: r.schedule for k, r in self.sites.items()}

    def import_kw(self) -> np.ndarray:
        """Combined net import of the emitted schedules.

        Returns
        -------
        numpy.ndarray
            ``(T,)`` kW.
        """
        return np.sum([r.schedule.import_kw for r in self.sites.values()], axis=0)


# ------------------------------------------------------------------------------ coordinator
def room_kw(problems: Mapping[str, Problem], limit: SharedLimit) -> tuple[np.ndarray, list[str]]:
    """``R_t = L_t − Σ_i (base_i,t − PV_i,t + reserved_i,t)`` (kW), clamped at 0, and notices
    where it was. ``reserved``: what a site's reserved EVSEs may draw whatever its plan
    (:attr:`~loadopt.problem.Problem.evse_reserved_a`), a fixed load like the base load."""
    ps = list(problems.values())
    T = ps[0].n_periods
    L = np.broadcast_to(np.asarray(limit.import_kw, dtype=np.float64), (T,)).copy()
    if np.isnan(L).any() or (L < 0).any():
        raise InputError(f"shared limit {limit.id!r}: import_kw must be >= 0 (no NaN)")
    other = np.sum([p.base_load_kw - p.pv_kw + _reserved_kw(p) for p in ps], axis=0)
    R = L - other
    notices = []
    if (R < 0).any():
        k = np.flatnonzero(R < 0)
        notices.append(
            f"shared limit {limit.id!r}: the sites' other loads minus PV alone exceed "
            f"it in {k.size} period(s) from period {int(k[0])}; vehicles get 0 there"
        )
    return np.maximum(R, 0.0), notices


def _reserved_kw(p: Problem) -> np.ndarray:
    """(T,) kW the site's reserved EVSEs may draw whatever its plan."""
    if p.evse_reserved_a is None:
        return np.zeros(p.n_periods)
    return (p.evse_reserved_a.sum(axis=1) * p.evse_voltage_v[:, None] / 1000.0).sum(axis=0)


def _check_horizons(problems: Mapping[str, Problem]) -> None:
    """One horizon for all sites, and no storage (battery charging and V2G are not in a site's
    allowance: such a site would charge past the shared limit)."""
    if not problems:
        raise InputError("solve_coupled needs at least one site")
    for key, p in problems.items():
        if p.storage is not None:
            raise InputError(
                f"site {key!r}: batteries and V2G sessions are not supported behind a shared "
                "limit (their charging is not in the site's allowance)"
            )
    hz = [(p.horizon.start, p.horizon.step_s, p.n_periods) for p in problems.values()]
    first = hz[0]
    for key, h in zip(problems, hz, strict=True):
        if h[0] != first[0] or h[1:] != first[1:]:
            raise InputError(
                f"site {key!r}: its horizon {h} differs from the first site's "
                f"{first}; sites behind a shared limit need one horizon"
            )


def _max_ev_kw(p: Problem) -> np.ndarray:
    """(T,) kW the site's vehicles could draw at most (every session at its bound)."""
    kw = p.session_kw_per_a[p.var_session] * p.var_ub
    if p.var_reserved is not None:  # inside a reservation: counted as fixed load
        kw = np.where(p.var_reserved, 0.0, kw)
    return np.bincount(p.var_period, kw, minlength=p.n_periods)


def _master(
    cols_f: list[float],
    cols_ev: list[np.ndarray],
    cols_site: list[int],
    n_sites: int,
    R: np.ndarray,
):
    """Solve the master LP; returns (λ, π (T,), objective) or None when HiGHS fails."""
    from ..solvers.highs import new_highs, pass_lp, run

    T = R.size
    fin = np.flatnonzero(np.isfinite(R))
    n = len(cols_f)
    EV = np.array(cols_ev).T[fin]  # (T', n)
    conv = sp.csr_matrix((np.ones(n), (np.array(cols_site), np.arange(n))), shape=(n_sites, n))
    A = sp.vstack([conv, sp.csr_matrix(EV)]).tocsc()
    lp = LinearProgram(
        c=np.array(cols_f),
        col_lb=np.zeros(n),
        col_ub=np.full(n, np.inf),
        A=A,
        row_lb=np.concatenate([np.ones(n_sites), np.full(fin.size, -np.inf)]),
        row_ub=np.concatenate([np.ones(n_sites), R[fin]]),
        offset=0.0,
        cols=blocks_of({"lambda": np.arange(n)}),
        rows=blocks_of({"convexity": np.arange(n_sites), "shared": fin}),
    )
    h = new_highs({"presolve": "off"})
    pass_lp(h, lp)
    res = run(h)
    if res.x is None or res.status.value != "optimal":
        return None
    dual = np.asarray(h.getSolution().row_dual, dtype=np.float64)[n_sites:]
    pi = np.zeros(T)
    pi[fin] = np.maximum(-dual, 0.0)  # HiGHS: a binding ≤ row of a minimisation has dual ≤ 0
    return np.maximum(res.x, 0.0), pi, float(res.objective or 0.0)


def solve_coupled(
    problems: Mapping[str, Problem],
    limit: SharedLimit,
    executor: Any = None,
    *,
    rel_gap: float = REL_GAP,
    max_iterations: int = 50,
    deadline_s: float | None = None,
    batch_vars: int = BATCH_VARS,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> CoupledResult:
    """Schedules for sites behind ``limit`` by decomposition (module docstring).

    Whatever stops it, the combined import of the schedules stays under ``limit``.

    Parameters
    ----------
    problems
        Site key -> compiled problem, all on one horizon.
    limit
        The shared limit (kW per period).
    executor
        As for :func:`~loadopt.fleet.solve_many`.
    rel_gap
        Stop at this relative gap between the bounds.
    max_iterations
        Stop after this many iterations.
    deadline_s
        Seconds from the call: the final per-site solves get what is left, and a site not back
        by then gets the fast path on its allowance.
    batch_vars
        Small sites are batched into tasks of at least this many variables.
    on_iteration
        Called with each :class:`IterationRecord`.

    Returns
    -------
    CoupledResult
        Per-site schedules, their allowances (kW per period), bounds and iterations.
    """
    t0 = time.perf_counter()
    _check_horizons(problems)
    if rel_gap < 0 or max_iterations < 0:
        raise InputError("rel_gap and max_iterations must be >= 0")
    deadline = None if deadline_s is None else time.time() + deadline_s
    keys = list(problems)
    R, notices = room_kw(problems, limit)
    T = R.size
    own = executor is None or isinstance(executor, str)
    backend = as_backend(executor)
    token = uuid.uuid4().hex
    try:
        pins = assign(keys, [problems[k].n_vars for k in keys], backend.slots())
        run = _Rounds(backend, problems, pins, token, batch_vars)
        # iteration 0: a proportional split of the room (safe), and every site's own optimum
        cap = np.array([_max_ev_kw(problems[k]) for k in keys])
        tot = cap.sum(axis=0)
        share = np.divide(cap, tot, out=np.full_like(cap, 1.0 / len(keys)), where=tot > 0)
        # scaled like the master's allowances: Σ_i share_i·R_t can round above R_t
        split = _allowances_from(share * np.where(np.isfinite(R), R, 0.0), R)
        cols_f: list[float] = []
        cols_ev: list[np.ndarray] = []
        cols_site: list[int] = []

        def add(i: int, v: dict[str, Any]) -> None:
            cols_f.append(v["f"])
            cols_ev.append(np.asarray(v["ev"], dtype=np.float64))
            cols_site.append(i)

        start = run.round("allow", {k: split[i] for i, k in enumerate(keys)}, deadline)
        for i, k in enumerate(keys):
            v = start.get(k)
            if v is None or not v.get("ok"):
                raise InputError(
                    f"site {k!r}: its LP could not be solved on its allowance "
                    f"({None if v is None else v.get('message')})"
                )
            add(i, v)
        history: list[IterationRecord] = []
        best = None
        lower = -np.inf
        pi = np.zeros(T)
        converged = False
        for it in range(max_iterations + 1):
            ti = time.perf_counter()
            priced = run.round("price", dict.fromkeys(keys, pi), deadline)
            if all(k in priced and priced[k].get("ok") for k in keys):
                lower = max(
                    lower,
                    sum(priced[k]["w"] for k in keys)
                    - float(pi[np.isfinite(R)] @ R[np.isfinite(R)]),
                )
            for i, k in enumerate(keys):
                if k in priced and "f" in priced[k]:
                    add(i, priced[k])
            m = _master(cols_f, cols_ev, cols_site, len(keys), R)
            if m is None:
                break
            lam, pi, upper = m
            best = (lam, upper)
            allow = _allowances(lam, cols_ev, cols_site, len(keys), R)
            gap = (upper - lower) / max(1.0, abs(upper))
            rec = IterationRecord(
                it, upper, lower, gap, allow.sum(axis=0), time.perf_counter() - ti
            )
            history.append(rec)
            if on_iteration:
                on_iteration(rec)
            if gap <= rel_gap:
                converged = True
                break
            if deadline is not None and time.time() + 2 * rec.wall_s > deadline:
                break
        if best is None:  # no master solved: keep the proportional split
            allow = split
        final = run.round("allow", {k: allow[i] for i, k in enumerate(keys)}, deadline)
        sites: dict[str, SiteResult] = {}
        objective = 0.0
        for i, k in enumerate(keys):
            p = with_allowance(problems[k], allow[i])
            v = final.get(k)
            if v is None or "x_da" not in v:
                why = FALLBACK_LOST if k in run.lost else FALLBACK_DEADLINE
                sched = fallback_schedule(
                    p,
                    why,
                    f"shared limit {limit.id!r}: {why}; fast path within the site's allowance",
                )
                sites[k] = SiteResult(k, sched, why)
                objective = np.nan
                continue
            cur = project(p, p.dense(np.asarray(v["x_da"], dtype=np.float64) / 10.0))
            status = ScheduleStatus.OPTIMAL if v.get("ok") else ScheduleStatus.FEASIBLE
            sched = Schedule(
                p,
                cur,
                status,
                "lp-highs-coupled",
                objective=v["f"],
                message=f"shared limit {limit.id!r}: allowance from iteration {len(history) - 1}",
                notices=p.notices + tuple(notices),
            )
            sites[k] = SiteResult(k, sched, None, run.worker.get(k, ""), k in run.moved)
            objective += v["f"]
    finally:
        _forget(backend, token)
        if own:
            backend.close()
    return CoupledResult(
        sites,
        {k: allow[i] for i, k in enumerate(keys)},
        R,
        history,
        converged,
        objective,
        time.perf_counter() - t0,
        tuple(notices),
        {"resent": run.resent, "moved": len(run.moved)},
    )


def _forget(backend: Backend, token: str) -> None:
    """Drop the sites' LPs from the workers (best effort) and from this process."""
    drop_state(token)
    if backend.in_process:
        return
    for slot in backend.slots():
        try:
            backend.submit(slot, drop_state, token).result(timeout=5)
        except Exception:
            pass


def _allowances(
    lam: np.ndarray, cols_ev: list[np.ndarray], cols_site: list[int], n_sites: int, R: np.ndarray
) -> np.ndarray:
    """(sites, T) allowances of the master's combination, scaled into ``Σ_i ≤ R_t`` exactly
    (the master meets it up to HiGHS' feasibility tolerance; the scaling makes it hold in
    floating point) and ``+inf`` where the period has no shared cap."""
    EV = np.array(cols_ev)
    site = np.array(cols_site)
    out = np.zeros((n_sites, R.size))
    np.add.at(out, site, lam[:, None] * EV)
    out = np.maximum(out, 0.0)
    fin = np.isfinite(R)
    tot = out.sum(axis=0)
    over = fin & (tot > R)
    if over.any():
        out[:, over] *= np.where(tot[over] > 0, R[over] / tot[over], 0.0)
        # floating point: shave what still sticks out
        out[:, over] = np.nextafter(out[:, over], 0.0)
    out[:, ~fin] = np.inf
    return out


class _Rounds:
    """Rounds of ``price``/``allow`` tasks on the sites' workers; a site whose worker lost its
    state (moved, restarted) is sent its payload again."""

    def __init__(
        self,
        backend: Backend,
        problems: Mapping[str, Problem],
        pins: dict,
        token: str,
        batch_vars: int,
    ) -> None:
        self.backend, self.problems, self.pins = backend, problems, dict(pins)
        self.token, self.batch_vars = token, batch_vars
        self.known: set[str] = set()  # sites whose worker holds their state
        self.lost: set[str] = set()
        self.moved: set[str] = set()
        self.worker: dict[str, str] = {}
        self.resent = 0  #: sites sent their problem again (their worker had lost it)

    def round(
        self, op: str, vec: Mapping[str, np.ndarray], deadline: float | None
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        todo = list(vec)
        for _attempt in range(2):
            tasks: list[SolveTask] = []
            for k in todo:
                if k in self.known:
                    tasks.append(
                        CoupledTask(key=k, n_vars=self.problems[k].n_vars, op=op, vector=vec[k])
                    )
                else:
                    tasks.append(
                        make_task(
                            self.backend, k, self.problems[k], CoupledTask, op=op, vector=vec[k]
                        )
                    )
            left = None if deadline is None else deadline - time.time()
            if left is not None and left <= 0:
                break
            rep = run_round(
                self.backend, tasks, self.pins, self.token, left, batch_vars=self.batch_vars
            )
            self.pins.update(rep.slot_of)
            self.moved |= rep.moved
            self.lost |= rep.lost
            for k in rep.moved:
                self.known.discard(k)
            retry = []
            for k in todo:
                o: SolveOutcome | None = rep.outcomes.get(k)
                if o is None:
                    continue
                if o.status == "no-state":
                    self.resent += 1
                    self.known.discard(k)
                    retry.append(k)
                    continue
                self.known.add(k)
                self.worker[k] = o.worker
                if o.values is not None:
                    out[k] = o.values
            todo = retry
            if not todo:
                break
        return out


def solve_joint(
    problems: Mapping[str, Problem], limit: SharedLimit, time_limit_s: float | None = None
) -> CoupledResult:
    """The same sites as one LP (every site's LP side by side plus the shared rows) on one
    HiGHS: the reference :func:`solve_coupled` converges to, and a direct way for small fleets.

    Schedules are made safe the same way (each site within the EV power the joint optimum gives
    it, which sums to at most the room).

    Parameters
    ----------
    problems
        Site key -> compiled problem, all on one horizon.
    limit
        The shared limit (kW per period).
    time_limit_s
        HiGHS time limit (s).

    Returns
    -------
    CoupledResult
    """
    from ..solvers.highs import LP_OPTIONS, new_highs, pass_lp, run

    t0 = time.perf_counter()
    _check_horizons(problems)
    keys = list(problems)
    R, notices = room_kw(problems, limit)
    lps = [build_lp(problems[k]) for k in keys]
    Ks = [ev_matrix(problems[k], lp) for k, lp in zip(keys, lps, strict=True)]
    fin = np.flatnonzero(np.isfinite(R))
    A = sp.vstack([sp.block_diag([lp.A for lp in lps]), sp.hstack(Ks)[fin]]).tocsc()
    joint = LinearProgram(
        c=np.concatenate([lp.c for lp in lps]),
        col_lb=np.concatenate([lp.col_lb for lp in lps]),
        col_ub=np.concatenate([lp.col_ub for lp in lps]),
        A=A,
        row_lb=np.concatenate([*(lp.row_lb for lp in lps), np.full(fin.size, -np.inf)]),
        row_ub=np.concatenate([*(lp.row_ub for lp in lps), R[fin]]),
        offset=float(sum(lp.offset for lp in lps)),
        cols=blocks_of({f"site{i}": np.arange(lp.n_cols) for i, lp in enumerate(lps)}),
        rows=blocks_of(
            {**{f"site{i}": np.arange(lp.n_rows) for i, lp in enumerate(lps)}, "shared": fin}
        ),
    )
    h = new_highs(LP_OPTIONS, time_limit_s)
    pass_lp(h, joint)
    res = run(h)
    if res.x is None:
        raise InputError(f"the joint LP was not solved: {res.message}")
    bounds = np.cumsum([0] + [lp.n_cols for lp in lps])
    evs = np.array([K @ res.x[a:b] for K, a, b in zip(Ks, bounds[:-1], bounds[1:], strict=True)])
    allow = _allowances_from(evs, R)
    sites = {}
    for i, k in enumerate(keys):
        p = with_allowance(problems[k], allow[i])
        x = res.x[bounds[i] : bounds[i + 1]]
        cur = project(p, p.dense(lps[i].currents(p, x)))
        st = ScheduleStatus.OPTIMAL if res.status.value == "optimal" else ScheduleStatus.FEASIBLE
        sites[k] = SiteResult(
            k,
            Schedule(
                p,
                cur,
                st,
                "lp-highs-joint",
                objective=float(lps[i].c @ x + lps[i].offset),
                notices=p.notices + tuple(notices),
            ),
        )
    return CoupledResult(
        sites,
        {k: allow[i] for i, k in enumerate(keys)},
        R,
        [],
        res.status.value == "optimal",
        float(res.objective or 0.0),
        time.perf_counter() - t0,
        tuple(notices),
    )


def _allowances_from(evs: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(sites, T) allowances from per-site EV power, scaled into ``Σ ≤ R`` exactly."""
    return _allowances(np.ones(evs.shape[0]), list(evs), list(range(evs.shape[0])), evs.shape[0], R)
