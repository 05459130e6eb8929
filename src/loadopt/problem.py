"""The compiled problem: everything the solvers need, as numpy arrays.

:func:`loadopt.compile.compile_problem` is the one place that turns the validated input objects
into this. Index conventions:

- ``S`` sessions (order of the ``sessions`` passed in), ``T`` periods, ``N`` nodes (order of
  ``site.nodes``), site phases ``0, 1, 2`` = R, S, T (= L1, L2, L3 of the grid connection).
- A *variable* is one (session, period) where the session is plugged in and may draw current:
  ``var_session[v]``, ``var_period[v]``. Its value is the per-phase current in A.
- The *safety constraints* ``G @ r <= h`` hold every physical limit: per node, site phase and
  period (current, A); per node and period (power, kW); per period the site import (kW) under the
  grid limit and demand-response caps. ``G`` has non-negative entries only, so scaling currents
  down can never break a safety row: that is what makes :mod:`loadopt.safety` exact.
- *Line groups* ``g = (side · N + node) · 3 + line`` (``side`` 0: the node's lines, 1: the
  primary lines of a delta/wye transformer node): the exact line current is the phasor
  ``line_coef[:, g].T @ current + line_base[g] · base_load_a`` (:mod:`loadopt.wiring`). Where its
  branches are all in phase it is one exact ``ROW_NODE_CURRENT`` row; otherwise facet rows
  (``ROW_LINE_FACET`` / ``ROW_PRIMARY_FACET``, an inner approximation) stand in for it in ``G``
  and :func:`loadopt.safety.violations` checks the magnitude itself (``line_exact``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from .errors import UnknownIdError
from .horizon import Horizon
from .objective import Objective
from .session import Session
from .signals import Signals
from .site import Site

#: ``row_kind`` values of the safety rows.
ROW_NODE_CURRENT = 0  #: Σ currents on one site phase under a node ≤ limit (A)
ROW_NODE_POWER = 1  #: Σ EV power under a node (+ base load at the root) ≤ limit (kW)
ROW_SITE_IMPORT = 2  #: EV power + base load − PV ≤ grid limit and DR caps (kW)
#: A facet (or magnitude row) of a node's line current whose branches are not in phase (A):
#: a linear inner approximation of ``|phasor sum| ≤ limit`` (:mod:`loadopt.wiring`).
ROW_LINE_FACET = 3
#: Likewise for a primary line of a delta/wye transformer (A, primary side).
ROW_PRIMARY_FACET = 4

ROW_SITE_EXPORT = 5  #: Σ discharge power + PV ≤ grid export limit (kW), export rows only

ROW_KIND_NAMES = {
    ROW_NODE_CURRENT: "current",
    ROW_NODE_POWER: "power",
    ROW_SITE_IMPORT: "site import",
    ROW_LINE_FACET: "line current facet",
    ROW_PRIMARY_FACET: "primary line current facet",
    ROW_SITE_EXPORT: "site export",
}


@dataclass(frozen=True, eq=False)
class Storage:
    """The bidirectional part of a problem: stationary batteries and V2G sessions.

    A *unit* is something with an energy state: every bidirectional session (in session order),
    then every battery (in ``site.batteries`` order). Energies are kWh in the battery; for a
    session they are relative to now (its floor and ceiling are the ISO 15118-20 V2X requests),
    for a battery absolute (``soc · capacity``). Columns are per-phase amperes, like the session
    currents: a battery is a balanced three-phase load at the site voltage.

    Safety rows, both directions, every entry ≥ 0 (see docs/formulation.md):

    - import direction: the problem's ``G r + Gb c_bat − Cd d ≤ h`` — batteries charging load
      every row above their node (``Gb``); discharge earns credit (``Cd``) on site-import rows
      only (a contract and demand-response caps, kW), never on a physical rating;
    - export direction: ``Gx d ≤ hx`` — discharge alone (no credit for any charging or base load,
      which may stop at any instant), plus the PV output's maximum where it feeds in, under
      every node current and power limit and the grid export limit.

    On phasor lines (line-to-line EVSEs, delta/wye primaries) the export direction has the
    import direction's facet rows; a line whose charging sector is wider than 60° gets coupled
    rows (charge and discharge both loading them, :func:`loadopt.wiring.two_way_facets`): their
    discharge part is in ``Cd`` with a *negative* sign and, alone, in ``Gx`` with the same
    right-hand side (see docs/formulation.md, "Storage on phasor lines").
    """

    battery_ids: tuple[str, ...]
    unit_session: np.ndarray  #: (U,) session index, -1 for a battery
    unit_battery: np.ndarray  #: (U,) battery index, -1 for a session
    session_unit: np.ndarray  #: (S,) unit of each session, -1 for a charge-only session
    unit_kw_per_a: np.ndarray  #: (U,) kW per A of per-phase current
    unit_e0_kwh: np.ndarray  #: (U,) energy stored now (0 for sessions: relative)
    unit_emin_kwh: np.ndarray  #: (U,) floor of the energy state
    unit_emax_kwh: np.ndarray  #: (U,) ceiling of the energy state
    unit_eta_c: np.ndarray  #: (U,) charge efficiency (battery kWh per grid kWh)
    unit_eta_d: np.ndarray  #: (U,) discharge efficiency (grid kWh per battery kWh)
    unit_target_kwh: np.ndarray  #: (U,) energy wanted at departure (sessions), -inf for batteries
    unit_degradation: np.ndarray  #: (U,) cost per grid kWh discharged
    unit_terminal_value: np.ndarray  #: (U,) value per kWh stored at the horizon end (batteries)
    battery_capacity_kwh: np.ndarray  #: (B,)
    bc_battery: np.ndarray  #: (Vb,) battery of each battery-charge column (B × T, battery-major)
    bc_period: np.ndarray  #: (Vb,)
    bc_ub: np.ndarray  #: (Vb,) A
    Gb: sp.csr_matrix  #: (M, Vb) ≥ 0, battery charging in the problem's safety rows
    dv_unit: np.ndarray  #: (Vd,) unit of each discharge column
    dv_period: np.ndarray  #: (Vd,)
    dv_ub: np.ndarray  #: (Vd,) A
    dv_kwh_per_a: np.ndarray  #: (Vd,) grid kWh per A held over the column's period
    #: (M, Vd) discharge credit on site-import rows (kW per A, ≥ 0); negative on coupled rows
    Cd: sp.csr_matrix
    Gx: sp.csr_matrix  #: (Mx, Vd) ≥ 0, export-direction rows
    hx: np.ndarray  #: (Mx,) ≥ 0
    x_kind: np.ndarray  #: (Mx,) ROW_NODE_CURRENT / ROW_NODE_POWER / ROW_SITE_EXPORT
    x_node: np.ndarray  #: (Mx,)
    x_phase: np.ndarray  #: (Mx,)
    x_period: np.ndarray  #: (Mx,)
    pv_max_kw: np.ndarray  #: (T,) largest PV output in each period
    export_cap_kw: np.ndarray  #: (T,) grid export limit, +inf = none
    #: (V,) discharge column of the same unit and period as each problem variable, -1 if none
    var_dv: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: (B, 6N) complex line current (A) per A of battery current (+ charging), like
    #: ``Problem.line_coef``; None = not compiled with line groups
    bat_line_coef: sp.csr_matrix | None = None

    @property
    def n_units(self) -> int:
        return int(self.unit_e0_kwh.size)

    @property
    def n_batteries(self) -> int:
        return len(self.battery_ids)


@dataclass(frozen=True, eq=False)
class Problem:
    """Immutable numeric form of one scheduling problem (see module docstring for indices)."""

    horizon: Horizon
    site: Site
    sessions: tuple[Session, ...]
    signals: Signals
    objective: Objective

    node_ids: tuple[str, ...]
    node_parent: np.ndarray  #: (N,) int, -1 at the root
    evse_ids: tuple[str, ...]
    session_ids: tuple[str, ...]
    session_evse: np.ndarray  #: (S,) EVSE index
    session_phase_mask: np.ndarray  #: (S, 3) bool, site phases the session draws on
    session_kw_per_a: np.ndarray  #: (S,) kW drawn per A of per-phase current (V · phases / 1000)
    session_max_current: np.ndarray  #: (S,) A, min(EVSE max, vehicle max)
    session_min_current: np.ndarray  #: (S,) A, below this the vehicle pauses (IEC 61851)
    session_energy_kwh: np.ndarray  #: (S,) energy still wanted
    session_priority: np.ndarray  #: (S,)
    session_departure_h: np.ndarray  #: (S,) h from the horizon start to departure, in [step, H]
    avail: np.ndarray  #: (S, T) fraction of each period the session is plugged in
    session_anc: sp.csr_matrix  #: (S, N) 1 where the node is the session's EVSE node or above
    evse_node: np.ndarray  #: (E,) node index each EVSE hangs from
    evse_phases: np.ndarray  #: (E,) int, lines the EVSE has (1, 2 or 3)
    evse_site_phases: np.ndarray  #: (E, 3) int, site phase of the EVSE's L1, L2, L3 (rotation)
    evse_voltage_v: np.ndarray  #: (E,) V line-to-neutral (line-to-line for such wiring)
    evse_phase_switching: np.ndarray  #: (E,) bool, may switch a vehicle between 1 and 3 phases
    evse_max_current: np.ndarray  #: (E,) A
    evse_min_current: np.ndarray  #: (E,) A
    evse_has_levels: np.ndarray  #: (E,) bool, discrete pilot steps (``allowed_currents``)
    #: Discrete levels as CSR: EVSE ``e``'s are ``evse_levels_da[ptr[e]:ptr[e + 1]]``, deci-amps,
    #: sorted, 0 included, snapped down by :func:`loadopt.compile.snap_levels_da`.
    evse_levels_ptr: np.ndarray
    evse_levels_da: np.ndarray
    session_arrival_s: np.ndarray  #: (S,) s from the horizon start (negative: plugged in before)
    session_departure_s: np.ndarray  #: (S,) s from the horizon start to departure
    evse_anc: sp.csr_matrix  #: (E, N) 1 where the node is the EVSE's node or above

    var_session: np.ndarray  #: (V,) int32
    var_period: np.ndarray  #: (V,) int32
    var_ub: np.ndarray  #: (V,) A
    var_kwh_per_a: np.ndarray  #: (V,) kWh delivered per A held over the variable's period

    G: sp.csr_matrix  #: (M, V) safety matrix, entries ≥ 0
    h: np.ndarray  #: (M,) right-hand sides (A or kW), ≥ 0
    row_kind: np.ndarray  #: (M,) int8, ROW_*
    row_node: np.ndarray  #: (M,) node index, -1 for site-import rows
    row_phase: np.ndarray  #: (M,) site phase, -1 for power rows
    row_period: np.ndarray  #: (M,) period
    row_facet: np.ndarray  #: (M,) int8 facet index of a facet row, -1 for the other rows

    line_coef: sp.csr_matrix  #: (S, 6N) complex, line current (A) per A of session current
    #: (S, 6N) complex, the same for a session switched to its EVSE's L1 only (phase switching)
    line_coef_l1: sp.csr_matrix
    line_base: np.ndarray  #: (6N,) complex, line current per A of balanced base load
    line_limit: np.ndarray  #: (6N, T) A, +inf = none
    line_exact: np.ndarray  #: (6N,) bool, checked as phasor magnitudes (facets in G)
    line_sector_rad: np.ndarray  #: (6N,) width of the sector the line's phasors span
    #: (6N, T) A, reserved EVSE draw on each line (a magnitude bound, added in phase)
    line_reserved_a: np.ndarray
    #: Worst-case relative capacity the facet rows give away (max over the limited groups,
    #: :func:`loadopt.wiring.facet_loss_bound`), 0 when every line is exact.
    facet_loss_bound: float

    node_current_limit: np.ndarray  #: (N, 3, T) A, +inf = none (as rated, before base load)
    node_power_limit_kw: np.ndarray  #: (N, T) kW, +inf = none
    base_load_kw: np.ndarray  #: (T,) largest base load in each period
    base_load_a: np.ndarray  #: (T,) per-phase current of the base load (balanced)
    node_carries_base: np.ndarray  #: (N,) bool, the base-load node and every node above it
    pv_kw: np.ndarray  #: (T,) smallest PV output in each period
    import_price: np.ndarray  #: (T,) per kWh
    export_price: np.ndarray | None  #: (T,) per kWh, None = exports earn nothing
    import_cap_kw: np.ndarray  #: (T,) grid limit and the root's signal caps combined, +inf = none
    #: Grid signals (:class:`~loadopt.signals.GridSignal`, ``K`` of them, input order); their
    #: hard caps are already in ``import_cap_kw`` (root) or ``node_power_limit_kw`` (other nodes).
    dr_event_ids: tuple[str, ...]
    dr_cap_kw: np.ndarray  #: (K, T) hard cap of each signal (kW), +inf where it asks for none
    signal_kind: tuple[str, ...] = ()  #: (K,) kind after level mapping (GridSignal.kind, "none")
    signal_node: np.ndarray | None = None  #: (K,) node index of each signal
    signal_required_kw: np.ndarray | None = None  #: (K, T) cap / setpoint / export cap, NaN = none
    signal_floor_kw: np.ndarray | None = None  #: (K, T) §14a floors under the signal (kW)
    signal_offset_s: np.ndarray | None = None  #: (K,) randomisation delay applied (s)
    setpoint_kw: np.ndarray | None = None  #: (T,) soft net import setpoint, NaN = none
    setpoint_penalty: np.ndarray | None = None  #: (T,) per kWh of deviation from it
    export_cap_kw: np.ndarray | None = None  #: (T,) soft net export cap, +inf = none
    export_penalty: np.ndarray | None = None  #: (T,) per kWh exported above it
    var_floor_a: np.ndarray | None = None  #: (V,) §14a floor of each variable (A), feasible
    notices: tuple[str, ...] = field(default=())  #: limits the inputs themselves break
    #: (E, 3, T) A an EVSE may draw whatever the plan says, per EVSE line and period (a fixed
    #: load on every limit above it; see :func:`loadopt.compile.compile_problem`); None = none.
    evse_reserved_a: np.ndarray | None = None
    #: (V,) bool, variables inside a reservation: no safety-row entries (their draw is counted
    #: in ``evse_reserved_a``); None = none.
    var_reserved: np.ndarray | None = None
    #: Batteries and bidirectional sessions (:class:`Storage`); None = a charge-only problem.
    storage: Storage | None = None

    @property
    def signal_ids(self) -> tuple[str, ...]:
        """Ids of the grid signals (``dr_event_ids``)."""
        return self.dr_event_ids

    @property
    def n_sessions(self) -> int:
        return len(self.session_ids)

    @property
    def n_periods(self) -> int:
        return self.horizon.n_periods

    @property
    def n_vars(self) -> int:
        return int(self.var_session.size)

    @property
    def step_h(self) -> float:
        """Length of the first period (h); of every period on a uniform horizon."""
        return self.horizon.step_h

    @property
    def period_h(self) -> np.ndarray:
        """(T,) length of each period (h): use this, not ``step_h``, for energy and cost."""
        return self.horizon.period_h

    @property
    def period_starts(self) -> list[datetime]:
        return [self.horizon.period_start(k) for k in range(self.n_periods)]

    @cached_property
    def session_pos(self) -> dict[str, int]:
        """Session id → index (built once)."""
        return {sid: k for k, sid in enumerate(self.session_ids)}

    @cached_property
    def evse_pos(self) -> dict[str, int]:
        """EVSE id → index (built once)."""
        return {eid: k for k, eid in enumerate(self.evse_ids)}

    def session_index(self, session_id: str) -> int:
        """Row of session ``session_id`` in the session arrays.

        Parameters
        ----------
        session_id
            The session's id.

        Returns
        -------
        int

        Raises
        ------
        UnknownIdError
            An unknown session (an :class:`~loadopt.errors.InputError` and a ``KeyError``).
        """
        try:
            return self.session_pos[session_id]
        except KeyError:
            raise UnknownIdError(f"unknown session {session_id!r} in this problem") from None

    def evse_levels_of(self, evse: int) -> np.ndarray | None:
        """Discrete levels of EVSE ``evse``.

        Parameters
        ----------
        evse
            EVSE index (order of ``evse_ids``).

        Returns
        -------
        numpy.ndarray or None
            Levels in deci-amps, sorted, 0 included (:func:`loadopt.compile.snap_levels_da`);
            ``None`` when the EVSE is continuous.
        """
        if not self.evse_has_levels[evse]:
            return None
        return self.evse_levels_da[self.evse_levels_ptr[evse] : self.evse_levels_ptr[evse + 1]]

    def dense(self, x: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter a per-variable vector into a ``(S, T)`` array.

        Parameters
        ----------
        x
            ``(V,)`` one value per variable (e.g. A).
        fill
            Value where a session has no variable (not plugged in).

        Returns
        -------
        numpy.ndarray
            ``(S, T)``.
        """
        S, T = self.n_sessions, self.n_periods
        out = np.full(S * T, fill, dtype=np.float64)
        out[self._var_flat] = x
        return out.reshape(S, T)

    def gather(self, current: np.ndarray) -> np.ndarray:
        """The per-variable vector of a ``(S, T)`` array.

        Parameters
        ----------
        current
            ``(S, T)`` (e.g. A per phase).

        Returns
        -------
        numpy.ndarray
            ``(V,)``, in variable order (``var_session``, ``var_period``).
        """
        if isinstance(current, np.ndarray) and current.shape == (self.n_sessions, self.n_periods):
            return current.reshape(-1)[self._var_flat]
        return current[self.var_session, self.var_period]

    @cached_property
    def _var_flat(self) -> np.ndarray:
        """(V,) each variable's position in a C-ordered ``(S, T)`` array (``s * T + t``):
        one flat index instead of two (:meth:`dense`, :meth:`gather` run several times per
        control step); built once, read-only."""
        flat = self.var_session.astype(np.intp) * self.n_periods + self.var_period
        flat.setflags(write=False)
        return flat


_LAYOUT: list[tuple[tuple[str, ...], frozenset[str], frozenset[str], dict[str, object]]] = []


def _problem_layout() -> tuple[tuple[str, ...], frozenset[str], frozenset[str], dict[str, object]]:
    """``Problem``'s field names (in order), their set, the set of those without a default, and
    the defaults."""
    if not _LAYOUT:
        from dataclasses import MISSING, fields

        names = tuple(f.name for f in fields(Problem))
        defaults = {f.name: f.default for f in fields(Problem) if f.default is not MISSING}
        assert all(f.default_factory is MISSING for f in fields(Problem))
        _LAYOUT.append((names, frozenset(names), frozenset(names) - defaults.keys(), defaults))
    return _LAYOUT[0]


def _new_problem(**values: object) -> Problem:
    """``Problem(**values)``, field for field, without the frozen dataclass ``__init__``'s
    ``object.__setattr__`` per field (~80 fields: ~40 µs, a tenth of a controller step's
    compile). Missing or unknown fields go through ``Problem(**values)`` (its own error)."""
    names, name_set, required, defaults = _problem_layout()
    out = object.__new__(Problem)
    if tuple(values) == names:  # every field, in field order (the compiler's call)
        out.__dict__.update(values)
        return out
    if not (values.keys() <= name_set and values.keys() >= required):
        return Problem(**values)  # type: ignore[arg-type]
    out.__dict__.update({n: values[n] if n in values else defaults[n] for n in names})
    return out
