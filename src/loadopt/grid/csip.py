"""IEEE 2030.5 / CSIP(-AUS) ``DERControl`` → :class:`~loadopt.signals.GridSignal` (extra
``loadopt[csip]``: the ``envoy-schema`` pydantic-xml models of the sep2 / CSIP-AUS schema).

A 2030.5 client reads a ``DERProgram``'s ``DERControlList`` and its ``DefaultDERControl`` (what
applies whenever no control is active). :func:`der_controls_to_signals` turns both into signals:

======================  =========================================================================
2030.5 / CSIP-AUS       GridSignal
======================  =========================================================================
``opModImpLimW``        ``import_cap_kw`` at the grid connection (hard)
``opModExpLimW``        ``export_cap_kw`` (soft: loadopt has no discharge; docs/grid-signals.md)
``opModLoadLimW``       ``import_cap_kw`` on ``load_node`` (the node the controllable load hangs
                        from; at the grid connection it also counts the base load: conservative)
``opModConnect=false``  ``import_cap_kw`` = 0 on ``load_node`` (disconnect the load)
``opModEnergize=false`` likewise
``interval``            ``[start, start + duration)`` (epoch seconds)
``randomizeStart``      ``randomize_s`` = ``|randomizeStart|`` (applied as a delay only)
``EventStatus``         Cancelled (2), Cancelled with randomization (3) and Superseded (4): dropped
``mRID``                ``ref``; ``primacy`` of the program: ``priority`` = −primacy
DefaultDERControl       the same fields, as signals over every gap between active controls in
                        ``[now, now + span_s)`` (a randomised control counts from its latest
                        delayed start), and its ``opModImpLimW`` as the fallback of
                        every signal (``valid_until`` = the stream's staleness deadline)
======================  =========================================================================

``ActivePower`` is ``value · 10^multiplier`` W. ``opModGenLimW``, ``opModStorageTargetW``,
``opModFixedW``, ``opModTargetW``, curves and ride-through settings concern generation or
storage, which loadopt does not control: they are listed in the returned ``ignored`` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..errors import InputError
from ..signals import GridSignal

SOURCE = "csip"
_CANCELLED = {2, 3, 4}
_IGNORED = (
    "opModGenLimW",
    "opModStorageTargetW",
    "opModFixedW",
    "opModTargetW",
    "opModMaxLimW",
    "opModFixedVar",
    "opModTargetVar",
    "opModFixedPFAbsorbW",
    "opModFixedPFInjectW",
    "opModVoltVar",
    "opModVoltWatt",
    "opModFreqWatt",
    "opModWattPF",
    "opModWattVar",
)


@dataclass(frozen=True)
class CsipSignals:
    """What a DERControlList (and DefaultDERControl) asked for, as loadopt signals."""

    signals: tuple[GridSignal, ...]
    default_import_kw: float | None  #: DefaultDERControl opModImpLimW (kW), None = none
    ignored: tuple[str, ...]  #: fields present but not applicable to a load (see module doc)


def _models():
    try:
        from envoy_schema.server.schema.sep2.der import DefaultDERControl, DERControlListResponse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("IEEE 2030.5 needs envoy-schema: pip install 'loadopt[csip]'") from exc
    return DERControlListResponse, DefaultDERControl


def _kw(p) -> float:
    return float(p.value) * 10.0 ** int(p.multiplier) / 1000.0


def _base_kwargs(base, load_node: str | None) -> tuple[list[dict], list[str]]:
    """One dict of GridSignal fields per limit in a DERControlBase, and the ignored names."""
    out: list[dict] = []
    if base.opModImpLimW is not None:
        out.append({"import_cap_kw": max(_kw(base.opModImpLimW), 0.0)})
    if base.opModExpLimW is not None:
        out.append({"export_cap_kw": max(_kw(base.opModExpLimW), 0.0)})
    if base.opModLoadLimW is not None:
        out.append({"import_cap_kw": max(_kw(base.opModLoadLimW), 0.0), "node": load_node})
    if base.opModConnect is False or base.opModEnergize is False:
        out.append({"import_cap_kw": 0.0, "node": load_node})
    ignored = [n for n in _IGNORED if getattr(base, n, None) is not None]
    return out, ignored


def der_controls_to_signals(
    control_list_xml: bytes | str | None,
    *,
    now: datetime,
    default_xml: bytes | str | None = None,
    primacy: int = 0,
    load_node: str | None = None,
    span_s: float = 2 * 86_400,
    stale_after_s: float | None = None,
    fallback_kw: float | None = None,
) -> CsipSignals:
    """Signals of a ``DERControlList`` document and/or a ``DefaultDERControl`` document.

    ``stale_after_s``: stamp every signal with ``valid_until = now + stale_after_s`` and the
    fallback ``fallback_kw`` (default: the DefaultDERControl's import limit; one of them is then
    required). Raises :class:`~loadopt.errors.InputError` for a document that does not parse.
    """
    ListModel, DefaultModel = _models()
    if now.tzinfo is None:
        raise InputError("der_controls_to_signals: now must be timezone-aware")
    controls = []
    if control_list_xml is not None:
        try:
            doc = ListModel.from_xml(
                control_list_xml
                if isinstance(control_list_xml, bytes)
                else control_list_xml.encode()
            )
        except Exception as exc:
            raise InputError(f"IEEE 2030.5 DERControlList does not parse: {exc}") from None
        controls = list(doc.DERControl or [])
    default = None
    if default_xml is not None:
        try:
            default = DefaultModel.from_xml(
                default_xml if isinstance(default_xml, bytes) else default_xml.encode()
            )
        except Exception as exc:
            raise InputError(f"IEEE 2030.5 DefaultDERControl does not parse: {exc}") from None
    default_imp = (
        None
        if default is None or default.DERControlBase_.opModImpLimW is None
        else _kw(default.DERControlBase_.opModImpLimW)
    )
    valid_until = fb = None
    if stale_after_s is not None:
        fb = fallback_kw if fallback_kw is not None else default_imp
        if fb is None:
            raise InputError(
                "IEEE 2030.5: a staleness rule needs fallback_kw or a "
                "DefaultDERControl with opModImpLimW (never 'no limit')"
            )
        valid_until = now + timedelta(seconds=stale_after_s)
    stamp = {
        "valid_until": valid_until,
        "fallback_kw": fb,
        "priority": -int(primacy),
        "source": SOURCE,
    }
    horizon_end = now + timedelta(seconds=span_s)
    sigs: list[GridSignal] = []
    ignored: set[str] = set()
    active: list[tuple[datetime, datetime]] = []
    for c in controls:
        if int(c.EventStatus_.currentStatus) in _CANCELLED:
            continue
        a = datetime.fromtimestamp(int(c.interval.start), UTC)
        b = a + timedelta(seconds=int(c.interval.duration))
        if b <= now or b <= a:
            continue
        rand_s = min(abs(int(c.randomizeStart or 0)), 86_400)
        # a randomised control is in force from its delayed start (a per-site offset up to
        # rand_s): the default holds until the latest such start (both at once: the minimum)
        active.append((a + timedelta(seconds=rand_s), b))
        limits, ign = _base_kwargs(c.DERControlBase_, load_node)
        ignored.update(ign)
        for k, kw in enumerate(limits):
            sigs.append(
                GridSignal(
                    id=f"csip:{c.mRID}:{k}",
                    start=a,
                    end=b,
                    ref=str(c.mRID),
                    randomize_s=rand_s,
                    **stamp,
                    **kw,
                )
            )
    if default is not None:
        limits, ign = _base_kwargs(default.DERControlBase_, load_node)
        ignored.update(ign)
        for n, (a, b) in enumerate(_gaps(now, horizon_end, active)):
            for k, kw in enumerate(limits):
                sigs.append(
                    GridSignal(
                        id=f"csip:default:{default.mRID}:{n}:{k}",
                        start=a,
                        end=b,
                        ref=f"default:{default.mRID}",
                        **stamp,
                        **kw,
                    )
                )
    return CsipSignals(tuple(sigs), default_imp, tuple(sorted(ignored)))


def _gaps(
    a: datetime, b: datetime, busy: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of ``[a, b)`` that no interval in ``busy`` covers."""
    out = []
    cur = a
    for s, e in sorted(busy):
        if s > cur:
            out.append((cur, min(s, b)))
        cur = max(cur, e)
        if cur >= b:
            break
    if cur < b:
        out.append((cur, b))
    return [(s, e) for s, e in out if e > s]
