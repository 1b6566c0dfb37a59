"""Input checks shared by the forecasters: columns, tz-aware times, quantiles, series.

Friendly edges, strict core: the forecasters accept pandas objects, check them here and raise
:class:`ForecastError` naming the column, the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

from ampflow.engine.errors import AmpflowError

__all__ = [
    "ForecastError",
    "check_quantiles",
    "check_series",
    "check_timezone",
    "circular_smooth",
    "numeric_column",
    "quantile_label",
    "require_columns",
    "row_name",
    "step_seconds",
    "utc_index",
    "utc_times",
    "utc_timestamp",
]


class ForecastError(AmpflowError):
    """A forecaster got bad input (missing column, naive time, negative energy, ...)."""


def row_name(df: pd.DataFrame, position: int) -> str:
    """How an error names the row at ``position``: its ``session_id`` if any, else its label."""
    if "session_id" in df.columns:
        return f"session_id {df['session_id'].iloc[position]!r}"
    return f"row {df.index[position]!r}"


def quantile_label(q: float) -> str:
    """Column suffix of quantile ``q``: ``0.1 -> "q10"``, ``0.5 -> "q50"``, ``0.975 -> "q97.5"``.

    Examples
    --------
    >>> [quantile_label(q) for q in (0.1, 0.5, 0.9, 0.05)]
    ['q10', 'q50', 'q90', 'q5']
    """
    return f"q{round(100 * q, 6):g}"


def check_quantiles(quantiles: Iterable[float], *, name: str = "quantiles") -> tuple[float, ...]:
    """Quantiles as a sorted tuple of distinct floats in (0, 1).

    Raises
    ------
    ForecastError
        If there is none, or one is outside (0, 1) or repeated.
    """
    try:
        qs = [float(q) for q in quantiles]
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{name} must be numbers in (0, 1), got {quantiles!r}") from exc
    if not qs:
        raise ForecastError(f"{name} must hold at least one quantile, got none")
    bad = [q for q in qs if not 0.0 < q < 1.0]
    if bad:
        raise ForecastError(f"{name}: every quantile must be in (0, 1), got {bad[0]!r}")
    if len(set(qs)) != len(qs):
        raise ForecastError(f"{name} must be distinct, got {qs!r}")
    return tuple(sorted(qs))


def require_columns(df: pd.DataFrame, columns: Sequence[str], *, source: str) -> None:
    """Raise unless ``df`` is a DataFrame that has every one of ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise ForecastError(f"{source} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ForecastError(
            f"{source}: missing column(s) {missing}; expected at least {list(columns)}"
        )


def utc_times(df: pd.DataFrame, column: str, *, source: str, allow_nat: bool) -> pd.Series:
    """Column ``column`` of ``df`` as tz-aware UTC timestamps.

    Raises
    ------
    ForecastError
        If the column does not hold tz-aware timestamps, or holds NaT where none is allowed.
    """
    col = df[column]
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        raise ForecastError(
            f"{source}: column {column!r} must hold tz-aware timestamps, got dtype {col.dtype}"
        )
    out: pd.Series = col.dt.tz_convert("UTC")
    if not allow_nat and out.isna().any():
        row = row_name(df, int(np.flatnonzero(out.isna().to_numpy())[0]))
        raise ForecastError(f"{source}: column {column!r} is missing (NaT) at {row}")
    return out


def numeric_column(
    df: pd.DataFrame, column: str, *, source: str, min_value: float | None = None
) -> NDArray[np.float64]:
    """Column ``column`` as float64 (NaN allowed), checked against ``min_value``.

    Raises
    ------
    ForecastError
        If the column is not numeric, holds an infinity, or a value below ``min_value``.
    """
    try:
        values = pd.to_numeric(df[column], errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{source}: column {column!r} must be numeric ({exc})") from exc
    if np.isinf(values).any():
        raise ForecastError(f"{source}: column {column!r} holds an infinite value")
    if min_value is not None:
        low = np.flatnonzero(values < min_value)
        if low.size:
            i = int(low[0])
            raise ForecastError(
                f"{source}: column {column!r} must be >= {min_value:g}, "
                f"got {values[i]:g} at {row_name(df, i)}"
            )
    return values


def utc_index(index: object, *, name: str) -> pd.DatetimeIndex:
    """``index`` as a tz-aware UTC :class:`pandas.DatetimeIndex`.

    Raises
    ------
    ForecastError
        If it is not a tz-aware DatetimeIndex or holds NaT.
    """
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ForecastError(f"{name} must be a tz-aware pandas DatetimeIndex, got {index!r:.80}")
    if index.hasnans:
        raise ForecastError(f"{name} must not hold NaT")
    return index.tz_convert("UTC")


def check_series(y: object, *, name: str) -> pd.Series:
    """A float series with a sorted, unique, tz-aware UTC index (values may be NaN).

    Raises
    ------
    ForecastError
        If ``y`` is not such a series.
    """
    if not isinstance(y, pd.Series):
        raise ForecastError(f"{name} must be a pandas Series, got {type(y).__name__}")
    index = utc_index(y.index, name=f"{name}.index")
    if index.has_duplicates:
        raise ForecastError(f"{name}.index has duplicate time {index[index.duplicated()][0]}")
    try:
        values = pd.to_numeric(y, errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{name} must be numeric ({exc})") from exc
    if np.isinf(values).any():
        raise ForecastError(f"{name} holds an infinite value")
    return pd.Series(values, index=index, name=y.name).sort_index()


def utc_timestamp(value: object, *, name: str) -> pd.Timestamp:
    """``value`` (a tz-aware timestamp or ISO 8601 string with offset) as a UTC timestamp.

    Raises
    ------
    ForecastError
        If it cannot be read as a time, or carries no time zone.
    """
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{name} must be a tz-aware timestamp, got {value!r}") from exc
    if pd.isna(ts) or ts.tzinfo is None:
        raise ForecastError(f"{name} must be a tz-aware timestamp, got {value!r}")
    return ts.tz_convert("UTC")


def check_timezone(name: object, *, field: str = "timezone") -> str:
    """``name`` if it is a time zone pandas knows (IANA name such as ``"Europe/Amsterdam"``).

    Raises
    ------
    ForecastError
        If it is not.
    """
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(name)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError) as exc:
        raise ForecastError(f"{field}: unknown time zone {name!r}, expected an IANA name") from exc
    return str(name)


def step_seconds(step: object) -> int:
    """A step length in whole seconds: at least a minute, dividing a day.

    Raises
    ------
    ForecastError
        If it is not such a duration.
    """
    try:
        seconds = pd.Timedelta(step).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"step: expected a duration such as '15min', got {step!r}") from exc
    if seconds < 60 or seconds != int(seconds) or 86400 % int(seconds):
        raise ForecastError(
            f"step: must be whole seconds, at least 1 min, dividing a day; got {step!r}"
        )
    return int(seconds)


def circular_smooth(values: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """Gaussian smoothing (standard deviation ``sigma`` bins) along the last axis, wrapping."""
    if sigma <= 0:
        return values.astype(np.float64)
    out = gaussian_filter1d(values.astype(np.float64), sigma, axis=-1, mode="wrap")
    return np.asarray(out, dtype=np.float64)
