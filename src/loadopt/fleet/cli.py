"""``loadopt fleet simulate``: a generated fleet stepped through time on a backend of choice."""

from __future__ import annotations

import argparse
import sys

BACKENDS = ("sequential", "threads", "dask", "ray")


def add_parser(sub) -> None:
    """Add ``fleet`` (with its ``simulate`` subcommand) to the ``loadopt`` parser."""
    f = sub.add_parser(
        "fleet",
        help="many sites at once: loadopt fleet simulate",
        description="Fleets of sites on a thread pool, Dask or Ray (see docs/fleet.md).",
    )
    fs = f.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND")
    s = fs.add_parser(
        "simulate",
        help="step a generated fleet and print its throughput",
        description="Generate SITES workplace sites of EVSES EVSEs each (the built-in synthetic "
        "generator, one seed per site), then step the fleet STEPS times (vehicles arrive, "
        "leave and follow their limits between steps) on the chosen backend; print a "
        "throughput table (sites/s per step, coordinator and worker shares, fallbacks).",
    )
    s.add_argument("--sites", type=int, default=20, help="number of sites (default %(default)s)")
    s.add_argument("--evses", type=int, default=50, help="EVSEs per site (default %(default)s)")
    s.add_argument(
        "--periods",
        type=int,
        default=96,
        help="periods of 15 min per horizon (default %(default)s)",
    )
    s.add_argument("--steps", type=int, default=4, help="fleet steps (default %(default)s)")
    s.add_argument(
        "--backend",
        choices=BACKENDS,
        default="threads",
        help="where the sites are solved (default %(default)s)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=2,
        help="threads, or workers of the embedded Dask LocalCluster (default %(default)s)",
    )
    s.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --backend dask: a running Dask scheduler (tcp://host:8786) "
        "instead of an embedded LocalCluster",
    )
    s.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="deadline of each step (s); late sites get the fast path",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """``loadopt fleet ...``."""
    if getattr(args, "fleet_command", None) != "simulate":
        print("loadopt fleet: use `loadopt fleet simulate` (see --help)", file=sys.stderr)
        return 2
    for name in ("sites", "evses", "periods", "steps", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError(f"--deadline must be > 0 s, got {args.deadline}")
    from .backends import (
        Backend,
        DaskBackend,
        ExecutorBackend,
        RayBackend,
        SequentialExecutor,
    )
    from .simulate import make_fleet, progress_bar, throughput_table
    from .simulate import run as run_fleet

    backend: Backend
    if args.backend == "sequential":
        backend = ExecutorBackend(SequentialExecutor())
    elif args.backend == "threads":
        backend = ExecutorBackend(max_workers=args.workers)
    elif args.backend == "dask":
        backend = (
            DaskBackend(args.scheduler) if args.scheduler else DaskBackend(n_workers=args.workers)
        )
    else:
        backend = RayBackend(args.workers)
    label = f"{args.backend} ({len(backend.slots())} slot(s))"
    try:
        sites = make_fleet(args.sites, args.evses, n_periods=args.periods, seed=args.seed)
        show = not args.quiet and sys.stderr.isatty()
        log = run_fleet(
            sites,
            backend,
            n_steps=args.steps,
            deadline_s=args.deadline,
            progress=progress_bar if show else None,
        )
    finally:
        backend.close()
    print(
        f"loadopt fleet simulate: {args.sites} sites x {args.evses} EVSEs x "
        f"{args.periods} periods, {args.steps} steps"
    )
    print(throughput_table(log, label))
    return 0
