"""What a backend hands back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class SolverStatus(StrEnum):
    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"  #: stopped by the time limit; ``x`` may hold a feasible point
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class SolverResult:
    status: SolverStatus
    x: np.ndarray | None  #: column values, or None when the solver has no usable point
    objective: float | None
    time_s: float
    message: str = ""
    mip_gap: float | None = None
