"""Exceptions raised by loadopt.

Every message names the offending object (EVSE id, node id, session id, event id) and what is
wrong with it, so that a CSMS log line is enough to find the bad input.
"""

from __future__ import annotations


class LoadoptError(Exception):
    """Base class of every error loadopt raises on purpose."""


class InputError(LoadoptError, ValueError):
    """Inputs that are individually valid but inconsistent with each other.

    Examples: a session on an unknown EVSE, two sessions on one EVSE at the same time, a node tree
    with a cycle. Field-level faults (negative energy, NaN, a naive datetime) raise
    :class:`pydantic.ValidationError` from the models instead.
    """


class SolverError(LoadoptError, RuntimeError):
    """A solver backend could not be run at all (not installed, bad option)."""


class SafetyError(LoadoptError, AssertionError):
    """A schedule about to be emitted violates a physical limit.

    This is never raised for a schedule produced by :func:`loadopt.solve`; it exists so that
    :meth:`loadopt.Schedule.check` can be used as an assertion on schedules from elsewhere.
    """
