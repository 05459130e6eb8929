"""How to solve: one validated options object per method.

:func:`loadopt.solve` takes one of these (``solve(problem, LpOptions(time_limit_s=2))``); the
:class:`~loadopt.controller.Controller` takes one as its planner. Nothing meant for another method
can be passed (``extra="forbid"``): a ``policy`` on the LP, a ``backend`` on the MILP are errors,
not silently ignored.

- :class:`LpOptions`: the LP of docs/formulation.md on HiGHS (default) or through PuLP.
- :class:`MilpOptions`: the MILP of :mod:`loadopt.milp` (the integer physics of
  :class:`IntegerOptions`).
- :class:`AutoOptions`: the MILP when an integer feature is asked for, else the LP.
- :class:`FastOptions`: the numba allocator of :mod:`loadopt.fast`, no optimiser.

Time limits are in seconds, finite and > 0 (``None``: no limit). HiGHS options (``highs=``) are
checked against highspy's own option table when the options object is built: an unknown name or
a value HiGHS rejects is an error here, not a silent no-op at solve time.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ._base import FrozenModel, Identifier
from .errors import InputError

Method = Literal["lp", "fast", "milp", "auto"]
Policy = Literal["fair", "edf", "llf"]


def _check_time_limit(v: float | None) -> float | None:
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"time_limit_s must be finite and > 0 (or None for no limit), got {v!r}")
    return v


def check_highs_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Raise ``ValueError`` naming the first option HiGHS does not know or whose value it
    rejects (type, range or allowed strings), tried on a throwaway ``Highs`` object."""
    if not opts:
        return opts
    import highspy

    from .solvers.highs import new_highs

    h = new_highs()
    for k, v in opts.items():
        if not isinstance(k, str):
            raise ValueError(f"HiGHS option names are strings, got {k!r}")
        st, _ = h.getOptionType(k)
        if st == highspy.HighsStatus.kError:
            raise ValueError(f"unknown HiGHS option {k!r}")
        try:
            ok = h.setOptionValue(k, v) != highspy.HighsStatus.kError
        except Exception:  # a value of a type the binding cannot convert
            ok = False
        if not ok:
            raise ValueError(f"HiGHS rejects the value {v!r} for its option {k!r}")
    return opts


class IntegerOptions(FrozenModel):
    """User-chosen integer features of the MILP (:class:`MilpOptions` ``integer=``).

    - ``min_current``: honour each session's minimum current (IEC 61851: 0 or ≥ min, A).
    - ``discrete``: honour ``Evse.allowed_currents`` (discrete pilot steps).
    - ``max_charging``: node id → most sessions charging at once below that node.
    - ``min_run_periods`` / ``min_pause_periods``: shortest run / pause, in periods.
    - ``phase_switching``: let EVSEs with ``phase_switching`` switch 3-phase vehicles to 1 phase.
    - ``max_phase_switches``: most changes of the phase count per session over the horizon.
    - ``formulation``: ``"binary"`` (default, measured faster) or ``"semicontinuous"`` (HiGHS'
      native semi-continuous columns, used only for sessions that need nothing else).
    """

    min_current: bool = True
    discrete: bool = True
    max_charging: dict[Identifier, int] = Field(default_factory=dict)
    min_run_periods: int = Field(default=1, ge=1)
    min_pause_periods: int = Field(default=1, ge=1)
    phase_switching: bool = True
    max_phase_switches: int | None = Field(default=None, ge=0)
    formulation: Literal["binary", "semicontinuous"] = "binary"


class IncumbentOptions(FrozenModel):
    """The heuristics that find a MILP incumbent before branch-and-bound (:mod:`loadopt.milp`).

    - ``thetas``: a variable is on in a candidate pattern when its LP value is ≥ θ·minimum.
    - ``spread_alphas``: with minimum run/pause lengths, LPs with every current capped at
      α × its maximum (0 < α ≤ 1), so the energy needs more periods; ``spread_thetas`` are the
      thresholds tried on each.
    - ``end_runs``: offer sessions left without energy a run (their LP bursts lengthened, or
      their last periods before departure).
    - ``grow_rounds``: most run-growing rounds (minimum run/pause lengths).
    - ``dive_rounds``: most LP re-solves of the level dive (discrete steps); ``dive_fix``: share
      of the fractional currents rounded down per dive round (0 < share ≤ 1).

    ``IncumbentOptions(spread_alphas=(), end_runs=False, grow_rounds=0, dive_rounds=0)`` keeps
    only the fixed-pattern LPs of the thresholds.
    """

    thetas: tuple[Annotated[float, Field(gt=0.0)], ...] = (0.25, 0.1, 0.5, 1.0)
    spread_alphas: tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...] = (0.5, 0.3, 0.2)
    spread_thetas: tuple[Annotated[float, Field(gt=0.0)], ...] = (0.25, 0.5)
    end_runs: bool = True
    grow_rounds: int = Field(default=20, ge=0)
    dive_rounds: int = Field(default=100, ge=0)
    dive_fix: float = Field(default=1.0, gt=0.0, le=1.0)


class _Timed(FrozenModel):
    #: Bound on the solver's time (s); the fast path takes over when it runs out.
    time_limit_s: float | None = None

    @field_validator("time_limit_s")
    @classmethod
    def _finite_positive(cls, v: float | None) -> float | None:
        return _check_time_limit(v)


class LpOptions(_Timed):
    """The LP (docs/formulation.md).

    ``backend``: ``"highs"`` (highspy, the default and fast path) or ``"pulp"`` (CBC or any
    solver PuLP drives, given as ``pulp_solver``). ``highs``: extra HiGHS options
    (``setOptionValue`` pairs, checked). ``separable``: with ``"highs"``, an LP whose rows share
    no column (an uncongested step: no safety row can bind) is solved exactly by sorting
    (:mod:`loadopt.solvers.separable`, ``method`` ``"lp-separable"``) instead of by HiGHS.
    """

    method: Literal["lp"] = "lp"
    backend: Literal["highs", "pulp"] = "highs"
    highs: dict[str, Any] = Field(default_factory=dict)
    separable: bool = True
    pulp_solver: Any = None

    @field_validator("highs")
    @classmethod
    def _known_to_highs(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_highs_options(v)


class MilpOptions(_Timed):
    """The MILP of :mod:`loadopt.milp` on HiGHS.

    ``integer``: which integer features (default: minimum current and discrete steps).
    ``mip_rel_gap``: relative gap (objective with its constant) at which to stop, ≥ 0.
    ``time_limit_s`` bounds the whole call (LP relaxation, incumbent and branch-and-bound).
    ``highs``: extra options for HiGHS' MIP solve (checked). ``incumbent``: the heuristics
    run before branch-and-bound.
    """

    method: Literal["milp"] = "milp"
    integer: IntegerOptions | None = None
    mip_rel_gap: float = Field(default=0.01, ge=0.0)
    incumbent: IncumbentOptions = Field(default_factory=IncumbentOptions)
    highs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("highs")
    @classmethod
    def _known_to_highs(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_highs_options(v)


class AutoOptions(FrozenModel):
    """The MILP (``milp``) when an integer feature is asked for — ``milp.integer`` given, or a
    session on an EVSE with ``allowed_currents`` or ``phase_switching`` — else the LP (``lp``)."""

    method: Literal["auto"] = "auto"
    lp: LpOptions = Field(default_factory=LpOptions)
    milp: MilpOptions = Field(default_factory=MilpOptions)


class FastOptions(FrozenModel):
    """The fast allocator (:mod:`loadopt.fast`): ``policy`` ``"fair"`` (weighted max-min fair),
    ``"edf"`` (earliest departure first) or ``"llf"`` (least laxity first)."""

    method: Literal["fast"] = "fast"
    policy: Policy = "fair"


SolveOptions = LpOptions | MilpOptions | AutoOptions | FastOptions

_LEGACY = ("method", "backend", "time_limit_s", "policy", "integer", "mip_rel_gap")


def as_options(options: Any = None, **legacy: Any) -> SolveOptions:
    """The options object for ``options`` (an options object, a method name, a dict of HiGHS
    options as in 0.1, or ``None``) and the 0.1 keyword forms of :func:`loadopt.solve`
    (``method``, ``backend``, ``time_limit_s``, ``policy``, ``integer``, ``mip_rel_gap``).

    A keyword that does not apply to the method is an error, as is mixing an options object with
    keywords.
    """
    given = {k: v for k, v in legacy.items() if v is not None}
    unknown = set(given) - set(_LEGACY)
    if unknown:
        raise InputError(f"solve() got unexpected keyword argument(s) {sorted(unknown)}")
    if isinstance(options, LpOptions | MilpOptions | AutoOptions | FastOptions):
        if given:
            raise InputError(
                f"pass either an options object or keywords, not both "
                f"({sorted(given)} with {type(options).__name__})"
            )
        return options
    highs: dict[str, Any] = {}
    if isinstance(options, str):
        if "method" in given:
            raise InputError("method given twice")
        given["method"] = options
    elif isinstance(options, dict):
        highs = dict(options)
    elif options is not None:
        raise InputError(
            f"options must be LpOptions, MilpOptions, AutoOptions, FastOptions, a "
            f"method name or None, got {type(options).__name__}"
        )
    method = given.pop("method", "lp")
    if method == "fast":
        return FastOptions(**given)
    if method == "lp":
        solver = highs.pop("solver", None) if given.get("backend") == "pulp" else None
        return LpOptions(**given, highs=highs, pulp_solver=solver)
    if method in ("milp", "auto"):
        backend = given.pop("backend", "highs")
        if backend != "highs":
            raise InputError(f"the MILP runs on HiGHS only, not backend {backend!r}")
    if method == "milp":
        return MilpOptions(**given, highs=highs)
    if method == "auto":
        tl = given.get("time_limit_s")
        return AutoOptions(
            lp=LpOptions(time_limit_s=tl, highs=highs), milp=MilpOptions(**given, highs=highs)
        )
    raise InputError(f"unknown method {method!r}; use 'lp', 'fast', 'milp' or 'auto'")
