"""Base load and PV forecasters: skill on synthetic data with known structure, and no peeking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ampflow.forecasting import BaseLoadForecaster, ForecastError, PVForecaster, clearsky_kw

TZ = "Europe/Amsterdam"
SITE = {"latitude": 52.37, "longitude": 4.90, "capacity_kw": 50.0}


def _mae(a: pd.Series, b: pd.Series) -> float:
    return float(np.mean(np.abs(a.to_numpy() - b.to_numpy())))


def synthetic_load(weeks: int = 9, *, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """Office load [kW]: a weekly profile in local time plus heating below 15 degC, and noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=weeks * 7 * 96, freq="15min", tz=TZ)
    hour = index.hour + index.minute / 60
    office = (index.day_of_week < 5) & (hour >= 8) & (hour < 18)
    daily = np.repeat(rng.uniform(-5, 15, weeks * 7), 96)
    temp = daily + 4 * np.sin((hour - 9) / 24 * 2 * np.pi)
    load = 20 + 30 * office + 3 * np.maximum(0, 15 - temp) + rng.normal(0, 1, len(index))
    X = pd.DataFrame({"temp_c": temp}, index=index)
    return pd.Series(load, index=index), X


def test_base_load_uses_the_weather_and_beats_the_seasonal_baseline() -> None:
    y, X = synthetic_load()
    origin = pd.Timestamp("2024-02-26", tz=TZ)  # the last week is the test week
    train = y.index < origin
    model = BaseLoadForecaster(timezone=TZ).fit(y[train], X[train])
    week = y.index[~train]
    pred = model.predict(week, X=X[~train])
    baseline = pd.Series(model.profile_kw_[np.arange(len(week)) % len(model.profile_kw_)])
    assert len(model.profile_kw_) == 7 * 96
    truth = y[~train]
    # The first bin of the profile is Monday 00:00 local, which is where the test week starts.
    assert _mae(pred, truth) < 0.5 * _mae(baseline, truth)
    assert _mae(pred, truth) < 5.0  # heating is up to 70 kW
    no_weather = BaseLoadForecaster(timezone=TZ).fit(y[train]).predict(week)
    assert _mae(pred, truth) < _mae(no_weather, truth)


def test_base_load_prediction_at_an_origin_ignores_later_load() -> None:
    y, _ = synthetic_load(4)
    model = BaseLoadForecaster(timezone=TZ, max_iter=50).fit(y[:1500])
    origin = y.index[2000]
    horizon = pd.date_range(origin, periods=4 * 96, freq="15min")
    before = model.predict(horizon, history=y)
    changed = y.copy()
    changed[changed.index >= origin] += 40.0
    pd.testing.assert_series_equal(model.predict(horizon, history=changed), before)
    pd.testing.assert_series_equal(model.predict(horizon, history=y, at=origin), before)
    # The check can fail: last week's load before the origin is used.
    week_ago = changed.copy()
    week_ago[(week_ago.index >= origin - pd.Timedelta("7D")) & (week_ago.index < origin)] += 40.0
    assert not model.predict(horizon, history=week_ago).equals(before)
    beyond = pd.date_range(origin, periods=10 * 96, freq="15min")
    assert np.isfinite(model.predict(beyond, history=y)).all()


def test_base_load_errors_are_named() -> None:
    y, X = synthetic_load(2)
    model = BaseLoadForecaster(max_iter=5).fit(y, X)
    with pytest.raises(ForecastError, match=r"fitted with exogenous columns \['temp_c'\]"):
        model.predict(y.index[:5])
    with pytest.raises(ForecastError, match=r"X: missing column\(s\) \['temp_c'\]"):
        model.predict(y.index[:5], X=X.rename(columns={"temp_c": "t"}))
    with pytest.raises(ForecastError, match="y: holds no finite load value"):
        BaseLoadForecaster().fit(y * np.nan)
    with pytest.raises(ForecastError, match=r"y\.index has duplicate time"):
        BaseLoadForecaster().fit(pd.concat([y[:3], y[:3]]))
    with pytest.raises(ForecastError, match=r"y\.index must be a tz-aware"):
        BaseLoadForecaster().fit(y.tz_localize(None))
    with pytest.raises(ForecastError, match="y must be numeric"):
        BaseLoadForecaster().fit(y.astype(str).where(y > 30, "n/a"))


def test_clearsky_power_is_physical() -> None:
    days = pd.date_range("2024-06-20", periods=3 * 96, freq="15min", tz=TZ)
    p = clearsky_kw(days, **SITE)
    assert (p >= 0).all()
    assert (p <= 50.0).all()
    assert (p[days.hour < 4] == 0).all()
    assert p.max() > 40
    noon = p.groupby(days.date).idxmax()
    assert all(12 <= t.hour <= 14 for t in noon)  # solar noon is 13:40 CEST
    winter = clearsky_kw(pd.date_range("2024-12-21", periods=96, freq="15min", tz=TZ), **SITE)
    assert winter.max() < 0.8 * p.max()


def synthetic_pv(days: int, factors: list[float], start: str = "2024-06-01") -> pd.Series:
    """Production = clear-sky power x a clearness factor per day."""
    index = pd.date_range(start, periods=days * 96, freq="15min", tz=TZ)
    return clearsky_kw(index, **SITE) * np.repeat(factors, 96)


def test_pv_scales_clear_sky_by_recent_production() -> None:
    y = synthetic_pv(10, [0.9] * 7 + [0.5] * 3)
    model = PVForecaster(**SITE, window="3D").fit(y)
    assert model.ratio_ == pytest.approx((0.9 * 7 + 0.5 * 3) / 10, rel=0.05)
    tomorrow = pd.date_range("2024-06-11", periods=96, freq="15min", tz=TZ)
    pred = model.predict(tomorrow)
    np.testing.assert_allclose(pred.to_numpy(), 0.5 * clearsky_kw(tomorrow, **SITE).to_numpy())
    # Weeks after training with no recent data: the training ratio.
    later = pd.date_range("2024-08-01", periods=96, freq="15min", tz=TZ)
    assert model.recent_ratio(later[0]) == pytest.approx(model.ratio_)
    recent = synthetic_pv(3, [0.2] * 3, start="2024-08-01")
    day4 = pd.date_range("2024-08-04", periods=96, freq="15min", tz=TZ)
    assert model.recent_ratio(day4[0], history=recent) == pytest.approx(0.2)


def test_pv_never_reads_production_from_after_the_origin() -> None:
    y = synthetic_pv(10, [0.8] * 10)
    model = PVForecaster(**SITE).fit(y[: 5 * 96])
    origin = pd.Timestamp("2024-06-08 11:00", tz=TZ)
    horizon = pd.date_range(origin, periods=36, freq="15min")
    before = model.predict(horizon, history=y)
    changed = y.copy()
    changed[changed.index >= origin] *= 0.1
    pd.testing.assert_series_equal(model.predict(horizon, history=changed), before)
    morning = changed.copy()
    morning[(morning.index >= origin - pd.Timedelta("3h")) & (morning.index < origin)] *= 0.1
    assert not model.predict(horizon, history=morning).equals(before)


def test_pv_errors_are_named() -> None:
    y = synthetic_pv(2, [1.0, 1.0])
    with pytest.raises(ForecastError, match=r"capacity_kw: must be > 0 \[kW\], got 0"):
        PVForecaster(latitude=52.0, longitude=4.9, capacity_kw=0).fit(y)
    with pytest.raises(ForecastError, match="latitude: must be in"):
        PVForecaster(latitude=152.0, longitude=4.9, capacity_kw=5).fit(y)
    with pytest.raises(ForecastError, match="window: expected a duration"):
        PVForecaster(**SITE, window="lately").fit(y)
    night = y[y.index.hour < 3]
    with pytest.raises(ForecastError, match="no daylight value"):
        PVForecaster(**SITE).fit(night)
