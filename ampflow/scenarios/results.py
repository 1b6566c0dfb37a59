"""Replay results as an ``xarray.Dataset``, their metrics, and netCDF input/output.

The dataset has dims ``time``, ``session`` and ``site``; every variable carries
``attrs["units"]``; the metrics of :func:`metrics` are in ``attrs`` (prefixed nothing, flat,
JSON-friendly numbers and strings), so ``json.dumps(metrics(ds))`` is what ``ampflow replay
--json`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ampflow.scenarios.format import Scenario

__all__ = ["METRICS", "metrics", "read_result", "to_dataset", "write_result"]

FloatArray = NDArray[np.float64]

SERVED_TOL_KWH = 0.01
"""A session counts as fully served when it got its request to within this [kWh]."""

METRICS: dict[str, str] = {
    "energy_requested_kwh": "kWh",
    "energy_delivered_kwh": "kWh",
    "energy_delivered_fraction": "1",
    "sessions_served_share": "1",
    "energy_cost": "currency",
    "export_revenue": "currency",
    "demand_charge": "currency",
    "degradation_cost": "currency",
    "total_cost": "currency",
    "peak_kw": "kW",
    "over_limit_kwh": "kWh",
    "issued_over_limit_kwh": "kWh",
    "dr_compliance": "1",
    "dr_excess_kwh": "kWh",
    "v2g_export_kwh": "kWh",
    "v2g_revenue": "currency",
    "jain_fairness": "1",
    "decision_ms_mean": "ms",
    "decision_ms_p95": "ms",
    "decision_ms_max": "ms",
}


def to_dataset(scenario: Scenario, policy: str, arrays: Mapping[str, FloatArray]) -> xr.Dataset:
    """Assemble the replay arrays into the result dataset, metrics in ``attrs``."""
    sc = scenario
    df = sc.sessions
    times = sc.times.tz_convert("UTC").tz_localize(None)
    sites = list(sc.topology.site_ids)
    dt_h = sc.dt_s / 3600
    delivered = arrays["power"].sum(axis=0) * dt_h

    def var(dims: tuple[str, ...], data: Any, units: str, about: str) -> xr.Variable:
        return xr.Variable(dims, data, attrs={"units": units, "long_name": about})

    def utc(col: str) -> NDArray[np.datetime64]:
        out: NDArray[np.datetime64] = (
            df[col].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        )
        return out

    ds = xr.Dataset(
        {
            "power_kw": var(("time", "session"), arrays["power"], "kW", "EV power, + charging"),
            "site_power_kw": var(
                ("time", "site"), arrays["site_kw"], "kW", "net import at the grid connection"
            ),
            "ev_power_kw": var(("time", "site"), arrays["ev_kw"], "kW", "EV load of the site"),
            "site_limit_kw": var(
                ("time", "site"), arrays["limit"], "kW", "binding import limit, DR included"
            ),
            "base_load_kw": var(("time", "site"), sc.base_load_kw.T, "kW", "base load"),
            "pv_kw": var(("time", "site"), sc.pv_kw.T, "kW", "PV production"),
            "over_limit_kw": var(
                ("time", "site"), arrays["over_kw"], "kW", "drawn power over any limit"
            ),
            "issued_over_limit_kw": var(
                ("time", "site"), arrays["issued_over_kw"], "kW", "issued limits over any limit"
            ),
            "dr_active": var(("time", "site"), sc.dr_active.T.astype(np.int8), "1", "DR cap on"),
            "price": var(("time",), sc.import_price.mean(axis=0), "currency/kWh", "import price"),
            "site_price": var(
                ("time", "site"), sc.import_price.T, "currency/kWh", "import price per site"
            ),
            "export_price": var(
                ("time", "site"), sc.export_price.T, "currency/kWh", "export price per site"
            ),
            "decision_ms": var(("time",), arrays["decision_s"] * 1e3, "ms", "policy compute time"),
            "energy_requested_kwh": var(
                ("session",), df["energy_kwh"].to_numpy(dtype=np.float64), "kWh", "requested"
            ),
            "energy_delivered_kwh": var(("session",), delivered, "kWh", "delivered, net"),
            "energy_discharged_kwh": var(
                ("session",), arrays["discharged"], "kWh", "discharged (V2G)"
            ),
        },
        coords={
            "time": ("time", times, {"timezone": "UTC"}),
            "session": ("session", df["session_id"].astype(str).to_numpy()),
            "site": ("site", np.array(sites, dtype=str)),
            "session_site": ("session", df["site_id"].astype(str).to_numpy()),
            "charger": ("session", df["charger_id"].astype(str).to_numpy()),
            "arrival": ("session", utc("arrival")),
            "departure": ("session", utc("departure")),
        },
    )
    ds.attrs.update(
        {
            "scenario": sc.name,
            "policy": policy,
            "step_s": sc.dt_s,
            "start": sc.start.isoformat(),
            "timezone": sc.timezone,
            "demand_charge_per_kw": sc.demand_charge_per_kw,
            "degradation_per_kwh": sc.degradation_per_kwh,
            "departure_known": int(sc.departure_known),
            "n_sessions": len(df),
            "n_steps": sc.n_steps,
        }
    )
    ds.attrs.update(_compute(ds))
    return ds


def _compute(ds: xr.Dataset) -> dict[str, float]:
    dt_h = float(ds.attrs["step_s"]) / 3600
    site = ds["site_power_kw"].to_numpy()
    imp, exp = np.maximum(site, 0.0), np.maximum(-site, 0.0)
    requested = ds["energy_requested_kwh"].to_numpy()
    delivered = ds["energy_delivered_kwh"].to_numpy()
    discharged = ds["energy_discharged_kwh"].to_numpy()
    peak = imp.max(axis=0, initial=0.0)
    energy_cost = float((ds["site_price"].to_numpy() * imp).sum() * dt_h)
    export_revenue = float((ds["export_price"].to_numpy() * exp).sum() * dt_h)
    demand = float(ds.attrs["demand_charge_per_kw"] * peak.sum())
    degradation = float(ds.attrs["degradation_per_kwh"] * discharged.sum())
    dr = ds["dr_active"].to_numpy().astype(bool)
    limit = ds["site_limit_kw"].to_numpy()
    dr_excess = np.maximum(site - limit, 0.0) * dr
    power = ds["power_kw"].to_numpy()
    v2g = np.maximum(-power, 0.0)
    exp_price = ds["export_price"].to_numpy()
    site_of = {s: i for i, s in enumerate(ds["site"].to_numpy())}
    sess_site = np.array([site_of[s] for s in ds["session_site"].to_numpy()], dtype=np.int64)
    v2g_revenue = float((v2g * exp_price[:, sess_site]).sum() * dt_h) if power.size else 0.0
    asked = requested > 0
    # Clipped before dividing: a tiny request over-delivered by rounding would overflow.
    share = np.clip(delivered[asked], 0.0, requested[asked]) / requested[asked]
    ms = ds["decision_ms"].to_numpy()
    total_req = float(requested.sum())
    return {
        "energy_requested_kwh": total_req,
        "energy_delivered_kwh": float(delivered.sum()),
        "energy_delivered_fraction": float(delivered.sum() / total_req) if total_req else 1.0,
        "sessions_served_share": float(np.mean(delivered >= requested - SERVED_TOL_KWH))
        if len(requested)
        else 1.0,
        "energy_cost": energy_cost,
        "export_revenue": export_revenue,
        "demand_charge": demand,
        "degradation_cost": degradation,
        "total_cost": energy_cost - export_revenue + demand + degradation,
        "peak_kw": float(peak.max(initial=0.0)),
        "over_limit_kwh": float(ds["over_limit_kw"].to_numpy().sum() * dt_h),
        "issued_over_limit_kwh": float(ds["issued_over_limit_kw"].to_numpy().sum() * dt_h),
        "dr_compliance": float(np.mean(dr_excess[dr] <= 1e-6)) if dr.any() else math.nan,
        "dr_excess_kwh": float(dr_excess.sum() * dt_h),
        "v2g_export_kwh": float(discharged.sum()),
        "v2g_revenue": v2g_revenue,
        "jain_fairness": _jain(share),
        "decision_ms_mean": float(ms.mean()) if ms.size else 0.0,
        "decision_ms_p95": float(np.percentile(ms, 95)) if ms.size else 0.0,
        "decision_ms_max": float(ms.max(initial=0.0)),
    }


def _jain(x: FloatArray) -> float:
    """Jain's fairness index of ``x``: 1 when all equal, 1/n when one gets everything."""
    if x.size == 0 or not np.any(x > 0):
        return 1.0
    return float(x.sum() ** 2 / (x.size * np.square(x).sum()))


def metrics(ds: xr.Dataset) -> dict[str, Any]:
    """The metrics of a result, JSON-ready (NaN becomes ``None``), with scenario and policy."""
    out: dict[str, Any] = {"scenario": ds.attrs["scenario"], "policy": ds.attrs["policy"]}
    for key in METRICS:
        v = float(ds.attrs[key])
        out[key] = None if math.isnan(v) else v
    return out


def write_result(ds: xr.Dataset, path: str | Path) -> Path:
    """Write a result as netCDF (``.nc``)."""
    path = Path(path)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def read_result(path: str | Path) -> xr.Dataset:
    """Read a result written by :func:`write_result` (fully loaded, file closed)."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def frame(results: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Metrics of several results as a table, one row per policy."""
    return pd.DataFrame({name: metrics(ds) for name, ds in results.items()}).T
