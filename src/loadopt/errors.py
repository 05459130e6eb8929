"""Exceptions raised by loadopt: one family, :class:`LoadoptError`.

Every message names the offending object (EVSE id, node id, session id, event id) and what is
wrong with it, so that a CSMS log line is enough to find the bad input. A CSMS that catches
:class:`LoadoptError` catches everything bad input can raise: model construction and scenario
files (:class:`ModelError`), inconsistent inputs and bad calls (:class:`InputError`; a lookup by an
unknown id: :class:`UnknownIdError`, also a ``KeyError``), solver set-up
(:class:`SolverError`). Each also subclasses the built-in a caller may already catch
(``ValueError``, ``RuntimeError``), and :class:`ModelError` is a :class:`pydantic.ValidationError`,
so code written against plain pydantic keeps working. docs/inputs.md lists what each bad input
gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError


class LoadoptError(Exception):
    """Base class of every error loadopt raises on purpose."""


class InputError(LoadoptError, ValueError):
    """Inputs that are individually valid but inconsistent with each other, or a bad call.

    Examples: a session on an unknown EVSE, two sessions on one EVSE at the same time, a node tree
    with a cycle, a naive datetime or a string where a time is due, a meter reading from the
    future. Field-level faults of a model raise :class:`ModelError`.
    """


class UnknownIdError(InputError, KeyError):
    """A lookup by id (a session, a transaction) found nothing.

    An :class:`InputError` like every bad call, and also a ``KeyError`` so that code written
    against a mapping lookup keeps working. Its text is the message, not the quoted key.
    """

    __str__ = Exception.__str__


class ModelError(LoadoptError, ValidationError):
    """A model (``Site``, ``Node``, ``Evse``, ``Session``, ``Signals``, ``Horizon``, a scenario
    file...) rejected its input: a negative or NaN number, a naive datetime, an unknown field,
    an inconsistent tree.

    It *is* a :class:`pydantic.ValidationError` (and so a ``ValueError``): ``errors()`` lists every
    fault with its location. ``str()`` names the model, the object (by its ``id`` where it has
    one) and the field of each fault, e.g. ``Site 'depot': nodes.1 (node 'cb').max_current: Input
    should be greater than or equal to 0 [got -3]``.
    """

    def __str__(self) -> str:
        errs = _one_per_field(self.errors(include_url=False))
        head = f"{self.title}: {len(errs)} invalid input(s)" if len(errs) != 1 else self.title
        data = getattr(self, "_loadopt_input", None)
        lines = [head]
        for e in errs:
            loc = tuple(e.get("loc") or ())
            msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            where = f"{_where(e)}{_named(data, loc)}: " if loc else ""
            lines.append(f"  {where}{msg}{_got(e)}")
        return "\n".join(lines) if len(errs) != 1 else f"{head}: {lines[1].strip()}"

    @classmethod
    def wrap(cls, model: type, data: Any, exc: ValidationError) -> ModelError:
        """The :class:`ModelError` for ``exc`` raised while validating ``data`` as ``model``.

        Parameters
        ----------
        model
            The pydantic model class that rejected ``data``.
        data
            The raw input (its ``id`` names the object in the message).
        exc
            pydantic's error.

        Returns
        -------
        ModelError
        """
        title = _describe(model.__name__, data)
        try:
            out = cls.from_exception_data(title, exc.errors())  # type: ignore[arg-type]
        except Exception:  # an error pydantic cannot rebuild: keep its text
            out = cls.from_exception_data(
                title,
                [
                    {
                        "type": "value_error",
                        "loc": (),
                        "input": data,
                        "ctx": {"error": ValueError(str(exc))},
                    }
                ],
            )
        out._loadopt_input = data  # type: ignore[attr-defined]
        return out


class SolverError(LoadoptError, RuntimeError):
    """A solver backend could not be run at all (not installed, bad option)."""


class SafetyError(LoadoptError, AssertionError):
    """A schedule about to be emitted violates a physical limit.

    This is never raised for a schedule produced by :func:`loadopt.solve`; it exists so that
    :meth:`loadopt.Schedule.check` can be used as an assertion on schedules from elsewhere.
    """


# --------------------------------------------------------------------------- message helpers
def _obj_id(obj: Any) -> str | None:
    v = obj.get("id") if isinstance(obj, Mapping) else getattr(obj, "id", None)
    return v if isinstance(v, str) and v else None


def _describe(kind: str, data: Any) -> str:
    oid = _obj_id(data)
    return f"{kind} {oid!r}" if oid else kind


def _named(data: Any, loc: tuple) -> str:
    """The objects with an ``id`` that ``loc`` passes through in ``data``:
    ``("nodes", 1, "max_current")`` -> ``" (node 'cb')"``."""
    out: list[str] = []
    cur = data
    for i, part in enumerate(loc):
        nxt = None
        try:
            if isinstance(part, int) and isinstance(cur, Sequence) and not isinstance(cur, str):
                nxt = cur[part]
            elif isinstance(cur, Mapping):
                nxt = cur.get(part)
            elif isinstance(part, str):
                nxt = getattr(cur, part, None)
        except Exception:
            nxt = None
        oid = _obj_id(nxt) if isinstance(part, int) and i < len(loc) - 1 else None
        if oid is not None:
            kind = str(loc[i - 1]).rstrip("s") if i else "item"
            out.append(f"{_singular(kind)} {oid!r}")
        cur = nxt
    return f" ({', '.join(out)})" if out else ""


def _singular(field: str) -> str:
    return {"node": "node", "evse": "EVSE", "session": "session", "demand_response": "event"}.get(
        field, field
    )


def _is_union_tag(part: Any) -> bool:
    """pydantic names the member of a union a value failed as a loc part (``constrained-float``,
    ``tuple[...]``, ``function-after[...]``): not a field."""
    return isinstance(part, str) and (
        "[" in part or "-" in part or part in ("float", "int", "str", "bool", "none")
    )


def _one_per_field(errs: list[Any]) -> list[dict[str, Any]]:
    """One error per field: a value that fails every member of a union is reported once (the
    first member's message, at the field's location)."""
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for e in errs:
        loc = tuple(e.get("loc") or ())
        while loc and _is_union_tag(loc[-1]):
            loc = loc[:-1]
        key = (loc, repr(e.get("input"))[:200])
        if key in seen:
            continue
        seen.add(key)
        out.append({**e, "loc": loc})
    return out


def _where(e: Mapping[str, Any]) -> str:
    loc = e.get("loc") or ()
    return ".".join(str(p) for p in loc) if loc else "(the object)"


def _got(e: Mapping[str, Any]) -> str:
    if e.get("type") in ("value_error", "assertion_error", "missing"):
        return ""
    v = e.get("input")
    text = repr(v)
    return f" [got {text[:80]}{'...' if len(text) > 80 else ''}]"
