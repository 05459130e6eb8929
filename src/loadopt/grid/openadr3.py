"""OpenADR 3.0 VEN over its REST API (extra ``loadopt[openadr3]``): events in, reports out.

``openadr3-client`` (the reference client) requires Python ≥ 3.12 on every release while loadopt
supports 3.11, so this VEN speaks the OpenADR 3.0.1 REST API itself with ``aiohttp``: ``GET
/events`` (filtered by program and VEN target), ``POST /reports``; a bearer token from the VTN's
OAuth2 client-credentials flow is passed in (``token=``). :func:`event_to_signals` is the mapping
(pure, no network).

Mapping (OpenADR 3.0.1 definitions: event ``intervalPeriod`` / ``intervals`` / ``payloads``;
one :class:`GridSignal` per interval and payload):

=========================  ================================================================
payload type               GridSignal
=========================  ================================================================
IMPORT_CAPACITY_LIMIT      ``import_cap_kw`` (hard) on ``node`` (default: grid connection)
EXPORT_CAPACITY_LIMIT      ``export_cap_kw`` (soft: no discharge; docs/grid-signals.md)
PRICE                      ``import_price_adder`` (currency per kWh; see docs)
DISPATCH_SETPOINT          ``setpoint_kw`` (soft)
SIMPLE                     ``level`` (0–3, site policy)
=========================  ================================================================

Units from the event's ``payloadDescriptors`` (``KW`` default, ``W``, ``MW``). Interval ``k``
without its own ``intervalPeriod`` starts at the event's start + the sum of the durations before
it (each the event's ``duration``); a duration of ``P9999Y`` (the spec's "infinite") is one year
here. ``intervalPeriod.randomizeStart`` → ``randomize_s``. Event ``priority`` (lower = higher,
none = lowest) → ``GridSignal.priority = 1000 − priority``. Anything else (other payload types,
other units) raises :class:`UnsupportedPayload`; :meth:`OpenAdr3Ven.poll` skips that event, keeps
the rest and records why in :attr:`OpenAdr3Ven.problems`.

Reports: :func:`compliance_report` is an OpenADR 3 ``REPORT`` object for one event: one resource
(the site), one interval per period, with payloads ``DEMAND`` (metered kW, or the plan where no
meter read), ``IMPORT_CAPACITY_LIMIT`` (the requirement in force, kW) and the private
``x-LOADOPT_MET`` (1 = met, 0 = missed) and ``x-LOADOPT_CURTAILED_KWH``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InputError
from ..signals import GridSignal
from .arrays import stamped_signals
from .compliance import SignalCompliance

SOURCE = "openadr3"
_UNITS = {"KW": 1.0, "W": 1e-3, "MW": 1e3}
_DUR = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


class UnsupportedPayload(InputError):
    """An OpenADR 3 payload loadopt cannot honour."""


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration as OpenADR 3 uses it (``PT15M``, ``P1D``, ``P9999Y`` = infinite,
    here one year). Raises InputError for anything else."""
    m = _DUR.match(str(text))
    if not m or text in ("P", "PT"):
        raise InputError(f"OpenADR 3: bad ISO 8601 duration {text!r}")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    if y >= 9999:
        return timedelta(days=365)
    return timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=s)


def format_duration(td: timedelta) -> str:
    return f"PT{int(td.total_seconds())}S"


def _time(v: Any, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what}: bad timestamp {v!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def event_to_signals(
    event: dict,
    *,
    node: str | None = None,
    valid_until: datetime | None = None,
    fallback_kw: float | None = None,
    now: datetime | None = None,
) -> tuple[GridSignal, ...]:
    """The :class:`GridSignal` s of one OpenADR 3 ``EVENT`` object (a dict as the API returns
    it). ``now`` stands in for an event start of ``"0000-00-00"`` (the spec's "now")."""
    eid = event.get("id")
    if not eid:
        raise InputError("OpenADR 3 event without an id")
    what = f"OpenADR 3 event {eid!r}"
    units: dict[str, float] = {}
    for d in event.get("payloadDescriptors") or []:
        u = (d.get("units") or "KW").upper()
        if d.get("payloadType") in (
            "IMPORT_CAPACITY_LIMIT",
            "EXPORT_CAPACITY_LIMIT",
            "DISPATCH_SETPOINT",
        ):
            if u not in _UNITS:
                raise UnsupportedPayload(f"{what}: units {u!r} for {d.get('payloadType')}")
            units[d["payloadType"]] = _UNITS[u]
    ip = event.get("intervalPeriod") or {}
    prio = event.get("priority")
    priority = 1000 - int(prio) if prio is not None else 0
    rand = ip.get("randomizeStart")
    randomize_s = int(parse_duration(rand).total_seconds()) if rand else 0

    def start_of(p: dict) -> datetime:
        s = p.get("start")
        if s in (None, "0000-00-00", "0000-00-00T00:00:00Z"):
            if now is None:
                raise InputError(f"{what}: interval start 'now' needs now=")
            return now
        return _time(s, what)

    cur = start_of(ip) if ip.get("start") is not None else None
    default_dur = parse_duration(ip["duration"]) if ip.get("duration") else None
    out: list[GridSignal] = []
    for k, iv in sorted(
        enumerate(event.get("intervals") or []), key=lambda kv: kv[1].get("id", kv[0])
    ):
        own = iv.get("intervalPeriod")
        a: datetime | None
        if own:
            a = start_of(own)
            dur = parse_duration(own["duration"]) if own.get("duration") else default_dur
        else:
            a, dur = cur, default_dur
        if a is None or dur is None:
            raise InputError(f"{what}: interval {iv.get('id', k)} has no start or duration")
        b = a + dur
        cur = b
        for payload in iv.get("payloads") or []:
            typ = payload.get("type")
            vals = payload.get("values") or []
            if not vals or not isinstance(vals[0], int | float):
                raise InputError(
                    f"{what}: interval {iv.get('id', k)} payload {typ!r} has no numeric value"
                )
            v = float(vals[0])
            kw: dict[str, Any] = {}
            if typ == "IMPORT_CAPACITY_LIMIT":
                kw = {"import_cap_kw": max(v * units.get(typ, 1.0), 0.0), "node": node}
            elif typ == "EXPORT_CAPACITY_LIMIT":
                kw = {"export_cap_kw": max(v * units.get(typ, 1.0), 0.0)}
            elif typ == "PRICE":
                kw = {"import_price_adder": v}
            elif typ == "DISPATCH_SETPOINT":
                kw = {"setpoint_kw": v * units.get(typ, 1.0)}
            elif typ == "SIMPLE":
                kw = {"level": max(0, min(3, round(v))), "node": node}
            else:
                raise UnsupportedPayload(f"{what}: payload type {typ!r} is not supported")
            out.append(
                GridSignal(
                    id=f"{eid}/{iv.get('id', k)}/{typ}",
                    start=a,
                    end=b,
                    priority=priority,
                    source=SOURCE,
                    ref=str(eid),
                    randomize_s=randomize_s,
                    valid_until=valid_until,
                    fallback_kw=fallback_kw,
                    **kw,
                )
            )
    return tuple(out)


def compliance_report(
    c: SignalCompliance,
    *,
    program_id: str,
    event_id: str,
    client_name: str,
    resource_name: str = "site",
    step_s: float | None = None,
) -> dict:
    """An OpenADR 3 ``REPORT`` object of one signal's compliance (see the module docstring)."""
    if step_s is None:
        step_s = (
            (c.period_start[1] - c.period_start[0]).total_seconds()
            if len(c.period_start) > 1
            else 900.0
        )
    dur = format_duration(timedelta(seconds=step_s))
    intervals = []
    for k, t in enumerate(c.period_start):
        metered = None if c.metered_kw is None else c.metered_kw[k]
        seen = float(c.planned_kw[k]) if metered is None or metered != metered else float(metered)
        intervals.append(
            {
                "id": k,
                "intervalPeriod": {"start": t.isoformat(), "duration": dur},
                "payloads": [
                    {"type": "DEMAND", "values": [seen]},
                    {"type": "IMPORT_CAPACITY_LIMIT", "values": [float(c.required_kw[k])]},
                    {"type": "x-LOADOPT_MET", "values": [1 if c.met[k] else 0]},
                ],
            }
        )
    return {
        "objectType": "REPORT",
        "programID": program_id,
        "eventID": event_id,
        "clientName": client_name,
        "reportName": f"loadopt compliance {c.signal_id}",
        "payloadDescriptors": [
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": "DEMAND",
                "readingType": "DIRECT_READ",
                "units": "KW",
            },
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": "IMPORT_CAPACITY_LIMIT",
                "units": "KW",
            },
            {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "x-LOADOPT_MET"},
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": "x-LOADOPT_CURTAILED_KWH",
                "units": "KWH",
            },
        ],
        "resources": [
            {
                "resourceName": resource_name,
                "intervals": intervals,
                "intervalPeriod": {
                    "start": c.period_start[0].isoformat() if c.period_start else None,
                    "duration": dur,
                },
            }
        ],
        "x-LOADOPT_CURTAILED_KWH": c.curtailed_kwh,
        "x-LOADOPT_CAUSE": c.first_cause,
    }


class OpenAdr3Ven:
    """Polls an OpenADR 3 VTN's ``/events`` for a program, maps them, posts reports.

    ``base_url`` is the VTN's API root (e.g. ``https://vtn.example/openadr3/3.0.1``). Events that
    target other VENs (``targets`` of type ``VEN_NAME`` without ``ven_name``) are skipped.
    Staleness: signals carry ``valid_until = last successful poll + stale_after_s`` and
    ``fallback_kw`` (required). A failed poll raises nothing: it is recorded in
    :attr:`problems` and the last signals are kept (their validity runs out on its own).
    """

    def __init__(
        self,
        base_url: str,
        *,
        ven_name: str,
        program_id: str,
        fallback_kw: float,
        token: str | None = None,
        node: str | None = None,
        stale_after_s: float = 600.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("OpenADR 3 needs aiohttp: pip install 'loadopt[openadr3]'") from exc
        if not fallback_kw >= 0:
            raise InputError("OpenAdr3Ven: fallback_kw must be a number >= 0")
        self.base_url = base_url.rstrip("/")
        self.ven_name = ven_name
        self.program_id = program_id
        self.fallback_kw = float(fallback_kw)
        self.token = token
        self.node = node
        self.stale_after_s = float(stale_after_s)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.last_contact: datetime | None = None
        self.events: dict[str, tuple[GridSignal, ...]] = {}
        self.problems: list[str] = []

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def signals(self) -> tuple[GridSignal, ...]:
        """Every mapped signal, stamped with the current validity (a never-polled VEN's signals
        are stale from now: only the fallback)."""
        at = self.last_contact or self.clock()
        vu = at + timedelta(seconds=self.stale_after_s if self.last_contact else 0.0)
        return stamped_signals(SOURCE, self.events.values(), vu, self.fallback_kw, self.node)

    def _targets_me(self, event: dict) -> bool:
        for t in event.get("targets") or []:
            if t.get("type") == "VEN_NAME" and self.ven_name not in (t.get("values") or []):
                return False
        return True

    async def poll(self) -> tuple[GridSignal, ...]:
        """``GET /events?programID=…`` once; returns :meth:`signals`. Never raises for the VTN's
        faults (they are in :attr:`problems`)."""
        import aiohttp

        url = f"{self.base_url}/events"
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(
                    url,
                    params={"programID": self.program_id},
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as r,
            ):
                if r.status != 200:
                    self.problems.append(f"GET /events: HTTP {r.status}")
                    return self.signals()
                events = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.problems.append(f"GET /events failed: {exc!r}")
            return self.signals()
        now = self.clock()
        self.last_contact = now
        fresh: dict[str, tuple[GridSignal, ...]] = {}
        for ev in events if isinstance(events, list) else []:
            if not isinstance(ev, dict) or not self._targets_me(ev):
                continue
            try:
                fresh[str(ev["id"])] = event_to_signals(ev, node=self.node, now=now)
            except (InputError, KeyError) as exc:
                self.problems.append(str(exc))
        self.events = fresh
        return self.signals()

    async def send_report(self, report: dict) -> dict:
        """``POST /reports``; returns the VTN's stored report. Raises InputError on refusal."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{self.base_url}/reports",
                json=report,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r,
        ):
            body = await r.json(content_type=None)
            if r.status not in (200, 201):
                raise InputError(f"OpenADR 3 VTN refused the report: HTTP {r.status} {body}")
            return body
