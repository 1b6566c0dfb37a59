"""The scenario file contract: what loads, and the errors that name file, row and column."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ampflow.scenarios import BUNDLED, build_bundled, bundled_scenario, load_scenario
from ampflow.scenarios.format import ScenarioError
from ampflow.scenarios.tables import TimeOfDayLimit, _Grid, tod_caps
from tests.scenarios.conftest import default_sessions, write_scenario


def test_loads_sites_sessions_and_prices(tiny: Path) -> None:
    sc = load_scenario(tiny)
    assert (sc.dt_s, sc.n_steps) == (900, 24)
    assert sc.topology.connector_ids == (
        "depot/cp-1/1",
        "depot/cp-1/2",
        "depot/cp-2/1",
        "depot/dc-1/1",
    )
    assert list(sc.sessions.column) == [0, 2]
    assert str(sc.sessions.arrival.dt.tz) == "UTC"
    # Hourly prices become the mean over each 15-minute step.
    assert sc.import_price.shape == (1, 24)
    np.testing.assert_allclose(sc.import_price[0, :8], [0.3] * 4 + [0.1] * 4)
    assert np.isinf(sc.cap_kw).all()
    assert sc.departure_known


@pytest.mark.parametrize(
    ("change", "column", "expected"),
    [
        ({"charger_id": "cp-9"}, "charger_id", "unknown charger 'cp-9'"),
        ({"departure": "2026-03-02T00:30:00+01:00"}, "departure", "after the arrival"),
        ({"energy_kwh": -1.0}, "energy_kwh", ">= 0"),
        ({"energy_kwh": "lots"}, "energy_kwh", "finite number"),
        ({"arrival": "2026-03-02T01:00:00"}, "arrival", "naive"),
        ({"arrival": "yesterday+01:00"}, "arrival", "RFC 3339"),
        ({"departure": "2026-03-03T05:00:00+01:00"}, "departure", "scenario end"),
        ({"max_kw": 0}, "max_kw", "> 0"),
        ({"session_id": "a"}, "session_id", "duplicate"),
        ({"v2g": "true"}, "v2g", "battery_kwh and soc_arrival"),
    ],
)
def test_bad_session_names_file_row_and_column(
    tmp_path: Path, change: dict[str, object], column: str, expected: str
) -> None:
    path = write_scenario(tmp_path / "s", sessions=default_sessions(**change))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.file.endswith("sessions.csv")
    assert (err.row, err.column) == (2, column)
    assert expected in str(err)
    assert f"row 2, column {column!r}" in str(err)


def test_overlapping_sessions_on_one_connector_are_refused(tmp_path: Path) -> None:
    rows = default_sessions(charger_id="cp-2")
    rows.loc[0, "max_kw"] = 7.4
    rows = pd.concat([rows.iloc[[1]], rows.iloc[[1]].assign(session_id="c")])
    rows.loc[:, "charger_id"] = "cp-2"
    with pytest.raises(ScenarioError, match="overlaps session 'b'") as info:
        load_scenario(write_scenario(tmp_path / "s", sessions=rows.reset_index(drop=True)))
    assert info.value.column == "arrival"


def test_sessions_fill_free_connectors_of_a_multi_connector_charger(tmp_path: Path) -> None:
    rows = default_sessions(charger_id="cp-1", max_kw=11.0)
    sc = load_scenario(write_scenario(tmp_path / "s", sessions=rows))
    assert list(sc.sessions.connector) == [1, 2]
    assert list(sc.sessions.column) == [0, 1]
    rows["connector"] = [1, 3]
    with pytest.raises(ScenarioError, match="no connector 3"):
        load_scenario(write_scenario(tmp_path / "t", sessions=rows))


def test_v2g_needs_a_bidirectional_charger(tmp_path: Path) -> None:
    rows = default_sessions(battery_kwh=60.0, soc_arrival=0.5, v2g="true")
    rows.loc[0, ["battery_kwh", "soc_arrival", "v2g"]] = [60.0, 0.4, "false"]
    with pytest.raises(ScenarioError, match="not bidirectional"):
        load_scenario(write_scenario(tmp_path / "s", sessions=rows))
    rows.loc[1, "charger_id"] = "dc-1"
    rows.loc[1, "max_kw"] = 50
    sc = load_scenario(write_scenario(tmp_path / "t", sessions=rows))
    assert list(sc.sessions.v2g) == [False, True]


def test_energy_beyond_the_battery_is_refused(tmp_path: Path) -> None:
    rows = default_sessions(battery_kwh=20.0, soc_arrival=0.9)
    rows.loc[0, ["battery_kwh", "soc_arrival"]] = [60.0, 0.1]
    with pytest.raises(ScenarioError, match="fits in the battery"):
        load_scenario(write_scenario(tmp_path / "s", sessions=rows))


def test_a_gap_in_the_price_series_names_its_row(tmp_path: Path) -> None:
    times = pd.date_range("2026-03-02T00:00:00+01:00", periods=7, freq="h")
    prices = pd.DataFrame({"time": [t.isoformat() for t in times], "import_per_kwh": 0.2})
    prices = prices.drop(index=3).reset_index(drop=True)
    with pytest.raises(ScenarioError, match="a gap") as info:
        load_scenario(write_scenario(tmp_path / "s", prices=prices))
    assert (info.value.row, info.value.column) == (4, "time")
    assert info.value.file.endswith("prices.csv")


def test_prices_must_cover_the_scenario(tmp_path: Path) -> None:
    times = pd.date_range("2026-03-02T00:00:00+01:00", periods=3, freq="h")
    prices = pd.DataFrame({"time": [t.isoformat() for t in times], "import_per_kwh": 0.2})
    with pytest.raises(ScenarioError, match="cover"):
        load_scenario(write_scenario(tmp_path / "s", prices=prices))


def test_finer_prices_are_averaged_over_each_step(tmp_path: Path) -> None:
    times = pd.date_range("2026-03-02T00:00:00+01:00", periods=72, freq="5min")
    values = np.tile([0.1, 0.2, 0.6], 24)
    prices = pd.DataFrame({"time": [t.isoformat() for t in times], "import_per_kwh": values})
    sc = load_scenario(write_scenario(tmp_path / "s", prices=prices))
    np.testing.assert_allclose(sc.import_price[0], 0.3)


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"start": "2026-03-02T00:00:00"}, "start", "naive"),
        ({"step": "7min"}, "end", "whole number of steps"),
        ({"demand_charge_per_kw": -3}, "demand_charge_per_kw", ">= 0"),
        ({"dr_levels": [1, 0.5]}, "dr_levels", "4 fractions"),
        ({"sites": [{"id": "x", "import_kw": -5}]}, "sites[0].import_kw", ">= 0"),
        ({"sites": [{"id": "x"}]}, "sites[0].import_kw", "required"),
        (
            {
                "sites": [
                    {
                        "id": "x",
                        "import_kw": 5,
                        "chargers": [{"id": "c", "max_kw": 7, "kind": "XY"}],
                    }
                ]
            },
            "sites[0].chargers[0].kind",
            "AC or DC",
        ),
        ({"events": "missing.csv"}, "events", "not found"),
    ],
)
def test_bad_yaml_names_the_key(
    tmp_path: Path, extra: dict[str, object], key: str, expected: str
) -> None:
    path = write_scenario(tmp_path / "s", extra=extra)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.file.endswith("scenario.yaml")
    assert info.value.column == key
    assert expected in str(info.value)


def test_a_topology_error_is_a_scenario_error(tmp_path: Path) -> None:
    site = {"id": "x", "import_kw": 5, "chargers": [{"id": "c", "node": "nowhere", "max_kw": 7}]}
    with pytest.raises(ScenarioError, match="nowhere"):
        load_scenario(write_scenario(tmp_path / "s", extra={"sites": [site]}))


def test_events_levels_caps_prices_and_announcement(tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "site_id": ["depot", "depot", "depot"],
            "start": [
                "2026-03-02T01:00:00+01:00",
                "2026-03-02T01:30:00+01:00",
                "2026-03-02T04:00:00+01:00",
            ],
            "end": [
                "2026-03-02T02:00:00+01:00",
                "2026-03-02T03:00:00+01:00",
                "2026-03-02T05:00:00+01:00",
            ],
            "cap_kw": [25.0, None, None],
            "level": [None, 2, None],
            "price": [None, None, 0.9],
            "announced": ["2026-03-02T00:30:00+01:00", "", ""],
        }
    )
    sc = load_scenario(write_scenario(tmp_path / "s", tables={"events": events}))
    cap = sc.cap_kw[0]
    assert np.isinf(cap[:4]).all()
    np.testing.assert_allclose(cap[4:6], 25.0)  # 01:00-01:30
    np.testing.assert_allclose(cap[6:8], 20.0)  # overlap: the lowest cap wins (level 2 = 50 %)
    np.testing.assert_allclose(cap[8:12], 20.0)
    assert np.isinf(cap[12:]).all()
    np.testing.assert_allclose(sc.import_price[0, 16:20], 0.9)
    assert sc.dr_active[0].sum() == 8
    assert sc.events.announced.iloc[0] == pd.Timestamp("2026-03-01T23:30:00Z")
    assert sc.events.announced.iloc[1] == sc.start


def test_event_for_an_unknown_site_is_refused(tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "site_id": ["elsewhere"],
            "start": ["2026-03-02T01:00:00+01:00"],
            "end": ["2026-03-02T02:00:00+01:00"],
            "cap_kw": [10.0],
        }
    )
    with pytest.raises(ScenarioError, match="unknown site 'elsewhere'") as info:
        load_scenario(write_scenario(tmp_path / "s", tables={"events": events}))
    assert (info.value.row, info.value.column) == (1, "site_id")


def test_time_of_day_limits_follow_local_time_across_dst() -> None:
    # 2026-03-29: Europe/Amsterdam springs forward at 02:00 local (01:00 UTC).
    grid = _Grid(pd.Timestamp("2026-03-28T23:00:00Z"), 3600, 24)
    from datetime import time

    lim = TimeOfDayLimit(days=(6,), start=time(16), end=time(21), import_kw=10.0)
    cap = tod_caps({"s": [lim]}, grid, ["s"], "Europe/Amsterdam")[0]
    on = np.flatnonzero(np.isfinite(cap))
    local = grid.times[on].tz_convert("Europe/Amsterdam")
    assert list(local.hour) == [16, 17, 18, 19, 20]
    assert list(grid.times[on].hour) == [14, 15, 16, 17, 18]  # UTC+2 after the change


def test_time_of_day_limit_wrapping_midnight_belongs_to_its_day() -> None:
    from datetime import time

    grid = _Grid(pd.Timestamp("2026-03-02T00:00:00+01:00").tz_convert("UTC"), 3600, 48)
    lim = TimeOfDayLimit(days=(0,), start=time(22), end=time(6), import_kw=5.0)  # Monday night
    cap = tod_caps({"s": [lim]}, grid, ["s"], "Europe/Amsterdam")[0]
    assert list(np.flatnonzero(np.isfinite(cap))) == [22, 23, 24, 25, 26, 27, 28, 29]


def test_site_limits_in_yaml_become_caps(tmp_path: Path) -> None:
    site = dict(load_scenario_site())
    site["limits"] = [{"days": ["mon"], "start": "02:00", "end": "03:00", "import_kw": 12}]
    sc = load_scenario(write_scenario(tmp_path / "s", extra={"sites": [site]}))
    np.testing.assert_allclose(sc.cap_kw[0, 8:12], 12.0)
    assert np.isinf(sc.cap_kw[0, :8]).all()
    assert not sc.dr_active.any()


def load_scenario_site() -> dict[str, object]:
    from tests.scenarios.conftest import SITE

    return SITE


def test_parquet_tables_load_like_csv(tmp_path: Path) -> None:
    path = write_scenario(tmp_path / "s")
    rows = pd.read_csv(path.parent / "sessions.csv")
    for col in ("arrival", "departure"):
        rows[col] = pd.to_datetime(rows[col], utc=True)
    rows.to_parquet(path.parent / "sessions.parquet")
    path.write_text(path.read_text().replace("sessions.csv", "sessions.parquet"))
    a = load_scenario(path).sessions
    b = load_scenario(write_scenario(tmp_path / "t")).sessions
    pd.testing.assert_frame_equal(a[b.columns], b)


def test_bundled_scenarios_load_and_match_their_builder(tmp_path: Path) -> None:
    written = build_bundled(tmp_path)
    data = bundled_scenario("caltech-week").parent
    for path in written:
        rel = path.relative_to(tmp_path)
        assert filecmp.cmp(path, data / rel, shallow=False), f"{rel} differs from its builder"
    for name in BUNDLED:
        sc = load_scenario(bundled_scenario(name))
        assert len(sc.sessions) > 0
    dr = load_scenario(bundled_scenario("caltech-week-dr"))
    assert dr.dr_active.sum() == 7 * 36  # 3 h a day of 5-minute steps
    week = load_scenario(bundled_scenario("caltech-week"))
    assert not week.departure_known
    assert week.sessions.departure_estimate.notna().mean() > 0.7
