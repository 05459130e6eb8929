"""Weights of the objective (all in currency units, so they trade off against energy cost)."""

from __future__ import annotations

from ._base import FrozenModel, NonNegFloat


class Objective(FrozenModel):
    """Weighted-sum objective, minimised.

    - ``energy_cost``: weight on the import bill (import price × kWh − export price × kWh).
    - ``unmet_energy_per_kwh``: penalty per kWh a session wanted but did not get, multiplied by
      its priority. Keep it well above any price so that energy is never withheld to save money
      unless a limit forces it.
    - ``charge_early_per_kwh_h``: cost per kWh per hour of delay from the horizon start: energy now
      is worth more than energy later (departures are uncertain). It is scaled by
      ``horizon / time to departure``, so a vehicle that leaves sooner is served sooner.
    - ``demand_charge_per_kw``: cost per kW of the horizon's import peak (above ``peak_so_far_kw``).
    - ``fairness``: reward per unit of the smallest served fraction among sessions
      (max-min fairness on delivered / wanted); 0 turns it off.
    - ``finish_first_kwh``: (kWh, ``k``) the unmet penalty of a session is weighted by
      ``(1 + k / max(E, 0.5)) / (1 + 2k)``, ``E`` the kWh it still wants: a kWh that completes
      a car is worth slightly more than one that leaves it short, so under congestion cars are
      finished rather than all left a little short (the LP relaxation of sessions served;
      :func:`loadopt.lp.unmet_penalty`). The weight is at most 1: the penalty never exceeds
      ``unmet_energy_per_kwh``. 0 turns it off.
    """

    energy_cost: NonNegFloat = 1.0
    unmet_energy_per_kwh: NonNegFloat = 10.0
    charge_early_per_kwh_h: NonNegFloat = 1e-3
    demand_charge_per_kw: NonNegFloat = 0.0
    fairness: NonNegFloat = 0.0
    finish_first_kwh: NonNegFloat = 0.05
