"""Simulator and baselines on small replays; the ACN importer on the shipped sample."""

from __future__ import annotations

import numpy as np
import pytest

from loadopt.acn import acn_scenario, read_acn_csv, sample_path, to_sessions
from loadopt.errors import InputError
from loadopt.horizon import Horizon
from loadopt.simulate import (
    BASELINES,
    accepted_current,
    compare,
    markdown_table,
    simulate,
    simulation_table,
)


@pytest.fixture(scope="module")
def acn_small():
    sc = acn_scenario("2019-05-06", step_s=1800, grid_import_limit_kw=80.0)
    # keep it small and fast: the first 30 sessions
    return sc.model_copy(update={"sessions": sc.sessions[:30]})


def test_taper():
    a = accepted_current(
        np.array([32.0, 32.0, 32.0, 32.0]),
        np.array([0.0, 9.0, 10.0, 0.0]),
        np.array([10.0, 10.0, 10.0, 0.0]),
    )
    assert a[0] == 32.0 and 0 < a[1] < 32.0 and a[2] == 0.0 and a[3] == 0.0


def test_controller_and_baselines_on_real_data(acn_small):
    res = compare(acn_small, baselines=BASELINES, horizon_h=6.0)
    by = {r.name: r for r in res}
    assert by["controller"].n_violations == 0
    assert by["equal_share"].n_violations == 0
    assert by["edf"].n_violations == 0
    assert by["uncontrolled"].n_violations > 0  # what no control causes on this site
    for r in res:
        assert 0 < r.kpis.delivered_kwh <= r.kpis.requested_kwh + 1e-6
        assert r.schedule.current.shape == (30, acn_small.horizon.n_periods)
    assert by["controller"].kpis.peak_import_kw <= 80.0 + 1e-6
    txt = simulation_table(res)
    assert "limit violations" in txt and "edf" in txt
    assert markdown_table(res).count("\n") == 8


def test_unknown_departure_and_noise_stay_safe(acn_small):
    r = simulate(
        acn_small,
        "controller",
        known_departure=False,
        known_energy=False,
        noise=0.3,
        horizon_h=4.0,
        seed=3,
    )
    assert r.n_violations == 0
    assert (r.schedule.current <= np.nan_to_num(r.limits, nan=0.0) + 1e-9).all()


def test_acn_reader_sample():
    recs = read_acn_csv()
    assert len(recs) == 339
    assert all(r.arrival.tzinfo is not None for r in recs)
    sessions, notes = to_sessions(recs)
    assert len(sessions) + len(notes) == len(recs)
    assert sample_path().name.endswith(".csv")


def test_acn_reader_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("arrival,departure\n2019-05-01 05:04:06-07:00,2019-05-01 17:56:21-07:00\n")
    with pytest.raises(InputError, match="missing ACN-Data column"):
        read_acn_csv(p)
    head = sample_path().read_text().splitlines()[0]
    p.write_text(head + "\nnot-a-time,2019-05-01 17:56:21-07:00,1,1,ST,sid,,True\n")
    with pytest.raises(InputError, match="line 2"):
        read_acn_csv(p)
    with pytest.raises(InputError, match="no ACN-Data session arrives"):
        acn_scenario("2001-01-01")


def test_gz_roundtrip(tmp_path):
    import gzip

    p = tmp_path / "x.csv.gz"
    p.write_bytes(gzip.compress(sample_path().read_bytes()))
    assert len(read_acn_csv(p)) == 339
    sc = acn_scenario(path=p)
    assert isinstance(sc.horizon, Horizon) and len(sc.sessions) > 50
