"""loadopt — safe, fast current allocation for EV charging sites.

Build a :class:`Site`, describe the :class:`Session` s and :class:`Signals` over a
:class:`Horizon`, :func:`compile_problem`, :func:`solve`, and emit the :class:`Schedule`.
"""

from . import ocpp as ocpp  # OCPP payloads and the CSMS adapter: loadopt.ocpp
from ._base import SeriesPoint
from .compile import compile_problem
from .controller import Controller
from .errors import (
    InputError,
    LoadoptError,
    ModelError,
    SafetyError,
    SolverError,
    UnknownIdError,
)
from .horizon import Horizon
from .objective import Objective
from .options import (
    AutoOptions,
    FastOptions,
    IncumbentOptions,
    IntegerOptions,
    LpOptions,
    MilpOptions,
)
from .planner import Planner, SolvePlanner
from .problem import Problem
from .scenario import Scenario
from .schedule import Kpis, Schedule, ScheduleStatus
from .session import Session
from .signals import DemandResponseEvent, GridPolicy, GridSignal, LevelAction, Signals
from .site import CurrentPoint, DeltaWye, Evse, Node, Site
from .solve import solve

__all__ = [
    "AutoOptions",
    "Controller",
    "CurrentPoint",
    "DeltaWye",
    "DemandResponseEvent",
    "Evse",
    "FastOptions",
    "GridPolicy",
    "GridSignal",
    "Horizon",
    "IncumbentOptions",
    "InputError",
    "IntegerOptions",
    "Kpis",
    "LevelAction",
    "LoadoptError",
    "LpOptions",
    "MilpOptions",
    "ModelError",
    "Node",
    "Objective",
    "Planner",
    "Problem",
    "SafetyError",
    "Scenario",
    "Schedule",
    "ScheduleStatus",
    "SeriesPoint",
    "Session",
    "Signals",
    "Site",
    "SolvePlanner",
    "SolverError",
    "UnknownIdError",
    "compile_problem",
    "solve",
]
__version__ = "0.1.0"
