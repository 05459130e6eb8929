"""``solve_many``: many compiled problems at once on any executor, under one deadline.

Every site gets a safe :class:`~loadopt.schedule.Schedule`: the worker's answer (after
:func:`loadopt.safety.project` on the coordinator's own problem), or — when its solve missed the
deadline, its worker died and no other could re-run it, or the task failed — the fast path
computed on the coordinator (safe by construction), with :attr:`SiteResult.fallback` saying why.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..problem import Problem
from ..safety import project
from ..schedule import Schedule, ScheduleStatus
from .backends import Backend, as_backend
from .dispatch import BATCH_VARS, RoundReport, assign, run_round
from .payload import SolveOutcome, pack_problem
from .worker import SolveTask

#: ``SiteResult.fallback`` values.
FALLBACK_DEADLINE = "deadline"  #: not back by the fleet step's deadline
FALLBACK_LOST = "worker_lost"  #: its worker died and no live worker could re-run it in time
FALLBACK_ERROR = "error"  #: the task raised (message in the schedule)


@dataclass(frozen=True, eq=False)
class SiteResult:
    """One site's answer in a fleet round."""

    key: str
    schedule: Schedule
    fallback: str | None = None  #: None, or why the fast path was used (FALLBACK_*)
    worker: str = ""  #: host:pid that solved it ("" for a coordinator fallback)
    moved: bool = False  #: re-run on another worker after its own died
    outcome: SolveOutcome | None = None


@dataclass
class FleetResult:
    """The answers of one fleet round, in the order the sites were given."""

    sites: dict[str, SiteResult]
    wall_s: float
    n_tasks: int
    report: RoundReport | None = None
    timings: dict[str, float] = field(default_factory=dict)  #: coordinator stages (s)

    def __getitem__(self, key: str) -> SiteResult:
        return self.sites[key]

    def __iter__(self):
        return iter(self.sites.values())

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def schedules(self) -> list[Schedule]:
        return [r.schedule for r in self.sites.values()]

    @property
    def fallbacks(self) -> dict[str, str]:
        """Sites that got the fast path, and why."""
        return {k: r.fallback for k, r in self.sites.items() if r.fallback is not None}


def fallback_schedule(problem: Problem, why: str, message: str = "") -> Schedule:
    """The fast-path schedule of ``problem`` (safe by construction), marked as a fleet fallback."""
    from ..solve import solve

    sched = solve(problem, method="fast")
    status = (
        ScheduleStatus.TIME_LIMIT_FALLBACK
        if why == FALLBACK_DEADLINE
        else ScheduleStatus.SOLVER_FAILED_FALLBACK
    )
    return replace(
        sched,
        status=status,
        method=f"fleet-{why}->fast",
        message=message or f"fleet: {why}; fast-path schedule",
    )


def finish(
    problem: Problem, o: SolveOutcome | None, why_missing: str
) -> tuple[Schedule, str | None]:
    """The coordinator's schedule of one site from its worker's outcome (or its fallback)."""
    if o is None:
        return fallback_schedule(problem, why_missing), why_missing
    if o.x_da is None or o.status in ("expired", "error"):
        why = FALLBACK_DEADLINE if o.status == "expired" else FALLBACK_ERROR
        return fallback_schedule(problem, why, f"fleet: {o.status}: {o.message}"), why
    try:
        x = np.asarray(o.x_da, dtype=np.float64)
        if x.shape != (problem.n_vars,):
            raise ValueError(f"worker returned {x.shape[0]} values for {problem.n_vars} variables")
        cur = problem.dense(x / 10.0)
        safe = project(problem, cur)  # unchanged when the worker's answer is feasible
    except Exception as exc:
        return fallback_schedule(
            problem, FALLBACK_ERROR, f"fleet: bad worker answer: {exc!r}"
        ), FALLBACK_ERROR
    msg = (
        o.message
        if np.array_equal(safe, cur)
        else (o.message + "; the worker's answer broke a limit here and was scaled down")
    )
    return Schedule(
        problem,
        safe,
        ScheduleStatus(o.status),
        o.method,
        objective=o.objective,
        solve_time_s=o.solve_time_s,
        message=msg,
        notices=problem.notices,
    ), None


def make_task(
    backend: Backend, key: str, problem: Problem, cls: type[SolveTask] = SolveTask, **kw: Any
) -> SolveTask:
    """A task for ``problem``: the problem itself in-process, its lean payload otherwise."""
    if backend.in_process:
        return cls(key=key, problem=problem, n_vars=problem.n_vars, **kw)
    return cls(key=key, payload=pack_problem(problem, key), n_vars=problem.n_vars, **kw)


def solve_many(
    problems: Sequence[Problem] | Mapping[str, Problem],
    executor: Any = None,
    *,
    deadline_s: float | None = None,
    batch_vars: int = BATCH_VARS,
    slot_of: dict[str, Hashable] | None = None,
    **solve_kwargs: Any,
) -> FleetResult:
    """Solve every problem (``loadopt.solve(problem, **solve_kwargs)`` on a worker).

    Results equal ``[solve(p, **solve_kwargs) for p in problems]`` (same currents, status, method
    and objective) whenever every site finished in time.

    Parameters
    ----------
    problems
        A sequence (keys ``"0"``, ``"1"``, …) or a mapping ``key -> Problem``.
    executor
        Any ``concurrent.futures.Executor``, a ``distributed.Client``, a
        :class:`~loadopt.fleet.backends.Backend`, ``"sequential"``, ``"threads"``, ``"dask"`` or
        ``"ray"``; default a thread pool.
    deadline_s
        Seconds from now; a site not solved by then gets its fast-path schedule
        (``SiteResult.fallback == "deadline"``), and no solver runs past it.
    batch_vars
        Small sites are batched into tasks of at least this many variables.
    slot_of
        The slot of each key from an earlier call (kept where alive).
    **solve_kwargs
        Passed to :func:`loadopt.solve`.

    Returns
    -------
    FleetResult
        One :class:`SiteResult` per key, in the order given.
    """
    t0 = time.perf_counter()
    items = (
        list(problems.items())
        if isinstance(problems, Mapping)
        else [(str(k), p) for k, p in enumerate(problems)]
    )
    own = not isinstance(executor, Backend) and not _is_external(executor)
    backend = as_backend(executor)
    try:
        keys = [k for k, _ in items]
        slots = backend.live_slots(_wait_s(deadline_s))
        t1 = time.perf_counter()
        if slots:
            pins = assign(keys, [p.n_vars for _, p in items], slots, slot_of)
            tasks = [make_task(backend, k, p, solve_kwargs=solve_kwargs) for k, p in items]
            t1 = time.perf_counter()
            rep = run_round(
                backend, tasks, pins, uuid.uuid4().hex, deadline_s, batch_vars=batch_vars
            )
        else:  # no worker at all: every site gets its fast path now
            rep = RoundReport(lost=set(keys))
        t2 = time.perf_counter()
        sites = {}
        for k, p in items:
            why = FALLBACK_LOST if k in rep.lost else FALLBACK_DEADLINE
            o = rep.outcomes.get(k)
            sched, fb = finish(p, o, why)
            sites[k] = SiteResult(k, sched, fb, "" if o is None else o.worker, k in rep.moved, o)
    finally:
        if own:
            backend.close()
    t3 = time.perf_counter()
    return FleetResult(
        sites,
        t3 - t0,
        rep.n_tasks,
        rep,
        {"pack_s": t1 - t0, "round_s": t2 - t1, "finish_s": t3 - t2},
    )


def _wait_s(deadline_s: float | None) -> float:
    """How long to wait for a worker when none is alive: a third of the deadline, ≤ 10 s."""
    return 10.0 if deadline_s is None else min(10.0, deadline_s / 3)


def _is_external(executor: Any) -> bool:
    """An executor or client the caller owns (we must not shut it down)."""
    return executor is not None and not isinstance(executor, str)
