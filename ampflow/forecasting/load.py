"""Site base load: a seasonal (local time-of-week) baseline plus a gradient-boosted correction.

The baseline is the mean load of each local time-of-week bin over the training data (smoothed
over neighbouring bins). A ``HistGradientBoostingRegressor`` then models what the baseline misses
from the time of day, the weekday, the load one week earlier (known up to a week ahead: NaN beyond)
and optional exogenous columns such as temperature forecasts. Prediction at a forecast origin uses
only load values stamped before it.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ampflow.forecasting._frames import (
    ForecastError,
    check_series,
    check_timezone,
    circular_smooth,
    numeric_column,
    step_seconds,
    utc_index,
    utc_timestamp,
)
from ampflow.forecasting.arrivals import WEEK_S, time_of_week_bin

__all__ = ["BaseLoadForecaster"]

_LAG = pd.Timedelta(days=7)


class BaseLoadForecaster(BaseEstimator):  # type: ignore[misc]
    """Site base load [kW]: time-of-week baseline plus gradient boosting.

    Parameters
    ----------
    step : str or pandas.Timedelta, default "15min"
        Bin width of the time-of-week baseline (whole seconds dividing a day).
    timezone : str, default "UTC"
        Site time zone (IANA name).
    smoothing_h : float, default 0.5
        Gaussian smoothing of the baseline over the week [h]; 0 for none.
    learning_rate : float, default 0.05
    max_iter : int, default 200
    min_samples_leaf : int, default 20
        Passed to the ``HistGradientBoostingRegressor``.
    random_state : int or None, default 0
    n_threads : int or None, default 1
        OpenMP threads for the boosting (None: OpenMP decides).

    Attributes
    ----------
    step_s_ : int
    profile_kw_ : numpy.ndarray, shape (n_bins,)
        Baseline load by local time-of-week bin [kW].
    exogenous_ : tuple of str
        Exogenous columns the model was fitted with.
    model_ : HistGradientBoostingRegressor
        The correction model (target: load minus baseline [kW]).
    history_ : pandas.Series
        The training load; recent values serve as one-week lags when predicting.

    Examples
    --------
    >>> index = pd.date_range("2024-01-01", periods=24 * 7 * 4, freq="h", tz="UTC")
    >>> y = pd.Series(10 + 5 * (index.hour >= 8), index=index, dtype=float)
    >>> model = BaseLoadForecaster(step="1h", max_iter=10).fit(y)
    >>> pred = model.predict(pd.date_range("2024-01-29", periods=24, freq="h", tz="UTC"))
    >>> [round(float(pred.iloc[h]), 1) for h in (3, 12)]
    [10.0, 15.0]
    """

    def __init__(
        self,
        *,
        step: str | pd.Timedelta = "15min",
        timezone: str = "UTC",
        smoothing_h: float = 0.5,
        learning_rate: float = 0.05,
        max_iter: int = 200,
        min_samples_leaf: int = 20,
        random_state: int | None = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.step = step
        self.timezone = timezone
        self.smoothing_h = smoothing_h
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, y: pd.Series, X: pd.DataFrame | None = None) -> Self:
        """Fit the baseline and the correction model.

        Parameters
        ----------
        y : pandas.Series
            Base load [kW] with a tz-aware DatetimeIndex (NaN allowed: skipped).
        X : pandas.DataFrame, optional
            Exogenous numeric columns indexed like ``y``.

        Returns
        -------
        BaseLoadForecaster
            self.

        Raises
        ------
        ForecastError
            On a bad option, a malformed series, or no finite load value.
        """
        step_s = step_seconds(self.step)
        check_timezone(self.timezone)
        if not self.smoothing_h >= 0:
            raise ForecastError(f"smoothing_h: must be >= 0 [h], got {self.smoothing_h!r}")
        load = check_series(y, name="y")
        seen = np.isfinite(load.to_numpy())
        if not seen.any():
            raise ForecastError("y: holds no finite load value")
        self.step_s_ = step_s
        bins = time_of_week_bin(pd.DatetimeIndex(load.index), timezone=self.timezone, step_s=step_s)
        n_bins = WEEK_S // step_s
        total = np.bincount(bins[seen], weights=load.to_numpy()[seen], minlength=n_bins)
        count = np.bincount(bins[seen], minlength=n_bins).astype(np.float64)
        sigma = self.smoothing_h * 3600.0 / step_s
        smooth_count = circular_smooth(count, sigma)
        overall = float(load.to_numpy()[seen].mean())
        profile = np.where(
            smooth_count > 1e-9,
            circular_smooth(total, sigma) / np.maximum(smooth_count, 1e-12),
            overall,
        )
        self.profile_kw_ = profile
        self.exogenous_ = () if X is None else tuple(str(c) for c in X.columns)
        self.history_ = load
        features = self._features(pd.DatetimeIndex(load.index), load, X)
        target = load.to_numpy() - features["baseline_kw"].to_numpy()
        model = HistGradientBoostingRegressor(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model_ = model.fit(features.loc[seen], target[seen])
        return self

    def predict(
        self,
        index: pd.DatetimeIndex,
        *,
        history: pd.Series | None = None,
        X: pd.DataFrame | None = None,
        at: object = None,
    ) -> pd.Series:
        """Forecast the base load at ``index`` from what was known at the forecast origin.

        Parameters
        ----------
        index : pandas.DatetimeIndex
            Times to forecast (tz-aware).
        history : pandas.Series, optional
            Load observed since training [kW]; with the training load, the source of one-week lags.
        X : pandas.DataFrame, optional
            Exogenous columns indexed by ``index`` (required if the model was fitted with them).
        at : pandas.Timestamp or str, optional
            The forecast origin; default ``index[0]``. Only load stamped before it is used.

        Returns
        -------
        pandas.Series
            ``base_load_kw`` [kW], indexed by ``index``.
        """
        check_is_fitted(self, "model_")
        times = utc_index(index, name="index")
        if len(times) == 0:
            return pd.Series(np.zeros(0), index=index, name="base_load_kw")
        origin = times[0] if at is None else utc_timestamp(at, name="at")
        known = self.history_
        if history is not None:
            recent = check_series(history, name="history")
            known = pd.concat([known, recent])
            known = known.loc[~known.index.duplicated(keep="last")].sort_index()
        known = known.loc[known.index < origin]
        features = self._features(times, known, X)
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            correction = self.model_.predict(features)
        values = features["baseline_kw"].to_numpy() + correction
        return pd.Series(values, index=index, name="base_load_kw")

    def _features(
        self, times: pd.DatetimeIndex, known: pd.Series, X: pd.DataFrame | None
    ) -> pd.DataFrame:
        bins = time_of_week_bin(times, timezone=self.timezone, step_s=self.step_s_)
        local = times.tz_convert(self.timezone)
        lag = known.reindex(times - _LAG).to_numpy(dtype=np.float64)
        features = pd.DataFrame(
            {
                "baseline_kw": self.profile_kw_[bins],
                "hour": (local.hour + local.minute / 60.0).to_numpy(dtype=np.float64),
                "weekday": local.day_of_week.to_numpy(dtype=np.float64),
                "lag_week_kw": lag,
            }
        )
        return features.join(_exogenous(X, self.exogenous_, times))


def _exogenous(
    X: pd.DataFrame | None, columns: tuple[str, ...], times: pd.DatetimeIndex
) -> pd.DataFrame:
    if not columns:
        return pd.DataFrame(index=range(len(times)))
    if X is None:
        raise ForecastError(f"X: the model was fitted with exogenous columns {list(columns)}")
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ForecastError(f"X: missing column(s) {missing}")
    index = utc_index(X.index, name="X.index")
    if index.has_duplicates:
        raise ForecastError("X.index: has duplicate times")
    frame = X.set_axis(index).reindex(times)
    out = {f"x_{c}": numeric_column(frame, c, source="X") for c in columns}
    return pd.DataFrame(out, index=range(len(times)))
