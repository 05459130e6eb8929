"""OCPP 2.1 bidirectional output: V2G ``TxProfile`` periods with an ``operationMode``.

A session that a schedule discharges (:attr:`loadopt.Schedule.discharge`) gets, instead of a
plain limit per period, one of the 2.1 operation modes (OCPP 2.1 Part 2, smart charging with
V2X, ``ChargingSchedulePeriodType``):

- ``ChargingOnly`` with ``limit`` where the plan charges (the same limit a charge-only session
  gets);
- ``CentralSetpoint`` where it discharges: ``setpoint = dischargeLimit = −discharge`` and
  ``limit = 0``, so the rule of the mode holds (``dischargeLimit ≤ setpoint ≤ limit``) and the EV
  neither discharges more than planned (export rows, energy floor) nor charges then;
  ``discharge_mode="limits"`` gives ``ExternalLimits`` instead (``limit = 0``,
  ``dischargeLimit = −discharge``, no setpoint: a local controller chooses within them);
- ``Idle`` where it does neither, with no limit, setpoint or discharge limit.

Amperes are per phase; with ``chargingRateUnit`` ``A`` on two or three phases every value is
given per phase (``_L2``/``_L3``), because without them the 2.1 schema reads ``setpoint`` and
``dischargeLimit`` as the sum of all phases. In ``W`` the value is the sum over the phases in
use (``A × V × phases``, rounded toward zero) where the car reported its phase count, else
``A × V × 1`` (a 1-phase car may take or feed all of it on one line). Every value is rounded
toward zero.

The schedule carries ``duration`` = the horizon, so a discharge never outlives the plan that
decided it: after it the station falls back to its lower-stack profiles (``TxDefaultProfile``,
charge-only). When a station accepts fewer periods than the plan has changes, the plan is cut
there with an ``Idle`` period (always safe: nothing flows) until the next plan.

OCPP 1.6 and 2.0.1 cannot discharge: a discharging session on such a station is an error
(:class:`~loadopt.errors.InputError`), never silently sent as charge-only (the plan counted on
that discharge under a grid cap).

:func:`v2x_parameters` turns the ``v2xChargingParameters`` of a 2.1
``NotifyEVChargingNeedsRequest`` into :class:`loadopt.session.V2xParameters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..schedule import Schedule
from ..session import V2xParameters
from .numbers import _num, _watts_deci

DischargeMode = Literal["setpoint", "limits"]


def discharging_sessions(schedule: Schedule) -> set[str]:
    """Ids of the sessions the schedule discharges in any period."""
    if schedule.discharge is None:
        return set()
    p = schedule.problem
    return {p.session_ids[i] for i in np.flatnonzero((schedule.discharge > 0).any(axis=1))}


def v2x_periods(
    charge_da: np.ndarray, discharge_da: np.ndarray, starts_s: np.ndarray, max_periods: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge equal consecutive periods; cut with an idle period when over ``max_periods``.

    Returns ``(starts_s, charge_da, discharge_da)`` of the periods to send.
    """
    key = np.stack([charge_da, discharge_da], axis=1)
    change = np.ones(key.shape[0], dtype=bool)
    change[1:] = np.any(key[1:] != key[:-1], axis=1)
    st, c, d = starts_s[change], charge_da[change], discharge_da[change]
    if st.size > max_periods:
        keep = max(max_periods - 1, 0)
        cut = st[keep]
        st = np.append(st[:keep], cut)
        c = np.append(c[:keep], 0)
        d = np.append(d[:keep], 0)
    return st, c, d


def period_dict(
    start_s: int,
    charge_da: int,
    discharge_da: int,
    phases: int,
    rate_unit: str,
    voltage_v: float,
    discharge_mode: DischargeMode = "setpoint",
    car_phases_known: bool = True,
) -> dict[str, Any]:
    """One 2.1 ``ChargingSchedulePeriodType`` (see the module docstring for the modes); a ``W``
    value is spread over ``phases`` only where the car's phase count is known, else it is
    A × V × 1 (a 1-phase car may take or feed it all on one line: ``profiles._w_phases``)."""
    d: dict[str, Any] = {"startPeriod": int(start_s)}
    if phases > 0:
        d["numberPhases"] = int(phases)
    w_phases = max(phases, 1) if car_phases_known else 1

    def put(name: str, da: int, sign: int) -> None:
        if rate_unit == "W":
            d[name] = sign * _num(_watts_deci(da, voltage_v, w_phases))
            return
        d[name] = sign * _num(da)
        if phases >= 2:  # per phase: L1 in the main field, the unused line at 0
            d[f"{name}_L2"] = sign * _num(da)
            d[f"{name}_L3"] = sign * _num(da if phases == 3 else 0)

    if discharge_da > 0:
        d["operationMode"] = "CentralSetpoint" if discharge_mode == "setpoint" else "ExternalLimits"
        put("limit", 0, 1)
        put("dischargeLimit", discharge_da, -1)
        if discharge_mode == "setpoint":
            put("setpoint", discharge_da, -1)
    elif charge_da > 0:
        d["operationMode"] = "ChargingOnly"
        put("limit", charge_da, 1)
    else:
        d["operationMode"] = "Idle"
    # −0.0 serialises as "-0.0": give plain zeros
    return {k: (0.0 if isinstance(v, float) and v == 0 else v) for k, v in d.items()}


def schedule_periods(
    prof: Any, version: str, discharge_mode: DischargeMode = "setpoint"
) -> list[dict[str, Any]]:
    """The ``chargingSchedulePeriod`` list of a V2G ``TxProfile`` (``prof.discharge`` set)."""
    if version != "2.1":
        raise InputError(
            f"session {prof.session_id!r}: the schedule discharges it but charge "
            f"point {prof.charge_point_id!r} speaks OCPP {version}, which cannot "
            "discharge (2.1 only); plan it charge-only (Evse.bidirectional=False)"
        )
    return [
        period_dict(
            int(prof.starts[k]),
            int(prof.limits[k].max()),
            int(prof.discharge[k]),
            int(prof.phases[k]),
            prof.rate_unit,
            prof.voltage_v,
            discharge_mode,
            prof.car_phases_known,
        )
        for k in range(prof.starts.size)
    ]


def v2x_parameters(
    params: Mapping[str, Any],
    *,
    voltage_v: float = 230.0,
    phases: int = 3,
    charge_efficiency: float = 1.0,
    discharge_efficiency: float = 1.0,
    degradation_per_kwh: float = 0.0,
) -> tuple[V2xParameters, float | None]:
    """``(V2xParameters, target kWh or None)`` from a 2.1 ``v2xChargingParameters`` dict.

    ``evMinV2XEnergyRequest`` / ``evMaxV2XEnergyRequest`` (Wh, relative to now) become the floor
    and ceiling; ``maxDischargeCurrent`` (A) the discharge limit (without it: from
    ``maxDischargePower`` (W) over the EVSE's ``phases`` branches at ``voltage_v`` each, else 0,
    i.e. no discharge); ``evTargetEnergyRequest`` (Wh) the target, returned for the session's
    ``energy_kwh``.

    Parameters
    ----------
    params
        The ``v2xChargingParameters`` of a ``NotifyEVChargingNeeds`` (camelCase keys).
    voltage_v, phases
        The EVSE's branch voltage (V) and the branches the vehicle uses: what converts
        ``maxDischargePower`` to A per phase.
    charge_efficiency, discharge_efficiency, degradation_per_kwh
        Carried into :class:`~loadopt.session.V2xParameters`.

    Returns
    -------
    tuple
        ``(V2xParameters, target kWh or None)``.

    Raises
    ------
    InputError
        The V2X energies are missing (the vehicle then cannot be discharged safely), or the
        voltage or phases are not positive.
    """
    if not (voltage_v > 0 and phases >= 1):
        raise InputError(
            f"v2x_parameters: need a positive voltage and phases, got {voltage_v!r} V, "
            f"{phases!r} phase(s)"
        )
    try:
        lo = params["evMinV2XEnergyRequest"]
        hi = params["evMaxV2XEnergyRequest"]
    except KeyError as exc:
        raise InputError(
            f"v2xChargingParameters without {exc.args[0]}: the vehicle's V2X "
            "energy range is unknown, it cannot be discharged"
        ) from None
    cur = params.get("maxDischargeCurrent")
    if cur is None and params.get("maxDischargePower") is not None:
        cur = float(params["maxDischargePower"]) / (phases * float(voltage_v))
    target = params.get("evTargetEnergyRequest")
    v = V2xParameters(
        min_v2x_energy_kwh=float(lo) / 1000.0,
        max_v2x_energy_kwh=float(hi) / 1000.0,
        max_discharge_current=float(cur or 0.0),
        charge_efficiency=charge_efficiency,
        discharge_efficiency=discharge_efficiency,
        degradation_per_kwh=degradation_per_kwh,
    )
    return v, None if target is None else float(target) / 1000.0
