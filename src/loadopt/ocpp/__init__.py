"""OCPP output: SetChargingProfile payloads for 1.6, 2.0.1 and 2.1, and a thin CSMS adapter.

See docs/ocpp.md. Payloads are plain wire dicts (camelCase, as in the official JSON schemas) that
any OCPP stack can send unchanged.
"""

from .adapter import CsmsAdapter, Message
from .belief import Belief, Held, held_from_payload
from .guard import SiteLimits
from .ids import ProfileIds, Version
from .merge import dedupe, merge_periods
from .profiles import (
    Allowances,
    Profile,
    StationCaps,
    allowances,
    build_profiles,
    clear_payload,
    installation_caps,
    set_charging_profiles,
    station_max_profiles,
    to_payload,
    tx_default_profiles,
    tx_profiles,
    validate,
)

__all__ = [
    "Allowances",
    "Belief",
    "CsmsAdapter",
    "Held",
    "Message",
    "Profile",
    "ProfileIds",
    "SiteLimits",
    "StationCaps",
    "Version",
    "allowances",
    "build_profiles",
    "clear_payload",
    "dedupe",
    "held_from_payload",
    "installation_caps",
    "merge_periods",
    "set_charging_profiles",
    "station_max_profiles",
    "to_payload",
    "tx_default_profiles",
    "tx_profiles",
    "validate",
]
