"""``FleetController``: one :class:`~loadopt.controller.Controller` per site, stepped together.

Each :meth:`FleetController.step` does for every site what ``Controller.step`` does, split where
the work is:

- **on the coordinator** (this process): the session state — re-sharing caps, the sessions as the
  next problem sees them — and :func:`~loadopt.compile.compile_problem`; afterwards the schedule is
  built on the site's own problem through :func:`loadopt.safety.project` and folded back into the
  controller's state, exactly as ``Controller.step`` would;
- **on the site's worker**: the solve, from the lean array payload, with the site's warm-start
  state (the previous optimal basis) kept in that worker's memory between steps. Sites stay pinned
  to their worker (Dask worker restrictions, Ray actors) so that state is found again.

With every site back in time, the schedules equal those of stepping each ``Controller`` in turn.
A site whose solve misses the step's deadline, or whose worker died with no other able to re-run
it in time, gets its fast-path schedule (``SiteResult.fallback``); its sessions are never lost,
since they live here. The state can be saved and restored (:meth:`save`, :meth:`restore`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..controller import Controller, PendingStep
from ..errors import InputError
from .backends import Backend, as_backend
from .dispatch import BATCH_VARS, RoundReport, assign, run_round
from .many import (
    FALLBACK_DEADLINE,
    FALLBACK_LOST,
    FleetResult,
    SiteResult,
    _wait_s,
    finish,
    make_task,
)
from .worker import StepTask, drop_state, planner_spec


@dataclass(frozen=True)
class FleetStepRecord:
    """What one fleet step did (the throughput table of ``loadopt fleet simulate``)."""

    now: datetime
    n_sites: int
    n_tasks: int
    n_fallback: int
    n_moved: int
    prepare_s: float  #: coordinator: state + compile + payloads
    round_s: float  #: waiting for the workers
    finish_s: float  #: coordinator: project + state update
    wall_s: float


class FleetController:
    """Step many sites' controllers on a thread pool, a Dask cluster or Ray (module docstring).

    Parameters
    ----------
    controllers
        Site key -> :class:`~loadopt.controller.Controller`.
    executor
        As for :func:`~loadopt.fleet.solve_many` (default a thread pool).
    deadline_s
        Default deadline of a step, seconds from its start (``None``: wait for every site).
    batch_vars
        Small sites are batched into tasks of at least this many variables.
    """

    def __init__(
        self,
        controllers: Mapping[str, Controller],
        executor: Any = None,
        *,
        deadline_s: float | None = None,
        batch_vars: int = BATCH_VARS,
    ) -> None:
        self.controllers: dict[str, Controller] = {}
        for k, c in controllers.items():
            self.add_site(k, c)
        self._own = executor is None or isinstance(executor, str)
        self.backend: Backend = as_backend(executor)
        self.deadline_s = deadline_s
        self.batch_vars = batch_vars
        self.token = uuid.uuid4().hex
        #: The slot (worker) each site is pinned to.
        self.slot_of: dict[str, Hashable] = {}
        self.log: list[FleetStepRecord] = []

    def add_site(self, key: str, controller: Controller) -> None:
        """Add a site (stepped from the next :meth:`step` on).

        Parameters
        ----------
        key
            The site key (not in use).
        controller
            Its controller.

        Raises
        ------
        InputError
            The key is in use, or ``controller`` is not a Controller.
        """
        if not isinstance(controller, Controller):
            raise InputError(
                f"fleet site {key!r}: expected a Controller, got {type(controller).__name__}"
            )
        if key in self.controllers:
            raise InputError(f"fleet site {key!r} is already in the fleet")
        self.controllers[key] = controller

    def remove_site(self, key: str) -> Controller:
        """Stop stepping a site.

        Parameters
        ----------
        key
            The site key.

        Returns
        -------
        Controller
            Its controller (its state intact).

        Raises
        ------
        InputError
            An unknown key.
        """
        try:
            ctl = self.controllers.pop(key)
        except KeyError:
            raise InputError(f"unknown fleet site {key!r}") from None
        self.slot_of.pop(key, None)
        return ctl

    def __getitem__(self, key: str) -> Controller:
        return self.controllers[key]

    def step(self, now: datetime, deadline_s: float | None = None) -> FleetResult:
        """Every site's schedule for ``[now, now + horizon)`` (see the module docstring).

        Parameters
        ----------
        now
            The step's time (aware datetime).
        deadline_s
            Seconds from the call (default :attr:`deadline_s`); what is not solved by then gets the
            fast path.

        Returns
        -------
        FleetResult
            Per site its schedule (A per phase per session and period) and how it was obtained; a
            site whose problem cannot be compiled is reported in ``FleetResult.timings`` under
            ``errors`` and left out (the others are stepped).

        Raises
        ------
        InputError
            A naive ``now``.
        """
        if now.tzinfo is None:
            raise InputError("FleetController.step: now must be timezone-aware")
        deadline_s = self.deadline_s if deadline_s is None else deadline_s
        t0 = time.perf_counter()
        pending: dict[str, PendingStep] = {}
        self.errors: dict[str, str] = {}
        for key, ctl in self.controllers.items():
            try:
                pending[key] = ctl.begin_step(now)
            except Exception as exc:  # one bad site never stops the fleet
                self.errors[key] = repr(exc)
        problems = {k: p.problem for k, p in pending.items()}
        slots = self.backend.live_slots(_wait_s(deadline_s))
        t1 = time.perf_counter()
        if slots:
            pins = assign(
                list(problems), [p.n_vars for p in problems.values()], slots, self.slot_of
            )
            tasks = [
                make_task(
                    self.backend, k, p, StepTask, planner=planner_spec(self.controllers[k].planner)
                )
                for k, p in problems.items()
            ]
            t1 = time.perf_counter()
            rep = run_round(
                self.backend, tasks, pins, self.token, deadline_s, batch_vars=self.batch_vars
            )
        else:  # no worker at all: every site gets its fast path now
            rep = RoundReport(lost=set(problems))
        t2 = time.perf_counter()
        self.slot_of.update(rep.slot_of)
        sites: dict[str, SiteResult] = {}
        for key, problem in problems.items():
            o = rep.outcomes.get(key)
            sched, fb = finish(problem, o, FALLBACK_LOST if key in rep.lost else FALLBACK_DEADLINE)
            if fb is None and o is not None:
                mode, reason, solve_s = o.mode, o.reason, o.solve_time_s
            else:
                mode, reason, solve_s = "fleet-fallback", f"fleet: {fb}: fast path", 0.0
            # what the controller hands out (end_step puts it in the EVSEs' pilot steps)
            sched = self.controllers[key].end_step(pending[key], sched, mode, reason, solve_s)
            sites[key] = SiteResult(
                key, sched, fb, "" if o is None else o.worker, key in rep.moved, o
            )
        t3 = time.perf_counter()
        res = FleetResult(
            sites,
            t3 - t0,
            rep.n_tasks,
            rep,
            {"prepare_s": t1 - t0, "round_s": t2 - t1, "finish_s": t3 - t2},
        )
        self.log.append(
            FleetStepRecord(
                now,
                len(sites),
                rep.n_tasks,
                len(res.fallbacks),
                len(rep.moved),
                t1 - t0,
                t2 - t1,
                t3 - t2,
                t3 - t0,
            )
        )
        return res

    # ------------------------------------------------------------------ state
    def save(self, path: str) -> None:
        """Write every site's controller state (:meth:`Controller.to_state
        <loadopt.controller.Controller.to_state>`) as one JSON document; see
        :mod:`loadopt.fleet.state`.

        Parameters
        ----------
        path
            A file (written atomically), or an fsspec URL such as ``s3://bucket/fleet.json``.
        """
        from .state import save_controllers

        save_controllers(self.controllers, path)

    @classmethod
    def restore(
        cls,
        path: str,
        executor: Any = None,
        *,
        planners: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> FleetController:
        """A fleet continuing from what :meth:`save` wrote (sessions, meter state, signals,
        reservations).

        Parameters
        ----------
        path
            A file or fsspec URL.
        executor
            As for the constructor.
        planners
            Site key -> planner, for sites saved with a custom one.
        **kwargs
            Other constructor arguments.

        Returns
        -------
        FleetController

        Raises
        ------
        InputError
            Not a fleet state document, or a site that cannot be restored (named).
        """
        from .state import load_controllers

        return cls(load_controllers(path, planners), executor, **kwargs)

    def close(self) -> None:
        """Forget the warm-start state this fleet left in this process and close a backend it
        started itself (an embedded cluster or its own thread pool)."""
        drop_state(self.token)
        if not self.backend.in_process:  # best effort: the workers' copies too
            for slot in self.backend.slots():
                try:
                    self.backend.submit(slot, drop_state, self.token).result(timeout=5)
                except Exception:
                    pass
        if self._own:
            self.backend.close()

    def __enter__(self) -> FleetController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
