"""No peeking: views of the data as it was known at a moment, and fitting before a cut-off.

A replay must train its forecasters only on what was known before it starts, and at each step
use only what was known then. These helpers cut the data accordingly:

* a **session** is known from its arrival (with its plug-in inputs: station, the driver's estimate,
  requested energy); its outcome (``departure``, delivered ``energy_kwh``) is known only once it has
  departed. :func:`sessions_known_at` masks the outcome of sessions still plugged in.
* a **time series** value stamped ``t`` describes the interval starting at ``t``, so at time ``at``
  only values stamped before ``at`` are known (:func:`series_known_at`).

The forecasters' ``predict`` methods that take a ``history`` apply the same cut themselves.
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from ampflow.forecasting._frames import (
    ForecastError,
    check_series,
    require_columns,
    utc_times,
    utc_timestamp,
)

__all__ = [
    "SESSION_OUTCOMES",
    "fit_before",
    "series_known_at",
    "sessions_completed_before",
    "sessions_known_at",
]

SESSION_OUTCOMES: tuple[str, ...] = ("departure", "energy_kwh")
"""Session columns known only once the EV has left: unplug time and delivered energy [kWh]."""


class SupportsFit(Protocol):
    """Anything with a scikit-learn style ``fit``."""

    def fit(self, *args: Any, **kwargs: Any) -> Any: ...


def sessions_known_at(df: pd.DataFrame, at: object, *, strict: bool = False) -> pd.DataFrame:
    """The sessions as known at time ``at``.

    Parameters
    ----------
    df : pandas.DataFrame
        Sessions with tz-aware ``arrival`` and ``departure`` (NaT allowed) and, optionally,
        ``energy_kwh`` [kWh] and other columns.
    at : pandas.Timestamp or str
        The moment (tz-aware).
    strict : bool, default False
        If True, only events strictly before ``at`` are known (a fit before a cut-off);
        otherwise events at ``at`` are known too.

    Returns
    -------
    pandas.DataFrame
        The sessions that had arrived by ``at``, with ``departure`` set to NaT and ``energy_kwh`` to
        NaN for those that had not departed by then. Other columns are kept as they are: they must
        hold only what was known at plug-in.

    Examples
    --------
    >>> t = pd.Timestamp("2019-05-01 12:00", tz="UTC")
    >>> df = pd.DataFrame({
    ...     "arrival": [t - pd.Timedelta("4h"), t - pd.Timedelta("2h"), t + pd.Timedelta("1h")],
    ...     "departure": [t - pd.Timedelta("1h"), t + pd.Timedelta("3h"), t + pd.Timedelta("5h")],
    ...     "energy_kwh": [5.0, 8.0, 3.0],
    ... })
    >>> known = sessions_known_at(df, t)
    >>> known.energy_kwh.tolist(), int(known.departure.isna().sum())
    ([5.0, nan], 1)
    """
    require_columns(df, ("arrival", "departure"), source="sessions")
    t = utc_timestamp(at, name="at")
    arrival = utc_times(df, "arrival", source="sessions", allow_nat=False)
    departure = utc_times(df, "departure", source="sessions", allow_nat=True)
    arrived = (arrival < t) if strict else (arrival <= t)
    gone = (departure < t) if strict else (departure <= t)
    out = df.loc[arrived.to_numpy()].copy()
    pending = ~gone.loc[out.index].fillna(False).to_numpy(dtype=bool)
    out["departure"] = departure.loc[out.index].mask(pending)
    if "energy_kwh" in out:
        out["energy_kwh"] = out["energy_kwh"].astype("float64").mask(pending)
    return out


def sessions_completed_before(df: pd.DataFrame, cutoff: object) -> pd.DataFrame:
    """The sessions that had departed strictly before ``cutoff`` (their outcome is known).

    Sessions still plugged in at the cut-off are dropped, so that no value from after it is used.

    Examples
    --------
    >>> t = pd.Timestamp("2019-05-01 12:00", tz="UTC")
    >>> df = pd.DataFrame({"arrival": [t - pd.Timedelta("4h")] * 2,
    ...                    "departure": [t - pd.Timedelta("1h"), t]})
    >>> len(sessions_completed_before(df, t))
    1
    """
    require_columns(df, ("arrival", "departure"), source="sessions")
    t = utc_timestamp(cutoff, name="cutoff")
    departure = utc_times(df, "departure", source="sessions", allow_nat=True)
    return df.loc[(departure < t).fillna(False).to_numpy(dtype=bool)].copy()


def series_known_at(y: pd.Series, at: object) -> pd.Series:
    """The values of ``y`` stamped strictly before ``at`` (each stamp starts its interval).

    Examples
    --------
    >>> y = pd.Series([1.0, 2.0, 3.0], index=pd.date_range("2019-05-01", periods=3, freq="h",
    ...                                                     tz="UTC"))
    >>> series_known_at(y, "2019-05-01T02:00Z").tolist()
    [1.0, 2.0]
    """
    s = check_series(y, name="series")
    t = utc_timestamp(at, name="at")
    return s.loc[s.index < t]


def fit_before[E: SupportsFit](
    estimator: E, data: pd.DataFrame | pd.Series, cutoff: object, **fit_params: Any
) -> E:
    """Fit ``estimator`` only on what was known strictly before ``cutoff``.

    Parameters
    ----------
    estimator : estimator
        Any object with a scikit-learn style ``fit`` (returns self).
    data : pandas.DataFrame or pandas.Series
        Sessions (a DataFrame with an ``arrival`` column; cut with
        ``sessions_known_at(..., strict=True)``, so sessions still plugged in at the cut-off keep
        their plug-in inputs but lose their outcome), or a time series / DataFrame with a
        tz-aware DatetimeIndex (rows stamped before the cut-off).
    cutoff : pandas.Timestamp or str
        The cut-off (tz-aware); a replay's start.
    **fit_params
        Passed on to ``estimator.fit``.

    Returns
    -------
    estimator
        The fitted estimator (``fit``'s return value is ignored; the estimator itself is returned).

    Raises
    ------
    ForecastError
        If ``data`` is neither sessions nor time-indexed, or nothing is known before the cut-off.
    """
    t = utc_timestamp(cutoff, name="cutoff")
    known: pd.DataFrame | pd.Series
    if isinstance(data, pd.Series):
        known = series_known_at(data, t)
    elif isinstance(data, pd.DataFrame) and "arrival" in data.columns:
        known = sessions_known_at(data, t, strict=True)
    elif isinstance(data, pd.DataFrame) and isinstance(data.index, pd.DatetimeIndex):
        if data.index.tz is None:
            raise ForecastError("data.index must be tz-aware")
        known = data.loc[data.index < t]
    else:
        raise ForecastError(
            "data must be sessions (a DataFrame with an 'arrival' column) or time-indexed, "
            f"got {type(data).__name__}"
        )
    if len(known) == 0:
        raise ForecastError(f"cutoff: nothing in the data is known before {t.isoformat()}")
    estimator.fit(known, **fit_params)
    return estimator
