"""Physics that needs integers, solved exactly as a MILP on HiGHS (``Problem → Schedule`` seam).

Modules: :mod:`.model` (columns and rows), :mod:`.repair` (:func:`enforce`), :mod:`.incumbent`
(heuristics, :class:`~loadopt.options.IncumbentOptions`), :mod:`.solve` (:func:`solve_milp`),
:mod:`.slots` (session chains, runs, level groups: written once for all of them).

What the MILP adds to the LP of :mod:`loadopt.lp` (all optional, chosen by
:class:`~loadopt.options.IntegerOptions` and by the EVSEs of the site):

- **Minimum current** (IEC 61851-1: below about 6 A a vehicle stops charging, so a limit between
  0 and the minimum is a pause, not a trickle): per session and period ``r = 0`` or
  ``min ≤ r ≤ max``. Binary ``u`` with ``min·u ≤ r ≤ ub·u`` (default), or HiGHS' native
  semi-continuous columns (``formulation="semicontinuous"``; measured slower, docs/benchmarks.md).
- **Discrete pilot steps** (``Evse.allowed_currents``): ``r`` is 0 or one of the allowed values.
  An evenly spaced set ``a0, a0+d, …`` (whole amps, 6–32 A) is one integer column
  ``r = a0·u + d·n, 0 ≤ n ≤ K·u``; any other set (0/8/16/24/32 A …) one binary per level,
  ``r = Σ a_k y_k, Σ y_k = u``. Levels below the minimum current or above the session's maximum
  are not used; values are never rounded up.
- **At most K sessions charging at once under a node** (``max_charging``): ``Σ u ≤ K`` per node and
  period.
- **Minimum run / pause length** in periods (no flapping relays): start indicators ``s ≥ u_t −
  u_{t−1}``; run: ``Σ_{k=t−L+1..t} s_k ≤ u_t``; pause: ``u_{t−1} + Σ_{k=t..t+L−1} s_k ≤ 1``. A
  run cut by the session's departure or the horizon end is not too short; a session's first
  charging period counts as a start; the wait before the first start is not a pause.
- **1p/3p switching** (OCPP 1.6 ``ConnectorSwitch3to1PhaseSupported``, 2.x
  ``ACPhaseSwitchingSupported``; ``Evse.phase_switching``) for three-phase vehicles: a twin
  variable per (session, period) draws on the EVSE's L1 only (current rows of that site phase,
  a third of the power); ``u3 + u1 ≤ 1``; optionally at most ``max_phase_switches`` changes of
  the phase count per session (``q`` = 3-phase state, ``d ≥ |q_t − q_{t−1}|``, ``Σ d ≤ K``). The
  schedule carries the choice as ``n_phases`` (OCPP ``numberPhases``).

A feasible incumbent exists before branch-and-bound starts: the LP relaxation is solved, its
on/off pattern is taken at a few thresholds (``r ≥ θ·min``), made to respect the caps and run
lengths (by switching sessions off only), and the LP is re-solved with that pattern fixed
(``r ∈ [min, ub]`` where on, 0 where off) — warm, on the same HiGHS object. The best of these,
made exact by :func:`enforce`, is handed to HiGHS with ``setSolution``. With minimum run/pause
lengths the LP charges in short bursts at full current (removed as too-short runs), so more
patterns are tried: from *spread* LPs (every current capped at α·max, so energy needs more
periods), runs for sessions left without energy (their bursts lengthened to the minimum run, or
their last periods before departure — a run cut by departure may be short), and the runs of the
best schedule grown by one period at each end while that improves. With discrete steps a *level
dive* re-solves the LP after fixing fractional currents at the level below, so what rounding
gives up is refilled by the currents still free. When it is already within
``mip_rel_gap`` of the LP bound, branch-and-bound is skipped. A time-out returns the best
solution known (status ``feasible``, the gap in ``message``).

:func:`enforce` is the guarantee: whatever currents come in (solver output, incumbent, fallback),
it lowers them until every integer rule and every safety limit holds — rounding to allowed levels
is always *down*, sub-minimum currents become pauses, caps and run lengths are met by switching
sessions off, and :func:`loadopt.safety.project` (with ``min_current``) keeps every limit.
"""

from ..options import IncumbentOptions, IntegerOptions, MilpOptions
from .incumbent import Incumbent, incumbent
from .model import (
    MilpModel,
    build_milp,
    lp_point,
    objective_of,
    resolve_phases,
    slot_on_of,
    to_dense,
    wants_integers,
)
from .repair import enforce
from .solve import solve_milp

__all__ = [
    "Incumbent",
    "IncumbentOptions",
    "IntegerOptions",
    "MilpModel",
    "MilpOptions",
    "build_milp",
    "enforce",
    "incumbent",
    "lp_point",
    "objective_of",
    "resolve_phases",
    "slot_on_of",
    "solve_milp",
    "to_dense",
    "wants_integers",
]
