"""Expected EV arrivals per site and step, with the energy they bring, from the time-of-week.

A non-homogeneous Poisson model: the arrival rate of each local time-of-week bin is the number of
arrivals seen in that bin divided by the number of times the bin occurred in the training window,
both smoothed with a circular Gaussian kernel over the week (a Nadaraya-Watson estimate, so bins
that never occurred borrow from their neighbours). Energy per arriving EV is the empirical
distribution of delivered energy by local hour of day, falling back to the whole site where an hour
has few sessions; the median dwell of arriving EVs is learned the same way. The MPC uses it to
reserve capacity for EVs that have not arrived yet.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ampflow.forecasting._frames import (
    ForecastError,
    check_quantiles,
    check_timezone,
    circular_smooth,
    quantile_label,
    require_columns,
    step_seconds,
    utc_index,
    utc_times,
    utc_timestamp,
)

__all__ = ["WEEK_S", "ArrivalForecaster", "time_of_week_bin"]

WEEK_S = 7 * 86400
"""Seconds in a week."""


def time_of_week_bin(times: pd.DatetimeIndex, *, timezone: str, step_s: int) -> NDArray[np.int64]:
    """Local time-of-week bin of each time: 0 is Monday 00:00 local, one bin per ``step_s``.

    Examples
    --------
    >>> t = pd.DatetimeIndex(["2024-03-05T09:20:00+01:00"])  # Tuesday 09:20 in Amsterdam
    >>> time_of_week_bin(t, timezone="Europe/Amsterdam", step_s=3600).tolist()
    [33]
    """
    local = times.tz_convert(timezone)
    seconds = (
        local.day_of_week.to_numpy() * 86400
        + local.hour.to_numpy() * 3600
        + local.minute.to_numpy() * 60
        + local.second.to_numpy()
    )
    return np.asarray(seconds // step_s, dtype=np.int64)


class ArrivalForecaster(BaseEstimator):  # type: ignore[misc]
    """Expected arrivals per site and step, and the energy each arrival brings.

    Parameters
    ----------
    step : str or pandas.Timedelta, default "15min"
        Length of a step; whole seconds dividing a day.
    timezone : str, default "UTC"
        The sites' time zone (IANA name); the weekly pattern follows local time across DST.
    smoothing_h : float, default 1.0
        Standard deviation of the Gaussian smoothing over the week [h]; 0 for none.
    quantiles : tuple of float, default (0.1, 0.5, 0.9)
        Quantiles of the energy per arriving EV to report.
    min_sessions : int, default 20
        An hour of day with fewer sessions of known energy uses the site-wide energy distribution.
    random_state : int or None, default None
        Seed for :meth:`sample`.

    Attributes
    ----------
    sites_ : tuple of str
        Site ids (the ``site_id`` column, or ``("site",)`` without one).
    step_s_ : int
        Step length [s].
    rate_ : numpy.ndarray, shape (n_sites, n_bins)
        Expected arrivals per step in each local time-of-week bin.
    exposure_ : numpy.ndarray, shape (n_bins,)
        How many times each bin occurred in the training window.
    energy_mean_kwh_ : numpy.ndarray, shape (n_sites, 24)
        Mean energy per arriving EV by local hour of arrival [kWh] (NaN if never seen).
    energy_quantiles_kwh_ : numpy.ndarray, shape (n_sites, 24, n_quantiles)
        Its quantiles [kWh].
    energy_pool_kwh_ : dict
        Known energies by (site index, hour), for :meth:`sample`.
    dwell_h_median_ : numpy.ndarray, shape (n_sites, 24)
        Median dwell (departure - arrival) by local hour of arrival [h], from the sessions whose
        departure is known (NaN if none), with the same site-wide fallback as the energy.
    window_ : tuple of pandas.Timestamp
        The training window [start, end) (UTC).
    """

    def __init__(
        self,
        *,
        step: str | pd.Timedelta = "15min",
        timezone: str = "UTC",
        smoothing_h: float = 1.0,
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
        min_sessions: int = 20,
        random_state: int | None = None,
    ) -> None:
        self.step = step
        self.timezone = timezone
        self.smoothing_h = smoothing_h
        self.quantiles = quantiles
        self.min_sessions = min_sessions
        self.random_state = random_state

    def fit(
        self, X: pd.DataFrame, y: None = None, *, start: object = None, end: object = None
    ) -> Self:
        """Learn the weekly arrival pattern and the energy distribution.

        Parameters
        ----------
        X : pandas.DataFrame
            Sessions: ``arrival`` (tz-aware), optionally ``site_id``, ``energy_kwh`` [kWh] and
            ``departure`` (tz-aware; NaN/NaT for sessions still in progress: counted as
            arrivals, not in the energy or the dwell).
        y : None
            Ignored.
        start, end : pandas.Timestamp or str, optional
            The observation window [start, end); by default from local midnight before the first
            arrival to local midnight after the last. Pass ``end=cutoff`` with
            :func:`~ampflow.forecasting.fit_before`.

        Returns
        -------
        ArrivalForecaster
            self.

        Raises
        ------
        ForecastError
            On a bad option, a missing column, or no arrival inside the window.
        """
        step_s = step_seconds(self.step)
        tz = check_timezone(self.timezone)
        quantiles = check_quantiles(self.quantiles)
        if not self.smoothing_h >= 0:
            raise ForecastError(f"smoothing_h: must be >= 0 [h], got {self.smoothing_h!r}")
        require_columns(X, ("arrival",), source="sessions")
        arrival = utc_times(X, "arrival", source="sessions", allow_nat=False)
        lo, hi = self._window(arrival, start, end, tz)
        inside = ((arrival >= lo) & (arrival < hi)).to_numpy()
        if not inside.any():
            raise ForecastError(f"sessions: no arrival inside the window [{lo}, {hi})")
        rows = X.loc[inside]
        times = pd.DatetimeIndex(arrival[inside])
        site = _site_ids(rows)
        self.sites_ = tuple(sorted(set(site)))
        site_idx = np.searchsorted(np.array(self.sites_, dtype=object), site)
        n_bins = WEEK_S // step_s
        grid = pd.date_range(lo, hi, freq=pd.Timedelta(seconds=step_s), inclusive="left")
        exposure = np.bincount(
            time_of_week_bin(grid, timezone=tz, step_s=step_s), minlength=n_bins
        ).astype(np.float64)
        bins = time_of_week_bin(times, timezone=tz, step_s=step_s)
        counts = np.zeros((len(self.sites_), n_bins))
        np.add.at(counts, (site_idx, bins), 1.0)
        sigma = self.smoothing_h * 3600.0 / step_s
        smooth_exposure = circular_smooth(exposure, sigma)
        self.rate_ = circular_smooth(counts, sigma) / np.maximum(smooth_exposure, 1e-12)
        self.exposure_ = exposure
        self.step_s_ = step_s
        self.window_ = (lo, hi)
        energy = np.full(len(rows), np.nan)
        if "energy_kwh" in rows:
            energy = pd.to_numeric(rows["energy_kwh"], errors="coerce").to_numpy(dtype=np.float64)
        hours = times.tz_convert(tz).hour.to_numpy()
        self._fit_energy(site_idx, hours, energy, quantiles)
        dwell_h = np.full(len(rows), np.nan)
        if "departure" in rows:
            departure = utc_times(rows, "departure", source="sessions", allow_nat=True)
            dwell_h = ((departure - arrival[inside]).dt.total_seconds() / 3600.0).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        self.dwell_h_median_ = self._median_by_hour(site_idx, hours, dwell_h)
        self.quantiles_ = quantiles
        return self

    def _window(
        self, arrival: pd.Series, start: object, end: object, tz: str
    ) -> tuple[pd.Timestamp, pd.Timestamp]:
        if start is None:
            lo = (
                arrival.min().tz_convert(tz).floor("D", ambiguous=True, nonexistent="shift_forward")
            )
        else:
            lo = utc_timestamp(start, name="start")
        if end is None:
            hi = (
                arrival.max().tz_convert(tz).floor("D", ambiguous=True, nonexistent="shift_forward")
            )
            hi = hi + pd.Timedelta(days=1)
        else:
            hi = utc_timestamp(end, name="end")
        lo, hi = lo.tz_convert("UTC"), hi.tz_convert("UTC")
        if not lo < hi:
            raise ForecastError(f"end: must be after start ({lo}), got {hi}")
        return lo, hi

    def _fit_energy(
        self,
        site_idx: NDArray[np.intp],
        hours: NDArray[np.int_],
        energy: NDArray[np.float64],
        quantiles: tuple[float, ...],
    ) -> None:
        n_sites = len(self.sites_)
        mean = np.full((n_sites, 24), np.nan)
        qs = np.full((n_sites, 24, len(quantiles)), np.nan)
        pool: dict[tuple[int, int], NDArray[np.float64]] = {}
        known = np.isfinite(energy)
        for s in range(n_sites):
            at_site = known & (site_idx == s)
            everyone = energy[at_site]
            for h in range(24):
                values = energy[at_site & (hours == h)]
                if values.size < self.min_sessions:
                    values = everyone
                if values.size:
                    mean[s, h] = values.mean()
                    qs[s, h] = np.quantile(values, quantiles)
                    pool[(s, h)] = values
        self.energy_mean_kwh_ = mean
        self.energy_quantiles_kwh_ = qs
        self.energy_pool_kwh_ = pool

    def _median_by_hour(
        self, site_idx: NDArray[np.intp], hours: NDArray[np.int_], values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        out = np.full((len(self.sites_), 24), np.nan)
        known = np.isfinite(values)
        for s in range(len(self.sites_)):
            at_site = known & (site_idx == s)
            for h in range(24):
                chosen = values[at_site & (hours == h)]
                if chosen.size < self.min_sessions:
                    chosen = values[at_site]
                if chosen.size:
                    out[s, h] = np.median(chosen)
        return out

    def predict(
        self, index: pd.DatetimeIndex, *, sites: tuple[str, ...] | None = None
    ) -> pd.DataFrame:
        """Expected arrivals in each step starting at ``index``, per site.

        Parameters
        ----------
        index : pandas.DatetimeIndex
            Step starts (tz-aware); each step lasts the fitted ``step``.
        sites : tuple of str, optional
            Sites to forecast (default: all fitted sites).

        Returns
        -------
        pandas.DataFrame
            Indexed by (``site_id``, ``time``): ``arrivals`` (expected EVs arriving in the step),
            ``energy_kwh_mean`` and ``energy_kwh_qNN`` (energy per arriving EV [kWh]) and
            ``expected_energy_kwh`` = arrivals x mean [kWh], and ``dwell_h_median`` (median
            dwell of an EV arriving then [h], NaN if no departure was seen).

        Raises
        ------
        ForecastError
            If ``index`` is not tz-aware or a site is unknown.
        """
        check_is_fitted(self, "rate_")
        times = utc_index(index, name="index")
        chosen = self.sites_ if sites is None else tuple(sites)
        unknown = [s for s in chosen if s not in self.sites_]
        if unknown:
            raise ForecastError(
                f"sites: unknown site {unknown[0]!r}, expected one of {self.sites_}"
            )
        bins = time_of_week_bin(times, timezone=self.timezone, step_s=self.step_s_)
        hours = times.tz_convert(self.timezone).hour.to_numpy()
        frames = []
        for name in chosen:
            s = self.sites_.index(name)
            data = {
                "arrivals": self.rate_[s, bins],
                "energy_kwh_mean": self.energy_mean_kwh_[s, hours],
            }
            for j, q in enumerate(self.quantiles_):
                data[f"energy_kwh_{quantile_label(q)}"] = self.energy_quantiles_kwh_[s, hours, j]
            data["expected_energy_kwh"] = data["arrivals"] * data["energy_kwh_mean"]
            data["dwell_h_median"] = self.dwell_h_median_[s, hours]
            index_s = pd.MultiIndex.from_arrays(
                [np.full(len(times), name, dtype=object), times], names=["site_id", "time"]
            )
            frames.append(pd.DataFrame(data, index=index_s))
        return pd.concat(frames)

    def sample(self, index: pd.DatetimeIndex) -> pd.DataFrame:
        """Draw arrivals for the steps starting at ``index``: a scenario of future sessions.

        Counts are Poisson with the fitted rate, arrival times uniform within the step, energies
        drawn from the sessions seen at that site and local hour. Reproducible with
        ``random_state``.

        Returns
        -------
        pandas.DataFrame
            ``site_id``, ``arrival`` (UTC) and ``energy_kwh`` [kWh] (NaN where no energy was seen),
            sorted by arrival.
        """
        check_is_fitted(self, "rate_")
        times = utc_index(index, name="index")
        rng = np.random.default_rng(self.random_state)
        bins = time_of_week_bin(times, timezone=self.timezone, step_s=self.step_s_)
        hours = times.tz_convert(self.timezone).hour.to_numpy()
        rows: list[pd.DataFrame] = []
        for s, name in enumerate(self.sites_):
            counts = rng.poisson(self.rate_[s, bins])
            which = np.repeat(np.arange(len(times)), counts)
            offset_s = rng.uniform(0.0, self.step_s_, which.size)
            energy = np.array(
                [_draw(rng, self.energy_pool_kwh_.get((s, int(hours[i])))) for i in which]
            )
            rows.append(
                pd.DataFrame(
                    {
                        "site_id": name,
                        "arrival": times[which] + pd.to_timedelta(offset_s, unit="s"),
                        "energy_kwh": energy if which.size else np.zeros(0),
                    }
                )
            )
        out = pd.concat(rows, ignore_index=True)
        return out.sort_values("arrival", kind="stable").reset_index(drop=True)


def _draw(rng: np.random.Generator, pool: NDArray[np.float64] | None) -> float:
    return float(rng.choice(pool)) if pool is not None and pool.size else float("nan")


def _site_ids(rows: pd.DataFrame) -> NDArray[np.object_]:
    if "site_id" not in rows:
        return np.full(len(rows), "site", dtype=object)
    ids = rows["site_id"]
    if ids.isna().any():
        raise ForecastError("sessions: column 'site_id' has a missing value")
    return ids.astype(str).to_numpy(dtype=object)
