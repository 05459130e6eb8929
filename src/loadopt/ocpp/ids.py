"""Charging-profile ids, stack levels and purposes per OCPP version.

Replacement rules this scheme is built on:

- OCPP 1.6 (§3.13.2, SetChargingProfile): a profile with the same ``chargingProfileId``, or the
  same ``stackLevel`` and ``chargingProfilePurpose`` on the same connector, **replaces** the one
  in force.
- OCPP 2.0.1 / 2.1 (K01.FR.05/06, K01.FR.39): a profile with the same ``id`` replaces the one in
  force; a *different* id at the same ``stackLevel`` and purpose on the same EVSE (and, for
  ``TxProfile``, the same transaction) is **rejected** by the station.

So loadopt gives every (purpose, connector/EVSE) a fixed id and a fixed stack level: each update
carries the same id and replaces what is in force, in every version. Ids are
``base + offset(purpose) + connector`` (station-wide profiles use connector 0); the default
``base`` keeps them clear of ids a CSMS typically uses for its own profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ..errors import InputError

Version = Literal["1.6", "2.0.1", "2.1"]
VERSIONS: tuple[Version, ...] = ("1.6", "2.0.1", "2.1")

#: Internal purpose names → wire names per version.
Purpose = Literal["station_max", "tx_default", "tx"]
_WIRE = {
    "1.6": {
        "station_max": "ChargePointMaxProfile",
        "tx_default": "TxDefaultProfile",
        "tx": "TxProfile",
    },
    "2.0.1": {
        "station_max": "ChargingStationMaxProfile",
        "tx_default": "TxDefaultProfile",
        "tx": "TxProfile",
    },
}
_WIRE["2.1"] = _WIRE["2.0.1"]


def wire_purpose(version: Version, purpose: Purpose) -> str:
    """The ``chargingProfilePurpose`` string of ``purpose`` in ``version``."""
    return _WIRE[check_version(version)][purpose]


def check_version(version: str) -> Version:
    """``version`` if loadopt speaks it (:class:`~loadopt.errors.InputError` otherwise, a
    ``ValueError``)."""
    if version not in VERSIONS:
        raise InputError(f"unsupported OCPP version {version!r}; use one of {VERSIONS}")
    return version


@dataclass(frozen=True)
class ProfileIds:
    """How loadopt numbers its profiles and where it stacks them.

    ``base`` is added to every id (ids stay well inside a signed 32-bit int). Stack levels are per
    purpose; purposes do not compete with each other (a ``TxProfile`` always takes precedence over
    a ``TxDefaultProfile``, a station max profile always caps both), so level 0 is enough unless
    the CSMS stacks profiles of its own on the same purpose.
    """

    base: int = 700_000
    stack_station_max: int = 0
    stack_tx_default: int = 0
    stack_tx: int = 0

    _OFFSET: ClassVar[dict[str, int]] = {"station_max": 0, "tx_default": 10_000, "tx": 20_000}

    def profile_id(self, purpose: Purpose, connector: int) -> int:
        """Fixed id of ``purpose`` on ``connector`` (so a new profile replaces the old one).

        Parameters
        ----------
        purpose
            ``"tx"``, ``"tx_default"`` or ``"station_max"``.
        connector
            1.6 ``connectorId`` / 2.x ``evseId`` (0 = the whole station).

        Returns
        -------
        int
        """
        if not 0 <= connector < 10_000:
            raise InputError(f"connector/EVSE id {connector} out of range 0..9999")
        return self.base + self._OFFSET[purpose] + connector

    def stack_level(self, purpose: Purpose) -> int:
        """The stack level loadopt uses for ``purpose``.

        Parameters
        ----------
        purpose
            ``"tx"``, ``"tx_default"`` or ``"station_max"``.

        Returns
        -------
        int
        """
        return {
            "station_max": self.stack_station_max,
            "tx_default": self.stack_tx_default,
            "tx": self.stack_tx,
        }[purpose]
