"""No-peeking helpers: what is known at a time, fitting before a cut-off, and output invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.forecasting import (
    BaseLoadForecaster,
    ForecastError,
    SessionForecaster,
    fit_before,
    series_known_at,
    sessions_completed_before,
)
from tests.forecasting.synthetic import START, synthetic_sessions


class Recorder:
    """An estimator that remembers what it was fitted on."""

    def fit(self, X: object, **kwargs: object) -> Recorder:
        self.seen_ = X
        self.kwargs_ = kwargs
        return self


def test_fit_before_cuts_each_kind_of_data() -> None:
    cutoff = pd.Timestamp("2024-01-01 06:00", tz="UTC")
    index = pd.date_range("2024-01-01", periods=12, freq="h", tz="UTC")
    series = pd.Series(np.arange(12.0), index=index)
    assert fit_before(Recorder(), series, cutoff).seen_.index.max() < cutoff
    frame = pd.DataFrame({"kw": np.arange(12.0)}, index=index)
    assert len(fit_before(Recorder(), frame, cutoff).seen_) == 6
    rec = fit_before(Recorder(), synthetic_sessions(50), START + pd.Timedelta("20D"), end=cutoff)
    assert rec.kwargs_ == {"end": cutoff}
    seen = rec.seen_
    assert isinstance(seen, pd.DataFrame)
    assert (seen.arrival < START + pd.Timedelta("20D")).all()
    assert series_known_at(series, cutoff).equals(series.iloc[:6])
    done = sessions_completed_before(synthetic_sessions(50), START + pd.Timedelta("20D"))
    assert (done.departure < START + pd.Timedelta("20D")).all()


def test_fit_before_series_forecaster_ignores_later_values() -> None:
    index = pd.date_range("2024-01-01", periods=21 * 24, freq="h", tz="UTC")
    y = pd.Series(10 + (index.hour >= 8) * 5.0, index=index)
    cutoff = index[14 * 24]
    changed = y.where(y.index < cutoff, 99.0)
    grid = pd.date_range(cutoff, periods=48, freq="h")
    a = fit_before(BaseLoadForecaster(step="1h", max_iter=20), y, cutoff).predict(grid)
    b = fit_before(BaseLoadForecaster(step="1h", max_iter=20), changed, cutoff).predict(grid)
    pd.testing.assert_series_equal(a, b)


def test_fit_before_rejects_what_it_cannot_cut() -> None:
    with pytest.raises(ForecastError, match="data must be sessions"):
        fit_before(Recorder(), pd.DataFrame({"kw": [1.0]}), "2024-01-01T00:00Z")
    index = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
    with pytest.raises(ForecastError, match="nothing in the data is known before"):
        fit_before(Recorder(), pd.Series([1.0, 2.0, 3.0], index=index), "2023-01-01T00:00Z")
    with pytest.raises(ForecastError, match="cutoff must be a tz-aware timestamp"):
        fit_before(Recorder(), pd.Series([1.0, 2.0, 3.0], index=index), "2024-01-01")


@pytest.fixture(scope="module")
def model() -> SessionForecaster:
    return SessionForecaster(max_iter=30).fit(synthetic_sessions(400, seed=20))


session_rows = st.lists(
    st.tuples(
        st.integers(0, 90 * 24 * 60),  # arrival, minutes after START
        st.sampled_from(["S1", "S2", "S3", "new", None]),
        st.one_of(st.none(), st.floats(-48, 200)),  # driver's estimate [h after arrival]
        st.one_of(st.none(), st.floats(0, 500)),  # requested [kWh]
        st.booleans(),
        st.sampled_from(["u1", "u7", "stranger", None]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(session_rows)
def test_forecasts_are_ordered_and_physical_for_any_input(
    model: SessionForecaster,
    rows: list[tuple[int, str | None, float | None, float | None, bool, str | None]],
) -> None:
    arrival = START + pd.to_timedelta([r[0] for r in rows], unit="min")
    df = pd.DataFrame(
        {
            "arrival": arrival,
            "station_id": [r[1] for r in rows],
            "estimated_departure": [
                a + pd.Timedelta(hours=r[2]) if r[2] is not None else pd.NaT
                for a, r in zip(arrival, rows, strict=True)
            ],
            "requested_kwh": [np.nan if r[3] is None else r[3] for r in rows],
            "claimed": [r[4] for r in rows],
            "user_id": [r[5] for r in rows],
        }
    )
    df["estimated_departure"] = pd.to_datetime(df["estimated_departure"], utc=True)
    pred = model.predict_sessions(df)
    assert pred.index.equals(df.index)
    dwell = pred[["dwell_h_q10", "dwell_h_q50", "dwell_h_q90"]].to_numpy()
    energy = pred[["energy_kwh_q10", "energy_kwh_q50", "energy_kwh_q90"]].to_numpy()
    assert np.isfinite(dwell).all()
    assert (np.diff(dwell, axis=1) >= 0).all()
    assert (np.diff(energy, axis=1) >= 0).all()
    assert (dwell >= 0).all()
    assert (energy >= 0).all()
    assert (pred.departure_q10 >= df.arrival).all()
