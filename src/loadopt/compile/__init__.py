"""Turn validated input objects into a :class:`~loadopt.problem.Problem` (arrays only).

This is the only package that walks the input objects. Everything after it works on arrays and
is vectorised: there is no Python loop over sessions × periods anywhere below (loops here run
over sessions, nodes, tree depth or DR events, never their product with periods).

Modules, one job each:

- :mod:`~loadopt.compile.core` — :func:`compile_problem`, the orchestration in named steps;
- :mod:`~loadopt.compile.tree` — the per-site static tree and per-EVSE arrays (cached beside
  the site), :func:`evse_arrays`, :func:`snap_levels_da`, tree walks;
- :mod:`~loadopt.compile.series` — node limits and signals sampled on the horizon, §14a floors;
- :mod:`~loadopt.compile.fixed_loads` — reserved EVSE draw and base-load notices;
- :mod:`~loadopt.compile.limits` — a compile's limits, signals, fixed loads and right-hand
  sides on the horizon, kept while no time moves them;
- :mod:`~loadopt.compile.lines` — line-current phasors, line shapes (cached), facets;
- :mod:`~loadopt.compile.rows` — the safety rows: a row template per line shape (the
  coefficients no controller step moves) assembled per step, and the COO builder of the export
  rows;
- :mod:`~loadopt.compile.storage` — battery columns, V2X sessions, the ``Storage`` part.
- :mod:`~loadopt.compile._kernels` — the per-step row assembly as one numba loop (compiled once
  a process compiles often; the numpy form in ``rows`` otherwise, with the same result).
"""

# The private names are re-exported so that the old module path ``loadopt.compile`` keeps
# resolving them (tests and other modules import some).
# ruff: noqa: F401

from .core import compile_problem
from .fixed_loads import _base_load_notices, _check_reserved
from .lines import (
    _SHAPES,
    _SHAPES_MAX,
    _evse_line_table,
    _line_currents,
    _line_shape,
    _Lines,
    _LineShape,
    _reserved_lines,
    _walk_lines,
)
from .rows import _RowBuilder
from .series import _feasible_floor, _point
from .storage import _compile_storage
from .tree import (
    _ancestors,
    _carries,
    _EvseArrays,
    _site_evse_arrays,
    _site_tree,
    _SiteTree,
    evse_arrays,
    snap_levels_da,
)

__all__ = ["compile_problem", "evse_arrays", "snap_levels_da"]
