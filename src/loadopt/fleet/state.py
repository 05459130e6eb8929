"""Where a fleet's state lives: every site's controller state as one JSON document.

A restarted coordinator continues from it without losing a session: per site the controller's
own state document (:meth:`Controller.to_state <loadopt.controller.Controller.to_state>`, see
:mod:`loadopt.controller.persist`): the site itself, the controller's settings, signals and
objective, every active session with what it has been metered (or estimated) to have received,
its last measured current, the last limit handed out, its re-sharing cap and departure estimate,
and the vehicles expected. What is not kept is what only speeds things up (the previous optimal
basis: the first step after a restore solves cold) and the step log.

JSON, not pickle: loading a file from an object store must not run code, and the document stays
readable across versions (``"format"`` says which). ``path`` is a local file (written atomically:
a temporary file renamed over it) or any fsspec URL (``s3://…``, ``gs://…``, ``memory://…``; the
``fleet`` extra installs fsspec, the protocol's own package — s3fs, gcsfs — is the user's).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..controller import Controller
from ..errors import InputError

FORMAT = "loadopt-fleet-state/1"


def controller_state(ctl: Controller) -> dict[str, Any]:
    """The JSON-able state of one controller: :meth:`Controller.to_state
    <loadopt.controller.Controller.to_state>`."""
    return ctl.to_state()


def controller_from_state(d: Mapping[str, Any], planner: Any = None) -> Controller:
    """A controller continuing from :func:`controller_state`: :meth:`Controller.from_state
    <loadopt.controller.Controller.from_state>` (``planner``: the planner of a controller saved
    with a custom, callable, planner; ``None`` uses the saved options)."""
    return Controller.from_state(d, planner)


def dumps(controllers: Mapping[str, Controller]) -> str:
    """The state of every controller (site key -> controller) as one JSON document."""
    return json.dumps(
        {"format": FORMAT, "sites": {k: controller_state(c) for k, c in controllers.items()}}
    )


def loads(text: str, planners: Mapping[str, Any] | None = None) -> dict[str, Controller]:
    """The controllers of a document written by :func:`dumps`; :class:`~loadopt.errors.InputError`
    naming the site for a document that is not one or a site that cannot be restored."""
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
