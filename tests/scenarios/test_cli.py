"""``ampflow replay`` and ``ampflow compare`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ampflow.gateway.cli import app
from ampflow.gateway.cli_scenarios import mpc_forecasts
from ampflow.scenarios import bundled_scenario, load_scenario
from ampflow.scenarios.acn import acn_path, read_acn
from ampflow.scenarios.results import METRICS, read_result

runner = CliRunner(env={"COLUMNS": "400", "NO_COLOR": "1"})


def test_replay_prints_metrics_as_json_and_writes_netcdf(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["replay", str(tiny), "--policy", "llf", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(METRICS) <= set(m)
    assert (m["scenario"], m["policy"]) == ("tiny", "llf")
    assert m["over_limit_kwh"] == 0.0
    ds = read_result(out)
    assert ds.attrs["policy"] == "llf"
    assert float(ds.energy_delivered_kwh.sum()) == m["energy_delivered_kwh"]


def test_replay_a_bundled_scenario_by_its_documented_path() -> None:
    res = runner.invoke(
        app, ["replay", "scenarios/data/v2g-depot.yaml", "--policy", "allocator", "--json"]
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["scenario"] == "v2g-depot"
    assert m["energy_delivered_fraction"] > 0.99


def test_replay_takes_policy_parameters(tiny: Path) -> None:
    res = runner.invoke(
        app, ["replay", str(tiny), "--policy", "mpc", "--param", "replan_s=3600", "--json"]
    )
    assert res.exit_code == 0, res.output
    bad = runner.invoke(app, ["replay", str(tiny), "--policy", "mpc", "--param", "colour=red"])
    assert bad.exit_code == 2
    assert "colour" in bad.output


def test_bad_input_is_a_clear_error_not_a_traceback(tiny: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["replay", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "nope.yaml" in res.output
    res = runner.invoke(app, ["replay", str(tiny), "--policy", "magic"])
    assert res.exit_code == 2
    assert "magic" in res.output
    (tiny.parent / "sessions.csv").write_text("session_id,charger_id\nx,cp-1\n")
    res = runner.invoke(app, ["replay", str(tiny)])
    assert res.exit_code == 2
    assert "sessions.csv" in res.output
    assert "arrival" in res.output


def test_compare_prints_one_table(tiny: Path) -> None:
    res = runner.invoke(app, ["compare", str(tiny), "--policies", "uncontrolled,edf,offline"])
    assert res.exit_code == 0, res.output
    for name in ("uncontrolled", "edf", "offline", "total_cost", "peak_kw"):
        assert name in res.output
    res = runner.invoke(app, ["compare", str(tiny), "--policies", "edf,llf", "--json"])
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(data) == {"edf", "llf"}


def test_history_forecaster_predicts_the_early_quantile_asked_for() -> None:
    """``replay --history --param early_quantile=0.05`` fits a forecaster that predicts the
    5 % quantile of dwell (not an extrapolation below its 10 %), and a quantile outside
    (0, 0.5) is refused before anything is fitted, naming the parameter."""
    sc = load_scenario(bundled_scenario("caltech-week"))
    history = read_acn(acn_path("caltech_2019-05-01_2019-08-31"))
    params = mpc_forecasts(sc, history, early_quantile=0.05)
    assert params["early_quantile"] == 0.05
    frame = sc.sessions.iloc[:3].rename(
        columns={"charger_id": "station_id", "departure_estimate": "estimated_departure"}
    )
    pred = params["forecaster"].predict_sessions(frame)
    assert (pred["dwell_h_q5"] <= pred["dwell_h_q10"]).all()
    for bad in ("0.7", "0", "soon"):
        res = runner.invoke(
            app,
            [
                "replay",
                "caltech-week",
                "--history",
                "caltech_2019-05-01_2019-08-31",
                "--param",
                f"early_quantile={bad}",
            ],
        )
        assert res.exit_code == 2, res.output
        assert "early_quantile" in res.output


@pytest.mark.slow
def test_replay_mpc_on_forecasts_fitted_on_history(tiny: Path) -> None:
    """An analyst replays a real week with forecasters fitted on the site's earlier sessions:
    more energy reaches the drivers than planning on their own departure estimates."""
    args = ["replay", "caltech-week", "--policy", "mpc", "--json"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    forecast = runner.invoke(app, [*args, "--history", "caltech_2019-05-01_2019-08-31"])
    assert forecast.exit_code == 0, forecast.output
    with_history = json.loads(forecast.stdout.strip().splitlines()[-1])
    without = json.loads(plain.stdout.strip().splitlines()[-1])
    assert with_history["over_limit_kwh"] == 0.0
    assert with_history["energy_delivered_kwh"] > 1.02 * without["energy_delivered_kwh"]
    bad = runner.invoke(app, [*args, "--history", "no-such-sessions"])
    assert bad.exit_code == 2
    assert "no-such-sessions" in bad.output
    assert "--history" in bad.output
    other = runner.invoke(app, ["replay", str(tiny), "--policy", "llf", "--history", "x"])
    assert other.exit_code == 2
    assert "mpc" in other.output
