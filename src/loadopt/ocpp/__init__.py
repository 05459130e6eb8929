"""OCPP output: SetChargingProfile payloads for 1.6, 2.0.1 and 2.1, and a thin CSMS adapter.

See docs/ocpp.md. Payloads are plain wire dicts (camelCase, as in the official JSON schemas) that
any OCPP stack can send unchanged.
"""

from .adapter import CsmsAdapter, Message
from .ids import ProfileIds, Version
from .merge import dedupe, merge_periods
from .profiles import (
    Allowances,
    Profile,
    StationCaps,
    allowances,
    build_profiles,
    clear_payload,
    set_charging_profiles,
    station_max_profiles,
    to_payload,
    tx_default_profiles,
    tx_profiles,
    validate,
)

__all__ = [
    "Allowances", "CsmsAdapter", "Message", "Profile", "ProfileIds", "StationCaps", "Version",
    "allowances", "build_profiles", "clear_payload", "dedupe", "merge_periods",
    "set_charging_profiles", "station_max_profiles", "to_payload", "tx_default_profiles",
    "tx_profiles", "validate",
]
