"""Grid signals on the horizon: per-signal and per-node arrays for :func:`loadopt.compile_problem`.

Called once per compile, with the arrays the compiler already has. Loops run over signals (a
handful), never over sessions × periods. The rules (docs/grid-signals.md):

- a signal covers every period that any part of its (randomised) window touches: a cap in force
  for one minute of a period holds for the whole period, so it is never exceeded;
- hard caps (``import_cap_kw``, ``reduction_kw``, levels mapped to either, fallbacks) combine by
  minimum per node and period; price adders add; the highest-priority setpoint wins (ties: the
  lowest); export caps combine by minimum and stay soft;
- from ``valid_until`` on (the stream is stale), the signal's ``fallback_kw`` import cap holds on
  its node for the rest of the horizon; a known hard cap stays in force with it (minimum: a stale
  stream never loosens a cap), soft asks (prices, setpoints, export caps) stop;
- a §14a floor raises the signal's cap to the sum of the floors of the devices plugged in under
  its node (``min(floor, device max)`` each).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import scipy.sparse as sp

from ..horizon import Horizon, sample
from ..signals import GridPolicy, GridSignal, split


def validity_signal(
    source: str, valid_until: datetime, fallback_kw: float, node: str | None
) -> GridSignal:
    """A stream's staleness rule when no event carries it on ``node``: no request of its own
    before ``valid_until`` (its one-second window starts there and asks for the fallback
    itself), only ``valid_until`` / ``fallback_kw``, so a stream that said "no events" (or only
    prices, which live at the grid connection) and then fell silent still caps ``node`` at
    ``fallback_kw`` (kW) from ``valid_until`` on, like one with events. An import cap, so that
    it may sit on any node (:func:`is_validity_only` recognises it)."""
    return GridSignal(
        id=f"{source}-validity",
        source=source,
        node=node,
        start=valid_until,
        end=valid_until + timedelta(seconds=1),
        import_cap_kw=fallback_kw,
        valid_until=valid_until,
        fallback_kw=fallback_kw,
    )


def stamped_signals(
    source: str,
    events: Iterable[Iterable[GridSignal]],
    valid_until: datetime,
    fallback_kw: float,
    node: str | None,
) -> tuple[GridSignal, ...]:
    """A VEN's signals (one group per event) restamped with ``valid_until`` / ``fallback_kw``
    (kW), plus :func:`validity_signal` on ``node`` when no signal sits there (no events, or only
    prices at the grid connection): the stream's staleness rule holds on its node either way."""
    out = tuple(
        s.model_copy(update={"valid_until": valid_until, "fallback_kw": fallback_kw})
        for sigs in events
        for s in sigs
    )
    if any(s.node == node for s in out):
        return out
    return (*out, validity_signal(source, valid_until, fallback_kw, node))


def is_validity_only(sig: GridSignal) -> bool:
    """``sig`` asks for nothing before its stream is stale: its window starts at
    ``valid_until`` and its cap is its fallback (what :func:`validity_signal` builds)."""
    return (
        sig.valid_until is not None
        and sig.randomize_s == 0
        and sig.start == sig.valid_until
        and sig.import_cap_kw is not None
        and sig.import_cap_kw == sig.fallback_kw
    )


@dataclass(frozen=True, eq=False)
class SignalArrays:
    """What the grid signals ask for, on the horizon's periods (kW, currency per kWh)."""

    ids: tuple[str, ...]
    node: np.ndarray  #: (K,) node index of each signal
    kind: tuple[str, ...]  #: the signal's kind after level mapping ("none" if a level asks nothing)
    cap_kw: np.ndarray  #: (K, T) hard cap of each signal, +inf where it asks for none
    #: (K, T) what it asks for (cap before §14a floors, setpoint, export cap, fallback), NaN
    #: where it asks for nothing
    required_kw: np.ndarray
    node_cap_kw: np.ndarray  #: (N, T) all signal caps of each node combined (min)
    node_cap_a: np.ndarray  #: (N, T) per-phase current caps (A) of each node combined (min)
    floor_kw: np.ndarray  #: (K, T) sum of the §14a floors under the signal (0 = none)
    floor_a: np.ndarray  #: (V,) per-variable §14a floor (A, before the breakers are applied)
    import_adder: np.ndarray  #: (T,) added to the import price
    export_adder: np.ndarray  #: (T,) added to the export price
    setpoint_kw: np.ndarray  #: (T,) net import setpoint, NaN = none
    setpoint_penalty: np.ndarray  #: (T,) per kWh of deviation
    export_cap_kw: np.ndarray  #: (T,) soft net export cap, +inf = none
    export_penalty: np.ndarray  #: (T,) per kWh exported above the cap
    offset_s: np.ndarray  #: (K,) randomisation delay applied (s)


def _no_signal_arrays(N: int, T: int, V: int) -> SignalArrays:
    """:func:`signal_arrays` without signals (``N`` nodes, ``T`` periods, ``V`` variables):
    nothing asked anywhere. Built without the inputs a signal would need (a controller step
    without grid signals skips sampling them)."""
    return SignalArrays(
        ids=(),
        node=np.zeros(0, dtype=np.int64),
        kind=(),
        cap_kw=np.full((0, T), np.inf),
        required_kw=np.full((0, T), np.nan),
        node_cap_kw=np.full((N, T), np.inf),
        node_cap_a=np.full((N, T), np.inf),
        floor_kw=np.zeros((0, T)),
        floor_a=np.zeros(V),
        import_adder=np.zeros(T),
        export_adder=np.zeros(T),
        setpoint_kw=np.full(T, np.nan),
        setpoint_penalty=np.zeros(T),
        export_cap_kw=np.full(T, np.inf),
        export_penalty=np.zeros(T),
        offset_s=np.zeros(0, dtype=np.int64),
    )


def signal_arrays(
    signals: tuple[GridSignal, ...],
    policy: GridPolicy,
    site_id: str,
    horizon: Horizon,
    node_index: dict[str, int],
    root: int,
    carries: np.ndarray,
    session_anc: sp.csr_matrix,
    session_max_kw: np.ndarray,
    session_energy_kwh: np.ndarray,
    arrival_s: np.ndarray,
    departure_s: np.ndarray,
    avail: np.ndarray,
    base_min_kw: np.ndarray,
    pv_max_kw: np.ndarray,
    grid_kw: np.ndarray,
    node_kw: np.ndarray,
    var_session: np.ndarray,
    var_period: np.ndarray,
    var_ub: np.ndarray,
    session_kw_per_a: np.ndarray,
) -> SignalArrays:
    """Compile ``signals`` (see the module docstring). Raises ``InputError`` for a signal on an
    unknown node."""
    from ..errors import InputError

    T = horizon.n_periods
    N = node_kw.shape[0]
    K = len(signals)
    if K == 0:
        return _no_signal_arrays(N, T, var_session.size)
    bounds = horizon.period_bounds_s()
    lo_b, hi_b = bounds[:-1], bounds[1:]

    def uncontrolled() -> np.ndarray:
        """Uncontrolled baseline per node (N, T): the lowest load at any instant of the period.
        A vehicle counts only if, uncontrolled, it would draw at its maximum for the whole
        period: plugged in before the period starts and neither gone nor full before it ends.
        Only a reduction without a baseline of its own needs it (computed once, on demand)."""
        if not unctrl_memo:
            start_s = np.maximum(arrival_s, 0.0)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                full_s = np.where(
                    session_max_kw > 0,
                    start_s + 3600.0 * session_energy_kwh / session_max_kw,
                    -np.inf,
                )
            draw_end = np.minimum(departure_s, full_s)
            whole = (arrival_s[:, None] <= lo_b[None, :]) & (draw_end[:, None] >= hi_b[None, :])
            ev_kw = session_anc.T @ (whole * session_max_kw[:, None])  # (N, T)
            base_part = np.where(carries[:, None], base_min_kw[None, :], 0.0)
            u = ev_kw + base_part
            u[root] = u[root] - pv_max_kw
            u = np.maximum(u, 0.0)
            u = np.minimum(u, node_kw)
            u[root] = np.minimum(u[root], grid_kw)
            unctrl_memo.append(u)
        return unctrl_memo[0]

    unctrl_memo: list[np.ndarray] = []
    cap = np.full((K, T), np.inf)
    cap_a = np.full((K, T), np.inf)
    req = np.full((K, T), np.nan)
    floor_kw = np.zeros((K, T))
    nodes = np.zeros(K, dtype=np.int64)
    kinds: list[str] = []
    offsets = np.zeros(K, dtype=np.int64)
    import_adder = np.zeros(T)
    export_adder = np.zeros(T)
    setpoint = np.full(T, np.nan)
    sp_prio = np.full(T, -np.inf)
    sp_pen = np.zeros(T)
    export_cap = np.full(T, np.inf)
    export_pen = np.zeros(T)
    S = session_max_kw.size
    floor_a = np.zeros(var_session.size)
    present = (avail > 0) & (session_energy_kwh[:, None] > 0)  # (S, T)
    for j, sig in enumerate(signals):
        if sig.node is None:
            n = root
        elif sig.node in node_index:
            n = node_index[sig.node]
        else:
            raise InputError(
                f"grid signal {sig.id!r}: node {sig.node!r} is not a node of the site {site_id!r}"
            )
        nodes[j] = n
        off = sig.offset_s(site_id)
        offsets[j] = off
        a = horizon.seconds_from_start(sig.start) + off
        b = horizon.seconds_from_start(sig.end) + off
        win = (np.minimum(b, hi_b) - np.maximum(a, lo_b)) > 0
        stale_any = np.zeros(T, dtype=bool)
        stale_all = np.zeros(T, dtype=bool)
        if sig.valid_until is not None:
            v = horizon.seconds_from_start(sig.valid_until)
            stale_any, stale_all = hi_b > v, lo_b >= v
        live = win & ~stale_all

        kind = sig.kind
        value: float | None = getattr(sig, kind)
        level_frac = None
        if kind == "level":
            act = policy.levels[int(sig.level or 0)]
            if act.import_cap_kw is not None:
                kind, value = "import_cap_kw", act.import_cap_kw
            elif act.reduction_kw is not None:
                kind, value = "reduction_kw", act.reduction_kw
            elif act.reduction_fraction is not None:
                kind, level_frac = "reduction_kw", act.reduction_fraction
            elif act.import_price_adder is not None:
                kind, value = "import_price_adder", act.import_price_adder
            else:
                kind = "none"
        kinds.append(kind)

        if kind == "import_cap_kw":
            cap[j, win] = float(value)  # type: ignore[arg-type]
        elif kind == "current_cap_a":
            cap_a[j, win] = float(value)  # type: ignore[arg-type]
            req[j, win] = float(value)  # type: ignore[arg-type]
        elif kind == "reduction_kw":
            if sig.baseline_kw is None:
                base = uncontrolled()[n]
            else:
                base = sample(*split(sig.baseline_kw), horizon, "min")
            red = base * level_frac if level_frac is not None else float(value)  # type: ignore[arg-type]
            cap[j, win] = np.maximum(base - red, 0.0)[win]
        elif kind == "import_price_adder":
            import_adder[live] += float(value)  # type: ignore[arg-type]
        elif kind == "export_price_adder":
            export_adder[live] += float(value)  # type: ignore[arg-type]
        elif kind == "export_cap_kw":
            export_cap[live] = np.minimum(export_cap[live], float(value))  # type: ignore[arg-type]
            export_pen[live] = np.maximum(export_pen[live], sig.penalty_per_kwh)
            req[j, live] = float(value)  # type: ignore[arg-type]
        elif kind == "setpoint_kw":
            better = live & (
                (sig.priority > sp_prio) | ((sig.priority == sp_prio) & (float(value) < setpoint))  # type: ignore[arg-type]
            )
            setpoint[better] = float(value)  # type: ignore[arg-type]
            sp_prio[better] = sig.priority
            sp_pen[better] = sig.penalty_per_kwh
            req[j, live] = float(value)  # type: ignore[arg-type]

        fin = np.isfinite(cap[j])
        req[j, fin] = cap[j, fin]  # what the operator asked for (floors and fallbacks below)
        if sig.floor_kw_per_device is not None and np.isfinite(cap[j]).any():
            under = np.zeros(S, dtype=bool)
            if S:
                under[session_anc[:, n].nonzero()[0]] = True
            dev_floor = np.minimum(sig.floor_kw_per_device, session_max_kw)  # (S,)
            floor_kw[j] = ((present & under[:, None]) * dev_floor[:, None]).sum(axis=0)
            capped = np.isfinite(cap[j])
            cap[j, capped] = np.maximum(cap[j, capped], floor_kw[j, capped])
            vin = under[var_session] & capped[var_period]
            with np.errstate(divide="ignore", invalid="ignore"):
                fa = np.where(
                    session_kw_per_a[var_session] > 0,
                    sig.floor_kw_per_device / session_kw_per_a[var_session],
                    0.0,
                )
            floor_a = np.where(vin, np.maximum(floor_a, np.minimum(fa, var_ub)), floor_a)
        if sig.valid_until is not None:
            cap[j, stale_any] = np.minimum(cap[j, stale_any], float(sig.fallback_kw or 0.0))
            req[j, stale_any] = np.fmin(req[j, stale_any], cap[j, stale_any])

    node_cap = np.full((N, T), np.inf)
    node_cap_a = np.full((N, T), np.inf)
    for j in range(K):
        node_cap[nodes[j]] = np.minimum(node_cap[nodes[j]], cap[j])
        node_cap_a[nodes[j]] = np.minimum(node_cap_a[nodes[j]], cap_a[j])
    setpoint = np.where(np.isfinite(sp_prio), setpoint, np.nan)
    return SignalArrays(
        ids=tuple(s.id for s in signals),
        node=nodes,
        kind=tuple(kinds),
        cap_kw=cap,
        required_kw=req,
        node_cap_kw=node_cap,
        node_cap_a=node_cap_a,
        floor_kw=floor_kw,
        floor_a=floor_a,
        import_adder=import_adder,
        export_adder=export_adder,
        setpoint_kw=setpoint,
        setpoint_penalty=sp_pen,
        export_cap_kw=export_cap,
        export_penalty=export_pen,
        offset_s=offsets,
    )
