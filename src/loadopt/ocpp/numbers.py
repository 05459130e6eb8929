"""Numbers on the OCPP wire: exact watts of a deci-amp limit and one-decimal values.

Shared by :mod:`loadopt.ocpp.profiles` and :mod:`loadopt.ocpp.v2x` (a module of its own so that
neither imports the other's internals).
"""

from __future__ import annotations

from fractions import Fraction


def _watts_deci(da: int, voltage_v: float, phases: int) -> int:
    """Deci-watts of ``da`` deci-amps on ``phases`` lines at ``voltage_v``, rounded down exactly."""
    f = Fraction(str(voltage_v)) * phases * da
    return int(f.numerator // f.denominator)


def _num(deci: int) -> float:
    """A one-decimal value as the double that serialises as that decimal (``81`` → ``8.1``)."""
    return int(deci) / 10
