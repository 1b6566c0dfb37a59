"""MOER loader and the as-of forecast: the forecast published at t, never a later value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ampflow.forecasting import (
    MOER_HORIZON,
    ForecastError,
    load_moer,
    moer_files,
    moer_forecast_at,
)


@pytest.fixture(scope="module")
def moer() -> pd.DataFrame:
    return load_moer()


def test_bundled_files_load_as_one_regular_series(moer: pd.DataFrame) -> None:
    assert len(moer_files()) == 4
    assert str(moer.index.tz) == "UTC"
    assert moer.index.is_unique
    assert moer.index.is_monotonic_increasing
    assert (moer.index[1:] - moer.index[:-1] == pd.Timedelta("5min")).all()  # no gap
    assert list(moer.columns) == ["moer", *(f"f{k}" for k in range(1, 37))]
    assert moer.notna().all().all()
    assert (moer.moer >= 0).all()  # zero when renewables are curtailed
    assert (moer.moer < 2).all()  # kg CO2/kWh


def test_forecast_is_the_one_published_at_or_before_t(moer: pd.DataFrame) -> None:
    origin = pd.Timestamp("2019-07-15 18:05", tz="UTC")
    for at in (origin, origin + pd.Timedelta("4min59s")):
        f = moer_forecast_at(moer, at)
        assert len(f) == MOER_HORIZON
        assert f.index[0] == origin + pd.Timedelta("5min")
        assert f.index[-1] == origin + pd.Timedelta("180min")
        assert f.to_numpy().tolist() == moer.loc[origin, "f1":"f36"].to_numpy().tolist()
    with_now = moer_forecast_at(moer, origin, include_current=True)
    assert with_now.index[0] == origin
    assert with_now.iloc[0] == moer.loc[origin, "moer"]
    local = moer_forecast_at(moer, "2019-07-15T11:05:00-07:00")
    pd.testing.assert_series_equal(local, moer_forecast_at(moer, origin))


def test_no_value_published_after_t_is_used(moer: pd.DataFrame) -> None:
    at = pd.Timestamp("2019-08-02 09:33", tz="UTC")
    grid = pd.date_range(at.floor("15min"), periods=16, freq="15min")
    before = moer_forecast_at(moer, at, index=grid)
    later = moer.copy()
    later.loc[later.index > at] = later.loc[later.index > at] * 10 + 5
    pd.testing.assert_series_equal(moer_forecast_at(later, at, index=grid), before)
    pd.testing.assert_series_equal(moer_forecast_at(later, at), moer_forecast_at(moer, at))
    # The check can fail: the row published at the last moment before t is the one read.
    earlier = moer.copy()
    earlier.loc[earlier.index <= at, "f3"] += 1
    assert not moer_forecast_at(earlier, at).equals(moer_forecast_at(moer, at))


def test_alignment_to_a_scheduler_grid(moer: pd.DataFrame) -> None:
    at = pd.Timestamp("2019-06-10 00:00", tz="UTC")
    grid = pd.date_range(at, periods=14, freq="15min", tz="UTC")
    aligned = moer_forecast_at(moer, at, index=grid)
    row = moer.loc[at]
    assert np.isnan(aligned.iloc[0])  # the current interval is not a forecast
    assert aligned.iloc[1] == row["f3"]  # 00:15 is 3 intervals after 00:00
    assert aligned.iloc[12] == row["f36"]  # 03:00
    assert np.isnan(aligned.iloc[13])  # beyond the 3-hour horizon
    assert moer_forecast_at(moer, at, index=grid, include_current=True).iloc[0] == row["moer"]


def test_errors_name_what_is_wrong(moer: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="no MOER forecast was published at or before"):
        moer_forecast_at(moer, "2019-01-01T00:00Z")
    with pytest.raises(ForecastError, match="at must be a tz-aware timestamp"):
        moer_forecast_at(moer, "2019-06-01 00:00")
    bad = tmp_path / "bad.csv"
    bad.write_text("time,moer\n2019-06-01T00:00:00+00:00,0.3\n")
    with pytest.raises(ForecastError, match=r"bad.csv: missing column\(s\) \['f1'"):
        load_moer([bad])
    naive = tmp_path / "naive.csv"
    cols = ",".join(f"f{k}" for k in range(1, 37))
    naive.write_text(f"time,moer,{cols}\n2019-06-01 00:00:00,0.3{',0.3' * 36}\n")
    with pytest.raises(ForecastError, match=r"naive\.csv: column 'time' must carry a UTC offset"):
        load_moer([naive])
    with pytest.raises(ForecastError, match="no MOER file"):
        load_moer([])
