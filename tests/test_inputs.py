"""Bad inputs get named LoadoptError subclasses, never a raw traceback (issue 10; docs/inputs.md).

One regression test per crash of the issue owned here; the fuzz suite (tests/test_fuzz_*.py)
generates these classes at random as well.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

import loadopt as lo
from loadopt.cli import main
from loadopt.errors import InputError, LoadoptError, ModelError

from .conftest import T0, horizon, one_breaker_site, session


def test_model_error_is_one_family_and_stays_compatible():
    with pytest.raises(ModelError) as ei:
        lo.Site(id="depot", nodes=[{"id": "g"}, {"id": "cb", "parent": "g", "max_current": -3}])
    e = ei.value
    assert isinstance(e, LoadoptError) and isinstance(e, ValidationError)
    assert isinstance(e, ValueError)  # what callers caught before
    text = str(e)
    assert "Site 'depot'" in text and "nodes.1.max_current" in text and "node 'cb'" in text
    assert e.errors()[0]["loc"][:3] == ("nodes", 1, "max_current")


@pytest.mark.parametrize(
    "build",
    [
        lambda: lo.Node(id="", max_current=1),
        lambda: lo.Evse(id="e", node="n", charge_point_id="c", phase_rotation="XYZ"),
        lambda: lo.Session(id="a", evse="e", arrival="yesterday", departure=T0, energy_kwh=1),
        lambda: lo.Session(
            id="a",
            evse="e",
            arrival=datetime(2026, 1, 1),
            departure=datetime(2026, 1, 2),
            energy_kwh=1,
        ),
        lambda: lo.Signals(import_price=float("nan")),
        lambda: lo.Horizon(start=T0, step_s=0),
        lambda: lo.DemandResponseEvent(id="x", start=T0, end=T0),
        lambda: lo.Objective(energy_cost=-1),
        lambda: lo.Site.model_validate("not a site"),
        lambda: lo.Site.model_validate_json("{not json"),
        lambda: lo.Session(
            id="a",
            evse="e",
            arrival=datetime(9999, 12, 31, tzinfo=UTC),
            departure=datetime(9999, 12, 31, 23, tzinfo=UTC),
            energy_kwh=1,
        ),
    ],
    ids=[
        "empty-id",
        "rotation",
        "string-time",
        "naive-time",
        "nan",
        "step-0",
        "dr-empty",
        "negative-weight",
        "validate-str",
        "bad-json",
        "year-9999",
    ],
)
def test_every_model_fault_is_a_model_error(build):
    with pytest.raises(ModelError):
        build()


def test_assigning_to_a_frozen_model_is_a_model_error():
    n = lo.Node(id="n")
    with pytest.raises(ModelError, match="frozen"):
        n.max_current = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "sessions,err,match",
    [
        ("abc", InputError, "iterable of Session, got str"),
        ({"id": "a"}, InputError, "got a dict"),
        (42, InputError, "got int"),
        ([object()], InputError, r"sessions\[0\] must be a Session"),
        ([{"id": "a", "evse": "e0"}], ModelError, "arrival"),
    ],
)
def test_compile_problem_rejects_wrong_typed_sessions(sessions, err, match):
    with pytest.raises(err, match=match):
        lo.compile_problem(one_breaker_site(), sessions, horizon())


def test_compile_problem_validates_mappings():
    s = session("a", "e0", 5.0).model_dump()
    p = lo.compile_problem(one_breaker_site().model_dump(), [s], horizon().model_dump())
    assert p.session_ids == ("a",)
    with pytest.raises(InputError, match="site must be a Site"):
        lo.compile_problem("site", [], horizon())
    with pytest.raises(InputError, match="horizon must be a Horizon"):
        lo.compile_problem(one_breaker_site(), [], 96)


def test_pulp_backend_with_an_all_zero_objective():
    pytest.importorskip("pulp")
    p = lo.compile_problem(
        one_breaker_site(),
        [session("a", "e0", 5.0)],
        horizon(2),
        objective=lo.Objective(energy_cost=0, unmet_energy_per_kwh=0, charge_early_per_kwh_h=0),
    )
    sched = lo.solve(p, backend="pulp")
    assert sched.status == lo.ScheduleStatus.OPTIMAL and sched.objective == 0.0
    assert sched.violations() == []


def test_cli_solve_a_directory_or_missing_file(tmp_path, capsys):
    assert main(["solve", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bin.json"
    bad.write_bytes(b"\xff\xfe\x00")
    assert main(["solve", str(bad)]) == 2
    assert "UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "abc"])
def test_cli_time_limit_must_be_finite_and_positive(tmp_path, capsys, value):
    sc = tmp_path / "s.json"
    sc.write_text(
        json.dumps({"site": {"nodes": [{"id": "g"}]}, "horizon": {"start": "2026-01-01T00:00:00Z"}})
    )
    with pytest.raises(SystemExit) as ei:
        main(["solve", str(sc), "--time-limit", value])
    assert ei.value.code == 2
    assert "--time-limit" in capsys.readouterr().err


def test_scenario_load_names_the_field_and_the_object(tmp_path):
    from loadopt.scenario import Scenario

    p = tmp_path / "s.json"
    p.write_text(
        json.dumps(
            {
                "site": {
                    "nodes": [{"id": "g"}],
                    "evses": [{"id": "e1", "node": "g", "charge_point_id": "c", "phases": 4}],
                },
                "horizon": {"start": "2026-01-01T00:00:00Z"},
            }
        )
    )
    with pytest.raises(ModelError, match=r"site\.evses\.0\.phases.*EVSE 'e1'"):
        Scenario.load(p)


def test_time_beyond_year_9000_is_rejected_not_overflowing():
    late = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    with pytest.raises(ModelError, match="supported range"):
        lo.Horizon(start=late)
    with pytest.raises(ModelError, match="supported range"):
        lo.SeriesPoint(start=late, value=1.0)
    assert lo.Horizon(start=T0 + timedelta(days=1)).start.year == 2026


def test_check_builds_only_the_first_violations(monkeypatch):
    """Issue 10: check() built the whole violation list (210 ms on an all-violating 5,000 x 96
    schedule). Now only the first N Violation objects are made (the time is in
    benchmarks/test_bench_check.py)."""
    import numpy as np

    import loadopt.safety as safety

    made = []
    real = safety.Violation

    def counting(*a, **kw):
        made.append(1)
        return real(*a, **kw)

    p = lo.compile_problem(
        one_breaker_site(16.0, n_evse=2),
        [session("a", "e0", 50.0), session("b", "e1", 50.0)],
        horizon(8),
    )
    cur = np.full((2, 8), 40.05)  # off the grid, above every maximum and limit
    monkeypatch.setattr(safety, "Violation", counting)
    s = lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "test")
    with pytest.raises(lo.SafetyError):
        s.check()
    assert len(made) == 10
    made.clear()
    assert len(safety.violations(p, cur)) == len(made) > 40


def test_solve_and_check_reject_what_is_not_a_problem_or_a_schedule():
    p = lo.compile_problem(one_breaker_site(), [session("a", "e0", 5.0)], horizon(2))
    with pytest.raises(InputError, match="needs a Problem"):
        lo.solve("p")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="must be numbers"):
        lo.safety.violations(p, "x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shape"):
        lo.safety.violations(p, [[1.0]])
