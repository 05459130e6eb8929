"""A :class:`~loadopt.controller.Controller`'s state as a JSON-able document and back
(:meth:`Controller.to_state <loadopt.controller.Controller.to_state>`,
:meth:`Controller.from_state <loadopt.controller.Controller.from_state>`).

Kept: the site, the constructor settings, the planner's options and warm-start settings, the
signals and objective, the reservations, every active session with what it has been metered (or
estimated) to have received, its last measured current, the last limit handed out, its
re-sharing cap and departure estimate, the vehicles expected, and the controller's clock (last
reading time, last step, EVSEs budgeted at what their vehicle draws, events waiting for the next
step's record). Not kept: what only speeds things up (the previous optimal basis: the first step
after a restore solves cold), the step log and the rejected readings.

Only JSON types (datetimes as ``{"t": ISO 8601}``, sessions and models as their JSON dumps), so
that loading a document never runs code; a document written before a setting was kept restores
it at its default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..errors import InputError
from ..objective import Objective
from ..session import Session
from ..signals import Signals
from ..site import Site
from .state import _ControllerState, _SessionState


class _Restorable(Protocol):
    """What :func:`from_state` calls on the controller it builds (the controller's own API;
    typed here so that this module does not import the class that imports it)."""

    _state: dict[str, _SessionState]

    def reserve(
        self,
        evse_id: str,
        current_a: float | tuple[float, float, float],
        *,
        until: datetime | None = None,
        reason: str = "",
    ) -> None: ...

    def expect_session(self, session: Session) -> None: ...

    def start_session(self, session: Session) -> None: ...


_C = TypeVar("_C", bound=_Restorable)

#: Controller constructor settings kept.
SETTINGS = (
    "step_s",
    "n_periods",
    "coarse_step_s",
    "fine_s",
    "align_to_grid",
    "time_limit_s",
    "default_dwell_h",
    "default_energy_kwh",
    "reshare",
    "reshare_threshold_a",
    "reshare_headroom_a",
    "overstay_extension_h",
    "expected_grace_h",
    "overdraw_tolerance_a",
    "meter_max_age_s",
    "meter_max_lead_s",
    "pilots",
)
#: Warm-start settings of the optimising planner.
WARM = ("warm", "warm_min_mapped", "alien_basis", "cold_after_limit_cut", "warm_min_rows")
#: The controller's clock state: last reading time, last step, EVSEs budgeted at what their
#: vehicle draws, events waiting for the next step's record.
CLOCK = ("_clock", "_last_now", "_observed", "_events")


def _out(v: Any) -> Any:
    """A JSON value of a state field (datetimes as ISO 8601, sessions as their JSON model)."""
    if isinstance(v, datetime):
        return {"t": v.isoformat()}
    if isinstance(v, Session):
        return v.model_dump(mode="json")
    if isinstance(v, tuple | set | frozenset):
        return sorted(v) if isinstance(v, set | frozenset) else list(v)
    return v


def _in(v: Any, typ: str) -> Any:
    """The state field back from :func:`_out` (``typ``: its annotation, as text)."""
    if isinstance(v, dict) and set(v) == {"t"}:
        return datetime.fromisoformat(v["t"])
    if v is None:
        return None
    if typ == "set":
        return set(v)
    if isinstance(v, list) and "tuple" in typ:
        return tuple(v)
    return v


def _t(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat()


def to_state(ctl: _ControllerState) -> dict[str, Any]:
    """The JSON-able state of ``ctl`` (module docstring)."""
    from ..planner import SolvePlanner

    states = [
        {f.name: _out(getattr(st, f.name)) for f in dataclasses.fields(st)}
        for st in ctl._state.values()
    ]
    if isinstance(ctl.planner, SolvePlanner):
        planner = {
            "options": ctl.planner.options.model_dump(mode="json"),
            **{k: getattr(ctl, k) for k in WARM},
        }
    else:  # a user's callable cannot be written down: it is passed again on restore
        planner = {"custom": repr(ctl.planner)}
    return {
        "site": ctl.site.model_dump(mode="json"),
        "settings": {k: getattr(ctl, k) for k in SETTINGS},
        "planner": planner,
        "reservations": {
            e: {"current_a": list(r.current_a), "until": _t(r.until), "reason": r.reason}
            for e, r in ctl.reservations.items()
        },
        "signals": ctl.signals.model_dump(mode="json"),
        "objective": ctl.objective.model_dump(mode="json"),
        "sessions": states,
        "expected": [s.model_dump(mode="json") for s in ctl.expected.values()],
        "clock": {k: _out(getattr(ctl, k)) for k in CLOCK},
    }


def from_state(cls: Callable[..., _C], d: Mapping[str, Any], planner: Any = None) -> _C:
    """A controller of class ``cls`` continuing from :func:`to_state` (validated as new input);
    ``planner`` for a controller saved with a custom (callable) planner."""
    from ..options import AutoOptions, FastOptions, LpOptions, MilpOptions
    from ..planner import SolvePlanner

    if not isinstance(d, Mapping):
        raise InputError(f"controller state must be a mapping, got {type(d).__name__}")

    def t(v: str | None) -> datetime | None:
        return None if v is None else datetime.fromisoformat(v)

    settings = dict(d["settings"])
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise InputError(f"controller state: unknown controller setting(s) {sorted(unknown)}")
    saved = dict(d.get("planner") or {"options": {"method": "lp"}})
    warm: dict[str, Any] = {}  # the constructor sets the warm start of a planner it is given
    if planner is None:
        if "custom" in saved:
            raise InputError(
                f"controller state: the controller used a custom planner "
                f"({saved['custom']}); pass it again to restore"
            )
        opts = saved.pop("options")
        opt_cls: Any = {
            "lp": LpOptions,
            "milp": MilpOptions,
            "auto": AutoOptions,
            "fast": FastOptions,
        }[opts.get("method", "lp")]
        warm = {k: saved[k] for k in WARM if k in saved}
        planner = SolvePlanner(opt_cls.model_validate(opts))
    ctl = cls(
        Site.model_validate(d["site"]),
        signals=Signals.model_validate(d["signals"]),
        objective=Objective.model_validate(d["objective"]),
        planner=planner,
        **settings,
        **warm,
    )
    for e, r in d.get("reservations", {}).items():
        ctl.reserve(e, tuple(r["current_a"]), until=t(r["until"]), reason=r["reason"])
    for s in d.get("expected", ()):
        ctl.expect_session(Session.model_validate(s))
    types = {f.name: f.type for f in dataclasses.fields(_SessionState)}
    for rec in d["sessions"]:
        unknown = set(rec) - set(types)
        if unknown:
            raise InputError(f"controller state: unknown session state field(s) {sorted(unknown)}")
        session = Session.model_validate(rec["session"])
        ctl.start_session(session)
        st: _SessionState = ctl._state[session.id]
        for k, v in rec.items():
            if k != "session":
                setattr(st, k, _in(v, str(types[k])))
    for k, v in d.get("clock", {}).items():
        if k not in CLOCK:
            raise InputError(f"controller state: unknown controller clock field {k!r}")
        setattr(
            ctl,
            k,
            _in(
                v,
                "set"
                if k == "_observed"
                else "datetime"
                if k in ("_clock", "_last_now")
                else "list",
            ),
        )
    return ctl
