"""A workplace with a PV roof: replay a day through the controller and the baselines.

Run: ``python examples/workplace_pv.py`` (writes workplace_pv.json and workplace_pv.png here).
"""

from pathlib import Path

from loadopt.simulate import compare, simulation_table
from loadopt.synthetic import demo_scenario

here = Path(__file__).parent
scenario = demo_scenario()  # 40 EVSEs, 60 kWp PV, time-of-use prices, office base load
scenario.dump(here / "workplace_pv.json")
results = compare(scenario)
print(simulation_table(results))
try:
    from loadopt.plot import plot_schedule

    plot_schedule(results[0].schedule, here / "workplace_pv.png", title="Workplace with PV")
except ImportError:
    pass
