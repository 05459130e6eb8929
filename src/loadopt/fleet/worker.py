"""What runs on a fleet worker: one task solves a batch of sites, in order, under a deadline.

Functions here are plain module-level functions of picklable arguments, so any
``concurrent.futures.Executor`` (a thread pool, a process pool, a Dask client's executor, a Ray
actor) can run them. Per-site state that only speeds things up — the previous optimal basis of a
controller step, the HiGHS model of a coupled site — lives in this worker process in
:data:`_STATE`, keyed by ``(fleet token, site key)``. The coordinator pins each site to one worker
so the state is found again at the next step; a site that lands elsewhere (its worker died) simply
starts cold: the state is never needed for a correct or safe answer.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..problem import Problem
from .payload import ProblemPayload, SolveOutcome, unpack_problem, x_deciamps

#: Per-process state of the sites this worker holds: (fleet token, site key) -> object.
_STATE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
#: Seconds kept free before the deadline for the reply to travel back.
REPLY_MARGIN_S = 0.05


def worker_id() -> str:
    """``host:pid`` of this process (thread pools share the coordinator's)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def get_state(token: str, key: str) -> Any:
    with _LOCK:
        return _STATE.get((token, key))


def put_state(token: str, key: str, value: Any) -> None:
    with _LOCK:
        _STATE[(token, key)] = value


def clear_state() -> int:
    """Forget every fleet's sites in this process (as a restart would); returns how many."""
    with _LOCK:
        n = len(_STATE)
        _STATE.clear()
    return n


def drop_state(token: str) -> int:
    """Forget every site of fleet ``token`` in this process; returns how many were dropped."""
    with _LOCK:
        gone = [k for k in _STATE if k[0] == token]
        for k in gone:
            del _STATE[k]
    return len(gone)


@dataclass(frozen=True)
class SolveTask:
    """One site's work in a batch: solve its problem with ``solve_kwargs``.

    ``payload`` travels to other processes; ``problem`` is set instead when the task runs in the
    coordinator's process (a thread pool), where nothing needs packing."""

    key: str
    payload: ProblemPayload | None = None
    problem: Problem | None = None
    solve_kwargs: dict[str, Any] = field(default_factory=dict)
    n_vars: int = 0

    def get_problem(self) -> Problem:
        if self.problem is not None:
            return self.problem
        assert self.payload is not None
        return unpack_problem(self.payload)


@dataclass(frozen=True)
class StepTask(SolveTask):
    """One site's controller step: its planner run on the step's problem, with the planner's
    warm-start state kept on this worker between steps (``planner``: :func:`planner_spec`)."""

    planner: tuple = ()


@dataclass(frozen=True)
class CoupledTask(SolveTask):
    """One site's iteration of :func:`loadopt.fleet.coupled.solve_coupled`: ``op`` ``"price"``
    (its best proposal at prices ``vector``) or ``"allow"`` (its optimum within the allowance
    ``vector``), on its LP kept on this worker. Without payload or problem the worker must hold
    the site already (else it answers ``status="no-state"`` and the coordinator sends it)."""

    op: str = "price"
    vector: Any = None


def planner_spec(planner: Any) -> tuple:
    """What a worker needs to run a controller's planner: ``("solve", options, warm settings)``
    for the optimising planner (rebuilt there once and kept with its warm start), or
    ``("callable", planner)`` for any other planner (sent as it is)."""
    from ..planner import SolvePlanner

    if isinstance(planner, SolvePlanner):
        ws = planner.warm_start
        return (
            "solve",
            planner.options,
            {
                "warm": ws.enabled,
                "warm_min_mapped": ws.min_mapped,
                "alien_basis": ws.alien,
                "cold_after_limit_cut": ws.cold_after_limit_cut,
                "warm_min_rows": ws.min_rows,
                # the pilot step (and its hot re-solve) runs on the coordinator, never here:
                # the worker keeps no HiGHS model for it
                "hot_resolve": False,
            },
        )
    return ("callable", planner)


def _with_time_limit(options: Any, limit: float | None) -> Any:
    """``options`` with its solver time limit lowered to ``limit`` (s) where it has one."""
    from ..options import AutoOptions, LpOptions, MilpOptions

    if limit is None:
        return options
    if isinstance(options, LpOptions | MilpOptions):
        old = options.time_limit_s
        return options.model_copy(
            update={"time_limit_s": limit if old is None else min(old, limit)}
        )
    if isinstance(options, AutoOptions):
        return options.model_copy(
            update={
                "lp": _with_time_limit(options.lp, limit),
                "milp": _with_time_limit(options.milp, limit),
            }
        )
    return options


def _budget(deadline: float | None, time_limit_s: float | None) -> tuple[bool, float | None]:
    """(expired?, the solver's time limit within the deadline)."""
    if deadline is None:
        return False, time_limit_s
    left = deadline - time.time() - REPLY_MARGIN_S
    if left <= 0:
        return True, None
    return False, left if time_limit_s is None else min(time_limit_s, left)


def run_batch(
    tasks: list[SolveTask | StepTask], token: str, deadline: float | None
) -> list[SolveOutcome]:
    """Solve each task in order. ``deadline`` is wall-clock epoch seconds (``time.time()``):
    a task that starts after it is not solved (``status="expired"``: the coordinator gives that
    site its fast-path schedule), and each solver gets at most the time left."""
    out = []
    for task in tasks:
        key = task.key
        t0 = time.perf_counter()
        try:
            if isinstance(task, CoupledTask):
                out.append(_run_coupled(task, token, deadline, t0))
            elif isinstance(task, StepTask):
                out.append(_run_step(task, token, deadline, t0))
            else:
                out.append(_run_solve(task, deadline, t0))
        except Exception as exc:  # one bad site never loses the batch
            out.append(
                SolveOutcome(
                    key,
                    None,
                    "error",
                    "",
                    message=repr(exc),
                    worker=worker_id(),
                    total_s=time.perf_counter() - t0,
                )
            )
    return out


def _run_solve(task: SolveTask, deadline: float | None, t0: float) -> SolveOutcome:
    from ..solve import solve

    kw = dict(task.solve_kwargs)
    expired, limit = _budget(deadline, kw.get("time_limit_s"))
    key = task.key
    if expired:
        return SolveOutcome(
            key, None, "expired", "", message="deadline passed before the solve", worker=worker_id()
        )
    if limit is not None:
        kw["time_limit_s"] = limit
    problem = task.get_problem()
    t1 = time.perf_counter()
    sched = solve(problem, **kw)
    return SolveOutcome(
        key,
        x_deciamps(problem, sched.current),
        sched.status.value,
        sched.method,
        sched.objective,
        sched.solve_time_s,
        sched.message,
        worker=worker_id(),
        build_s=t1 - t0,
        total_s=time.perf_counter() - t0,
    )


def _run_step(task: StepTask, token: str, deadline: float | None, t0: float) -> SolveOutcome:
    from ..controller import Controller
    from ..planner import SolvePlanner

    key = task.key
    expired, limit = _budget(deadline, None)
    if expired:
        return SolveOutcome(
            key, None, "expired", "", message="deadline passed before the solve", worker=worker_id()
        )
    problem = task.get_problem()
    spec = task.planner
    if spec[0] == "solve":
        kept = get_state(token, key)
        if kept is None or kept[0] != spec:
            kept = (spec, SolvePlanner(spec[1], **spec[2]))
            put_state(token, key, kept)
        planner = kept[1]
        planner.options = _with_time_limit(spec[1], limit)
    else:
        planner = spec[1]
    t1 = time.perf_counter()
    # the controller's own planner call: results checked the same way as Controller.step
    sched, mode, reason, solve_s = Controller._plan(_Shell(planner), problem)  # type: ignore[arg-type]
    return SolveOutcome(
        key,
        x_deciamps(problem, sched.current),
        sched.status.value,
        sched.method,
        sched.objective,
        solve_s,
        sched.message,
        mode,
        reason,
        worker_id(),
        t1 - t0,
        time.perf_counter() - t0,
    )


def _run_coupled(task: CoupledTask, token: str, deadline: float | None, t0: float) -> SolveOutcome:
    from .allowance import CoupledSite

    key = task.key
    expired, limit = _budget(deadline, None)
    if expired:
        return SolveOutcome(key, None, "expired", "", worker=worker_id())
    site = get_state(token, key)
    if site is None:
        if task.problem is None and task.payload is None:
            return SolveOutcome(key, None, "no-state", "", worker=worker_id())
        site = CoupledSite(task.get_problem())
        put_state(token, key, site)
    t1 = time.perf_counter()
    vec = np.asarray(task.vector, dtype=np.float64)
    vals = site.price(vec, limit) if task.op == "price" else site.allow(vec, limit)
    return SolveOutcome(
        key,
        None,
        "done",
        f"coupled-{task.op}",
        worker=worker_id(),
        build_s=t1 - t0,
        total_s=time.perf_counter() - t0,
        values=vals,
    )


@dataclass
class _Shell:
    """What ``Controller._plan`` reads of a controller: its planner."""

    planner: Any


def warm_up() -> str:
    """Load the compiled fast-path kernels and HiGHS in this process (first-call costs)."""
    from ..solve import solve
    from ..synthetic import benchmark_scenario

    p = benchmark_scenario(4, n_periods=4).compile()
    solve(p, method="fast")
    solve(p)
    np.zeros(1)
    return worker_id()
