"""Forecasters: session dwell and energy, arrivals, site base load, PV and CO2 intensity.

Every forecaster follows the scikit-learn estimator contract (configuration-only ``__init__``,
``fit`` returns self, learned attributes end in ``_``, an explicit ``random_state`` wherever
something is random) and takes pandas objects with tz-aware times. :mod:`ampflow.forecasting.asof`
keeps replays honest: fit only on what was known before a cut-off, predict at ``t`` only from what
was known at ``t``.

- :class:`SessionForecaster`: quantiles of dwell time, departure and energy at plug-in (the
  :class:`SessionPredictor` protocol a scheduler consumes); :func:`evaluate` scores it.
- :class:`ArrivalForecaster`: expected arrivals per site and step, with their energy.
- :class:`BaseLoadForecaster` and :class:`PVForecaster`: site base load and PV power [kW].
- :func:`load_moer` and :func:`moer_forecast_at`: CO2 intensity forecasts as published.

This package reads pandas frames; it never imports ``ampflow.scenarios`` or ``ampflow.gateway``.
"""

from ampflow.forecasting._frames import ForecastError, quantile_label
from ampflow.forecasting.arrivals import ArrivalForecaster, time_of_week_bin
from ampflow.forecasting.asof import (
    SESSION_OUTCOMES,
    fit_before,
    series_known_at,
    sessions_completed_before,
    sessions_known_at,
)
from ampflow.forecasting.carbon import (
    MOER_COLUMNS,
    MOER_HORIZON,
    MOER_STEP,
    load_moer,
    moer_files,
    moer_forecast_at,
)
from ampflow.forecasting.evaluation import evaluate, mean_absolute_error, pinball_loss
from ampflow.forecasting.features import (
    ACN_TIMEZONE,
    check_sessions,
    driver_inputs,
    plugin_features,
    user_history,
)
from ampflow.forecasting.load import BaseLoadForecaster
from ampflow.forecasting.pv import PVForecaster, clearsky_kw
from ampflow.forecasting.sessions import SessionForecaster, SessionPredictor, session_columns

__all__ = [
    "ACN_TIMEZONE",
    "MOER_COLUMNS",
    "MOER_HORIZON",
    "MOER_STEP",
    "SESSION_OUTCOMES",
    "ArrivalForecaster",
    "BaseLoadForecaster",
    "ForecastError",
    "PVForecaster",
    "SessionForecaster",
    "SessionPredictor",
    "check_sessions",
    "clearsky_kw",
    "driver_inputs",
    "evaluate",
    "fit_before",
    "load_moer",
    "mean_absolute_error",
    "moer_files",
    "moer_forecast_at",
    "pinball_loss",
    "plugin_features",
    "quantile_label",
    "series_known_at",
    "session_columns",
    "sessions_completed_before",
    "sessions_known_at",
    "time_of_week_bin",
    "user_history",
]
