"""Arrival forecaster: recovers a known weekly Poisson rate, energy by hour, DST, no peeking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from ampflow.forecasting import ArrivalForecaster, ForecastError, fit_before

TZ = "Europe/Amsterdam"


def _true_rate(local: pd.DatetimeIndex) -> np.ndarray:
    """Arrivals per hour: 6 on weekday mornings (8-10 h), 1 on weekday afternoons, else 0."""
    weekday = local.day_of_week < 5
    morning = (local.hour >= 8) & (local.hour < 10)
    afternoon = (local.hour >= 13) & (local.hour < 17)
    return np.where(weekday & morning, 6.0, np.where(weekday & afternoon, 1.0, 0.0))


def poisson_sessions(weeks: int, *, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """Hourly Poisson arrivals in local time; morning EVs bring 10-20 kWh, afternoon 1-5."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(start, periods=weeks * 7 * 24, freq="h", tz=TZ)
    counts = rng.poisson(_true_rate(hours))
    which = np.repeat(np.arange(len(hours)), counts)
    arrival = hours[which] + pd.to_timedelta(rng.uniform(0, 3600, which.size), unit="s")
    morning = arrival.hour < 12
    energy = np.where(morning, rng.uniform(10, 20, which.size), rng.uniform(1, 5, which.size))
    return pd.DataFrame({"arrival": arrival.tz_convert("UTC"), "energy_kwh": energy})


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    return poisson_sessions(40, seed=0)


def test_recovers_the_weekly_rate(sessions: pd.DataFrame) -> None:
    model = ArrivalForecaster(step="1h", timezone=TZ, smoothing_h=0).fit(sessions)
    week = pd.date_range("2025-03-10", periods=7 * 24, freq="h", tz=TZ)  # after the data
    pred = model.predict(week).loc["site"]
    truth = _true_rate(week)
    assert np.abs(pred.arrivals.to_numpy() - truth).max() < 1.6  # 40 draws of Poisson(6)
    assert pred.arrivals.sum() == pytest.approx(truth.sum(), rel=0.05)
    assert (pred.arrivals[truth == 0] == 0).all()
    smooth = ArrivalForecaster(step="15min", timezone=TZ, smoothing_h=1.0).fit(sessions)
    fine = smooth.predict(pd.date_range("2025-03-10", periods=7 * 96, freq="15min", tz=TZ))
    # Smoothing spreads the mass but keeps it: four 15-min steps per hour.
    assert fine.arrivals.sum() == pytest.approx(truth.sum(), rel=0.05)
    assert fine.arrivals.max() < 6.0 / 4


def test_energy_distribution_follows_the_hour(sessions: pd.DataFrame) -> None:
    model = ArrivalForecaster(step="1h", timezone=TZ, quantiles=(0.1, 0.9)).fit(sessions)
    day = pd.date_range("2025-03-11", periods=24, freq="h", tz=TZ)
    pred = model.predict(day).loc["site"]
    morning, afternoon = pred.iloc[9], pred.iloc[15]
    assert 14 < morning.energy_kwh_mean < 16
    assert 10 <= morning.energy_kwh_q10 < morning.energy_kwh_q90 <= 20
    assert 2.5 < afternoon.energy_kwh_mean < 3.5
    assert 1 <= afternoon.energy_kwh_q10 < afternoon.energy_kwh_q90 <= 5
    night = pred.iloc[3]  # no sessions then: the site-wide distribution
    assert 1 <= night.energy_kwh_q10 < night.energy_kwh_q90 <= 20
    assert morning.expected_energy_kwh == pytest.approx(morning.arrivals * morning.energy_kwh_mean)


def test_weekly_pattern_follows_local_time_across_dst(sessions: pd.DataFrame) -> None:
    model = ArrivalForecaster(step="1h", timezone=TZ, smoothing_h=0).fit(sessions)
    # 2025-03-31 is a Monday in summer time (UTC+2); 2025-03-24 in winter time (UTC+1).
    for day in ("2025-03-24", "2025-03-31"):
        hours = pd.date_range(day, periods=24, freq="h", tz=TZ)
        pred = model.predict(hours.tz_convert("UTC")).loc["site"].arrivals.to_numpy()
        assert pred[8] > 4
        assert pred[9] > 4
        assert pred[7] == 0
        assert pred[10] == 0
    spring = pd.date_range("2025-03-30", periods=23, freq="h", tz=TZ)  # a 23-hour day
    assert np.isfinite(model.predict(spring).arrivals).all()


def test_several_sites() -> None:
    a = poisson_sessions(10, seed=1).assign(site_id="a")
    b = poisson_sessions(10, seed=2).iloc[::2].assign(site_id="b")
    model = ArrivalForecaster(step="1h", timezone=TZ).fit(pd.concat([a, b]))
    assert model.sites_ == ("a", "b")
    week = pd.date_range("2025-01-06", periods=168, freq="h", tz=TZ)
    pred = model.predict(week)
    ratio = pred.loc["b"].arrivals.sum() / pred.loc["a"].arrivals.sum()
    assert 0.4 < ratio < 0.6
    assert list(model.predict(week, sites=("b",)).index.unique("site_id")) == ["b"]
    with pytest.raises(ForecastError, match="unknown site 'c'"):
        model.predict(week, sites=("c",))


def test_sample_is_reproducible_and_matches_the_rate(sessions: pd.DataFrame) -> None:
    model = ArrivalForecaster(step="1h", timezone=TZ, random_state=7).fit(sessions)
    weeks = pd.date_range("2025-01-06", periods=4 * 168, freq="h", tz=TZ)
    draw = model.sample(weeks)
    pd.testing.assert_frame_equal(clone(model).fit(sessions).sample(weeks), draw)
    expected = model.predict(weeks).arrivals.sum()
    assert abs(len(draw) - expected) < 4 * np.sqrt(expected)
    assert (draw.arrival >= weeks[0]).all()
    assert (draw.arrival < weeks[-1] + pd.Timedelta("1h")).all()
    assert draw.energy_kwh.between(1, 20).all()


def test_fit_before_ignores_everything_after_the_cutoff(sessions: pd.DataFrame) -> None:
    cutoff = pd.Timestamp("2024-06-05 09:30", tz=TZ)
    later = sessions.arrival >= cutoff
    changed = sessions.copy()
    changed.loc[later, "energy_kwh"] = 99.0
    changed.loc[later, "arrival"] = changed.loc[later, "arrival"] + pd.Timedelta("13h")
    # A session that arrived before the cut-off but is still plugged in: its energy is unknown.
    sessions = sessions.assign(departure=sessions.arrival + pd.Timedelta("1h"))
    changed = changed.assign(departure=changed.arrival + pd.Timedelta("1h"))
    week = pd.date_range("2024-06-10", periods=168, freq="h", tz=TZ)
    a = fit_before(ArrivalForecaster(step="1h", timezone=TZ), sessions, cutoff, end=cutoff)
    b = fit_before(ArrivalForecaster(step="1h", timezone=TZ), changed, cutoff, end=cutoff)
    pd.testing.assert_frame_equal(a.predict(week), b.predict(week))
    assert a.window_[1] == cutoff
    full = ArrivalForecaster(step="1h", timezone=TZ).fit(changed)
    assert not full.predict(week).equals(a.predict(week))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"step": "7min"}, "dividing a day"),
        ({"step": "soon"}, "expected a duration"),
        ({"timezone": "Nowhere/Town"}, "unknown time zone"),
        ({"smoothing_h": -1.0}, "smoothing_h: must be >= 0"),
    ],
)
def test_bad_options_are_named(
    sessions: pd.DataFrame, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ForecastError, match=message):
        ArrivalForecaster(**params).fit(sessions)  # type: ignore[arg-type]


def test_bad_input_is_named(sessions: pd.DataFrame) -> None:
    model = ArrivalForecaster().fit(sessions)
    with pytest.raises(ForecastError, match="index must be a tz-aware"):
        model.predict(pd.date_range("2025-01-01", periods=3, freq="h"))
    with pytest.raises(ForecastError, match="no arrival inside the window"):
        ArrivalForecaster().fit(sessions, start="2030-01-01T00:00Z", end="2030-02-01T00:00Z")
    with pytest.raises(ForecastError, match="end: must be after start"):
        ArrivalForecaster().fit(sessions, start="2024-02-01T00:00Z", end="2024-01-01T00:00Z")
    with pytest.raises(ForecastError, match=r"missing column\(s\) \['arrival'\]"):
        ArrivalForecaster().fit(sessions.rename(columns={"arrival": "t"}))
