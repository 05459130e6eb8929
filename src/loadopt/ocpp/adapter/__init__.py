"""The CSMS adapter: OCPP events in (as payload dicts), transition-safe messages out.

It has no network code and never blocks. The CSMS calls ``on_*`` with what stations send, and

- ``step(now)`` every control interval: budgets every connector the plan cannot control at what
  it may draw (:meth:`loadopt.controller.Controller.reserve`), runs the controller, and returns
  the **first wave** of messages: every decrease, and the increases already safe;
- ``on_response(cp, action, request, response)`` with each answer (``None``: no answer, a
  CallError or a time-out);
- ``poll(now)`` after answers and every fraction of a second: marks messages past their deadline
  unanswered (the station is then budgeted at its worst case and retried with back-off),
  releases the increases that became safe, and returns what to send.

What a station holds is a :class:`~loadopt.ocpp.belief.Belief` (accepted, not sent); whether a
message may go out is decided by :class:`~loadopt.ocpp.guard.SiteLimits` (see docs/ocpp.md, "The
per-instant invariant"). Change detection: a profile is sent when, at some instant, its limit
is lower than the one last sent (any decrease) or higher by more than ``threshold_a``, or its
phases, unit, transaction or ``validTo`` differ. A profile the station rejected is not re-sent
as is: the station's capabilities are asked again and the connector is budgeted at what it
holds until a different profile is accepted.

Bad events (unknown station or connector, a duplicate or out-of-order event, a malformed
payload, a NaN, negative, future-stamped or absurd value, a stop for a transaction never
started) never raise into the control loop: they are logged (``logging`` at WARNING, and
appended to :attr:`CsmsAdapter.problems`) and skipped; the ``on_*`` method returns ``False``.
With ``strict=True`` they raise :class:`~loadopt.errors.InputError` instead.

Modules, one job each: :mod:`~loadopt.ocpp.adapter.core` (the :class:`CsmsAdapter`, its step
and queries), :mod:`~loadopt.ocpp.adapter.state` (records, declared attributes, fault helpers,
value parsers), :mod:`~loadopt.ocpp.adapter.stations` (connections, capabilities),
:mod:`~loadopt.ocpp.adapter.transactions` (transaction lifecycle, meter values, status, needs,
external limits), :mod:`~loadopt.ocpp.adapter.answers` (answers, reconciliation),
:mod:`~loadopt.ocpp.adapter.targets` (wanted profiles per slot, dwell, change detection),
:mod:`~loadopt.ocpp.adapter.release` (budgeting and transition-safe release).
"""

# The private names (and the profile builders a test patches) are re-exported so that the old
# module path ``loadopt.ocpp.adapter`` keeps resolving them.
# ruff: noqa: F401

from ..profiles import (
    Profile,
    StationCaps,
    clear_payload,
    installation_caps,
    to_payload,
    tx_default_profiles,
    tx_profiles,
)
from .core import CsmsAdapter
from .state import (
    _ENDED_MEMORY,
    CONFIG_KEYS_16,
    VARIABLES_2X,
    Message,
    _number,
    _Rejected,
    _time,
    _Tx,
    _unit_of,
    _Want,
    log,
)

__all__ = ["CsmsAdapter", "Message"]
