"""Fleets: many sites every control interval on a thread pool, Dask or Ray (docs/fleet.md).

- :func:`solve_many` — many compiled problems at once, under a deadline;
- :class:`FleetController` — one :class:`~loadopt.controller.Controller` per site, stepped
  together, each site pinned to a worker so its warm start survives; state saved and restored;
- :func:`solve_coupled` — sites behind a shared limit (a substation, a shared feeder, a
  fleet-wide contract) solved by decomposition across workers, safe at every iteration.
"""

from .backends import Backend, DaskBackend, ExecutorBackend, FleetError, RayBackend
from .controller import FleetController
from .coupled import CoupledResult, SharedLimit, solve_coupled, solve_joint
from .many import FleetResult, SiteResult, solve_many

__all__ = [
    "Backend",
    "CoupledResult",
    "DaskBackend",
    "ExecutorBackend",
    "FleetController",
    "FleetError",
    "FleetResult",
    "RayBackend",
    "SharedLimit",
    "SiteResult",
    "solve_coupled",
    "solve_joint",
    "solve_many",
]
