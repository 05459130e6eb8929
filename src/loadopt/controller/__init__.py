"""The rolling-horizon controller: what a site controller calls every control interval.

It holds the site, the sessions as they arrive and leave, the energy each has received (from meter
readings) and the signals; ``step(now)`` returns the :class:`~loadopt.schedule.Schedule` for the
horizon ``[now, now + n_periods · step_s)``. Only period 0 of it is acted upon before the next
call; the rest is the plan.

Between calls it keeps:

- **energy still wanted** per session: the session's ``energy_kwh`` (wanted at plug-in) minus the
  cumulative energy metered (OCPP ``Energy.Active.Import.Register`` relative to the transaction
  start). Between meter readings it is estimated from the last measured current (or, without one,
  the last limit handed out).
- **departure estimates**: a session whose estimated departure has passed while it is still
  plugged in is extended by ``overstay_extension_h`` (the vehicle is still here: let it charge).
- **meter readings it can trust**: a reading is checked when it arrives (:meth:`Controller.meter`):
  a time that is not an aware datetime, or a value that is not a finite number ≥ 0, raises
  :class:`~loadopt.errors.InputError` at the call; a reading older than the last one applied (out
  of order), older than ``meter_max_age_s`` (stale), later than ``meter_max_lead_s`` ahead of the
  controller's clock (from the future), or with a cumulative energy below the last one is not
  applied and is recorded in :attr:`Controller.rejected_readings`. The estimate of energy drawn
  since the last reading only ever moves forward: a clock going backwards never counts the same
  interval twice.
- **observed reality**: a vehicle metered above the limit handed to it (by more than
  ``overdraw_tolerance_a``) is budgeted at what it draws (a reservation,
  :meth:`Controller.reserve`, on its EVSE lines) and the rest of the site is planned around it;
  its own limit is not raised while it does so, and the reservation is lifted when it is metered
  within its limit again. A vehicle plugged in since the last step has had no limit yet: what it
  is metered at beyond the tolerance is budgeted the same way. Both are reported in the step log
  (:attr:`StepRecord.events`).
- **re-sharing of undrawn capacity**: a vehicle whose measured current stays below its limit
  (tapering near full, a cold battery, a smaller on-board charger than announced) is planned at
  ``measured + reshare_headroom_a`` (never below its minimum current) from the next step on, so
  the rest goes to others; as soon as it draws within ``reshare_threshold_a`` of that reduced
  limit, the reduction is lifted and it may draw its full maximum again.
- **the planner** (``planner=``, :mod:`loadopt.planner`): what turns each step's problem into a
  schedule — the LP on HiGHS by default, warm-started from the previous step's optimal basis
  mapped by stable keys (:mod:`loadopt.solvers.warm`; LPs of ``warm_min_rows`` rows or more,
  smaller ones solve faster cold), or the MILP, the fast path with a policy,
  a baseline, or any callable ``Problem -> Schedule``. Every step records which path was taken
  and why (:attr:`Controller.log`).

All time arithmetic is in UTC (:func:`loadopt._base.to_utc` at every entry): Python adds and
subtracts ``ZoneInfo`` datetimes as wall-clock times, which is an hour off across a daylight-saving
change. :meth:`Controller.replan` / :meth:`Controller.on_signal` re-plan at once when a limit, a
grid signal or a session changes between steps.

Whatever the solver does, the schedule returned went through :func:`loadopt.safety.project` on the
problem compiled from the real sessions and signals: it never exceeds a limit. On solver failure or
time-out the fast path is used (status ``*_fallback``); a custom planner that raises, returns
something else than a schedule of the problem, or breaks a limit is replaced by (or projected
onto) what is safe.

Modules, one job each: :mod:`~loadopt.controller.core` (the :class:`Controller` and its planning
step), :mod:`~loadopt.controller.state` (records and the per-session state),
:mod:`~loadopt.controller.sessions` (session bookkeeping), :mod:`~loadopt.controller.metering`
(meter readings, reservations, observed reality), :mod:`~loadopt.controller.limits` (signal and
limit changes between steps), :mod:`~loadopt.controller.resharing` (re-sharing and pilots).
"""

# The private names are re-exported so that the old module path ``loadopt.controller`` keeps
# resolving them (tests and other modules import some).
# ruff: noqa: F401

from .core import Controller
from .resharing import _step_at_least, _step_at_most
from .state import (
    _KEEP,
    PendingStep,
    RejectedReading,
    Reservation,
    StepRecord,
    _check_id,
    _finite_nonneg,
    _SessionState,
)

__all__ = ["Controller", "PendingStep", "RejectedReading", "Reservation", "StepRecord"]
