"""Fleets: many sites every control interval on a thread pool, Dask or Ray (docs/fleet.md)."""

from .backends import Backend, DaskBackend, ExecutorBackend, FleetError, RayBackend
from .many import FleetResult, SiteResult, solve_many

__all__ = ["Backend", "DaskBackend", "ExecutorBackend", "FleetError", "FleetResult",
           "RayBackend", "SiteResult", "solve_many"]
