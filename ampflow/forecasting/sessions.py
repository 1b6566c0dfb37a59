"""Quantile forecasts of a charging session's dwell time (departure) and energy, at plug-in.

:class:`SessionForecaster` is the one the scheduler uses. It fits one gradient-boosted quantile
regressor (scikit-learn ``HistGradientBoostingRegressor(loss="quantile")``) per quantile and target,
on features known when the EV plugs in (:mod:`ampflow.forecasting.features`): local time of day,
weekday, station, the driver's estimate and requested energy when given, and the driver's history
when a ``user_id`` column exists.

The contract for a consumer such as the MPC policy is :class:`SessionPredictor`:
``predict_sessions(sessions) -> DataFrame`` with, for each quantile label ``qNN`` (see
:func:`~ampflow.forecasting.quantile_label`), the columns ``dwell_h_qNN`` [h], ``departure_qNN``
(tz-aware UTC) and ``energy_kwh_qNN`` [kWh], indexed like the input. Quantiles never cross,
departures never precede arrival and energies are never negative. A scheduler that wants robust
plans uses a low departure quantile (leave early) and a high energy quantile.
"""

from __future__ import annotations

import logging
from typing import Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ampflow.forecasting._frames import (
    ForecastError,
    check_quantiles,
    check_timezone,
    quantile_label,
    require_columns,
    utc_times,
    utc_timestamp,
)
from ampflow.forecasting.asof import sessions_known_at
from ampflow.forecasting.features import (
    completed_pool,
    plugin_features,
    session_targets,
)

__all__ = ["SessionForecaster", "SessionPredictor", "session_columns"]

logger = logging.getLogger(__name__)

# HistGradientBoosting bins a categorical feature into at most 255 bins, one kept for missing.
_MAX_STATIONS = 254


@runtime_checkable
class SessionPredictor(Protocol):
    """What a scheduler needs from a session forecaster."""

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Quantiles of dwell [h], departure (UTC) and energy [kWh] for each session of ``X``."""
        ...


def session_columns(quantiles: tuple[float, ...]) -> list[str]:
    """Output columns of :meth:`SessionForecaster.predict_sessions` for ``quantiles``.

    Examples
    --------
    >>> session_columns((0.1, 0.9))
    ['dwell_h_q10', 'dwell_h_q90', 'departure_q10', 'departure_q90', 'energy_kwh_q10', \
'energy_kwh_q90']
    """
    labels = [quantile_label(q) for q in quantiles]
    return [f"{name}_{lab}" for name in ("dwell_h", "departure", "energy_kwh") for lab in labels]


class SessionForecaster(BaseEstimator):  # type: ignore[misc]
    """Quantile forecasts of dwell time and delivered energy from what is known at plug-in.

    Parameters
    ----------
    quantiles : tuple of float, default (0.1, 0.5, 0.9)
        Quantiles to predict, each in (0, 1).
    timezone : str, default "UTC"
        The site's time zone (IANA name), for local time of day and weekday
        (``"America/Los_Angeles"`` for the ACN sites).
    learning_rate : float, default 0.05
    max_iter : int, default 100
        Boosting iterations per quantile model.
    max_leaf_nodes : int, default 31
    min_samples_leaf : int, default 20
    l2_regularization : float, default 0.0
        Passed to each ``HistGradientBoostingRegressor``.
    random_state : int or None, default 0
        Seed of the boosting models (which are deterministic without early stopping).
    n_threads : int or None, default 1
        OpenMP threads for fitting and predicting; None lets OpenMP decide. One by default: a site
        has thousands of sessions, not millions, and busy OpenMP threads contend badly with the
        other work of a loaded machine.

    Attributes
    ----------
    quantiles_ : tuple of float
        The sorted quantiles.
    stations_ : tuple of str
        Station ids seen in training (at most 254, the most frequent); others count as missing.
    uses_user_history_ : bool
        Whether the training sessions had a ``user_id`` column, so that driver history is used.
    history_ : pandas.DataFrame or None
        The completed training sessions the driver history is drawn from.
    feature_names_ : tuple of str
        Model input columns.
    dwell_models_, energy_models_ : tuple of HistGradientBoostingRegressor
        One per quantile, for dwell time [h] and delivered energy [kWh].
    n_sessions_ : int
        Completed sessions the models were trained on.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> arrival = pd.Timestamp("2019-05-01 15:00", tz="UTC") + pd.to_timedelta(
    ...     np.arange(200) * 6, unit="h")
    >>> df = pd.DataFrame({"arrival": arrival, "station_id": rng.choice(["A", "B"], 200),
    ...                    "energy_kwh": rng.uniform(2, 20, 200)})
    >>> df["departure"] = df.arrival + pd.to_timedelta(rng.uniform(1, 9, 200), unit="h")
    >>> model = SessionForecaster(max_iter=20).fit(df)
    >>> pred = model.predict_sessions(df.drop(columns=["departure", "energy_kwh"]).head(3))
    >>> bool((pred.dwell_h_q10 <= pred.dwell_h_q90).all()), bool((pred.energy_kwh_q10 >= 0).all())
    (True, True)
    """

    def __init__(
        self,
        *,
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        timezone: str = "UTC",
        learning_rate: float = 0.05,
        max_iter: int = 100,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        random_state: int | None = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.quantiles = quantiles
        self.timezone = timezone
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X: pd.DataFrame, y: None = None) -> Self:
        """Fit the dwell and energy quantile models on completed sessions.

        Parameters
        ----------
        X : pandas.DataFrame
            Sessions with ``arrival``, ``departure`` (tz-aware), ``station_id``, ``energy_kwh``
            (delivered) [kWh] and the optional plug-in columns of
            :mod:`ampflow.forecasting.features`. Sessions whose ``departure`` or ``energy_kwh`` is
            missing are still in progress (see :func:`~ampflow.forecasting.sessions_known_at`) and
            are not trained on.
        y : None
            Ignored; the targets are columns of ``X``.

        Returns
        -------
        SessionForecaster
            self.

        Raises
        ------
        ForecastError
            If a column is missing or malformed, or no session is complete.
        """
        quantiles = check_quantiles(self.quantiles)
        check_timezone(self.timezone)
        require_columns(X, ("arrival", "departure", "station_id", "energy_kwh"), source="sessions")
        dwell_h, energy_kwh = session_targets(X)
        done = np.isfinite(dwell_h) & np.isfinite(energy_kwh)
        if not done.any():
            raise ForecastError("sessions: no completed session (with departure and energy_kwh)")
        if (~done).any():
            logger.info("skipping %d sessions still in progress", int((~done).sum()))
        train = X.loc[done]
        counts = train["station_id"].dropna().astype(str).value_counts(sort=True)
        if counts.empty:
            raise ForecastError("sessions: column 'station_id' holds no station id")
        self.stations_ = tuple(sorted(counts.index[:_MAX_STATIONS]))
        self.uses_user_history_ = bool("user_id" in X and X["user_id"].notna().any())
        self.history_ = completed_pool(train) if self.uses_user_history_ else None
        features = self._features(train, extra=None)
        # A feature never observed in training (say, no driver estimates) carries nothing.
        self.feature_names_ = tuple(c for c in features.columns if features[c].notna().any())
        features = features[list(self.feature_names_)]
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.dwell_models_ = tuple(self._fit_one(features, dwell_h[done], q) for q in quantiles)
            self.energy_models_ = tuple(
                self._fit_one(features, energy_kwh[done], q) for q in quantiles
            )
        self.quantiles_ = quantiles
        self.n_sessions_ = int(done.sum())
        return self

    def predict_sessions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Quantiles of dwell time, departure and energy for each session of ``X``.

        Parameters
        ----------
        X : pandas.DataFrame
            Sessions with ``arrival`` (tz-aware) and ``station_id``, plus whatever optional plug-in
            columns are known. Outcome columns (``departure``, ``energy_kwh``) are never used for a
            session itself; with a ``user_id`` column, the sessions of ``X`` that departed before a
            session's arrival join its driver's history.

        Returns
        -------
        pandas.DataFrame
            Indexed like ``X``, columns :func:`session_columns`: ``dwell_h_qNN`` [h] (>= 0, sorted
            across quantiles), ``departure_qNN`` = arrival + dwell (UTC), ``energy_kwh_qNN``
            [kWh] (>= 0, sorted).
        """
        check_is_fitted(self, "dwell_models_")
        require_columns(X, ("arrival", "station_id"), source="sessions")
        arrival = utc_times(X, "arrival", source="sessions", allow_nat=False)
        columns = session_columns(self.quantiles_)
        if len(X) == 0:
            return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}, index=X.index)
        features = self._features(X, extra=X)[list(self.feature_names_)]
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            dwell = np.column_stack([m.predict(features) for m in self.dwell_models_])
            energy = np.column_stack([m.predict(features) for m in self.energy_models_])
        dwell, energy = _non_crossing(dwell), _non_crossing(energy)
        return _frame(arrival, dwell, energy, self.quantiles_, columns)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Alias of :meth:`predict_sessions` (the scikit-learn name)."""
        return self.predict_sessions(X)

    def predict_at(self, X: pd.DataFrame, at: object) -> pd.DataFrame:
        """Forecasts for the sessions plugged in at time ``at``, using only what was known then.

        The sessions are cut with :func:`~ampflow.forecasting.sessions_known_at`: those that arrived
        after ``at`` are dropped, outcomes of sessions still plugged in are hidden. An EV still
        plugged in has stayed at least ``at - arrival``, so every dwell quantile is raised to that.

        Parameters
        ----------
        X : pandas.DataFrame
            Sessions (outcome columns may hold future values: they are hidden here).
        at : pandas.Timestamp or str
            The moment (tz-aware).

        Returns
        -------
        pandas.DataFrame
            As :meth:`predict_sessions`, for the sessions present at ``at``.
        """
        t = utc_timestamp(at, name="at")
        if "departure" not in X:
            X = X.assign(departure=pd.Series(pd.NaT, index=X.index, dtype="datetime64[ns, UTC]"))
        known = sessions_known_at(X, t)
        present = known.loc[known["departure"].isna().to_numpy()]
        pred = self.predict_sessions(known).loc[present.index]
        arrival = utc_times(present, "arrival", source="sessions", allow_nat=False)
        elapsed_h = ((t - arrival).dt.total_seconds() / 3600.0).to_numpy(dtype=np.float64)
        labels = [quantile_label(q) for q in self.quantiles_]
        for lab in labels:
            dwell = np.maximum(pred[f"dwell_h_{lab}"].to_numpy(dtype=np.float64), elapsed_h)
            pred[f"dwell_h_{lab}"] = dwell
            pred[f"departure_{lab}"] = arrival + pd.to_timedelta(dwell, unit="h")
        return pred

    def _features(self, X: pd.DataFrame, *, extra: pd.DataFrame | None) -> pd.DataFrame:
        history = None
        if self.uses_user_history_:
            history = self.history_
            if extra is not None:
                history = pd.concat([history, completed_pool(extra)], ignore_index=True)
        return plugin_features(X, timezone=self.timezone, stations=self.stations_, history=history)

    def _fit_one(
        self, features: pd.DataFrame, y: NDArray[np.float64], q: float
    ) -> HistGradientBoostingRegressor:
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=q,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            categorical_features="from_dtype",
            early_stopping=False,
            random_state=self.random_state,
        )
        return model.fit(features, y)


def _non_crossing(pred: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sort each row's quantiles (no crossing) and clip below at 0 (no negative dwell/energy)."""
    return np.maximum(np.sort(pred, axis=1), 0.0)


def _frame(
    arrival: pd.Series,
    dwell_h: NDArray[np.float64],
    energy_kwh: NDArray[np.float64],
    quantiles: tuple[float, ...],
    columns: list[str],
) -> pd.DataFrame:
    data: dict[str, object] = {}
    labels = [quantile_label(q) for q in quantiles]
    for j, lab in enumerate(labels):
        data[f"dwell_h_{lab}"] = dwell_h[:, j]
    for j, lab in enumerate(labels):
        data[f"departure_{lab}"] = arrival + pd.to_timedelta(dwell_h[:, j], unit="h")
    for j, lab in enumerate(labels):
        data[f"energy_kwh_{lab}"] = energy_kwh[:, j]
    return pd.DataFrame(data, index=arrival.index)[columns]
