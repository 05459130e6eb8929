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
from datetime import datetime
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
    """One site's controller step: the solve part of ``Controller.step`` with the site's
    warm-start state kept on this worker (``settings``: the controller's solver settings)."""

    now: datetime | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _budget(deadline: float | None, time_limit_s: float | None) -> tuple[bool, float | None]:
    """(expired?, the solver's time limit within the deadline)."""
    if deadline is None:
        return False, time_limit_s
    left = deadline - time.time() - REPLY_MARGIN_S
    if left <= 0:
        return True, None
    return False, left if time_limit_s is None else min(time_limit_s, left)


def run_batch(tasks: list[SolveTask | StepTask], token: str,
              deadline: float | None) -> list[SolveOutcome]:
    """Solve each task in order. ``deadline`` is wall-clock epoch seconds (``time.time()``):
    a task that starts after it is not solved (``status="expired"``: the coordinator gives that
    site its fast-path schedule), and each solver gets at most the time left."""
    out = []
    for task in tasks:
        key = task.key
        t0 = time.perf_counter()
        try:
            if isinstance(task, StepTask):
                out.append(_run_step(task, token, deadline, t0))
            else:
                out.append(_run_solve(task, deadline, t0))
        except Exception as exc:  # one bad site never loses the batch
            out.append(SolveOutcome(key, None, "error", "", message=repr(exc),
                                    worker=worker_id(), total_s=time.perf_counter() - t0))
    return out


def _run_solve(task: SolveTask, deadline: float | None, t0: float) -> SolveOutcome:
    from ..solve import solve

    kw = dict(task.solve_kwargs)
    expired, limit = _budget(deadline, kw.get("time_limit_s"))
    key = task.key
    if expired:
        return SolveOutcome(key, None, "expired", "", message="deadline passed before the solve",
                            worker=worker_id())
    if limit is not None:
        kw["time_limit_s"] = limit
    problem = task.get_problem()
    t1 = time.perf_counter()
    sched = solve(problem, **kw)
    return SolveOutcome(key, x_deciamps(problem, sched.current), sched.status.value,
                        sched.method, sched.objective, sched.solve_time_s, sched.message,
                        worker=worker_id(), build_s=t1 - t0, total_s=time.perf_counter() - t0)


def _run_step(task: StepTask, token: str, deadline: float | None, t0: float) -> SolveOutcome:
    key = task.key
    settings = dict(task.settings)
    expired, limit = _budget(deadline, settings.get("time_limit_s"))
    if expired:
        return SolveOutcome(key, None, "expired", "", message="deadline passed before the solve",
                            worker=worker_id())
    problem = task.get_problem()
    solver = get_state(token, key)
    if solver is None or solver.settings != settings:
        solver = _StepSolver(problem, settings)
        put_state(token, key, solver)
    t1 = time.perf_counter()
    assert task.now is not None
    sched, mode, reason, solve_s = solver.solve(problem, task.now, limit)
    return SolveOutcome(key, x_deciamps(problem, sched.current), sched.status.value,
                        sched.method, sched.objective, solve_s, sched.message, mode, reason,
                        worker_id(), t1 - t0, time.perf_counter() - t0)


class _StepSolver:
    """The solve part of a site's :class:`~loadopt.controller.Controller`, kept on the worker
    between steps with its warm-start state (previous optimal basis, limit fingerprint)."""

    def __init__(self, problem, settings: dict[str, Any]) -> None:
        from ..controller import Controller

        self.settings = dict(settings)
        ctl = Controller(problem.site, step_s=settings["step_s"],
                         n_periods=settings["n_periods"], method=settings["method"],
                         time_limit_s=settings["time_limit_s"])
        for k in _WARM_SETTINGS:
            setattr(ctl, k, settings[k])
        self.ctl = ctl

    def solve(self, problem, now: datetime, time_limit_s: float | None):
        self.ctl.time_limit_s = time_limit_s
        return self.ctl._solve(problem, now)


#: Controller attributes that steer its solve (copied to the worker's solver).
_WARM_SETTINGS = ("warm", "warm_min_mapped", "alien_basis", "cold_after_limit_cut")


def controller_settings(ctl) -> dict[str, Any]:
    """The settings of ``ctl`` that its solve depends on (what a :class:`StepTask` carries)."""
    return {"step_s": ctl.step_s, "n_periods": ctl.n_periods, "method": ctl.method,
            "time_limit_s": ctl.time_limit_s, **{k: getattr(ctl, k) for k in _WARM_SETTINGS}}


def ping() -> str:
    """A no-op task: where it ran (used to warm workers up and to list them)."""
    return worker_id()


def warm_up() -> str:
    """Load the compiled fast-path kernels and HiGHS in this process (first-call costs)."""
    from ..solve import solve
    from ..synthetic import benchmark_scenario

    p = benchmark_scenario(4, n_periods=4).compile()
    solve(p, method="fast")
    solve(p)
    np.zeros(1)
    return worker_id()
