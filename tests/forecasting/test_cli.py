"""``ampflow forecast evaluate``: JSON and table output, and errors that name file and column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ampflow.gateway.cli import app
from ampflow.scenarios.acn import acn_path

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first 700 JPL sessions as plain CSV (train) and the next 300 as csv.gz (test)."""
    raw = pd.read_csv(acn_path("jpl_2019-05-01_2019-08-31"))
    folder = tmp_path_factory.mktemp("acn")
    train, test = folder / "train.csv", folder / "test.csv.gz"
    raw.iloc[:700].to_csv(train, index=False)
    with gzip.open(test, "wt") as fh:
        raw.iloc[700:1000].to_csv(fh, index=False)
    return train, test


def test_evaluate_prints_one_json_object(files: tuple[Path, Path]) -> None:
    train, test = files
    result = runner.invoke(
        app, ["forecast", "evaluate", "--train", str(train), "--test", str(test), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert scores["n_train"] == 700
    assert scores["n_test"] == 300
    assert scores["test"] == str(test)
    assert 0 < scores["n_test_with_estimate"] <= 300
    assert scores["departure_mae_h_model"] < scores["departure_mae_h_driver"]
    assert {"pinball_dwell_h_q10", "pinball_energy_kwh_q90", "energy_mae_kwh_model"} <= set(scores)


def test_evaluate_prints_a_table(files: tuple[Path, Path]) -> None:
    train, test = files
    result = runner.invoke(
        app, ["forecast", "evaluate", "--train", str(train), "--test", str(test)]
    )
    assert result.exit_code == 0, result.output
    assert "departure MAE [h]" in result.output
    assert "energy MAE [kWh]" in result.output
    assert "below the drivers' own estimates" in result.output


def _invoke_bad(train: Path, test: Path, *extra: str) -> str:
    # A wide terminal, so that rich does not wrap the long temporary paths.
    result = runner.invoke(
        app,
        ["forecast", "evaluate", "--train", str(train), "--test", str(test), *extra],
        env={"COLUMNS": "1000"},
    )
    assert result.exit_code == 2, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_bad_files_name_file_and_column(files: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = files
    raw = pd.read_csv(train)
    no_station = tmp_path / "no_station.csv"
    raw.drop(columns="station_id").to_csv(no_station, index=False)
    assert "no_station.csv: missing column(s) ['station_id']" in _invoke_bad(no_station, test)

    bad_energy = tmp_path / "bad_energy.csv"
    raw.assign(**{"delivered_energy (kWh)": "lots"}).to_csv(bad_energy, index=False)
    out = _invoke_bad(train, bad_energy)
    assert "--test" in out
    assert "bad_energy.csv: column 'delivered_energy (kWh)' must be numeric" in out

    no_time = tmp_path / "no_time.csv"
    raw.assign(arrival="yesterday").to_csv(no_time, index=False)
    out = _invoke_bad(no_time, test)
    assert "no_time.csv: row 1, column 'arrival': expected a timestamp with a UTC offset" in out

    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(test.read_bytes()[:300])  # cut off mid-stream
    assert "broken.csv.gz: cannot be read as CSV sessions" in _invoke_bad(broken, test)

    empty = tmp_path / "empty.csv"
    raw.iloc[:0].to_csv(empty, index=False)
    assert "empty.csv: holds no session" in _invoke_bad(empty, test)

    assert "unknown time zone 'Mars/Base'" in _invoke_bad(train, test, "--timezone", "Mars/Base")
    assert "does not exist" in _invoke_bad(tmp_path / "nope.csv", test)
