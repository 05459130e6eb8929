"""The fuzz suite: random sites through every method, checked by an independent limit checker.

:mod:`tests.fuzz_checker` computes every limit from the raw inputs (site tree, sessions, signals,
horizon; never ``Problem.G``/``h``); every schedule from LP, fast path, MILP and PuLP, and the
OCPP payloads of LP schedules, must pass it. Malformed inputs must raise a
:class:`~loadopt.errors.LoadoptError` and nothing else.

CI runs the ``ci`` hypothesis profile (derandomised, a few hundred examples in all, seconds). The
exploratory run (docs/inputs.md, README "Fuzzing") is::

    LOADOPT_FUZZ_MINUTES=60 HYPOTHESIS_PROFILE=explore pytest -q -p no:cacheprovider \
        tests/test_fuzz_safety.py tests/test_fuzz_controller.py

which splits the minutes over the fuzz tests, draws fresh random examples until each test's
share is used up, and prints the figures (examples, violations, crashes) at the end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import loadopt as lo
from loadopt.errors import LoadoptError
from loadopt.safety import violations

from .fuzz_checker import Limits, ocpp_breaches
from .fuzz_strategies import GARBAGE, instances, malformed
from .fuzz_support import FUZZ, explore, fuzz


def _checked(site, sessions, horizon, signals, sched: lo.Schedule, target: str) -> None:
    """The independent checker passes the schedule; ``check()`` agrees; figures counted."""
    lim = Limits(site, sessions, horizon, signals)
    bad = lim.breaches(sched.current, sched.problem.session_ids)
    FUZZ.example(target, violations=len(bad))
    assert bad == [], f"{target}: {bad[:5]}"
    assert sched.violations() == []


def _crash_guard(target: str, fn):
    try:
        return fn()
    except Exception:
        FUZZ.crash(target)
        raise


# ------------------------------------------------------------------------------ methods
@explore
@fuzz(50)
@given(instances())
def test_fuzz_lp_never_breaks_a_limit(inst):
    site, sessions, horizon, signals = inst
    p = lo.compile_problem(site, sessions, horizon, signals)
    sched = _crash_guard("lp", lambda: lo.solve(p, time_limit_s=10.0))
    _checked(site, sessions, horizon, signals, sched, "lp")


@explore
@fuzz(50)
@given(instances(), st.sampled_from(["fair", "edf", "llf"]))
def test_fuzz_fast_never_breaks_a_limit(inst, policy):
    site, sessions, horizon, signals = inst
    p = lo.compile_problem(site, sessions, horizon, signals)
    sched = _crash_guard("fast", lambda: lo.solve(p, method="fast", policy=policy))
    _checked(site, sessions, horizon, signals, sched, "fast")


@explore
@fuzz(25)
@given(
    instances(max_evses=3, max_sessions=3, max_periods=4),
    st.sampled_from([None, (0.0, 6.0, 10.0, 16.0), (0.0, 8.0, 16.0, 24.0, 32.0)]),
    st.sampled_from(["milp", "auto"]),
)
def test_fuzz_milp_never_breaks_a_limit(inst, steps, method):
    site, sessions, horizon, signals = inst
    if steps is not None:
        site = site.model_copy(
            update={
                "evses": tuple(e.model_copy(update={"allowed_currents": steps}) for e in site.evses)
            }
        )
    p = lo.compile_problem(site, sessions, horizon, signals)
    sched = _crash_guard("milp", lambda: lo.solve(p, method=method, time_limit_s=5.0))
    _checked(site, sessions, horizon, signals, sched, "milp")


@explore
@fuzz(10)
@given(instances(max_evses=2, max_sessions=2, max_periods=3))
def test_fuzz_pulp_never_breaks_a_limit(inst):
    pytest.importorskip("pulp")
    site, sessions, horizon, signals = inst
    p = lo.compile_problem(site, sessions, horizon, signals)
    sched = _crash_guard("pulp", lambda: lo.solve(p, backend="pulp", time_limit_s=10.0))
    _checked(site, sessions, horizon, signals, sched, "pulp")


@explore
@fuzz(40)
@given(instances(), st.sampled_from(["1.6", "2.0.1", "2.1"]))
def test_fuzz_ocpp_profiles_never_break_a_limit(inst, version):
    """TxProfiles at their limits and TxDefault newcomers on idle EVSEs, per instant, summed per
    node and phase, from the wire payloads (A and W units: a W limit may all go on one line)."""
    site, sessions, horizon, signals = inst
    # 1.6 transaction ids are integers
    sessions = tuple(s.model_copy(update={"id": str(100 + k)}) for k, s in enumerate(sessions))
    p = lo.compile_problem(site, sessions, horizon, signals)
    sched = lo.solve(p)
    msgs = _crash_guard("ocpp", lambda: lo.ocpp.set_charging_profiles(sched, version))
    at_start = {s.id for s in sessions if s.arrival <= horizon.start < s.departure}
    bad = ocpp_breaches(Limits(site, sessions, horizon, signals), msgs, at_start)
    FUZZ.example("ocpp", violations=len(bad))
    assert bad == [], bad[:5]


@explore
@fuzz(30)
@given(instances(max_periods=6), st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_fuzz_violations_first_n_is_a_prefix(inst, seed, n):
    """``violations(limit=n)`` is the first ``n`` of the full list, on garbage schedules."""
    site, sessions, horizon, signals = inst
    p = lo.compile_problem(site, sessions, horizon, signals)
    rng = np.random.default_rng(seed)
    cur = rng.choice([0.0, 3.05, 16.0, 40.0, -1.0, np.nan], size=(p.n_sessions, p.n_periods))
    full = [str(v) for v in violations(p, cur)]  # str: NaN != NaN in the dataclasses
    assert [str(v) for v in violations(p, cur, n)] == full[:n]
    FUZZ.example("violations-prefix")


# ------------------------------------------------------------------------------ bad inputs
MODELS = {
    "Site": lambda inst: inst[0],
    "Session": lambda inst: inst[1][0] if inst[1] else None,
    "Horizon": lambda inst: inst[2],
    "Signals": lambda inst: inst[3],
}


@explore
@fuzz(120)
@given(
    instances(max_evses=3, max_sessions=3, max_periods=3),
    st.sampled_from(sorted(MODELS)),
    st.data(),
)
def test_fuzz_malformed_models_raise_loadopt_errors(inst, model, data):
    """A model dump with one field broken, removed or added: a ModelError (or a valid model);
    through ``compile_problem`` and a scenario file too. Never another exception."""
    from loadopt.scenario import Scenario

    obj = MODELS[model](inst)
    if obj is None:
        return
    bad = data.draw(malformed(obj.model_dump()))
    cls = type(obj)
    site, sessions, horizon, signals = inst
    try:
        fixed = cls.model_validate(bad)
    except LoadoptError:
        FUZZ.example("bad-input", violations=0)
    except Exception:
        FUZZ.crash("bad-input")
        raise
    else:
        FUZZ.example("bad-input", violations=0)
        del fixed
    args = {
        "Site": [bad, sessions, horizon, signals],
        "Session": [site, [bad, *sessions[1:]], horizon, signals],
        "Horizon": [site, sessions, bad, signals],
        "Signals": [site, sessions, horizon, bad],
    }[model]
    try:
        lo.compile_problem(*args)
    except LoadoptError:
        pass
    except Exception:
        FUZZ.crash("bad-input")
        raise
    doc = {
        "site": site.model_dump(mode="json"),
        "horizon": horizon.model_dump(mode="json"),
        "sessions": [s.model_dump(mode="json") for s in sessions],
        "signals": signals.model_dump(mode="json"),
    }
    key = {"Site": "site", "Horizon": "horizon", "Signals": "signals", "Session": "sessions"}
    try:
        doc[key[model]] = json.loads(json.dumps(bad if model != "Session" else [bad], default=str))
        text = json.dumps(doc, default=str)
    except ValueError:  # NaN in strict JSON: send it as pydantic's JSON would not accept it
        text = json.dumps(doc, default=str, allow_nan=True)
    try:
        Scenario.model_validate_json(text)
    except LoadoptError:
        pass
    except Exception:
        FUZZ.crash("bad-input")
        raise


@explore
@fuzz(40)
@given(
    instances(max_evses=2, max_sessions=2, max_periods=2),
    st.sampled_from(["site", "sessions", "horizon", "signals", "objective"]),
    st.sampled_from([*GARBAGE, ["abc"], [None], ({},), "s0"]),
)
def test_fuzz_compile_problem_with_garbage_arguments(inst, arg, garbage):
    site, sessions, horizon, signals = inst
    kw = {
        "site": site,
        "sessions": sessions,
        "horizon": horizon,
        "signals": signals,
        "objective": None,
    }
    kw[arg] = garbage
    try:
        lo.compile_problem(**kw)
    except LoadoptError:
        pass
    except Exception:
        FUZZ.crash("bad-input")
        raise
    FUZZ.example("bad-input")


# ------------------------------------------------------------------------------ the checker
def test_the_independent_checker_catches_breaches():
    """Not vacuous: it flags a breaker, a phase, a power limit, the grid import, a DR cap, a
    vehicle maximum and a draw while unplugged, each on its own."""
    from datetime import timedelta

    from .conftest import T0

    site = lo.Site(
        nodes=(
            lo.Node(id="g", max_power_kw=20.0),
            lo.Node(id="cb", parent="g", max_current=(16.0, 16.0, 10.0)),
        ),
        evses=(
            lo.Evse(id="e0", node="cb", charge_point_id="A"),
            lo.Evse(id="e1", node="cb", charge_point_id="B", phases=1, phase_rotation="TRS"),
        ),
    )
    h = lo.Horizon(start=T0, step_s=3600, n_periods=3)
    ss = (
        lo.Session(
            id="a",
            evse="e0",
            arrival=T0,
            departure=T0 + timedelta(hours=2),
            energy_kwh=50,
            max_current=16,
        ),
        lo.Session(id="b", evse="e1", arrival=T0, departure=T0 + timedelta(hours=3), energy_kwh=50),
    )
    sig = lo.Signals(
        grid_import_limit_kw=15.0,
        grid_signals=(
            lo.GridSignal(
                id="dr",
                start=T0 + timedelta(hours=2),
                end=T0 + timedelta(hours=3),
                import_cap_kw=1.0,
            ),
        ),
    )
    lim = Limits(site, ss, h, sig)
    ids = ("a", "b")
    assert lim.breaches(np.array([[8.0, 8.0, 0.0], [2.0, 2.0, 0.0]]), ids) == []
    assert any("phase T" in b for b in lim.breaches(np.array([[8.0, 0, 0], [3.0, 0, 0]]), ids))
    assert any("above its max" in b for b in lim.breaches(np.array([[16.5, 0, 0], [0, 0, 0]]), ids))
    assert any("not plugged" in b for b in lim.breaches(np.array([[0, 0, 1.0], [0, 0, 0]]), ids))
    assert any(
        "grid import period 0" in b
        for b in lim.breaches(np.array([[16.0, 0, 0], [32.0, 0, 0]]), ids)
    )
    assert any(
        "grid import period 2" in b for b in lim.breaches(np.array([[0, 0, 0], [0, 0, 6.0]]), ids)
    )
    # a reservation (a car drawing 14 A on e1's line T, over the 10 A phase by itself) leaves
    # e0 nothing on phase T: 2 A more is a breach, nothing more is not
    res = {"e1": (14.0, 0.0, 0.0)}
    assert any(
        "phase T" in b for b in lim.breaches(np.array([[2.0, 0, 0], [0, 0, 0]]), ids, reserved=res)
    )
    assert lim.breaches(np.array([[0.0, 0, 0], [0, 0, 0]]), ids, reserved=res) == []
