"""Second review: public entry points raise the LoadoptError family (a CSMS that catches
``LoadoptError`` catches these), still as the built-in they raised before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.errors import LoadoptError
from loadopt.ocpp import build_profiles, set_charging_profiles
from loadopt.ocpp.ids import ProfileIds
from loadopt.ocpp.merge import merge_periods
from loadopt.safety import project

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sched() -> lo.Schedule:
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=32.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="CP0"),),
    )
    s = lo.Session(
        id="s0", evse="e0", arrival=T0, departure=T0 + timedelta(hours=2), energy_kwh=10.0
    )
    return lo.solve(lo.compile_problem(site, [s], lo.Horizon(start=T0, step_s=900, n_periods=4)))


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda s: project(s.problem, np.zeros((2, 2))), ValueError),
        (lambda s: s.problem.session_index("nope"), KeyError),
        (lambda s: build_profiles(s, session_ids=["nope"]), KeyError),
        (lambda s: set_charging_profiles(s, "1.7"), ValueError),
        (lambda s: ProfileIds().profile_id("tx", 10_000), ValueError),
        (
            lambda s: merge_periods(
                np.zeros(1, np.int64), np.zeros((1, 3), np.int64), np.ones(1), 0, 900
            ),
            ValueError,
        ),
    ],
)
def test_bad_calls_raise_the_loadopt_family(sched, call, builtin):
    """Regression: these raised a bare ValueError / KeyError that ``except LoadoptError`` let
    through (``project`` on a wrong shape, an unknown session id, OCPP version 1.7, a connector
    out of range, max_periods 0)."""
    with pytest.raises(LoadoptError) as exc:
        call(sched)
    assert isinstance(exc.value, builtin)
    assert "'" not in str(exc.value)[:1]  # the message itself, not a quoted repr
