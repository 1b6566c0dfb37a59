"""Figures of replay results, and ``ampflow plot``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle, StepPatch
from typer.testing import CliRunner

from ampflow import scenarios
from ampflow.gateway.cli import app
from ampflow.scenarios import load_scenario
from ampflow.scenarios.plots import (
    PlotError,
    plot_costs,
    plot_policies,
    plot_result,
    plot_sessions,
    plot_site_load,
)
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.results import write_result
from ampflow.scenarios.simulator import simulate

from .conftest import write_scenario

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, xr.Dataset]:
    """The tiny scenario with a 10 kW DR cap from 02:00 to 03:00 local time."""
    events = pd.DataFrame(
        [
            {
                "site_id": "depot",
                "start": "2026-03-02T02:00:00+01:00",
                "end": "2026-03-02T03:00:00+01:00",
                "cap_kw": 10.0,
            }
        ]
    )
    path = write_scenario(tmp_path_factory.mktemp("plots"), tables={"events": events})
    sc = load_scenario(path)
    return {name: simulate(sc, make_policy(name)) for name in ("uncontrolled", "llf")}


def _patch(ax: Axes, label: str) -> StepPatch | None:
    found = [c for c in ax.get_children() if isinstance(c, StepPatch) and c.get_label() == label]
    return found[0] if found else None


def _when(x: float) -> pd.Timestamp:
    """A matplotlib date number (days since 1970, UTC) as a timestamp."""
    return pd.Timestamp("1970-01-01", tz="UTC") + pd.to_timedelta(round(x * 86400), unit="s")


def test_site_load_draws_load_limit_and_price_on_one_time_axis(
    results: dict[str, xr.Dataset],
) -> None:
    ds = results["llf"]
    fig = plot_site_load(ds)
    load_ax, price_ax = fig.axes
    assert load_ax.get_shared_x_axes().joined(load_ax, price_ax)
    load, limit = _patch(load_ax, "net import"), _patch(load_ax, "limit (DR included)")
    assert load is not None
    assert limit is not None
    np.testing.assert_allclose(load.get_data()[0], ds["site_power_kw"].sel(site="depot"))
    np.testing.assert_allclose(limit.get_data()[0], ds["site_limit_kw"].sel(site="depot"))
    price = _patch(price_ax, "import")
    assert price is not None
    values, edges, _ = price.get_data()
    np.testing.assert_allclose(values, ds["site_price"].sel(site="depot"))
    # The step edges run from the first step's start (local midnight) to the last step's end.
    assert len(edges) == ds.sizes["time"] + 1
    assert _when(edges[0]) == pd.Timestamp("2026-03-02T00:00:00+01:00")
    assert _when(edges[-1]) == pd.Timestamp("2026-03-02T06:00:00+01:00")


def test_site_load_time_axis_is_local_time(results: dict[str, xr.Dataset]) -> None:
    fig = plot_site_load(results["llf"])
    fig.canvas.draw()
    price_ax = fig.axes[1]
    labels = [t.get_text() for t in price_ax.get_xticklabels()]
    # The scenario starts at local midnight (23:00 UTC the day before): local ticks read 01:00...
    assert labels[0] == "Mar-02"
    assert labels[1:4] == ["01:00", "02:00", "03:00"]
    assert "Europe/Amsterdam" in price_ax.get_xlabel()


def test_dr_window_is_shaded_where_the_event_is(results: dict[str, xr.Dataset]) -> None:
    fig = plot_site_load(results["llf"])
    spans = [c for c in fig.axes[0].get_children() if isinstance(c, Rectangle)]
    spans = [r for r in spans if r.get_label() == "DR event"]
    assert len(spans) == 1
    lo, hi = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    start = pd.Timestamp("2026-03-02T01:00:00Z")  # 02:00 local
    assert _when(lo) == start
    assert _when(hi) == start + pd.Timedelta(hours=1)


def test_over_limit_is_highlighted_only_when_a_limit_is_exceeded(
    results: dict[str, xr.Dataset],
) -> None:
    unc, llf = results["uncontrolled"], results["llf"]
    assert unc.attrs["over_limit_kwh"] > 0
    assert llf.attrs["over_limit_kwh"] == 0
    over = _patch(plot_site_load(unc).axes[0], "over limit")
    assert over is not None
    power = unc["site_power_kw"].sel(site="depot").to_numpy()
    limit = unc["site_limit_kw"].sel(site="depot").to_numpy()
    values, _, baseline = over.get_data()
    np.testing.assert_allclose(values - baseline, np.maximum(power - limit, 0.0))
    assert _patch(plot_site_load(llf).axes[0], "over limit") is None


def test_site_load_rejects_an_unknown_site(results: dict[str, xr.Dataset]) -> None:
    with pytest.raises(PlotError, match=r"site: expected one of \['depot'\], got 'nope'"):
        plot_site_load(results["llf"], site="nope")


def test_sessions_sorted_by_request_with_unmet_highlighted(
    results: dict[str, xr.Dataset],
) -> None:
    ds = results["llf"].copy()
    # Make the smaller session short by 2 kWh, so exactly one bar is red.
    delivered = ds["energy_delivered_kwh"].to_numpy().copy()
    small = int(np.argmin(ds["energy_requested_kwh"].to_numpy()))
    delivered[small] -= 2.0
    ds["energy_delivered_kwh"] = ("session", delivered)
    ax = plot_sessions(ds).axes[0]
    containers = {c.get_label(): c for c in ax.containers}
    requested = sorted(ds["energy_requested_kwh"].to_numpy())
    np.testing.assert_allclose([b.get_height() for b in containers["requested"]], requested)
    short = [b.get_height() for b in containers["delivered, short"]]
    np.testing.assert_allclose(short, [delivered[small]])
    assert len(containers["delivered"]) == len(requested) - 1
    assert "1 of 2 sessions fully served" in ax.get_title()


def test_policies_overlay_and_cost_breakdown(results: dict[str, xr.Dataset]) -> None:
    ax = plot_policies(results, start="2026-03-02 01:00", end="2026-03-02 04:00").axes[0]
    for name, ds in results.items():
        patch = _patch(ax, name)
        assert patch is not None
        window = ds["site_power_kw"].sel(site="depot").to_numpy()[4:16]  # 01:00..04:00 local
        np.testing.assert_allclose(patch.get_data()[0], window)
    with pytest.raises(PlotError, match="start/end"):
        plot_policies(results, start="2030-01-01")
    costs = plot_costs(results).axes[0]
    totals = next(c for c in costs.collections if c.get_label() == "total cost")
    offsets = np.asarray(totals.get_offsets())
    np.testing.assert_allclose(offsets[:, 1], [ds.attrs["total_cost"] for ds in results.values()])


def test_plot_result_writes_pngs_from_a_netcdf_file(
    results: dict[str, xr.Dataset], tmp_path: Path
) -> None:
    nc = write_result(results["uncontrolled"], tmp_path / "run.nc")
    paths = plot_result(nc, tmp_path / "figs")
    assert [p.name for p in paths] == [
        "tiny_uncontrolled_site_load_depot.png",
        "tiny_uncontrolled_sessions.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert p.stat().st_size > 10_000


def test_plot_result_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no such file"):
        plot_result(tmp_path / "missing.nc", tmp_path)
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf", encoding="utf-8")
    with pytest.raises(PlotError, match=r"cannot read .* as a netCDF result"):
        plot_result(bad, tmp_path)
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("t", [1.0, 2.0])}).to_netcdf(other)
    with pytest.raises(PlotError, match="missing variable 'site_power_kw'"):
        plot_result(other, tmp_path)


def test_cli_plot_prints_the_paths(results: dict[str, xr.Dataset], tmp_path: Path) -> None:
    nc = write_result(results["llf"], tmp_path / "run.nc")
    out = CliRunner().invoke(app, ["plot", str(nc), "--out", str(tmp_path / "figs")])
    assert out.exit_code == 0, out.output
    printed = out.output.split()
    assert len(printed) == 2
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "figs" for p in printed)
    # Default: beside the result.
    out = CliRunner().invoke(app, ["plot", str(nc)])
    assert out.exit_code == 0, out.output
    assert all(Path(p).parent == tmp_path for p in out.output.split())


def test_cli_plot_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["plot", str(tmp_path / "missing.nc")])
    assert out.exit_code == 2
    assert "no such file" in out.output
    assert "Traceback" not in out.output


def test_importing_the_package_does_not_load_matplotlib() -> None:
    code = (
        "import sys, ampflow.scenarios as s; "
        "assert 'matplotlib' not in sys.modules, 'loaded early'; "
        "f = s.plot_site_load; "
        "assert 'matplotlib' in sys.modules and f.__module__ == 'ampflow.scenarios.plots'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(AttributeError, match="no attribute 'plot_nothing'"):
        getattr(scenarios, "plot_nothing")  # noqa: B009
