"""The controller's per-step bookkeeping, checked against the straightforward per-session
formulas it replaces (same results, bit for bit): pilot steps of the re-sharing caps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadopt.controller.resharing import _step_at_least, _step_at_most
from loadopt.site import Evse


def _former_at_most(steps: tuple[float, ...] | None, a: float) -> float:
    if not steps:
        return a
    below = [x for x in steps if x <= a + 1e-9]
    return max(below) if below else 0.0


def _former_at_least(steps: tuple[float, ...] | None, a: float) -> float:
    if not steps:
        return a
    above = [x for x in steps if x >= a - 1e-9]
    return min(above) if above else a


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or (
        x == y and math.copysign(1, x) == math.copysign(1, y)
    )


def test_pilot_steps_match_the_former_formula_on_random_stepped_evses() -> None:
    rng = np.random.default_rng(20261129)
    for k in range(300):
        n = int(rng.integers(0, 7))
        steps = [float(x) for x in rng.choice([0.0, -0.0, 6.0, 8.0, 10.0, 13.0, 16.0, 32.0], n)]
        steps += [round(float(x), 1) for x in rng.uniform(0, 40, int(rng.integers(0, 3)))]
        rng.shuffle(steps)
        allowed = tuple(steps) if k % 7 else None
        evse = Evse(id="e", node="n", charge_point_id="cp", allowed_currents=allowed)
        probes = [*(evse.allowed_currents or ()), 0.0, -0.0, 41.0, math.inf, -math.inf, math.nan]
        probes += [x + d for x in (evse.allowed_currents or ()) for d in (1e-9, -1e-9, 2e-9, -2e-9)]
        probes += [float(x) for x in rng.uniform(-1, 45, 20)]
        for a in probes:
            assert _same(_step_at_most(evse, a), _former_at_most(evse.allowed_currents, a)), (
                evse.allowed_currents,
                a,
            )
            assert _same(_step_at_least(evse, a), _former_at_least(evse.allowed_currents, a)), (
                evse.allowed_currents,
                a,
            )


@pytest.mark.parametrize("steps", [(), (16.0, 6.0, 6.0, 32.0)])
def test_pilot_steps_edges(steps: tuple[float, ...]) -> None:
    evse = Evse(id="e", node="n", charge_point_id="cp", allowed_currents=steps)
    if not steps:
        assert _step_at_most(evse, 7.3) == 7.3 and _step_at_least(evse, 7.3) == 7.3
    else:
        assert _step_at_most(evse, 15.9999999999) == 16.0  # within 1e-9 of a step: that step
        assert _step_at_most(evse, 5.0) == 0.0  # below every step: the EVSE signals 0
        assert _step_at_least(evse, 6.5) == 16.0
        assert _step_at_least(evse, 33.0) == 33.0  # above every step: unchanged


def test_session_copy_is_model_copy() -> None:
    from datetime import UTC, datetime, timedelta

    from loadopt.controller.sessions import _copy_with
    from loadopt.session import Session, V2xParameters

    t = datetime(2026, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(7)
    for k in range(50):
        kw: dict = {"min_current": 6.0} if k % 2 else {}
        if k % 3 == 0:
            kw["v2x"] = V2xParameters(min_v2x_energy_kwh=1.0, max_v2x_energy_kwh=40.0)
        s = Session(
            id=f"s{k}",
            evse="e",
            arrival=t,
            departure=t + timedelta(hours=2),
            energy_kwh=10.0,
            **kw,
        )
        upd = {
            "energy_kwh": round(float(rng.uniform(0, 10)), 6),
            "departure": t + timedelta(hours=float(rng.uniform(1, 5))),
        }
        if k % 4 == 0:
            upd["max_current"] = 13.0
        if k % 5 == 0:
            upd["arrival"] = t + timedelta(minutes=5)
        a, b = _copy_with(s, upd), s.model_copy(update=upd)
        assert type(a) is Session and a == b and a.__dict__ == b.__dict__
        assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__
        assert a.__pydantic_extra__ == b.__pydantic_extra__ and a.__pydantic_private__ is None
        assert a.model_dump() == b.model_dump() and s.energy_kwh == 10.0  # the original kept


def test_no_grid_signal_arrays_are_what_the_signal_loop_gave() -> None:
    """Without grid signals the step skips sampling them: the arrays are those of an empty
    signal loop (nothing asked anywhere), fresh and writable."""
    from loadopt.grid.arrays import _no_signal_arrays

    a = _no_signal_arrays(3, 5, 7)
    assert a.ids == () and a.kind == ()
    for arr, shape, dtype, fill in [
        (a.node, (0,), np.int64, 0),
        (a.offset_s, (0,), np.int64, 0),
        (a.cap_kw, (0, 5), np.float64, np.inf),
        (a.required_kw, (0, 5), np.float64, np.nan),
        (a.floor_kw, (0, 5), np.float64, 0.0),
        (a.node_cap_kw, (3, 5), np.float64, np.inf),
        (a.node_cap_a, (3, 5), np.float64, np.inf),
        (a.floor_a, (7,), np.float64, 0.0),
        (a.import_adder, (5,), np.float64, 0.0),
        (a.export_adder, (5,), np.float64, 0.0),
        (a.setpoint_kw, (5,), np.float64, np.nan),
        (a.setpoint_penalty, (5,), np.float64, 0.0),
        (a.export_cap_kw, (5,), np.float64, np.inf),
        (a.export_penalty, (5,), np.float64, 0.0),
    ]:
        assert arr.shape == shape and arr.dtype == dtype and arr.flags.writeable
        np.testing.assert_array_equal(arr, np.full(shape, fill, dtype=dtype))


def _former_check(sessions, evse_ids) -> None:  # type: ignore[no-untyped-def]
    """Frozen copy of ``loadopt.session.check_sessions``' former single loop (before commit
    19588ee added the shortcut), kept on purpose as the old-vs-new reference: the test below
    demands the same verdict and message from the current code. Do not share it with session.py."""
    from collections import defaultdict
    from itertools import pairwise

    from loadopt.errors import InputError

    seen: set[str] = set()
    by_evse: dict = defaultdict(list)
    for s in sessions:
        if s.id in seen:
            raise InputError(f"duplicate session id {s.id!r}")
        seen.add(s.id)
        if s.evse not in evse_ids:
            raise InputError(f"session {s.id!r}: unknown EVSE {s.evse!r}")
        by_evse[s.evse].append(s)
    for evse, group in by_evse.items():
        group.sort(key=lambda s: s.arrival)
        for a, b in pairwise(group):
            if b.arrival < a.departure:
                raise InputError(
                    f"EVSE {evse!r}: sessions {a.id!r} and {b.id!r} overlap "
                    f"({b.id!r} arrives {b.arrival.isoformat()} before {a.id!r} departs "
                    f"{a.departure.isoformat()})"
                )


def test_check_sessions_matches_the_former_loop() -> None:
    """Same verdict and message as the former single loop, on random id/EVSE/time clashes (the
    common case, distinct ids on distinct known EVSEs, takes a shortcut)."""
    from datetime import UTC, datetime, timedelta

    from loadopt.errors import InputError
    from loadopt.session import Session, as_sessions, check_sessions

    t = datetime(2026, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(11)
    known = {"e0", "e1", "e2", "e3", "e4", "e5"}
    for _ in range(400):
        n = int(rng.integers(0, 7))
        sessions = []
        for _ in range(n):
            a = t + timedelta(hours=int(rng.integers(0, 6)))
            sessions.append(
                Session(
                    id=f"s{int(rng.integers(0, 9))}",
                    evse=f"e{int(rng.integers(0, 8))}",
                    arrival=a,
                    departure=a + timedelta(hours=int(rng.integers(1, 4))),
                    energy_kwh=1.0,
                )
            )
        want = got = None
        try:
            _former_check(sessions, known)
        except InputError as e:
            want = str(e)
        for given in (sessions, iter(sessions), tuple(sessions)):
            try:
                check_sessions(given, known)
            except InputError as e:
                got = str(e)
            else:
                got = None
            assert got == want
        assert as_sessions(sessions) == tuple(sessions)
        assert all(a is b for a, b in zip(as_sessions(sessions), sessions, strict=True))


def test_dense_and_gather_match_the_two_index_form() -> None:
    """``Problem.dense`` / ``gather`` by one flat index give what ``out[vs, vt]`` gave, also for
    a wider array, a view and a non-float input."""
    from datetime import UTC, datetime, timedelta

    import loadopt as lo

    t = datetime(2026, 1, 1, tzinfo=UTC)
    site = lo.Site(
        id="s",
        nodes=[lo.Node(id="root", max_current=(63, 63, 63))],
        evses=[lo.Evse(id=f"e{k}", node="root", charge_point_id=f"cp{k}") for k in range(4)],
    )
    sessions = [
        lo.Session(
            id=f"v{k}",
            evse=f"e{k}",
            arrival=t + timedelta(minutes=20 * k),
            departure=t + timedelta(hours=1 + k),
            energy_kwh=5.0,
        )
        for k in range(4)
    ]
    p = lo.compile_problem(site, sessions, lo.Horizon(start=t, step_s=900, n_periods=8))
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 32, p.n_vars)
    ref = np.full((p.n_sessions, p.n_periods), -1.0)
    ref[p.var_session, p.var_period] = x
    np.testing.assert_array_equal(p.dense(x, fill=-1.0), ref)
    assert p.dense(x).flags.c_contiguous and p.dense(x).dtype == np.float64
    cur = rng.uniform(0, 32, (p.n_sessions, p.n_periods))
    for c in (cur, np.asfortranarray(cur), cur.astype(np.float32), cur.round().astype(np.int64)):
        got = p.gather(c)
        want = c[p.var_session, p.var_period]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    wide = rng.uniform(0, 32, (p.n_sessions, p.n_periods + 3))
    np.testing.assert_array_equal(p.gather(wide), wide[p.var_session, p.var_period])
