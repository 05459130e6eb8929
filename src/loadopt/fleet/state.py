"""Where a fleet's state lives: every site's controller state as one JSON document.

A restarted coordinator continues from it without losing a session: per site the site itself,
the controller's settings, signals and objective, every active session with what it has been
metered (or estimated) to have received, its last measured current, the last limit handed out,
its re-sharing cap and departure estimate, and the vehicles expected. What is not kept is what
only speeds things up (the previous optimal basis: the first step after a restore solves cold)
and the step log.

JSON, not pickle: loading a file from an object store must not run code, and the document stays
readable across versions (``"format"`` says which). ``path`` is a local file (written atomically:
a temporary file renamed over it) or any fsspec URL (``s3://…``, ``gs://…``, ``memory://…``; the
``fleet`` extra installs fsspec, the protocol's own package — s3fs, gcsfs — is the user's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..controller import Controller, _SessionState
from ..errors import InputError
from ..objective import Objective
from ..session import Session
from ..signals import Signals
from ..site import Site

FORMAT = "loadopt-fleet-state/1"

#: Controller constructor settings kept.
_INIT = (
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
)
#: Warm-start settings of the optimising planner.
_WARM = ("warm", "warm_min_mapped", "alien_basis", "cold_after_limit_cut")
#: The controller's clock state: last reading time, last step, EVSEs budgeted at what their
#: vehicle draws, events waiting for the next step's record.
_CLOCK = ("_clock", "_last_now", "_observed", "_events")


def _out(v: Any) -> Any:
    """A JSON value of a state field (datetimes as ISO 8601, sessions as their JSON model)."""
    from datetime import datetime

    if isinstance(v, datetime):
        return {"t": v.isoformat()}
    if isinstance(v, Session):
        return v.model_dump(mode="json")
    if isinstance(v, tuple | set | frozenset):
        return sorted(v) if isinstance(v, set | frozenset) else list(v)
    return v


def _in(v: Any, typ: str) -> Any:
    """The state field back from :func:`_out` (``typ``: its annotation, as text)."""
    from datetime import datetime

    if isinstance(v, dict) and set(v) == {"t"}:
        return datetime.fromisoformat(v["t"])
    if v is None:
        return None
    if typ == "set":
        return set(v)
    if isinstance(v, list) and "tuple" in typ:
        return tuple(v)
    return v


def controller_state(ctl: Controller) -> dict[str, Any]:
    """The JSON-able state of one controller (see the module docstring)."""
    from datetime import datetime

    def t(v: datetime | None) -> str | None:
        return None if v is None else v.isoformat()

    states = [
        {f.name: _out(getattr(st, f.name)) for f in dataclasses.fields(st)}
        for st in ctl._state.values()
    ]
    from ..planner import SolvePlanner

    if isinstance(ctl.planner, SolvePlanner):
        planner = {
            "options": ctl.planner.options.model_dump(mode="json"),
            **{k: getattr(ctl, k) for k in _WARM},
        }
    else:  # a user's callable cannot be written down: it is passed again on restore
        planner = {"custom": repr(ctl.planner)}
    return {
        "site": ctl.site.model_dump(mode="json"),
        "settings": {k: getattr(ctl, k) for k in _INIT},
        "planner": planner,
        "reservations": {
            e: {"current_a": list(r.current_a), "until": t(r.until), "reason": r.reason}
            for e, r in ctl.reservations.items()
        },
        "signals": ctl.signals.model_dump(mode="json"),
        "objective": ctl.objective.model_dump(mode="json"),
        "sessions": states,
        "expected": [s.model_dump(mode="json") for s in ctl.expected.values()],
        "clock": {k: _out(getattr(ctl, k)) for k in _CLOCK},
    }


def controller_from_state(d: Mapping[str, Any], planner: Any = None) -> Controller:
    """A controller continuing from :func:`controller_state` (validated as new input).

    ``planner``: the planner of a controller saved with a custom (callable) planner; ``None``
    uses the saved options."""
    from datetime import datetime

    from ..options import AutoOptions, FastOptions, LpOptions, MilpOptions
    from ..planner import SolvePlanner

    def t(v: str | None) -> datetime | None:
        return None if v is None else datetime.fromisoformat(v)

    settings = dict(d["settings"])
    unknown = set(settings) - set(_INIT)
    if unknown:
        raise InputError(f"fleet state: unknown controller setting(s) {sorted(unknown)}")
    saved = dict(d.get("planner") or {"options": {"method": "lp"}})
    if planner is None:
        if "custom" in saved:
            raise InputError(
                f"fleet state: the controller used a custom planner "
                f"({saved['custom']}); pass it again to restore"
            )
        opts = saved.pop("options")
        cls: Any = {"lp": LpOptions, "milp": MilpOptions, "auto": AutoOptions, "fast": FastOptions}[
            opts.get("method", "lp")
        ]
        planner = SolvePlanner(cls.model_validate(opts), **{k: saved[k] for k in _WARM})
    ctl = Controller(
        Site.model_validate(d["site"]),
        signals=Signals.model_validate(d["signals"]),
        objective=Objective.model_validate(d["objective"]),
        planner=planner,
        **settings,
    )
    for e, r in d.get("reservations", {}).items():
        ctl.reserve(e, tuple(r["current_a"]), until=t(r["until"]), reason=r["reason"])
    for s in d.get("expected", ()):
        ctl.expect_session(Session.model_validate(s))
    types = {f.name: f.type for f in dataclasses.fields(_SessionState)}
    for rec in d["sessions"]:
        unknown = set(rec) - set(types)
        if unknown:
            raise InputError(f"fleet state: unknown session state field(s) {sorted(unknown)}")
        session = Session.model_validate(rec["session"])
        ctl.start_session(session)
        st: _SessionState = ctl._state[session.id]
        for k, v in rec.items():
            if k != "session":
                setattr(st, k, _in(v, str(types[k])))
    for k, v in d.get("clock", {}).items():
        if k not in _CLOCK:
            raise InputError(f"fleet state: unknown controller clock field {k!r}")
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


def dumps(controllers: Mapping[str, Controller]) -> str:
    return json.dumps(
        {"format": FORMAT, "sites": {k: controller_state(c) for k, c in controllers.items()}}
    )


def loads(text: str, planners: Mapping[str, Any] | None = None) -> dict[str, Controller]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"fleet state is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(
            f"fleet state: expected format {FORMAT!r}, got "
            f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}"
        )
    out = {}
    for key, d in doc["sites"].items():
        try:
            out[key] = controller_from_state(d, (planners or {}).get(key))
        except Exception as exc:
            raise InputError(f"fleet state: site {key!r}: {exc}") from exc
    return out


def save_controllers(controllers: Mapping[str, Controller], path: str | os.PathLike) -> None:
    """Write the state of every controller to ``path`` (module docstring)."""
    text = dumps(controllers)
    p = str(path)
    if "://" in p:
        import fsspec

        with fsspec.open(p, "w") as f:
            f.write(text)
        return
    target = Path(p)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_controllers(
    path: str | os.PathLike, planners: Mapping[str, Any] | None = None
) -> dict[str, Controller]:
    """The controllers saved at ``path`` by :func:`save_controllers` (``planners``: site key ->
    planner, for sites saved with a custom planner)."""
    p = str(path)
    if "://" in p:
        import fsspec

        with fsspec.open(p, "r") as f:
            return loads(f.read(), planners)
    return loads(Path(p).read_text(), planners)
