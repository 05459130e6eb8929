"""OpenADR 2.0b VEN on ``openleadr`` (extra ``loadopt[openadr]``): events in, compliance out.

:func:`event_to_signals` is the mapping (pure, no network); :class:`OpenAdr2Ven` runs an
``openleadr.OpenADRClient`` that polls the VTN, opts in or out of each event, keeps the
:class:`~loadopt.signals.GridSignal` s of the events it accepted, hands them to a callback
(typically ``controller.set_signals(controller.signals.with_grid_signals("openadr2", sigs))``) and
answers the VTN's report requests with a TELEMETRY_USAGE report of the metered import, the
requirement in force and whether it was met (docs/grid-signals.md).

Mapping of the 2.0b signals (one :class:`GridSignal` per interval; OpenADR 2.0b profile spec
§8.1 signal names and types):

=====================  ==============================  =======================================
signal name            signal type                     GridSignal
=====================  ==============================  =======================================
SIMPLE                 level                           ``level`` (0–3, site policy)
ELECTRICITY_PRICE      price / priceRelative           ``import_price_adder`` (price: see docs)
LOAD_DISPATCH          setpoint                        ``setpoint_kw`` (soft)
LOAD_DISPATCH          delta (negative)                ``reduction_kw`` = −value (uncontrolled
                                                       baseline)
LOAD_CONTROL           x-loadControlSetpoint           ``import_cap_kw``
LOAD_CONTROL           x-loadControlCapacity (0..1)    ``import_cap_kw`` = value · capacity_kw
LOAD_CONTROL           x-loadControlPercentOffset      ``reduction_kw`` = −value / 100 ·
                                                       capacity_kw (negative offsets only)
LOAD_CONTROL           x-loadControlLevelOffset        ``level`` = clamp(value, 0, 3)
=====================  ==============================  =======================================

Powers are kW unless the signal's ``itemBase`` says otherwise (its SI scale is applied: W with
scale ``none`` is divided by 1000). ``active_period.tolerance.startafter`` becomes
``randomize_s``. Anything else (priceMultiplier, a positive delta, other names) is unsupported:
the VEN opts out of that event and says why in :attr:`OpenAdr2Ven.problems`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InputError
from ..signals import GridSignal
from .arrays import stamped_signals

log = logging.getLogger(__name__)

SOURCE = "openadr2"
_SI = {
    "p": 1e-12,
    "n": 1e-9,
    "micro": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "none": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}


class UnsupportedSignal(InputError):
    """An OpenADR signal loadopt cannot honour (the VEN opts out of its event)."""


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _kw(value: float, signal: Any) -> float:
    """A power payload in kW, from the signal's itemBase scale (kW when none is given)."""
    m = _get(signal, "measurement")
    if not m:
        return float(value)
    scale = _get(m, "scale") or "none"
    return float(value) * _SI.get(scale, 1.0) / 1000.0  # itemBase powerReal is in W


def _startafter_s(event: Any) -> int:
    ap = _get(event, "active_period") or {}
    tol = _get(ap, "tolerance") or {}
    sa = _get(tol, "startafter") or _get(_get(tol, "tolerate") or {}, "startafter")
    if isinstance(sa, timedelta):
        return max(int(sa.total_seconds()), 0)
    return 0


def event_to_signals(
    event: Any,
    *,
    capacity_kw: float | None = None,
    node: str | None = None,
    valid_until: datetime | None = None,
    fallback_kw: float | None = None,
) -> tuple[GridSignal, ...]:
    """The :class:`GridSignal` s of one OpenADR 2.0b event (an ``openleadr`` event dict).

    ``capacity_kw``: what ``x-loadControlCapacity`` / ``PercentOffset`` are relative to (the
    site's contracted capacity). ``valid_until`` / ``fallback_kw``: the VEN's staleness rule,
    stamped on every signal. Raises :class:`UnsupportedSignal` for a signal that cannot be
    honoured, :class:`~loadopt.errors.InputError` for a malformed event.
    """
    desc = _get(event, "event_descriptor") or {}
    event_id = _get(desc, "event_id")
    if not event_id:
        raise InputError("OpenADR 2.0b event without event_descriptor.event_id")
    prio = int(_get(desc, "priority") or 0)
    priority = 1000 - prio if prio > 0 else 0  # 2.0b: 1 is the highest, 0 = none
    rand = _startafter_s(event)
    out: list[GridSignal] = []
    for k, es in enumerate(_get(event, "event_signals") or []):
        name = _get(es, "signal_name")
        typ = _get(es, "signal_type")
        sid = _get(es, "signal_id") or str(k)
        for n, iv in enumerate(_get(es, "intervals") or []):
            start = _get(iv, "dtstart")
            dur = _get(iv, "duration")
            value = _get(iv, "signal_payload")
            if not isinstance(start, datetime) or not isinstance(dur, timedelta) or value is None:
                raise InputError(
                    f"OpenADR 2.0b event {event_id!r} signal {sid!r}: interval "
                    f"{n} lacks dtstart, duration or payload"
                )
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            kw: dict[str, Any] = {}
            value = float(value)
            if name in ("SIMPLE", "simple"):
                kw["level"] = max(0, min(3, round(value)))
            elif name == "ELECTRICITY_PRICE" and typ in ("price", "priceRelative"):
                kw["import_price_adder"] = value
            elif name == "LOAD_DISPATCH" and typ == "setpoint":
                kw["setpoint_kw"] = _kw(value, es)
            elif name == "LOAD_DISPATCH" and typ == "delta" and value <= 0:
                kw["reduction_kw"] = -_kw(value, es)
            elif name == "LOAD_CONTROL" and typ == "x-loadControlSetpoint":
                kw["import_cap_kw"] = max(_kw(value, es), 0.0)
            elif name == "LOAD_CONTROL" and typ in (
                "x-loadControlCapacity",
                "x-loadControlPercentOffset",
            ):
                if capacity_kw is None:
                    raise UnsupportedSignal(
                        f"OpenADR 2.0b event {event_id!r}: {typ} needs the VEN's capacity_kw"
                    )
                if typ == "x-loadControlCapacity":
                    kw["import_cap_kw"] = max(min(value, 1.0), 0.0) * capacity_kw
                elif value <= 0:
                    kw["reduction_kw"] = min(-value, 100.0) / 100.0 * capacity_kw
                else:
                    raise UnsupportedSignal(
                        f"OpenADR 2.0b event {event_id!r}: a positive "
                        "x-loadControlPercentOffset asks for more load"
                    )
            elif name == "LOAD_CONTROL" and typ == "x-loadControlLevelOffset":
                kw["level"] = max(0, min(3, round(value)))
            else:
                raise UnsupportedSignal(
                    f"OpenADR 2.0b event {event_id!r}: signal {name!r} of "
                    f"type {typ!r} is not supported"
                )
            # prices and setpoints live at the grid connection; caps may target a node
            node_kw = node if {"level", "import_cap_kw", "reduction_kw"} & kw.keys() else None
            out.append(
                GridSignal(
                    id=f"{event_id}/{sid}/{_get(iv, 'uid', n)}",
                    start=start,
                    end=start + dur,
                    node=node_kw,
                    priority=priority,
                    source=SOURCE,
                    ref=str(event_id),
                    randomize_s=rand,
                    valid_until=valid_until,
                    fallback_kw=fallback_kw,
                    **kw,
                )
            )
    if not out:
        raise InputError(f"OpenADR 2.0b event {event_id!r} has no signal intervals")
    return tuple(out)


@dataclass
class ReportState:
    """What the next TELEMETRY_USAGE report says (set by :meth:`OpenAdr2Ven.record`)."""

    at: datetime | None = None
    metered_kw: float | None = None
    required_kw: float | None = None
    met: bool | None = None
    history: list[tuple[datetime, float, float | None, bool]] = field(default_factory=list)


class OpenAdr2Ven:
    """An OpenADR 2.0b VEN (``openleadr.OpenADRClient``) feeding :class:`GridSignal` s to loadopt.

    ``on_signals(signals)`` is called with all accepted signals (a tuple) whenever an event
    arrives, changes, is cancelled or completes. ``opt(event, signals) -> bool`` decides opt-in
    (default: in, whenever every signal maps). Staleness: every signal carries ``valid_until =
    last contact + stale_after_s`` and ``fallback_kw`` (required: a stale VTN never means "no
    limit"); call :meth:`refresh_validity` each control step to restamp after successful polls.
    Reports: TELEMETRY_USAGE with resource ``resource_id`` and three data points — ``import``
    (metered net import, kW), ``required`` (the requirement in force, kW) and ``met`` (1 or 0) —
    whatever :meth:`record` last stored, stamped with the reading's time. Call :meth:`record`
    once before :meth:`run`: until then the reports are empty, which openleadr 0.5's VTN answers
    with HTTP 500.
    """

    def __init__(
        self,
        ven_name: str,
        vtn_url: str,
        *,
        fallback_kw: float,
        on_signals: Callable[[tuple[GridSignal, ...]], Any] | None = None,
        opt: Callable[[Any, tuple[GridSignal, ...]], bool] | None = None,
        capacity_kw: float | None = None,
        node: str | None = None,
        stale_after_s: float = 600.0,
        resource_id: str = "site",
        report_sampling_s: float = 10.0,
        ven_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        try:
            from openleadr import OpenADRClient
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "OpenADR 2.0b needs openleadr: pip install 'loadopt[openadr]'"
            ) from exc
        if not fallback_kw >= 0:
            raise InputError("OpenAdr2Ven: fallback_kw must be a number >= 0")
        self.client = OpenADRClient(
            ven_name=ven_name,
            vtn_url=vtn_url,
            ven_id=ven_id,
            show_fingerprint=False,
            allow_jitter=False,
        )
        self.client.add_handler("on_event", self._on_event)
        self.client.add_handler("on_update_event", self._on_event)
        self.on_signals = on_signals
        self.opt = opt
        self.capacity_kw = capacity_kw
        self.node = node
        self.fallback_kw = float(fallback_kw)
        self.stale_after_s = float(stale_after_s)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.last_contact = self.clock()
        self.events: dict[str, tuple[GridSignal, ...]] = {}
        self.opted: dict[str, str] = {}
        self.problems: list[str] = []
        self.report = ReportState()
        sampling = timedelta(seconds=report_sampling_s)
        for r_id, measurement in (
            ("import", "REAL_POWER"),
            ("required", "REAL_POWER"),
            ("met", "met"),
        ):
            self.client.add_report(
                callback=self._reader(r_id),
                resource_id=resource_id,
                r_id=r_id,
                report_specifier_id="loadopt-compliance",
                measurement=measurement,
                unit="W" if measurement == "REAL_POWER" else None,
                scale="k" if measurement == "REAL_POWER" else "none",
                sampling_rate=sampling,
                report_duration=timedelta(hours=1),
            )

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        await self.client.run()

    async def stop(self) -> None:
        await self.client.stop()

    # ------------------------------------------------------------------ events
    def signals(self) -> tuple[GridSignal, ...]:
        """Every signal of the events opted into, restamped with the current validity."""
        vu = self.last_contact + timedelta(seconds=self.stale_after_s)
        return stamped_signals(SOURCE, self.events.values(), vu, self.fallback_kw, self.node)

    def refresh_validity(self) -> tuple[GridSignal, ...]:
        """Note a successful contact now (the client polled) and return :meth:`signals`."""
        if self.client.poll_frequency is not None or self.client.registration_id is not None:
            self.last_contact = self.clock()
        return self.signals()

    async def _on_event(self, event: dict) -> str:
        """openleadr's on_event / on_update_event: never raises (a bad event is opted out)."""
        self.last_contact = self.clock()
        desc = event.get("event_descriptor", {})
        eid = str(desc.get("event_id"))
        status = desc.get("event_status")
        try:
            if status in ("cancelled", "completed"):
                self.events.pop(eid, None)
                result = "optIn" if status == "completed" else self.opted.get(eid, "optIn")
            else:
                sigs = event_to_signals(
                    event,
                    capacity_kw=self.capacity_kw,
                    node=self.node,
                    valid_until=self.last_contact + timedelta(seconds=self.stale_after_s),
                    fallback_kw=self.fallback_kw,
                )
                ok = True if self.opt is None else bool(self.opt(event, sigs))
                if ok:
                    self.events[eid] = sigs
                else:
                    self.events.pop(eid, None)
                result = "optIn" if ok else "optOut"
        except InputError as exc:  # includes UnsupportedSignal
            self.problems.append(str(exc))
            log.warning("opting out of OpenADR event %s: %s", eid, exc)
            self.events.pop(eid, None)
            result = "optOut"
        self.opted[eid] = result
        if self.on_signals is not None:
            try:
                out = self.on_signals(self.signals())
                if asyncio.iscoroutine(out):
                    await out
            except Exception as exc:  # the consumer's fault must not break the VEN
                self.problems.append(f"on_signals failed: {exc!r}")
                log.exception("on_signals failed")
        return result

    # ------------------------------------------------------------------ reports
    def record(
        self,
        at: datetime,
        metered_import_kw: float,
        required_kw: float | None,
        met: bool | None = None,
    ) -> None:
        """Store what the next report says: metered net import (kW), the requirement in force
        (kW, None = none) and whether it was met (default: metered ≤ required)."""
        if met is None:
            met = required_kw is None or metered_import_kw <= required_kw + 1e-6
        self.report.at = at
        self.report.metered_kw = float(metered_import_kw)
        self.report.required_kw = None if required_kw is None else float(required_kw)
        self.report.met = bool(met)
        self.report.history.append(
            (at, float(metered_import_kw), self.report.required_kw, bool(met))
        )

    def _reader(self, r_id: str) -> Callable[[], list[tuple[datetime, float]]]:
        """openleadr's incremental report callback: ``[(when, value)]``, stamped with the time of
        the reading (not of the sending); nothing until :meth:`record` stored something."""

        def read() -> list[tuple[datetime, float]]:
            r = self.report
            value = {
                "import": r.metered_kw,
                "required": r.required_kw,
                "met": None if r.met is None else float(r.met),
            }[r_id]
            return [] if value is None or r.at is None else [(r.at, value)]

        return read
