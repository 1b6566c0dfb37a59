"""PV production: pvlib clear-sky power scaled by the ratio of recent to clear-sky production.

Clear-sky irradiance (pvlib Ineichen with a fixed Linke turbidity, so that no lookup file is read)
is transposed to the module plane (pvlib isotropic model) and scaled to the system: clear-sky power
= capacity x plane-of-array irradiance / 1000 W/m^2, capped at the capacity. The forecast is that
times the ratio of measured to clear-sky energy over a recent window, computed only from values
stamped before the forecast origin (the training ratio when there are too few recent daylight
values). This is the persistence-of-clearness forecast; day-ahead skill needs weather input.
"""

from __future__ import annotations

import warnings
from typing import Self

import numpy as np
import pandas as pd
import pvlib
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ampflow.forecasting._frames import ForecastError, check_series, utc_index, utc_timestamp

__all__ = ["PVForecaster", "clearsky_kw"]


def clearsky_kw(
    index: pd.DatetimeIndex,
    *,
    latitude: float,
    longitude: float,
    capacity_kw: float,
    altitude_m: float = 0.0,
    tilt_deg: float = 20.0,
    azimuth_deg: float = 180.0,
    linke_turbidity: float = 3.0,
) -> pd.Series:
    """Clear-sky AC power of a PV system at each time [kW].

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Times (tz-aware); the power is the instantaneous value at each.
    latitude, longitude : float
        Site position [degrees, north and east positive].
    capacity_kw : float
        Power at 1000 W/m^2 on the module plane [kW].
    altitude_m : float, default 0
        Site altitude [m].
    tilt_deg, azimuth_deg : float, default 20 and 180
        Module tilt from horizontal and azimuth clockwise from north [degrees].
    linke_turbidity : float, default 3.0
        Linke turbidity for the Ineichen model (about 2 very clear to 5 hazy).

    Returns
    -------
    pandas.Series
        ``clearsky_kw`` [kW], 0 at night, at most ``capacity_kw``.

    Examples
    --------
    >>> day = pd.date_range("2024-06-21 00:00", periods=24, freq="h", tz="Europe/Amsterdam")
    >>> p = clearsky_kw(day, latitude=52.4, longitude=4.9, capacity_kw=10.0)
    >>> float(p.iloc[2]), 8.0 < float(p.max()) <= 10.0, int(p.to_numpy().argmax())
    (0.0, True, 14)
    """
    times = utc_index(index, name="index")
    location = pvlib.location.Location(latitude, longitude, altitude=altitude_m)
    with warnings.catch_warnings():
        # pvlib 0.16 still calls DatetimeIndex.dayofyear, deprecated in pandas 3.
        warnings.filterwarnings("ignore", message=r"DatetimeIndex\.dayofyear is deprecated")
        solar = location.get_solarposition(times)
        sky = location.get_clearsky(
            times, model="ineichen", solar_position=solar, linke_turbidity=linke_turbidity
        )
    poa = pvlib.irradiance.get_total_irradiance(
        tilt_deg,
        azimuth_deg,
        solar["apparent_zenith"],
        solar["azimuth"],
        sky["dni"],
        sky["ghi"],
        sky["dhi"],
    )["poa_global"]
    power = np.clip(np.nan_to_num(poa.to_numpy(dtype=np.float64)) / 1000.0, 0.0, 1.0)
    return pd.Series(power * capacity_kw, index=index, name="clearsky_kw")


class PVForecaster(BaseEstimator):  # type: ignore[misc]
    """PV power [kW]: clear-sky power times the recent clear-sky ratio.

    Deterministic: nothing in it is random, so it takes no ``random_state``.

    Parameters
    ----------
    latitude, longitude : float
        Site position [degrees].
    capacity_kw : float
        Power at 1000 W/m^2 on the module plane [kW], > 0.
    altitude_m, tilt_deg, azimuth_deg, linke_turbidity : float
        See :func:`clearsky_kw`.
    window : str or pandas.Timedelta, default "3D"
        How far back the recent ratio looks.
    min_daylight_fraction : float, default 0.1
        Times whose clear-sky power is below this share of capacity do not count in the ratio
        (dawn and dusk, where the ratio is noisy).
    max_ratio : float, default 1.2
        Cap on the ratio (measured power can exceed the clear-sky model under cloud edges).

    Attributes
    ----------
    ratio_ : float
        Measured over clear-sky energy over the whole training data; the fallback ratio.
    history_ : pandas.Series
        The training production, the first source of recent values.
    """

    def __init__(
        self,
        *,
        latitude: float,
        longitude: float,
        capacity_kw: float,
        altitude_m: float = 0.0,
        tilt_deg: float = 20.0,
        azimuth_deg: float = 180.0,
        linke_turbidity: float = 3.0,
        window: str | pd.Timedelta = "3D",
        min_daylight_fraction: float = 0.1,
        max_ratio: float = 1.2,
    ) -> None:
        self.latitude = latitude
        self.longitude = longitude
        self.capacity_kw = capacity_kw
        self.altitude_m = altitude_m
        self.tilt_deg = tilt_deg
        self.azimuth_deg = azimuth_deg
        self.linke_turbidity = linke_turbidity
        self.window = window
        self.min_daylight_fraction = min_daylight_fraction
        self.max_ratio = max_ratio

    def clearsky(self, index: pd.DatetimeIndex) -> pd.Series:
        """Clear-sky power of this system at ``index`` [kW]."""
        return clearsky_kw(
            index,
            latitude=self.latitude,
            longitude=self.longitude,
            capacity_kw=self.capacity_kw,
            altitude_m=self.altitude_m,
            tilt_deg=self.tilt_deg,
            azimuth_deg=self.azimuth_deg,
            linke_turbidity=self.linke_turbidity,
        )

    def fit(self, y: pd.Series, X: None = None) -> Self:
        """Learn the fallback ratio from measured production.

        Parameters
        ----------
        y : pandas.Series
            Measured PV power [kW] with a tz-aware DatetimeIndex (NaN allowed).
        X : None
            Ignored.

        Returns
        -------
        PVForecaster
            self.

        Raises
        ------
        ForecastError
            On a bad option, or no daylight value to learn from.
        """
        if not self.capacity_kw > 0:
            raise ForecastError(f"capacity_kw: must be > 0 [kW], got {self.capacity_kw!r}")
        if not -90 <= self.latitude <= 90:
            raise ForecastError(f"latitude: must be in [-90, 90] degrees, got {self.latitude!r}")
        self._window()
        production = check_series(y, name="y")
        ratio = self._ratio(production)
        if ratio is None:
            raise ForecastError("y: no daylight value to compare with the clear-sky model")
        self.ratio_ = ratio
        self.history_ = production
        return self

    def predict(
        self, index: pd.DatetimeIndex, *, history: pd.Series | None = None, at: object = None
    ) -> pd.Series:
        """Forecast PV power at ``index`` from production known at the origin.

        Parameters
        ----------
        index : pandas.DatetimeIndex
            Times to forecast (tz-aware).
        history : pandas.Series, optional
            Production measured since training [kW].
        at : pandas.Timestamp or str, optional
            Forecast origin, default ``index[0]``; only values stamped before it are used.

        Returns
        -------
        pandas.Series
            ``pv_kw`` [kW], indexed by ``index``.
        """
        check_is_fitted(self, "ratio_")
        times = utc_index(index, name="index")
        if len(times) == 0:
            return pd.Series(np.zeros(0), index=index, name="pv_kw")
        origin = times[0] if at is None else utc_timestamp(at, name="at")
        ratio = self.recent_ratio(origin, history=history)
        values = ratio * self.clearsky(times).to_numpy()
        return pd.Series(values, index=index, name="pv_kw")

    def recent_ratio(self, at: object, *, history: pd.Series | None = None) -> float:
        """The ratio of measured to clear-sky energy over the window before ``at``."""
        check_is_fitted(self, "ratio_")
        origin = utc_timestamp(at, name="at")
        known = self.history_
        if history is not None:
            known = pd.concat([known, check_series(history, name="history")])
            known = known.loc[~known.index.duplicated(keep="last")].sort_index()
        recent = known.loc[(known.index >= origin - self._window()) & (known.index < origin)]
        ratio = self._ratio(recent)
        return self.ratio_ if ratio is None else ratio

    def _window(self) -> pd.Timedelta:
        try:
            window = pd.Timedelta(self.window)
        except (TypeError, ValueError) as exc:
            raise ForecastError(f"window: expected a duration, got {self.window!r}") from exc
        if window <= pd.Timedelta(0):
            raise ForecastError(f"window: must be positive, got {self.window!r}")
        return window

    def _ratio(self, production: pd.Series) -> float | None:
        values = production.to_numpy(dtype=np.float64)
        if values.size == 0:
            return None
        clear = self.clearsky(pd.DatetimeIndex(production.index)).to_numpy()
        use = np.isfinite(values) & (clear >= self.min_daylight_fraction * self.capacity_kw)
        if use.sum() < 3:
            return None
        ratio = float(np.sum(np.maximum(values[use], 0.0)) / np.sum(clear[use]))
        return min(ratio, self.max_ratio)
