"""OCPP profiles are built from the compiled Problem's arrays (EVSE voltage, phases, rotation,
current range; session arrival and departure), not from ``site.evses`` / ``sessions`` again:
a Problem whose objects say otherwise yields the very same payloads."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from loadopt.ocpp import set_charging_profiles

from .ocpp_helpers import random_schedule, sessions, site


def _lying(problem):
    """A copy of ``problem`` whose site EVSEs and sessions carry different numbers (ids,
    stations, connectors and station settings kept): only its arrays are right."""
    s = problem.site
    evses = tuple(
        e.model_copy(
            update={
                "voltage_v": 110.0,
                "phases": 1 if e.phases == 3 else 3,
                "phase_rotation": "TSR",
                "min_current": 0.0,
                "max_current": 80.0,
            }
        )
        for e in s.evses
    )
    q = copy.copy(problem)
    object.__setattr__(q, "site", s.model_copy(update={"evses": evses}))
    object.__setattr__(
        q,
        "sessions",
        tuple(
            x.model_copy(
                update={
                    "arrival": x.arrival + timedelta(hours=3),
                    "departure": x.departure + timedelta(hours=7),
                }
            )
            for x in problem.sessions
        ),
    )
    return q


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
def test_profiles_read_the_problem_arrays_not_the_objects(version):
    rng = np.random.default_rng(7)
    s = site()
    sched = random_schedule(s, sessions(s, 4, rng), rng)
    ids = {sid: int(sid) for sid in sched.problem.session_ids}
    want = set_charging_profiles(sched, version, transaction_ids=ids)
    assert any(m[2].get("csChargingProfiles", m[2].get("chargingProfile")) for m in want)
    lied = replace(sched, problem=_lying(sched.problem))
    assert set_charging_profiles(lied, version, transaction_ids=ids) == want
