"""One fleet round: sites pinned to slots, batched into tasks, run under a deadline.

- **Pinning** (:func:`assign`): a site keeps its slot while that slot lives (its warm start is
  there); a new site, or one whose slot died, goes to the least-loaded live slot (load = the
  variables of its sites). Deterministic for the same inputs.
- **Batching** (:func:`batches`): a slot's sites are cut, in order, into tasks of at least
  ``batch_vars`` variables each, so that small sites share one task (and its round-trip) while a
  large site is a task of its own — and into at least as many tasks as the slot runs at once
  (a thread pool's threads).
- **Deadline and lost workers** (:func:`run_round`): the round waits until every task is back or
  the deadline passes. While waiting it asks the backend which slots still exist; the tasks of
  a slot that died are submitted again on a live slot (the sites move there and start cold).
  Whatever has not come back at the deadline is left out of the answer: the caller gives those
  sites their fast-path schedule.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from .backends import Backend
from .payload import SolveOutcome
from .worker import SolveTask, run_batch

#: Default variables per task: the 50-EVSE × 96-period benchmark site has ~1,700, so sites of a
#: few EVSEs are batched while such a site is a task on its own.
BATCH_VARS = 1500


def assign(
    keys: Sequence[str],
    sizes: Sequence[int],
    slots: Sequence[Hashable],
    previous: dict[str, Hashable] | None = None,
) -> dict[str, Hashable]:
    """Slot of each site: its previous one while it lives, else the least-loaded live slot."""
    if not slots:
        raise ValueError("no live slot to run on")
    previous = previous or {}
    live = set(slots)
    load = dict.fromkeys(slots, 0)
    out: dict[str, Hashable] = {}
    todo = []
    for k, n in zip(keys, sizes, strict=True):
        s = previous.get(k)
        if s in live:
            out[k] = s
            load[s] += max(n, 1)
        else:
            todo.append((k, n))
    for k, n in sorted(todo, key=lambda kn: -kn[1]):  # biggest first: a better balance
        s = min(slots, key=lambda x: load[x])
        out[k] = s
        load[s] += max(n, 1)
    return out


def batches(
    tasks: Sequence[SolveTask], batch_vars: int, min_batches: int = 1
) -> list[list[SolveTask]]:
    """Cut ``tasks`` (in order) into batches of at least ``batch_vars`` variables — fewer when
    that would leave fewer than ``min_batches`` batches (one per thread of the slot)."""
    total = sum(max(t.n_vars, 1) for t in tasks)
    if min_batches > 1:
        batch_vars = min(batch_vars, max(total // min_batches, 1))
    out: list[list[SolveTask]] = []
    cur: list[SolveTask] = []
    n = 0
    for t in tasks:
        cur.append(t)
        n += max(t.n_vars, 1)
        if n >= batch_vars:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


@dataclass
class RoundReport:
    """What happened in one round (for logs, tests and the throughput table)."""

    outcomes: dict[str, SolveOutcome] = field(default_factory=dict)
    slot_of: dict[str, Hashable] = field(default_factory=dict)  #: where each site ran
    moved: set[str] = field(default_factory=set)  #: sites re-run after their slot died
    missed: set[str] = field(default_factory=set)  #: sites not back by the deadline
    lost: set[str] = field(default_factory=set)  #: sites with no live slot to re-run on
    n_tasks: int = 0
    wall_s: float = 0.0


def run_round(
    backend: Backend,
    tasks: Sequence[SolveTask],
    slot_of: dict[str, Hashable],
    token: str,
    deadline_s: float | None,
    *,
    batch_vars: int = BATCH_VARS,
    poll_s: float = 0.2,
    none_alive_s: float = 10.0,
) -> RoundReport:
    """Run ``tasks`` on their slots (``slot_of``) until done or ``deadline_s`` seconds pass.

    A cluster that reports no live worker at all (its workers restarting, or an answer lost
    under load) is waited for up to ``none_alive_s``: only then are the pending sites given up
    (``lost``) — a site is never moved for want of a slot to move it to."""
    t0 = time.perf_counter()
    deadline = None if deadline_s is None else time.time() + deadline_s
    rep = RoundReport(slot_of=dict(slot_of))
    by_slot: dict[Hashable, list[SolveTask]] = {}
    for t in tasks:
        by_slot.setdefault(slot_of[t.key], []).append(t)
    pending: dict[cf.Future, tuple[Hashable, list[SolveTask]]] = {}

    def submit(slot: Hashable, batch: list[SolveTask]) -> None:
        pending[backend.submit(slot, run_batch, batch, token, deadline)] = (slot, batch)
        rep.n_tasks += 1

    for slot, ts in by_slot.items():
        for b in batches(ts, batch_vars, backend.parallelism(slot)):
            submit(slot, b)
    next_check = time.monotonic() + poll_s
    none_since: float | None = None
    deferred: list[tuple[Hashable, list[SolveTask]]] = []  # failed, waiting for a live slot
    while pending or deferred:
        left = None if deadline is None else deadline - time.time()
        if left is not None and left <= 0:
            break
        wait = poll_s if left is None else min(poll_s, left)
        if pending:
            done, _ = cf.wait(list(pending), timeout=wait, return_when=cf.FIRST_COMPLETED)
        else:
            time.sleep(wait)
            done = set()
        failed, deferred = deferred, []
        for fut in done:
            slot, batch = pending.pop(fut)
            try:
                for o in fut.result():
                    rep.outcomes[o.key] = o
            except Exception:  # the task died with its worker (or could not be sent)
                failed.append((slot, batch))
        if failed or time.monotonic() >= next_check:
            next_check = time.monotonic() + poll_s
            live = backend.alive()
            if not live:  # no worker at all (restarting?): wait, then give up
                none_since = none_since or time.monotonic()
                if time.monotonic() - none_since < none_alive_s:
                    deferred = failed
                    continue
                for fut, (slot, batch) in list(pending.items()):
                    fut.cancel()
                    del pending[fut]
                    failed.append((slot, batch))
            else:
                none_since = None
            for fut, (slot, batch) in list(pending.items()):
                if slot not in live:
                    fut.cancel()
                    del pending[fut]
                    failed.append((slot, batch))
            for slot, batch in failed:
                _resubmit(backend, live, slot, batch, rep, submit)
    for _slot, batch in [*pending.values(), *deferred]:
        rep.missed.update(t.key for t in batch if t.key not in rep.outcomes)
    for fut in pending:
        fut.cancel()
    rep.wall_s = time.perf_counter() - t0
    return rep


def _resubmit(
    backend: Backend,
    live: set[Hashable],
    slot: Hashable,
    batch: list[SolveTask],
    rep: RoundReport,
    submit,
) -> None:
    """The batch of a dead (or failed) slot again on a live slot, once; lost when no slot is
    left or it failed again."""
    todo = [t for t in batch if t.key not in rep.outcomes]
    rep.lost.update(t.key for t in todo if t.key in rep.moved)
    todo = [t for t in todo if t.key not in rep.moved]
    if not todo:
        return
    others = sorted(live - {slot}, key=str) or sorted(live, key=str)
    if not others:
        rep.lost.update(t.key for t in todo)
        return
    load = {s: 0 for s in others}
    for s in rep.slot_of.values():
        if s in load:
            load[s] += 1
    target = min(others, key=lambda s: load[s])
    for t in todo:
        rep.slot_of[t.key] = target
        rep.moved.add(t.key)
    submit(target, todo)
