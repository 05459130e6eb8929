"""A public hub (short stays all day) with a demand-response event capping import at 40 kW
from 17:00 to 19:00. Run: ``python examples/public_hub_dr.py``.
"""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from loadopt import DemandResponseEvent, Horizon, Signals
from loadopt.scenario import Scenario
from loadopt.simulate import compare, simulation_table
from loadopt.synthetic import base_load_profile, make_sessions, make_site, tou_prices

here = Path(__file__).parent
start = datetime(2026, 6, 10, tzinfo=ZoneInfo("Europe/Berlin"))
horizon = Horizon(start=start, step_s=900, n_periods=96)
site = make_site(
    16,
    evses_per_circuit=2,
    circuit_a=32.0,
    feeder_a=80.0,
    grid_a=125.0,
    transformer_kw=90.0,
    seed=5,
)
sessions = make_sessions(site, horizon, kind="public", sessions_per_evse=3.0, seed=5)
sessions = [s for s in sessions if s.arrival < horizon.end]
signals = Signals(
    import_price=tou_prices(horizon),
    base_load_kw=base_load_profile(horizon, 3.0, 8.0),
    grid_import_limit_kw=85.0,
    demand_response=(
        DemandResponseEvent(
            id="dr-peak",
            start=start.replace(hour=17),
            end=start.replace(hour=19),
            import_cap_kw=40.0,
        ),
    ),
)
scenario = Scenario(site=site, horizon=horizon, sessions=tuple(sessions), signals=signals)
scenario.dump(here / "public_hub_dr.json")
print(simulation_table(compare(scenario, horizon_h=4.0)))
