"""A van depot that can discharge: V2G vehicles and a depot battery against the charge-only
plan of the same site, with the OCPP 2.1 profile one van receives.

Run: ``python examples/v2g_depot.py`` (writes v2g_depot.png here; needs matplotlib).
"""

from pathlib import Path

import numpy as np

import loadopt as lo
from loadopt.ocpp import set_charging_profiles, validate
from loadopt.simulate import compare, simulate, simulation_table
from loadopt.synthetic import v2g_scenario

here = Path(__file__).parent
# 20 vans on 20 bidirectional EVSEs (OCPP 2.1, ISO 15118-20), a 100 kWh battery at the grid
# connection, time-of-use prices (export at 80 %), an evening grid-operator cap, demand charge
bidir, plain = v2g_scenario(20, battery_kwh=100.0)
s2 = lo.solve(bidir.compile())
s1 = lo.solve(plain.compile())
s2.check()
s1.check()
print("charge-only\n" + s1.kpis().table() + "\n\nV2G + battery\n" + s2.kpis().table())

# the same depot without an optimiser (the fast path's discharge policy, which every solver
# fallback uses too) and as a MILP (minimum currents kept beside the discharge columns)
fast = lo.solve(bidir.compile(), method="fast")
milp = lo.solve(bidir.compile(), lo.MilpOptions(time_limit_s=30.0))
print("\nplan      energy   cost   peak kW   discharged kWh")
for name, s in (("LP", s2), ("fast", fast), ("MILP", milp)):
    s.check()
    k = s.kpis()
    print(
        f"{name:<8}{k.delivered_kwh:7.1f} {k.energy_cost:7.2f} {k.peak_import_kw:8.1f} "
        f"{k.storage.discharged_kwh:10.1f}"
    )

# what one van's charging station is sent: ChargingOnly / CentralSetpoint / Idle periods
van = next(i for i in range(s2.problem.n_sessions) if s2.discharge[i].any())
sid = s2.problem.session_ids[van]
for cp, action, payload in set_charging_profiles(s2, "2.1", session_ids=[sid]):
    validate(action, payload, "2.1")
    prof = payload["chargingProfile"]
    if prof["chargingProfilePurpose"] == "TxProfile":
        modes = [p["operationMode"] for p in prof["chargingSchedule"][0]["chargingSchedulePeriod"]]
        print(f"\n{cp} TxProfile for {sid}: {len(modes)} periods, modes {sorted(set(modes))}")

# the same depot replayed step by step (loadopt.simulate): the rolling controller re-plans every
# 15 min from what the vans metered and the battery reported; the vans follow their limits and
# discharge setpoints, the battery its plan, energy states tracked with the efficiencies
replay = compare(bidir, ("edf",), horizon_h=12.0)
only = simulate(plain, "controller", horizon_h=12.0)
only.name = "controller, charge-only"
print("\nreplayed\n" + simulation_table([replay[0], only, replay[1]]))

try:
    from matplotlib.figure import Figure
except ImportError:  # the plot is optional
    raise SystemExit(0) from None

p = s2.problem
t = np.array([(x - p.horizon.start).total_seconds() / 3600.0 for x in p.period_starts])
fig = Figure(figsize=(10, 9), tight_layout=True)
ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
ax1.step(t, s1.import_kw, where="post", label="charge-only", color="0.5")
ax1.step(t, s2.import_kw, where="post", label="V2G + battery", color="C0")
ax1.set_ylabel("grid import (kW)")
price = p.import_price
axp = ax1.twinx()
axp.step(t, price, where="post", color="C3", alpha=0.4)
axp.set_ylabel("price / kWh", color="C3")
ax1.legend(loc="upper left")
ev_c = s2._power_kw.sum(axis=0)
ev_d = -s2.discharge_kw.sum(axis=0)
bat = s2.battery_kw[0]
ax2.bar(t, ev_c, width=p.step_h, align="edge", color="C2", label="vans charging")
ax2.bar(t, ev_d, width=p.step_h, align="edge", color="C1", label="vans discharging (V2G)")
ax2.bar(
    t,
    np.maximum(bat, 0),
    width=p.step_h,
    align="edge",
    bottom=ev_c,
    color="C4",
    label="battery charging",
)
ax2.bar(
    t,
    np.minimum(bat, 0),
    width=p.step_h,
    align="edge",
    bottom=ev_d,
    color="C5",
    label="battery discharging",
)
ax2.axhline(0, color="k", lw=0.5)
ax2.set_ylabel("kW (+ charge, − discharge)")
ax2.legend(loc="upper left", fontsize=8)
soc = s2.soc_kwh
st = p.storage
Us = st.n_units - st.n_batteries
tt = np.append(t, t[-1] + p.step_h)
ax3.plot(tt, 100 * soc[Us] / st.battery_capacity_kwh[0], color="C4", label="battery SoC (%)")
ax3.plot(tt, soc[:Us].sum(axis=0), color="C2", label="vans: energy added since plug-in (kWh)")
ax3.set_xlabel("hours from horizon start")
ax3.legend(loc="upper left", fontsize=8)
fig.savefig(here / "v2g_depot.png", dpi=110)
print(f"wrote {here / 'v2g_depot.png'}")
