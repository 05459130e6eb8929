"""Grid-operator and demand-response signals: one model, many protocols (docs/grid-signals.md).

- :class:`loadopt.GridSignal` (in :mod:`loadopt.signals`) is the one model every adapter
  produces; :mod:`loadopt.grid.arrays` puts signals on the horizon for the compiler.
- :mod:`loadopt.grid.baseline`: baselines from metered history (10-of-10 days).
- :mod:`loadopt.grid.compliance`: required vs planned vs metered per signal and period.
- Adapters (optional extras): :mod:`loadopt.grid.openadr2` (``openleadr``),
  :mod:`loadopt.grid.openadr3`, :mod:`loadopt.grid.ocpp_constraints`, :mod:`loadopt.grid.csip`.

Nothing here imports an optional dependency at package import time.
"""
