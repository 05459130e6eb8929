"""The public API carries numpydoc sections: every public function and method exported from
``loadopt`` and its subpackages has a docstring, a ``Parameters`` section when it takes
arguments and a ``Returns`` section when it returns something; a class with a hand-written
``__init__`` documents its arguments (``Parameters`` or ``Attributes``). Dataclass and pydantic
records document their fields beside them (``#:`` comments) or in the class docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

PACKAGES = (
    "loadopt",
    "loadopt.compile",
    "loadopt.controller",
    "loadopt.fast",
    "loadopt.fleet",
    "loadopt.grid",
    "loadopt.milp",
    "loadopt.ocpp",
    "loadopt.solvers",
)

#: Not yet in numpydoc form: the OCPP adapter, belief and guard (their modules are under active
#: change). Listed so that the list can only shrink: an entry documented since, or gone, fails
#: the test below until it is removed here.
PENDING: frozenset[str] = frozenset(
    {
        "loadopt.ocpp.adapter.core.CsmsAdapter",
        "loadopt.ocpp.adapter.core.CsmsAdapter.connect",
        "loadopt.ocpp.adapter.core.CsmsAdapter.disconnect",
        "loadopt.ocpp.adapter.core.CsmsAdapter.in_force",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_boot_notification",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_cleared_charging_limit",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_get_configuration",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_get_variables",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_meter_values",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_notify_charging_limit",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_notify_ev_charging_needs",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_report_charging_profiles",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_response",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_sent",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_start_transaction",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_status_notification",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_stop_transaction",
        "loadopt.ocpp.adapter.core.CsmsAdapter.on_transaction_event",
        "loadopt.ocpp.adapter.core.CsmsAdapter.poll",
        "loadopt.ocpp.adapter.core.CsmsAdapter.set_capabilities",
        "loadopt.ocpp.adapter.core.CsmsAdapter.step",
        "loadopt.ocpp.adapter.core.CsmsAdapter.still_wanted",
        "loadopt.ocpp.adapter.core.CsmsAdapter.transaction_of",
        "loadopt.ocpp.adapter.core.CsmsAdapter.waiting",
        "loadopt.ocpp.belief.Belief",
        "loadopt.ocpp.belief.Belief.answered",
        "loadopt.ocpp.belief.Belief.breakpoints",
        "loadopt.ocpp.belief.Belief.expire",
        "loadopt.ocpp.belief.Belief.lowest_a",
        "loadopt.ocpp.belief.Belief.rebooted",
        "loadopt.ocpp.belief.Belief.sent",
        "loadopt.ocpp.belief.Belief.slot",
        "loadopt.ocpp.belief.Belief.synced",
        "loadopt.ocpp.belief.Belief.value_a",
        "loadopt.ocpp.belief.Belief.worst_a",
        "loadopt.ocpp.belief.Held.breakpoints",
        "loadopt.ocpp.belief.Held.limit_at",
        "loadopt.ocpp.belief.held_from_payload",
        "loadopt.ocpp.guard.SiteLimits",
        "loadopt.ocpp.guard.SiteLimits.admissible",
        "loadopt.ocpp.guard.SiteLimits.excess",
        "loadopt.ocpp.guard.SiteLimits.loads",
        "loadopt.ocpp.guard.SiteLimits.period_bounds_s",
        "loadopt.ocpp.guard.SiteLimits.within_for",
    }
)


def _section(doc: str, *names: str) -> bool:
    return any(re.search(rf"^{n}\n-{{3,}}\s*$", doc, re.M) for n in names)


def _signature(obj) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _needs(obj) -> tuple[bool, bool]:
    sig = _signature(obj)
    if sig is None:
        return False, False
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    returns = sig.return_annotation not in (inspect.Signature.empty, None, "None")
    return bool(params), returns


def public_api() -> dict[str, object]:
    """``module.qualname`` -> object, for everything the packages export (their ``__all__``)
    and the public methods of the classes among them (inherited ones from loadopt included)."""
    out: dict[str, object] = {}
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            home = getattr(obj, "__module__", "") or ""
            if not home.startswith("loadopt"):
                continue  # a re-exported library type
            out[f"{home}.{obj.__qualname__}"] = obj
            if inspect.isclass(obj):
                members: dict[str, object] = {}
                for base in reversed(obj.__mro__):
                    if (getattr(base, "__module__", "") or "").startswith("loadopt"):
                        members.update(vars(base))
                for mname, member in members.items():
                    if mname.startswith("_"):
                        continue
                    if isinstance(member, classmethod | staticmethod):
                        member = member.__func__
                    if inspect.isfunction(member):
                        out[f"{home}.{obj.__qualname__}.{mname}"] = member
    return out


def missing_sections(obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return ["docstring"]
    if inspect.isclass(obj):
        init = vars(obj).get("__init__")
        if init is None or dataclasses.is_dataclass(obj):
            return []
        takes, _ = _needs(init)
        return ["Parameters"] if takes and not _section(doc, "Parameters", "Attributes") else []
    takes, returns = _needs(obj)
    out = []
    if takes and not _section(doc, "Parameters"):
        out.append("Parameters")
    if returns and not _section(doc, "Returns", "Yields"):
        out.append("Returns")
    return out


API = public_api()


def test_the_public_api_is_found():
    assert "loadopt.solve.solve" in API
    assert "loadopt.controller.core.Controller.step" in API
    assert "loadopt.controller.core.Controller.meter" in API  # from a mixin of the class
    assert "loadopt.ocpp.profiles.set_charging_profiles" in API
    assert len(API) > 150


def test_every_public_callable_has_numpydoc_sections():
    bad = {
        name: miss
        for name, obj in sorted(API.items())
        if name not in PENDING and (miss := missing_sections(obj))
    }
    assert bad == {}


def test_the_pending_list_only_shrinks():
    stale = sorted(n for n in PENDING if n not in API or not missing_sections(API[n]))
    assert stale == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("Do it.", ["Parameters", "Returns"]),
        ("Do it.\n\nParameters\n----------\nx\n    A number (A).", ["Returns"]),
        (
            "Do it.\n\nParameters\n----------\nx\n    (A).\n\nReturns\n-------\nfloat\n    kW.",
            [],
        ),
        ("", ["docstring"]),
    ],
)
def test_the_check_reads_numpydoc_sections(doc, expected):
    def f(x: float) -> float:
        return x

    f.__doc__ = doc
    assert missing_sections(f) == expected
