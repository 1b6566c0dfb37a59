"""ACN-Data loading, the Caltech site model and the bundled one-day replay (``make run``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import compile_topology
from ampflow.gateway.cli import app
from ampflow.scenarios.acn import CALTECH_STATIONS, acn_path, caltech_site, read_acn
from ampflow.scenarios.demo import caltech_demo_problem, replay_day


def test_read_acn_normalises_times_and_units() -> None:
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    assert len(df) == 3177
    assert str(df.arrival.dt.tz) == "UTC"
    assert (df.departure > df.arrival).all()
    assert df.arrival.is_monotonic_increasing
    assert {"energy_kwh", "requested_kwh", "estimated_departure"} <= set(df.columns)
    assert set(df.station_id) <= set(CALTECH_STATIONS)


def test_read_acn_names_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,departure\n2019-01-01T00:00:00Z,2019-01-01T01:00:00Z\n")
    with pytest.raises(AmpflowError, match=r"missing column\(s\).*delivered_energy"):
        read_acn(bad)
    with pytest.raises(AmpflowError, match="no bundled ACN file named 'nope'"):
        acn_path("nope")


def test_caltech_site_is_unbalanced_three_phase() -> None:
    topo = compile_topology([caltech_site()])
    assert topo.n_connectors == 54
    # Every line-to-line charger loads two of the three phases of the transformer.
    root_phases = [
        r
        for r in range(topo.n_rows)
        if topo.row_node[r] == topo.node_index("caltech") and topo.row_kind[r] > 0
    ]
    loaded = (topo.A.toarray()[root_phases] > 0).sum(axis=0)
    np.testing.assert_array_equal(loaded, 2)


def test_replay_holds_limits_and_plan_shaves_the_peak() -> None:
    problem = caltech_demo_problem("2019-10-29", import_kw=60)
    alone, _ = replay_day(problem, use_plan=False)
    mpc, plan = replay_day(problem, use_plan=True)
    assert plan is not None
    for r in (alone, mpc):
        assert r.max_violation <= 1e-9
        assert r.peak_kw <= 60 + 1e-9
        assert np.all(r.delivered_kwh <= problem.sessions.e_target_kwh + 1e-9)
    assert mpc.peak_kw < 0.7 * alone.peak_kw
    assert mpc.delivered_kwh.sum() >= 0.99 * alone.delivered_kwh.sum()


def test_demo_command_prints_a_json_summary() -> None:
    result = CliRunner().invoke(app, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert set(summary) == {"allocator", "plan+allocator"}
    assert summary["plan+allocator"]["total_cost"] < summary["allocator"]["total_cost"]
    assert summary["allocator"]["max_limit_violation"] <= 1e-9


def test_demo_command_rejects_a_bad_limit() -> None:
    result = CliRunner().invoke(app, ["demo", "--import-kw", "0"])
    assert result.exit_code == 2
    assert "import-kw" in result.output


@pytest.mark.parametrize(
    ("day", "message"),
    [("2030-01-01", "no sessions on '2030-01-01'"), ("tuesday", "expected a date like")],
)
def test_demo_command_rejects_a_day_without_data(day: str, message: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--day", day])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_day_window_is_local_midnight() -> None:
    problem = caltech_demo_problem("2019-10-29")
    df = read_acn(acn_path("caltech_2019-09-01_2019-12-31"))
    local = df.arrival.dt.tz_convert("US/Pacific")
    assert len(problem.sessions) == int((local.dt.date == pd.Timestamp("2019-10-29").date()).sum())


def test_read_acn_refuses_naive_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "naive.csv"
    path.write_text(
        "arrival,departure,requested_energy (kWh),delivered_energy (kWh),station_id,session_id\n"
        "2019-09-01 09:56:18,2019-09-01 10:35:38-07:00,1.0,1.0,CA-311,a\n"
    )
    with pytest.raises(AmpflowError, match=r"row 1, column 'arrival'.*UTC offset"):
        read_acn(path)
