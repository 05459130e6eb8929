"""Shared builders for small, hand-checkable sites."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings

import loadopt as lo

# Hypothesis profiles: "ci" (default) is derandomised, so CI runs the same examples every time;
# "explore" draws fresh random examples with no time deadline, and 20x as many for the tests
# sized with ``examples(n)``, for long fuzz runs (HYPOTHESIS_PROFILE=explore; docs/inputs.md).
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``max_examples`` for a property test: ``n`` in CI, 20 × ``n`` when exploring."""
    return n * 20 if PROFILE == "explore" else n


T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)


def horizon(n: int = 8, step_s: int = 3600, start: datetime = T0) -> lo.Horizon:
    return lo.Horizon(start=start, step_s=step_s, n_periods=n)


def session(
    sid: str, evse: str, energy: float, dep_h: float = 8.0, arr_h: float = 0.0, **kw
) -> lo.Session:
    return lo.Session(
        id=sid,
        evse=evse,
        arrival=T0 + hours(arr_h),
        departure=T0 + hours(dep_h),
        energy_kwh=energy,
        **kw,
    )


def one_breaker_site(
    breaker_a: float = 16.0,
    n_evse: int = 2,
    phases: int = 3,
    rotations: tuple[str, ...] = ("RST",),
    **evse_kw,
) -> lo.Site:
    """grid (no limit) → one breaker → ``n_evse`` EVSEs."""
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb", parent="grid", max_current=breaker_a),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="cb",
                charge_point_id=f"CP{k}",
                phases=phases,
                phase_rotation=rotations[k % len(rotations)],
                **evse_kw,
            )
            for k in range(n_evse)
        ),
    )


@pytest.fixture
def t0() -> datetime:
    return T0


@pytest.fixture(scope="session")
def dask_backend():
    """One embedded 2-worker Dask LocalCluster (processes, one thread each) for the fleet tests,
    its workers warmed up (HiGHS and the compiled fast-path kernels loaded)."""
    pytest.importorskip("distributed")
    from loadopt.fleet import DaskBackend
    from loadopt.fleet.worker import warm_up

    be = DaskBackend(n_workers=2)
    for s in be.slots():
        be.submit(s, warm_up).result()
    yield be
    be.close()
