"""Scores of the session forecaster against the driver's own inputs and a naive baseline.

Departure errors are in hours (``_h``), energy errors in kWh (``_kwh``). MAE and pinball loss
rather than MAPE, which is undefined for zeros (see the forecasting notes in the reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ampflow.forecasting._frames import ForecastError, check_quantiles, quantile_label
from ampflow.forecasting.features import (
    ACN_TIMEZONE,
    check_sessions,
    driver_inputs,
    session_targets,
)
from ampflow.forecasting.sessions import SessionForecaster

__all__ = ["evaluate", "mean_absolute_error", "pinball_loss"]

Scores = dict[str, float | int | None]


def pinball_loss(y_true: ArrayLike, y_pred: ArrayLike, quantile: float) -> float:
    """Mean pinball (quantile) loss of predictions of the ``quantile`` quantile.

    ``mean(max(q * (y - p), (q - 1) * (y - p)))``, in the unit of ``y``; half the MAE at q = 0.5.

    Examples
    --------
    >>> pinball_loss([1.0, 3.0], [2.0, 2.0], 0.9)
    0.5
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape:
        raise ForecastError(f"y_pred must have the shape of y_true {y.shape}, got {p.shape}")
    if not 0.0 < quantile < 1.0:
        raise ForecastError(f"quantile must be in (0, 1), got {quantile!r}")
    diff = y - p
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> float | None:
    """Mean absolute error, None when there is nothing to score.

    Examples
    --------
    >>> mean_absolute_error([1.0, 3.0], [2.0, 2.0])
    1.0
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    return float(np.mean(np.abs(y - p))) if y.size else None


def evaluate(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    random_state: int | None = 0,
    timezone: str = ACN_TIMEZONE,
) -> Scores:
    """Fit a :class:`SessionForecaster` on ``train_df`` and score it on ``test_df``.

    Parameters
    ----------
    train_df, test_df : pandas.DataFrame
        Completed sessions in the ACN column layout (``ampflow.scenarios.acn.read_acn``):
        ``arrival``, ``departure`` (tz-aware), ``station_id``, ``energy_kwh`` (delivered) [kWh] and
        optionally ``estimated_departure``, ``requested_kwh`` [kWh], ``claimed``, ``user_id``.
    quantiles : sequence of float, default (0.1, 0.5, 0.9)
        Quantiles to fit and score; the median is always fitted for the MAE.
    random_state : int or None, default 0
    timezone : str, default "America/Los_Angeles"
        Site time zone (the ACN sites').

    Returns
    -------
    dict
        Departure errors [h] (the median forecast's departure against the true one):

        - ``departure_mae_h_model``, ``departure_mae_h_driver``, ``departure_mae_h_median`` on the
          test sessions that carry a driver's estimate (``n_test_with_estimate``);
          ``departure_improvement`` = 1 - model / driver (0.2 means 20 % below the driver's
          estimate);
        - ``departure_mae_h_model_all``, ``departure_mae_h_median_all`` on every test session.

        Energy errors [kWh]: ``energy_mae_kwh_model`` and ``energy_mae_kwh_median`` on every test
        session; ``energy_mae_kwh_model_requested`` and ``energy_mae_kwh_driver`` (the requested
        energy as a forecast) on those with a request (``n_test_with_request``).

        ``pinball_dwell_h_qNN`` [h] and ``pinball_energy_kwh_qNN`` [kWh] for each quantile;
        ``coverage_dwell`` and ``coverage_energy``: share of test sessions inside the outermost
        quantiles; counts ``n_train`` and ``n_test``. The ``median`` baseline predicts the training
        sessions' median dwell and energy for everyone. A score with nothing to score is None.

    Raises
    ------
    ForecastError
        If a frame lacks a column or holds a malformed value, or ``test_df`` is empty.
    """
    qs = check_quantiles(tuple(quantiles))
    check_sessions(train_df, source="train sessions")
    check_sessions(test_df, source="test sessions")
    fit_qs = tuple(sorted({*qs, 0.5}))
    model = SessionForecaster(quantiles=fit_qs, timezone=timezone, random_state=random_state)
    model.fit(train_df)
    if len(test_df) == 0:
        raise ForecastError("test sessions: there is no session to score")
    dwell_h, energy_kwh = session_targets(test_df, source="test sessions")
    if not (np.isfinite(dwell_h).all() and np.isfinite(energy_kwh).all()):
        raise ForecastError("test sessions: every session needs a departure and an energy_kwh")
    train_dwell, train_energy = session_targets(train_df, source="train sessions")
    pred = model.predict_sessions(test_df)
    est_h, req_kwh = driver_inputs(test_df)
    with_est = np.isfinite(est_h)
    with_req = np.isfinite(req_kwh)
    med_dwell = float(np.nanmedian(train_dwell))
    med_energy = float(np.nanmedian(train_energy))
    dwell50 = pred["dwell_h_q50"].to_numpy(dtype=np.float64)
    energy50 = pred["energy_kwh_q50"].to_numpy(dtype=np.float64)
    model_mae = mean_absolute_error(dwell_h[with_est], dwell50[with_est])
    driver_mae = mean_absolute_error(dwell_h[with_est], est_h[with_est])
    scores: Scores = {
        "departure_mae_h_model": model_mae,
        "departure_mae_h_driver": driver_mae,
        "departure_mae_h_median": _mae_constant(dwell_h[with_est], med_dwell),
        "departure_improvement": (
            1.0 - model_mae / driver_mae
            if model_mae is not None and driver_mae is not None and driver_mae > 0
            else None
        ),
        "departure_mae_h_model_all": mean_absolute_error(dwell_h, dwell50),
        "departure_mae_h_median_all": _mae_constant(dwell_h, med_dwell),
        "energy_mae_kwh_model": mean_absolute_error(energy_kwh, energy50),
        "energy_mae_kwh_median": _mae_constant(energy_kwh, med_energy),
        "energy_mae_kwh_model_requested": mean_absolute_error(
            energy_kwh[with_req], energy50[with_req]
        ),
        "energy_mae_kwh_driver": mean_absolute_error(energy_kwh[with_req], req_kwh[with_req]),
    }
    for q in qs:
        lab = quantile_label(q)
        dwell_q = pred[f"dwell_h_{lab}"].to_numpy(dtype=np.float64)
        energy_q = pred[f"energy_kwh_{lab}"].to_numpy(dtype=np.float64)
        scores[f"pinball_dwell_h_{lab}"] = pinball_loss(dwell_h, dwell_q, q)
        scores[f"pinball_energy_kwh_{lab}"] = pinball_loss(energy_kwh, energy_q, q)
    lo, hi = quantile_label(qs[0]), quantile_label(qs[-1])
    scores["coverage_dwell"] = _coverage(dwell_h, pred[f"dwell_h_{lo}"], pred[f"dwell_h_{hi}"])
    scores["coverage_energy"] = _coverage(
        energy_kwh, pred[f"energy_kwh_{lo}"], pred[f"energy_kwh_{hi}"]
    )
    scores["n_train"] = model.n_sessions_
    scores["n_test"] = len(test_df)
    scores["n_test_with_estimate"] = int(with_est.sum())
    scores["n_test_with_request"] = int(with_req.sum())
    return scores


def _mae_constant(y: NDArray[np.float64], value: float) -> float | None:
    return mean_absolute_error(y, np.full_like(y, value))


def _coverage(y: NDArray[np.float64], lo: pd.Series, hi: pd.Series) -> float:
    low = lo.to_numpy(dtype=np.float64)
    high = hi.to_numpy(dtype=np.float64)
    return float(np.mean((y >= low) & (y <= high)))
