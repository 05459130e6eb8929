"""A bus depot: buses in at 18–21 h, out at 5–6 h (hard departures), time-of-use prices.

The depot knows its timetable: the controller is told every arrival in advance
(``Controller.expect_session``), so it keeps capacity for the buses still to come instead of
deferring the first ones to the cheap night hours and running short later.
Run: ``python examples/bus_depot.py``.
"""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from loadopt import Horizon, Objective, Signals
from loadopt.scenario import Scenario
from loadopt.simulate import compare, simulation_table
from loadopt.synthetic import make_sessions, make_site, tou_prices

here = Path(__file__).parent
start = datetime(2026, 6, 10, 12, tzinfo=ZoneInfo("Europe/Berlin"))
horizon = Horizon(start=start, step_s=900, n_periods=96)
site = make_site(
    20,
    evses_per_circuit=2,
    circuit_a=63.0,
    feeder_a=160.0,
    grid_a=250.0,
    transformer_kw=180.0,
    share_single_phase_evse=0.0,
    seed=3,
)
sessions = make_sessions(site, horizon, kind="depot", seed=3)
sessions = [
    s.model_copy(update={"max_current": 32.0, "phases": 3, "priority": 2.0}) for s in sessions
]
scenario = Scenario(
    site=site,
    horizon=horizon,
    sessions=tuple(sessions),
    signals=Signals(import_price=tou_prices(horizon), grid_import_limit_kw=170.0),
    objective=Objective(charge_early_per_kwh_h=0.0),
)
scenario.dump(here / "bus_depot.json")
print(simulation_table(compare(scenario, horizon_h=18.0, forecast=True)))
