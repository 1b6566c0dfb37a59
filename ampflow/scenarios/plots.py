"""Figures of replay results: site load against its limit, per-session energy, policy comparisons.

Every function takes result datasets (:func:`ampflow.scenarios.results.to_dataset`) and returns
a :class:`matplotlib.figure.Figure` drawn on the Agg canvas: nothing is shown and no global
pyplot state is touched, so the functions are safe in scripts, servers and tests. In a notebook a
returned figure displays itself (the inline backend renders any ``Figure``); :func:`plot_result`
writes the PNGs behind ``ampflow plot``.

Time axes are labelled in the scenario's local time zone (``ds.attrs["timezone"]``); the data
stay in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from ampflow.engine.errors import AmpflowError
from ampflow.scenarios.results import SERVED_TOL_KWH, read_result

__all__ = [
    "plot_costs",
    "plot_policies",
    "plot_result",
    "plot_sessions",
    "plot_site_load",
]

FloatArray = NDArray[np.float64]

_LOAD = "#1f5fa8"
_LIMIT = "#202020"
_OVER = "#d62728"
_DR = "#f2b134"
_REQUESTED = "#c9d3df"
_COST_PARTS = (
    ("energy_cost", "energy", "#1f5fa8"),
    ("demand_charge", "demand charge", "#7aa6d8"),
    ("degradation_cost", "degradation", "#8c564b"),
)
_RESULT_VARIABLES = (
    "site_power_kw",
    "site_limit_kw",
    "dr_active",
    "site_price",
    "export_price",
    "energy_requested_kwh",
    "energy_delivered_kwh",
)


class PlotError(AmpflowError):
    """A result cannot be plotted (missing variable, unknown site, unreadable file)."""


def plot_site_load(ds: xr.Dataset, *, site: str | None = None) -> Figure:
    """Site load against its binding limit, DR windows shaded, with the price underneath.

    Parameters
    ----------
    ds : xarray.Dataset
        A replay result.
    site : str, optional
        Site id; default the dataset's first site.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes on a shared time axis in local time: net import [kW] (step plot) with the
        limit [kW] and any excess over it, and the import (and export) price [currency/kWh].

    Raises
    ------
    PlotError
        If ``site`` is not in the dataset or a required variable is missing.

    Examples
    --------
    >>> from ampflow.scenarios import bundled_scenario, load_scenario
    >>> from ampflow.scenarios.policies import make_policy
    >>> from ampflow.scenarios.simulator import simulate
    >>> sc = load_scenario(bundled_scenario("v2g-depot"))
    >>> fig = plot_site_load(simulate(sc, make_policy("llf")))
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['net import [kW]', 'price [currency/kWh]']
    """
    _require(ds, ("site_power_kw", "site_limit_kw", "dr_active", "site_price", "export_price"))
    site = _site(ds, site)
    one = ds.sel(site=site)
    t, tz = _time_edges(ds), _tz(ds)
    fig = _figure(figsize=(11, 6))
    load_ax, price_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    power = one["site_power_kw"].to_numpy()
    limit = one["site_limit_kw"].to_numpy().astype(np.float64)
    limit = np.where(np.isfinite(limit), limit, np.nan)
    for ax in (load_ax, price_ax):
        _shade(ax, t, one["dr_active"].to_numpy().astype(bool), label=ax is load_ax)
    _step(load_ax, t, power, color=_LOAD, label="net import")
    _step(load_ax, t, limit, color=_LIMIT, linestyle="--", label="limit (DR included)")
    over = power > np.nan_to_num(limit, nan=np.inf) + 1e-6
    if over.any():
        base = np.where(over, limit, power)
        load_ax.stairs(
            power, t, baseline=base, fill=True, color=_OVER, alpha=0.6, label="over limit"
        )
    if (power < 0).any():
        load_ax.axhline(0.0, color=_LIMIT, linewidth=0.6)
    load_ax.set_ylabel("net import [kW]")
    load_ax.legend(loc="best", fontsize="small")
    _step(price_ax, t, one["site_price"].to_numpy(), color=_LIMIT, label="import")
    export = one["export_price"].to_numpy()
    if np.any(export != 0):
        _step(price_ax, t, export, color=_LOAD, linestyle=":", label="export")
        price_ax.legend(loc="best", fontsize="small")
    price_ax.set_ylabel("price [currency/kWh]")
    _time_axis(price_ax, tz)
    load_ax.set_title(f"{_title(ds)}: site {site}")
    return fig


def plot_sessions(ds: xr.Dataset) -> Figure:
    """Energy requested against energy delivered, one bar per session, unmet ones highlighted.

    Sessions are sorted by requested energy; the light bar is the request, the dark bar what was
    delivered (net of V2G discharge), red where the session left short by more than
    ``SERVED_TOL_KWH`` [kWh].

    Parameters
    ----------
    ds : xarray.Dataset
        A replay result.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from ampflow.scenarios import bundled_scenario, load_scenario
    >>> from ampflow.scenarios.policies import make_policy
    >>> from ampflow.scenarios.simulator import simulate
    >>> sc = load_scenario(bundled_scenario("v2g-depot"))
    >>> fig = plot_sessions(simulate(sc, make_policy("llf")))
    >>> fig.axes[0].get_ylabel()
    'energy [kWh]'
    """
    _require(ds, ("energy_requested_kwh", "energy_delivered_kwh"))
    requested = ds["energy_requested_kwh"].to_numpy()
    delivered = ds["energy_delivered_kwh"].to_numpy()
    order = np.argsort(requested, kind="stable")
    requested, delivered = requested[order], delivered[order]
    unmet = delivered < requested - SERVED_TOL_KWH
    x = np.arange(len(requested))
    fig = _figure(figsize=(11, 4.5))
    ax = fig.subplots()
    ax.bar(x, requested, width=1.0, color=_REQUESTED, label="requested")
    ax.bar(x[~unmet], delivered[~unmet], width=0.7, color=_LOAD, label="delivered")
    if unmet.any():
        ax.bar(x[unmet], delivered[unmet], width=0.7, color=_OVER, label="delivered, short")
    ax.set_xlim(-1, max(len(x), 1))
    ax.set_xlabel("session (sorted by requested energy)")
    ax.set_ylabel("energy [kWh]")
    ax.legend(loc="upper left", fontsize="small")
    served = len(x) - int(unmet.sum())
    total = float(requested.sum())
    share = f"{delivered.sum() / total:.1%}" if total > 0 else "n/a"
    ax.set_title(
        f"{_title(ds)}: {served} of {len(x)} sessions fully served, "
        f"{delivered.sum():,.1f} of {total:,.1f} kWh delivered ({share})"
    )
    return fig


def plot_policies(
    results: Mapping[str, xr.Dataset],
    *,
    site: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Figure:
    """Site load of several results of one scenario overlaid, with the limit and DR windows.

    Parameters
    ----------
    results : mapping of str to xarray.Dataset
        Label (e.g. the policy) to result; all on the same time axis.
    site : str, optional
        Site id; default the first site.
    start, end : str, optional
        Local-time bounds of the window to show (e.g. ``"2019-10-08 12:00"``); default all.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    PlotError
        If ``results`` is empty or the results do not share one time axis.
    """
    if not results:
        raise PlotError("results: expected at least one result to plot, got none")
    first = next(iter(results.values()))
    for name, ds in results.items():
        _require(ds, ("site_power_kw", "site_limit_kw", "dr_active"))
        if not np.array_equal(ds["time"].to_numpy(), first["time"].to_numpy()):
            raise PlotError(f"results[{name!r}]: expected the same time axis as the first result")
    site = _site(first, site)
    tz = _tz(first)
    keep = _window(first, tz, start, end)
    fig = _figure(figsize=(11, 5))
    ax = fig.subplots()
    t = _time_edges(first)[np.append(keep, keep[-1] + 1)]
    _shade(ax, t, first["dr_active"].sel(site=site).to_numpy().astype(bool)[keep], label=True)
    limit = first["site_limit_kw"].sel(site=site).to_numpy()[keep]
    _step(ax, t, limit, color=_LIMIT, linestyle="--", label="limit (DR included)")
    for name, ds in results.items():
        _step(ax, t, ds["site_power_kw"].sel(site=site).to_numpy()[keep], label=name)
    ax.set_ylabel("net import [kW]")
    ax.legend(loc="best", fontsize="small")
    _time_axis(ax, tz)
    ax.set_title(f"{first.attrs.get('scenario', '')}: site {site}, policies compared")
    return fig


def plot_costs(results: Mapping[str, xr.Dataset]) -> Figure:
    """Cost breakdown per result: energy, demand charge and degradation up, export revenue down.

    Parameters
    ----------
    results : mapping of str to xarray.Dataset
        Label (e.g. the policy) to result.

    Returns
    -------
    matplotlib.figure.Figure
        Stacked bars [currency] with the net total cost marked on each.
    """
    if not results:
        raise PlotError("results: expected at least one result to plot, got none")
    names = list(results)
    x = np.arange(len(names))
    fig = _figure(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5))
    ax = fig.subplots()
    bottom = np.zeros(len(names))
    for key, label, color in _COST_PARTS:
        values = np.array([float(results[n].attrs[key]) for n in names])
        if np.any(values != 0):
            ax.bar(x, values, bottom=bottom, color=color, label=label)
            bottom += values
    revenue = np.array([float(results[n].attrs["export_revenue"]) for n in names])
    if np.any(revenue > 0):
        ax.bar(x, -revenue, color="#2ca02c", label="export revenue")
    total = np.array([float(results[n].attrs["total_cost"]) for n in names])
    ax.scatter(x, total, marker="D", color=_LIMIT, zorder=3, label="total cost")
    ax.axhline(0.0, color=_LIMIT, linewidth=0.6)
    ax.margins(y=0.08)
    ax.set_xticks(x, names)
    ax.set_ylabel("cost [currency]")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"{next(iter(results.values())).attrs.get('scenario', '')}: costs by policy")
    return fig


def plot_result(path_or_ds: str | Path | xr.Dataset, out_dir: str | Path) -> list[Path]:
    """Write the figures of one result as PNGs: site load per site, and the sessions.

    Parameters
    ----------
    path_or_ds : str, Path or xarray.Dataset
        A result netCDF file (``ampflow replay --out``) or a result dataset.
    out_dir : str or Path
        Folder for the PNGs (created if missing).

    Returns
    -------
    list of Path
        ``{scenario}_{policy}_site_load_{site}.png`` for every site, then
        ``{scenario}_{policy}_sessions.png``.

    Raises
    ------
    PlotError
        If the file cannot be read as a result or lacks what the figures need.
    """
    ds = _open(path_or_ds) if not isinstance(path_or_ds, xr.Dataset) else path_or_ds
    _require(ds, _RESULT_VARIABLES)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlotError(f"out_dir: cannot create {str(out)!r} ({exc.strerror})") from exc
    stem = _slug(f"{ds.attrs.get('scenario', 'result')}_{ds.attrs.get('policy', '')}")
    written = []
    for site in ds["site"].to_numpy().astype(str):
        written.append(
            _save(plot_site_load(ds, site=site), out / f"{stem}_site_load_{_slug(site)}")
        )
    written.append(_save(plot_sessions(ds), out / f"{stem}_sessions"))
    return written


# -- helpers ---------------------------------------------------------------------------------------
def _figure(*, figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, stem: Path) -> Path:
    path = stem.with_suffix(".png")
    fig.savefig(path, dpi=110)
    return path


def _open(path: str | Path) -> xr.Dataset:
    p = Path(path)
    if not p.is_file():
        raise PlotError(f"result: no such file {str(p)!r} (expected a .nc from ampflow replay)")
    try:
        return read_result(p)
    except (OSError, ValueError) as exc:
        raise PlotError(f"result: cannot read {str(p)!r} as a netCDF result ({exc})") from exc


def _require(ds: xr.Dataset, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise PlotError(
            f"result: missing variable {missing[0]!r}; expected a result of ampflow replay "
            f"with {list(names)}"
        )


def _site(ds: xr.Dataset, site: str | None) -> str:
    sites = [str(s) for s in ds["site"].to_numpy()]
    if not sites:
        raise PlotError("result: expected at least one site, got none")
    if site is None:
        return sites[0]
    if site not in sites:
        raise PlotError(f"site: expected one of {sites}, got {site!r}")
    return site


def _tz(ds: xr.Dataset) -> ZoneInfo:
    return ZoneInfo(str(ds.attrs.get("timezone", "UTC")))


def _title(ds: xr.Dataset) -> str:
    return f"{ds.attrs.get('scenario', 'result')} / {ds.attrs.get('policy', '?')}"


def _time_edges(ds: xr.Dataset) -> NDArray[np.datetime64]:
    """Step start times (UTC) plus the end of the last step: ``n_steps + 1`` edges."""
    t = ds["time"].to_numpy().astype("datetime64[ns]")
    step = np.timedelta64(int(ds.attrs.get("step_s", 0)), "s")
    if step == np.timedelta64(0, "s"):
        step = t[1] - t[0] if len(t) > 1 else np.timedelta64(1, "h")
    end = t[-1] + step if len(t) else np.datetime64("1970-01-01", "ns")
    out: NDArray[np.datetime64] = np.append(t, end)
    return out


def _window(ds: xr.Dataset, tz: ZoneInfo, start: str | None, end: str | None) -> NDArray[np.intp]:
    import pandas as pd

    t = pd.DatetimeIndex(ds["time"].to_numpy()).tz_localize("UTC").tz_convert(tz)
    keep = np.ones(len(t), dtype=bool)
    for key, value in (("start", start), ("end", end)):
        if value is None:
            continue
        try:
            bound = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise PlotError(f"{key}: expected a local date-time, got {value!r}") from exc
        bound = bound.tz_localize(tz) if bound.tzinfo is None else bound
        keep &= (t >= bound) if key == "start" else (t < bound)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise PlotError(f"start/end: the window {start!r}..{end!r} holds no step of the result")
    return idx


def _step(ax: Axes, t: NDArray[np.datetime64], y: FloatArray, **kw: object) -> None:
    """A step plot where ``y[k]`` holds from ``t[k]`` to ``t[k + 1]``."""
    ax.stairs(y, t, baseline=None, **kw)  # type: ignore[arg-type]


def _shade(ax: Axes, t: NDArray[np.datetime64], on: NDArray[np.bool_], *, label: bool) -> None:
    """Shade the runs of ``on`` (DR windows)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    for k, (lo, hi) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        ax.axvspan(
            t[lo],
            t[hi],
            color=_DR,
            alpha=0.25,
            linewidth=0,
            label="DR event" if label and not k else None,
        )


def _time_axis(ax: Axes, tz: ZoneInfo) -> None:
    locator = mdates.AutoDateLocator(tz=tz)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=tz)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel(f"local time ({tz.key})")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "result"
