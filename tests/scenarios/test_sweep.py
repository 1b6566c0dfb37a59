"""Sweeps on Dask: spec checking, scenario variants, the combined result and ``ampflow sweep``."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
from distributed import Client, LocalCluster, default_client
from typer.testing import CliRunner

from ampflow.gateway.cli import app
from ampflow.scenarios import bundled_scenario, load_scenario
from ampflow.scenarios import sweep as sweep_module
from ampflow.scenarios.policies import make_policy
from ampflow.scenarios.results import read_result, write_result
from ampflow.scenarios.simulator import simulate
from ampflow.scenarios.sweep import (
    SweepError,
    load_sweep_spec,
    parse_sweep_spec,
    run_sweep,
    scale_scenario,
    sweep_client,
    sweep_table,
)

from .conftest import write_scenario

IMPORT_KW = 40.0  # the tiny scenario's grid connection


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenario(tmp_path_factory.mktemp("sweep") / "tiny")


@pytest.fixture(scope="module")
def grid(tiny_path: Path) -> dict[str, Any]:
    return {
        "name": "tiny-grid",
        "scenarios": [str(tiny_path)],
        "policies": ["uncontrolled", "llf"],
        "capacity_scale": [1.0, 0.25],
        "price_scale": [1.0, 2.0],
    }


@pytest.fixture(scope="module")
def result(grid: dict[str, Any]) -> xr.Dataset:
    """The tiny grid on the default local cluster."""
    return run_sweep(parse_sweep_spec(grid))


def _run(ds: xr.Dataset, **where: Any) -> xr.Dataset:
    mask = np.ones(ds.sizes["run"], dtype=bool)
    for key, value in where.items():
        mask &= ds[key].to_numpy() == value
    assert mask.sum() == 1, where
    return ds.isel(run=int(np.flatnonzero(mask)[0]))


# -- the spec ------------------------------------------------------------------------------------
def test_spec_expands_policy_parameters_into_runs(tiny_path: Path) -> None:
    spec = parse_sweep_spec(
        {
            "scenarios": [str(tiny_path), "v2g-depot"],
            "policies": ["llf", {"name": "mpc", "replan_s": [300, 900], "horizon_h": 12}],
            "capacity_scale": 0.5,
        }
    )
    assert spec.scenarios == (tiny_path, bundled_scenario("v2g-depot"))
    labels = [p.label for p in spec.policies]
    assert labels == ["llf", "mpc horizon_h=12 replan_s=300", "mpc horizon_h=12 replan_s=900"]
    runs = spec.runs()
    assert len(runs) == 2 * 3
    assert {r.capacity_scale for r in runs} == {0.5}
    assert dict(runs[2].policy.params) == {"horizon_h": 12, "replan_s": 900}


def test_the_example_spec_is_valid() -> None:
    spec = load_sweep_spec(Path(__file__).resolve().parents[2] / "notebooks" / "sweep-depot.yaml")
    assert spec.name == "depot-capacity-and-price"
    assert len(spec.runs()) == 1 * 3 * 3 * 2


def test_relative_scenario_paths_are_read_from_the_spec_folder(
    tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = tiny_path.parent.parent / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump({"scenarios": ["tiny/scenario.yaml"], "policies": ["edf"]}),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    spec = load_sweep_spec(spec_path)
    assert spec.scenarios == (tiny_path,)
    assert spec.name == "spec"


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"scenarios": None}, "scenarios", "is required"),
        ({"policies": None}, "policies", "is required"),
        ({"scenario": ["x"]}, "scenario", "unknown key"),
        ({"scenarios": []}, "scenarios", "expected a non-empty list"),
        ({"scenarios": ["no-such-place"]}, "scenarios[0]", "not a bundled scenario"),
        ({"scenarios": [3]}, "scenarios[0]", "expected a scenario path"),
        ({"policies": ["llf", "fifo"]}, "policies[1].name", "expected one of"),
        ({"policies": [{"replan_s": 300}]}, "policies[0].name", "is required"),
        ({"policies": [{"name": "mpc", "replan": 300}]}, "policies[0]", "bad parameters"),
        ({"policies": [{"name": "mpc", "replan_s": []}]}, "policies[0].replan_s", "non-empty"),
        ({"capacity_scale": [1.0, 0]}, "capacity_scale[1]", "a number > 0, got 0"),
        ({"price_scale": ["x"]}, "price_scale[0]", "a number >= 0, got 'x'"),
        ({"export_price_scale": [True]}, "export_price_scale[0]", "a number >= 0"),
        ({"series": "yes"}, "series", "expected true or false"),
        ({"name": ""}, "name", "a non-empty string"),
    ],
)
def test_bad_spec_names_the_key(
    grid: dict[str, Any], change: dict[str, Any], key: str, expected: str
) -> None:
    raw = {k: v for k, v in {**grid, **change}.items() if v is not None}
    pattern = rf"^spec\.yaml: {re.escape(key)}: .*{re.escape(expected)}"
    with pytest.raises(SweepError, match=pattern) as err:
        parse_sweep_spec(raw, source="spec.yaml")
    assert err.value.key == key


def test_unreadable_spec_files(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="cannot read"):
        load_sweep_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios: [unclosed", encoding="utf-8")
    with pytest.raises(SweepError, match="not valid YAML"):
        load_sweep_spec(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(SweepError, match="expected a mapping of sweep keys"):
        load_sweep_spec(bad)


# -- scenario variants ---------------------------------------------------------------------------
def test_scale_scenario_scales_the_connection_and_prices_only() -> None:
    sc = load_scenario(bundled_scenario("caltech-week-dr"))
    small = scale_scenario(sc, capacity_scale=0.5, price_scale=3.0, export_price_scale=0.0)
    site, orig = small.sites[0], sc.sites[0]
    assert site.import_kw == orig.import_kw * 0.5
    assert orig.phase_a is not None
    assert site.phase_a == tuple(a * 0.5 for a in orig.phase_a)
    assert site.nodes == orig.nodes
    assert site.chargers == orig.chargers
    root = small.topology.site_root_row
    np.testing.assert_allclose(small.topology.b_import[root], sc.topology.b_import[root] * 0.5)
    np.testing.assert_array_equal(small.cap_kw, sc.cap_kw)  # DR caps are absolute kW
    np.testing.assert_allclose(small.import_price, sc.import_price * 3.0)
    np.testing.assert_array_equal(small.export_price, 0.0)
    assert small.topology.connector_ids == sc.topology.connector_ids
    assert sc.sites[0].import_kw == 150.0  # the original is untouched
    assert scale_scenario(sc) is sc
    with pytest.raises(SweepError, match="capacity_scale: expected a number > 0, got 0"):
        scale_scenario(sc, capacity_scale=0.0)


# -- running -------------------------------------------------------------------------------------
def test_sweep_result_has_one_run_per_combination(result: xr.Dataset) -> None:
    assert result.sizes["run"] == 2 * 2 * 2
    table = sweep_table(result)
    combos = set(zip(table.policy, table.capacity_scale, table.price_scale, strict=True))
    assert len(combos) == 8
    assert set(table.scenario) == {"tiny"}
    assert result["peak_kw"].attrs["units"] == "kW"
    assert result["site_power_kw"].dims == ("run", "time", "site")
    assert result.attrs["timezone"] == "Europe/Amsterdam"


def test_controlled_policy_holds_each_scaled_connection(result: xr.Dataset) -> None:
    for scale in (1.0, 0.25):
        llf = _run(result, policy="llf", capacity_scale=scale, price_scale=1.0)
        assert float(llf["over_limit_kwh"]) == 0.0
        assert float(llf["issued_over_limit_kwh"]) == 0.0
        assert float(llf["peak_kw"]) <= IMPORT_KW * scale + 1e-6
        np.testing.assert_allclose(llf["site_limit_kw"], IMPORT_KW * scale)
    full = _run(result, policy="llf", capacity_scale=1.0, price_scale=1.0)
    small = _run(result, policy="llf", capacity_scale=0.25, price_scale=1.0)
    assert float(small["peak_kw"]) < float(full["peak_kw"])
    assert float(small["energy_delivered_kwh"]) <= float(full["energy_delivered_kwh"])


def test_uncontrolled_ignores_the_connection_and_exceeds_the_small_one(
    result: xr.Dataset,
) -> None:
    full = _run(result, policy="uncontrolled", capacity_scale=1.0, price_scale=1.0)
    small = _run(result, policy="uncontrolled", capacity_scale=0.25, price_scale=1.0)
    np.testing.assert_array_equal(full["site_power_kw"], small["site_power_kw"])
    assert float(small["over_limit_kwh"]) > float(full["over_limit_kwh"])
    assert float(small["peak_kw"]) > IMPORT_KW * 0.25


def test_price_scale_scales_energy_cost_of_price_blind_policies(result: xr.Dataset) -> None:
    for policy in ("uncontrolled", "llf"):
        base = _run(result, policy=policy, capacity_scale=1.0, price_scale=1.0)
        dear = _run(result, policy=policy, capacity_scale=1.0, price_scale=2.0)
        np.testing.assert_allclose(float(dear["energy_cost"]), 2 * float(base["energy_cost"]))
        np.testing.assert_array_equal(dear["site_power_kw"], base["site_power_kw"])


def test_sweep_runs_match_a_direct_replay(tiny_path: Path, result: xr.Dataset) -> None:
    variant = scale_scenario(load_scenario(tiny_path), capacity_scale=0.25, price_scale=2.0)
    direct = simulate(variant, make_policy("llf"))
    run = _run(result, policy="llf", capacity_scale=0.25, price_scale=2.0)
    for key in ("energy_delivered_kwh", "total_cost", "peak_kw", "jain_fairness"):
        np.testing.assert_allclose(float(run[key]), direct.attrs[key], err_msg=key)
    np.testing.assert_allclose(run["site_power_kw"], direct["site_power_kw"])


def test_sweep_result_round_trips_through_netcdf(result: xr.Dataset, tmp_path: Path) -> None:
    back = read_result(write_result(result, tmp_path / "sweep.nc"))
    xr.testing.assert_identical(back.drop_vars("time"), result.drop_vars("time"))
    np.testing.assert_array_equal(back["time"].to_numpy(), result["time"].to_numpy())


def test_series_are_left_out_when_asked_or_when_time_axes_differ(tiny_path: Path) -> None:
    no_series = parse_sweep_spec(
        {"scenarios": [str(tiny_path)], "policies": ["edf"], "series": False}
    )
    assert "site_power_kw" not in run_sweep(no_series, threads=1).variables
    other = write_scenario(tiny_path.parent.parent / "longer", hours=8)
    mixed = parse_sweep_spec({"scenarios": [str(tiny_path), str(other)], "policies": ["edf"]})
    ds = run_sweep(mixed, threads=1)
    assert ds.sizes["run"] == 2
    assert "site_power_kw" not in ds.variables
    assert np.isfinite(ds["energy_delivered_kwh"]).all()


def test_the_local_cluster_is_shut_down_after_a_sweep(tiny_path: Path) -> None:
    spec = parse_sweep_spec({"scenarios": [str(tiny_path)], "policies": ["edf"]})
    assert run_sweep(spec).sizes["run"] == 1
    with pytest.raises(ValueError, match="No clients found"):
        default_client()  # type: ignore[no-untyped-call]
    lingering = [t.name for t in threading.enumerate() if not t.daemon]
    assert lingering == [threading.main_thread().name]


@pytest.fixture
def tcp_cluster() -> Iterator[LocalCluster]:
    """A separate cluster on loopback, as a user's existing cluster would be."""
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    ) as cluster:
        yield cluster


def test_scheduler_address_runs_on_an_existing_cluster(
    grid: dict[str, Any], result: xr.Dataset, tcp_cluster: LocalCluster
) -> None:
    address = tcp_cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    remote = run_sweep(parse_sweep_spec(grid), scheduler=address)
    xr.testing.assert_allclose(remote.drop_vars(_TIMING), result.drop_vars(_TIMING))
    # The cluster is left running for its owner; the sweep's client is gone.
    with Client(address) as client:  # type: ignore[no-untyped-call]
        assert client.scheduler_info()["workers"]


_TIMING = ["decision_ms_mean", "decision_ms_p95", "decision_ms_max"]


def test_unreachable_scheduler_is_a_named_error() -> None:
    with (
        pytest.raises(SweepError, match=r"scheduler: cannot connect to 'tcp://127.0.0.1:9'") as err,
        sweep_client(scheduler="tcp://127.0.0.1:9", timeout_s=0.5),
    ):
        pass
    assert err.value.key == "scheduler"


def test_a_policy_error_names_the_run(tiny_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        name = "broken"
        needs_truth = False

        def reset(self, context: Any) -> None:
            pass

        def decide(self, obs: Any) -> Any:
            return np.zeros(1)  # wrong shape: the simulator refuses it

    def fake(name: str, **params: Any) -> Any:
        return Broken() if name == "edf" else make_policy(name, **params)

    monkeypatch.setattr(sweep_module, "make_policy", fake)
    spec = parse_sweep_spec({"scenarios": [str(tiny_path)], "policies": ["llf", "edf"]})
    with pytest.raises(SweepError, match=r"run 1 \(tiny / edf\): .*must return 4") as err:
        run_sweep(spec, threads=1)
    assert err.value.key == "run 1"


# -- the command ---------------------------------------------------------------------------------
def test_cli_sweep_json_and_netcdf(grid: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump({**grid, "price_scale": [1.0]}), encoding="utf-8")
    out = tmp_path / "grid.nc"
    res = CliRunner().invoke(app, ["sweep", str(spec), "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["sweep"] == "tiny-grid"
    runs = doc["runs"]
    assert len(runs) == 4
    for run in runs:
        if run["policy"] == "llf":
            assert run["over_limit_kwh"] == 0.0
            assert run["peak_kw"] <= IMPORT_KW * run["capacity_scale"] + 1e-6
    assert read_result(out).sizes["run"] == 4


def test_cli_sweep_table(grid: dict[str, Any], tmp_path: Path) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump({**grid, "price_scale": 1.0}), encoding="utf-8")
    res = CliRunner().invoke(app, ["sweep", str(spec), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "sweep tiny-grid: 4 runs" in res.output
    assert res.output.count("uncontrolled") == 2


def test_cli_sweep_bad_spec_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        yaml.safe_dump({"scenarios": ["v2g-depot"], "policies": ["llf"], "capacity_scale": -1}),
        encoding="utf-8",
    )
    res = CliRunner().invoke(app, ["sweep", str(spec)])
    assert res.exit_code == 2
    assert "capacity_scale[0]" in res.output
    assert "Traceback" not in res.output
