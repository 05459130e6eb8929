"""Where fleet tasks run: any ``concurrent.futures.Executor``, a Dask cluster or Ray actors.

A backend offers *slots* (a Dask worker, a Ray actor, or the one slot of a plain executor), and
``submit(slot, fn, *args)`` returning a ``concurrent.futures.Future``. The fleet pins each site to a
slot so its warm-start state is found again there; :meth:`Backend.alive` says which slots still
exist, so the sites of a slot that died are re-run elsewhere. Nothing here schedules tasks
itself: Dask's scheduler (worker restrictions) or Ray (actors) does.

- :class:`ExecutorBackend` wraps any executor (default: a ``ThreadPoolExecutor``: HiGHS and the
  numba kernels release the GIL, benchmarks/test_bench_fleet.py measures how much). One slot;
  with a process pool the per-site state may land on any process (it is only a warm start).
- :class:`DaskBackend`: a ``distributed.Client`` (given, or connected to a scheduler address, or
  an embedded ``LocalCluster``); one slot per worker, tasks restricted to their slot's worker
  (``workers=[address], allow_other_workers=False``).
- :class:`RayBackend` (``pip install loadopt[ray]``): one actor per slot.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import LoadoptError


class FleetError(LoadoptError, RuntimeError):
    """The fleet backend cannot run at all (no worker, backend not installed)."""


class Backend:
    """Slots that run tasks (see the module docstring)."""

    #: True when tasks run in this process (thread pools): payloads need not be serialised.
    in_process: bool = False

    def slots(self) -> list[Hashable]:
        """Every slot (a worker, an actor, a pool) tasks can be sent to.

        Returns
        -------
        list
            Slot keys (hashable).
        """
        raise NotImplementedError

    def alive(self) -> set[Hashable]:
        """Slots that still exist (asked of the cluster; the default: all of them).

        Returns
        -------
        set
            Slot keys.
        """
        return set(self.slots())

    def parallelism(self, slot: Hashable) -> int:
        """Tasks ``slot`` runs at once (a pool's threads): batches are cut so each gets one.

        Parameters
        ----------
        slot
            A slot key.

        Returns
        -------
        int
        """
        return 1

    def live_slots(self, timeout_s: float = 10.0) -> list[Hashable]:
        """The live slots, sorted; when there is none, wait for one (a cluster whose workers are
        restarting).

        Parameters
        ----------
        timeout_s
            How long to wait for a slot (s).

        Returns
        -------
        list
            What there is then (maybe none).
        """
        return sorted(self.alive(), key=str)

    def submit(self, slot: Hashable, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Run ``fn(*args)`` on ``slot``.

        Parameters
        ----------
        slot
            A slot key.
        fn
            A picklable function (for out-of-process slots).
        *args
            Its arguments.

        Returns
        -------
        concurrent.futures.Future
            Its result, or the exception it raised (or the slot's loss).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what this backend started (an embedded cluster, its own pool)."""


class ExecutorBackend(Backend):
    """Any ``concurrent.futures.Executor`` as one slot.

    Parameters
    ----------
    executor
        The executor (default: a thread pool this backend owns and shuts down).
    max_workers
        Threads of the default pool (default ``os.cpu_count()``).
    """

    def __init__(self, executor: cf.Executor | None = None, max_workers: int | None = None):
        self._own = executor is None
        self.executor = executor or cf.ThreadPoolExecutor(
            max_workers=max_workers or os.cpu_count() or 1, thread_name_prefix="loadopt-fleet"
        )
        self.in_process = isinstance(self.executor, cf.ThreadPoolExecutor)

    def slots(self) -> list[Hashable]:
        return ["local"]

    def parallelism(self, slot: Hashable) -> int:
        return int(getattr(self.executor, "_max_workers", 1) or 1)

    def submit(self, slot: Hashable, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        if self._own:
            self.executor.shutdown(wait=True)


class SequentialExecutor(cf.Executor):
    """Runs each task at ``submit`` in the calling thread: the reference the others match."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


class DaskBackend(Backend):
    """A Dask distributed cluster: one slot per worker.

    Parameters
    ----------
    client
        A ``distributed.Client``, or a scheduler address (``"tcp://host:8786"``) to connect to,
        or ``None`` for an embedded ``LocalCluster(n_workers, threads_per_worker=1,
        processes=True)`` on 127.0.0.1 that :meth:`close` shuts down.
    n_workers
        Workers of the embedded cluster.
    timeout_s
        How long to wait for the cluster's workers (s).
    """

    def __init__(self, client: Any = None, *, n_workers: int = 2, timeout_s: float = 60.0):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise FleetError("the Dask backend needs `pip install loadopt[fleet]`") from exc
        self._cluster = None
        self._own_client = not isinstance(client, Client)
        if client is None:
            # everything on 127.0.0.1; the scheduler's HTTP server (it starts one even without a
            # dashboard, on every interface at :8787 by default) on a free local port
            self._cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
            client = Client(self._cluster, timeout=timeout_s)
        elif isinstance(client, str):
            client = Client(client, timeout=timeout_s)
        self.client = client
        self._exec: dict[Hashable, Any] = {}
        self._slots: list[Hashable] = []
        self.refresh()
        if not self._slots:
            raise FleetError(f"the Dask cluster at {client.scheduler.address} has no worker")

    def refresh(self) -> list[Hashable]:
        """Re-read the cluster's workers (new ones become slots, gone ones stop being).

        Returns
        -------
        list
            The slots now.
        """
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        self._threads = {w: int(d.get("nthreads", 1) or 1) for w, d in info.items()}
        self._slots = sorted(info)
        return self._slots

    def parallelism(self, slot: Hashable) -> int:
        return self._threads.get(slot, 1)

    def live_slots(self, timeout_s: float = 10.0) -> list[Hashable]:
        slots = self.refresh()
        if not slots and timeout_s > 0:
            try:
                self.client.wait_for_workers(1, timeout=timeout_s)
            except Exception:  # still none: the caller falls back
                pass
            slots = self.refresh()
        return list(slots)

    def slots(self) -> list[Hashable]:
        return list(self._slots)

    def alive(self) -> set[Hashable]:
        return set(self.refresh())

    def submit(self, slot: Hashable, fn: Callable[..., Any], *args: Any) -> cf.Future:
        ex = self._exec.get(slot)
        if ex is None:  # strict restriction: Dask never moves the task (its state is there)
            ex = self._exec[slot] = self.client.get_executor(
                workers=[slot], allow_other_workers=False, pure=False
            )
        return ex.submit(fn, *args)

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


class RayBackend(Backend):
    """Ray: actors, each a slot holding its sites' state.

    Parameters
    ----------
    n_slots
        Actors (default: the cluster's CPUs).
    address
        Passed to ``ray.init`` when Ray is not initialised yet (``None``: start or join a local
        Ray; ``"ray://host:10001"`` or ``"auto"``: a running cluster).
    **init_kwargs
        More ``ray.init`` arguments.
    """

    def __init__(
        self, n_slots: int | None = None, *, address: str | None = None, **init_kwargs: Any
    ):
        try:
            import ray
        except ImportError as exc:
            raise FleetError("the Ray backend needs `pip install loadopt[ray]`") from exc
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, **init_kwargs)
        n = n_slots or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        actor: Any = ray.remote(num_cpus=1, max_restarts=-1)(_SlotActor)
        self._actors: dict[Hashable, Any] = {f"ray-{k}": actor.remote() for k in range(n)}

    def slots(self) -> list[Hashable]:
        return list(self._actors)

    def submit(self, slot: Hashable, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self._actors[slot].run.remote(fn, *args).future()

    def close(self) -> None:
        for a in self._actors.values():
            self._ray.kill(a)


class _SlotActor:
    """A Ray actor running fleet tasks in its own process (per-site state lives there)."""

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


def as_backend(executor: Any = None) -> Backend:
    """A :class:`Backend` from what the user passed: a backend, a ``distributed.Client``, a
    ``concurrent.futures.Executor``, ``"sequential"``, ``"threads"``, ``"dask"`` (an embedded
    2-worker LocalCluster), ``"ray"``, or ``None`` (a thread pool)."""
    if isinstance(executor, Backend):
        return executor
    if executor is None or executor == "threads":
        return ExecutorBackend()
    if executor == "sequential":
        return ExecutorBackend(SequentialExecutor())
    if executor == "dask":
        return DaskBackend()
    if executor == "ray":
        return RayBackend()
    if isinstance(executor, cf.Executor):
        return ExecutorBackend(executor)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(executor, Client):
            return DaskBackend(executor)
    raise FleetError(
        f"cannot run fleet tasks on {executor!r}: give a concurrent.futures "
        "Executor, a distributed.Client, a Backend, 'sequential', 'threads', "
        "'dask' or 'ray'"
    )
