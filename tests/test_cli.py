"""The loadopt command line."""

from __future__ import annotations

import json

import pytest

from loadopt.cli import main


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "simulate" in out and "solve" in out


def test_demo_no_plot(capsys, tmp_path):
    sc = tmp_path / "demo.json"
    assert main(["demo", "--no-plot", "--save-scenario", str(sc)]) == 0
    out = capsys.readouterr().out
    assert "energy delivered" in out and "limit violations: 0" in out
    assert sc.exists()
    assert main(["solve", str(sc), "-o", str(tmp_path / "out.json")]) == 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["violations"] == 0 and len(data["sessions"]) == 40


def test_demo_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "d.png"
    assert main(["demo", "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_bad_scenario_names_field(tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"site": {"nodes": []}, "horizon": {"start": "2026-01-01T00:00:00Z"}}))
    assert main(["solve", str(p)]) == 2
    err = capsys.readouterr().err
    assert "nodes" in err


def test_simulate_acn(capsys, tmp_path):
    assert (
        main(
            [
                "simulate",
                "--acn",
                "--day",
                "2019-05-11",
                "--no-plot",
                "--quiet",
                "--baselines",
                "edf",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "controller" in out and "edf" in out and "limit violations" in out
    assert main(["simulate", "--acn", "--baselines", "nope", "--no-plot"]) == 2


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_solve_emits_schema_valid_ocpp_payloads(tmp_path, capsys, version):
    from loadopt.ocpp import validate
    from loadopt.scenario import Scenario
    from loadopt.synthetic import demo_scenario

    # TxProfiles go to transactions in progress: start the horizon at 10:00, cars plugged in
    demo = demo_scenario()
    start = demo.horizon.start.replace(hour=10)
    sc = tmp_path / "demo.json"
    Scenario(
        site=demo.site,
        sessions=demo.sessions,
        signals=demo.signals,
        horizon=demo.horizon.model_copy(update={"start": start}),
    ).dump(sc)
    out = tmp_path / "out.json"
    assert main(["solve", str(sc), "--ocpp", version, "-o", str(out)]) == 0
    msgs = json.loads(out.read_text())["ocpp"]
    assert {
        m["payload"].get("csChargingProfiles", m["payload"].get("chargingProfile"))[
            "chargingProfilePurpose"
        ]
        for m in msgs
    } >= {"TxProfile", "TxDefaultProfile"}
    for m in msgs:
        validate(m["action"], m["payload"], version)
    if version == "2.0.1":  # 1.6 transaction ids are integers: given, or numbered from 1
        assert (
            main(
                [
                    "solve",
                    str(sc),
                    "--ocpp",
                    "1.6",
                    "--transaction-id",
                    "tx00000=41",
                    "-o",
                    str(out),
                ]
            )
            == 0
        )
        got = json.loads(out.read_text())
        assert got["transactionIds"]["tx00000"] == 41
        assert all(isinstance(v, int) for v in got["transactionIds"].values())
        for m in got["ocpp"]:
            validate(m["action"], m["payload"], "1.6")
        assert main(["solve", str(sc), "--ocpp", "1.6", "--transaction-id", "tx00000=x"]) == 2
        assert "'tx00000=x'" in capsys.readouterr().err
