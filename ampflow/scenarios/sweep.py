"""Sweeps: a grid of scenarios x policies x parameters, replayed as tasks on Dask.

A sweep spec is a YAML file::

    name: capacity-study            # optional, default: the file's stem
    scenarios:                      # required: bundled names or scenario YAML paths
      - caltech-week                #   (a relative path is read from the spec's folder first)
      - sites/depot.yaml
    policies:                       # required: policy names, or a mapping with the policy's
      - llf                         #   name and its parameters; a list of values sweeps them
      - {name: mpc, replan_s: [300, 900]}
    capacity_scale: [0.5, 0.75, 1.0]  # optional, default [1.0]: factor on each grid connection
    price_scale: [1.0, 2.0]           # optional, default [1.0]: factor on import prices
    export_price_scale: 1.0           # optional, default [1.0]: factor on export prices
    series: true                      # optional, default true: keep site_power_kw and
                                      #   site_limit_kw per run when all runs share one time axis

Every combination is one run. ``capacity_scale`` multiplies every site's grid connection limit
(``import_kw``, and ``phase_a`` where given, the same connection in amperes); DR caps and
time-of-day limits are absolute [kW] and stay as the scenario gives them, so the binding limit is
the lower of those and the scaled connection. ``price_scale`` multiplies the import price,
DR price events included. Variants are made in memory with :func:`scale_scenario`; no file is
edited.

:func:`run_sweep` loads and checks every scenario and policy first (a bad spec fails before any
work starts, with an error naming the key), then runs one task per combination on
``dask.distributed``: by default on a :class:`~distributed.LocalCluster` of threads inside this
process (in-process transport: no port is opened, nothing is pickled), or on an existing cluster
given its scheduler address (whose workers must have ``ampflow`` installed; scenarios are
loaded here and scattered to them, so they need not see the files).

The results form one :class:`xarray.Dataset` with a ``run`` dimension: coordinates
``scenario``, ``policy``, ``params``, ``label``, ``capacity_scale``, ``price_scale`` and
``export_price_scale``, one variable per metric of :data:`ampflow.scenarios.results.METRICS`, and
``site_power_kw(run, time, site)`` with ``site_limit_kw`` when ``series`` is on and possible.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from ampflow.engine.errors import AmpflowError
from ampflow.engine.topology import compile_topology
from ampflow.scenarios.bundled import resolve_scenario
from ampflow.scenarios.format import Scenario, load_scenario
from ampflow.scenarios.policies import POLICIES, make_policy
from ampflow.scenarios.results import METRICS, metrics
from ampflow.scenarios.simulator import simulate

__all__ = [
    "PolicyRun",
    "Run",
    "SweepError",
    "SweepSpec",
    "load_sweep_spec",
    "parse_sweep_spec",
    "run_sweep",
    "scale_scenario",
    "sweep_client",
    "sweep_table",
]

_KEYS = (
    "name",
    "scenarios",
    "policies",
    "capacity_scale",
    "price_scale",
    "export_price_scale",
    "series",
)
_SCALES = ("capacity_scale", "price_scale", "export_price_scale")
_COORDS = ("scenario", "policy", "params", "label", *_SCALES)


class SweepError(AmpflowError):
    """A sweep spec, scheduler or run that cannot be used; the message names the key.

    Attributes
    ----------
    key : str
        What failed: a spec key (``"policies[1]"``), ``"scheduler"``, or ``"run N"``.
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class PolicyRun:
    """One policy with one set of parameters.

    Attributes
    ----------
    name : str
        A policy of :data:`ampflow.scenarios.policies.POLICIES`.
    params : tuple of (str, value) pairs
        Keyword parameters for :func:`~ampflow.scenarios.policies.make_policy`, sorted by key.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def params_text(self) -> str:
        """The parameters as ``key=value`` pairs (JSON values), ``""`` if none."""
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.params)

    @property
    def label(self) -> str:
        """The policy name with its parameters, e.g. ``"mpc replan_s=900"``."""
        return f"{self.name} {self.params_text}".strip()


@dataclass(frozen=True)
class Run:
    """One combination of a sweep: a scenario variant replayed under one policy."""

    scenario: Path
    policy: PolicyRun
    capacity_scale: float = 1.0
    price_scale: float = 1.0
    export_price_scale: float = 1.0


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring for the YAML format).

    Attributes
    ----------
    name : str
    scenarios : tuple of Path
        Resolved scenario YAML files.
    policies : tuple of PolicyRun
        Every policy with every combination of its swept parameters.
    capacity_scale, price_scale, export_price_scale : tuple of float
        The factors to sweep [1].
    series : bool
        Whether to keep ``site_power_kw`` and ``site_limit_kw`` per run.
    """

    name: str
    scenarios: tuple[Path, ...]
    policies: tuple[PolicyRun, ...]
    capacity_scale: tuple[float, ...] = (1.0,)
    price_scale: tuple[float, ...] = (1.0,)
    export_price_scale: tuple[float, ...] = (1.0,)
    series: bool = True

    def runs(self) -> list[Run]:
        """Every combination, scenario-major then policy, capacity, price and export price."""
        grid = itertools.product(
            self.scenarios,
            self.policies,
            self.capacity_scale,
            self.price_scale,
            self.export_price_scale,
        )
        return [Run(*combo) for combo in grid]


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec YAML file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    SweepSpec

    Raises
    ------
    SweepError
        If the file cannot be read, is not YAML, or any key is invalid (the message names it).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(
            "(file)", f"sweep spec {str(path)!r}: cannot read ({exc.strerror})"
        ) from exc
    except yaml.YAMLError as exc:
        raise SweepError("(file)", f"sweep spec {str(path)!r}: not valid YAML ({exc})") from exc
    return parse_sweep_spec(raw, base=path.parent, source=str(path), default_name=path.stem)


def parse_sweep_spec(
    raw: Any,
    *,
    base: Path | None = None,
    source: str = "sweep spec",
    default_name: str = "sweep",
) -> SweepSpec:
    """Check a sweep spec given as a mapping (the parsed YAML).

    Parameters
    ----------
    raw : mapping
        The spec's keys (see the module docstring).
    base : Path, optional
        Folder that relative scenario paths are read from first.
    source : str
        Named in error messages (the file).
    default_name : str
        The sweep's name when the spec has no ``name``.

    Returns
    -------
    SweepSpec

    Raises
    ------
    SweepError
        Naming the key, the value and what was expected.

    Examples
    --------
    >>> mpc = {"name": "mpc", "replan_s": [300, 900]}
    >>> spec = parse_sweep_spec(
    ...     {"scenarios": ["v2g-depot"], "policies": ["llf", mpc], "capacity_scale": [0.5, 1.0]}
    ... )
    >>> [p.label for p in spec.policies], len(spec.runs())
    (['llf', 'mpc replan_s=300', 'mpc replan_s=900'], 6)
    >>> parse_sweep_spec({"scenarios": ["v2g-depot"], "policies": ["llf"], "price_scale": [-1]})
    Traceback (most recent call last):
    ...
    ampflow.scenarios.sweep.SweepError: sweep spec: price_scale[0]: expected a number >= 0, got -1
    """

    def fail(key: str, message: str) -> SweepError:
        return SweepError(key, f"{source}: {key}: {message}")

    if not isinstance(raw, Mapping):
        raise fail("(top level)", f"expected a mapping of sweep keys, got {raw!r}")
    unknown = sorted(str(k) for k in set(raw) - set(_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key; expected one of {sorted(_KEYS)}")
    for key in ("scenarios", "policies"):
        if key not in raw:
            raise fail(key, "is required")
    series = raw.get("series", True)
    if not isinstance(series, bool):
        raise fail("series", f"expected true or false, got {series!r}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise fail("name", f"expected a non-empty string, got {name!r}")
    scales = {
        key: _scales(fail, key, raw.get(key, [1.0]), strict=key == "capacity_scale")
        for key in _SCALES
    }
    return SweepSpec(
        name=name,
        scenarios=_scenarios(fail, raw["scenarios"], base),
        policies=_policies(fail, raw["policies"]),
        series=series,
        **scales,
    )


def _listed(fail: Callable[[str, str], SweepError], key: str, value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise fail(key, "expected a non-empty list")
    return items


def _scales(
    fail: Callable[[str, str], SweepError], key: str, value: Any, *, strict: bool
) -> tuple[float, ...]:
    out = []
    for i, v in enumerate(_listed(fail, key, value)):
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if not number or not math.isfinite(v) or v < 0 or (strict and v == 0):
            raise fail(f"{key}[{i}]", f"expected a number {'> 0' if strict else '>= 0'}, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _scenarios(
    fail: Callable[[str, str], SweepError], value: Any, base: Path | None
) -> tuple[Path, ...]:
    out = []
    for i, item in enumerate(_listed(fail, "scenarios", value)):
        if not isinstance(item, str) or not item:
            raise fail(f"scenarios[{i}]", f"expected a scenario path or bundled name, got {item!r}")
        local = base / item if base is not None else None
        try:
            out.append(local if local is not None and local.is_file() else resolve_scenario(item))
        except AmpflowError as exc:
            raise fail(f"scenarios[{i}]", str(exc)) from exc
    return tuple(out)


def _policies(fail: Callable[[str, str], SweepError], value: Any) -> tuple[PolicyRun, ...]:
    out: list[PolicyRun] = []
    for i, item in enumerate(_listed(fail, "policies", value)):
        key = f"policies[{i}]"
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, Mapping):
            if "name" not in item:
                raise fail(f"{key}.name", "is required")
            name, params = item["name"], {str(k): v for k, v in item.items() if k != "name"}
        else:
            raise fail(key, f"expected a policy name or a mapping with a name, got {item!r}")
        if name not in POLICIES:
            raise fail(f"{key}.name", f"expected one of {list(POLICIES)}, got {name!r}")
        keys = sorted(params)
        values = [_listed(fail, f"{key}.{k}", params[k]) for k in keys]
        for combo in itertools.product(*values):
            run = PolicyRun(str(name), tuple(zip(keys, combo, strict=True)))
            try:
                make_policy(run.name, **dict(run.params))
            except AmpflowError as exc:
                raise fail(key, str(exc)) from exc
            out.append(run)
    return tuple(out)


def scale_scenario(
    scenario: Scenario,
    *,
    capacity_scale: float = 1.0,
    price_scale: float = 1.0,
    export_price_scale: float = 1.0,
) -> Scenario:
    """A variant of a scenario with scaled grid connections and prices (the original unchanged).

    Parameters
    ----------
    scenario : Scenario
    capacity_scale : float, default 1
        Factor on every site's grid connection limit: ``import_kw`` and, where given, its
        per-phase ``phase_a`` [1]; must be > 0. Nodes below, DR caps and time-of-day limits keep
        their values.
    price_scale, export_price_scale : float, default 1
        Factors on the import price (DR price events included) and the export price [1], >= 0.

    Returns
    -------
    Scenario
        With its topology recompiled from the scaled sites.

    Raises
    ------
    SweepError
        If a factor is out of range.

    Examples
    --------
    >>> from ampflow.scenarios import bundled_scenario
    >>> sc = load_scenario(bundled_scenario("v2g-depot"))
    >>> small = scale_scenario(sc, capacity_scale=0.5, price_scale=2.0)
    >>> small.sites[0].import_kw, float(small.import_price.max() / sc.import_price.max())
    (400.0, 2.0)
    >>> sc.sites[0].import_kw
    800.0
    """
    for key, value, strict in (
        ("capacity_scale", capacity_scale, True),
        ("price_scale", price_scale, False),
        ("export_price_scale", export_price_scale, False),
    ):
        if not math.isfinite(value) or value < 0 or (strict and value == 0):
            expected = "> 0" if strict else ">= 0"
            raise SweepError(key, f"{key}: expected a number {expected}, got {value!r}")
    out = scenario
    if capacity_scale != 1.0:
        sites = tuple(
            replace(
                s,
                import_kw=s.import_kw * capacity_scale,
                phase_a=None
                if s.phase_a is None
                else (
                    s.phase_a[0] * capacity_scale,
                    s.phase_a[1] * capacity_scale,
                    s.phase_a[2] * capacity_scale,
                ),
            )
            for s in scenario.sites
        )
        out = replace(out, sites=sites, topology=compile_topology(sites))
    if price_scale != 1.0:
        out = replace(out, import_price=scenario.import_price * price_scale)
    if export_price_scale != 1.0:
        out = replace(out, export_price=scenario.export_price * export_price_scale)
    return out


def _run_task(scenario: Scenario, run: Run, series: bool) -> dict[str, Any]:
    """One run, as a Dask task: the metrics, and the site series if asked for."""
    variant = scale_scenario(
        scenario,
        capacity_scale=run.capacity_scale,
        price_scale=run.price_scale,
        export_price_scale=run.export_price_scale,
    )
    ds = simulate(variant, make_policy(run.policy.name, **dict(run.policy.params)))
    out: dict[str, Any] = {"scenario": str(ds.attrs["scenario"]), "metrics": metrics(ds)}
    if series:
        out["time"] = ds["time"].to_numpy()
        out["site"] = ds["site"].to_numpy().astype(str)
        out["site_power_kw"] = ds["site_power_kw"].to_numpy()
        out["site_limit_kw"] = ds["site_limit_kw"].to_numpy()
        out["timezone"] = str(ds.attrs["timezone"])
        out["step_s"] = int(ds.attrs["step_s"])
    return out


@contextmanager
def sweep_client(
    *, scheduler: str | None = None, threads: int | None = None, timeout_s: float = 10.0
) -> Iterator[Any]:
    """A ``distributed.Client``: on an existing cluster, or on a local cluster of threads.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); default a new
        :class:`~distributed.LocalCluster` (one worker of threads in this process, in-process
        transport, no dashboard), closed on exit.
    threads : int, optional
        Worker threads of the local cluster; default ``min(2, cpu count)``.
    timeout_s : float, default 10
        How long to try to reach ``scheduler`` [s].

    Raises
    ------
    SweepError
        If the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")  # type: ignore[no-untyped-call]
        except (OSError, ValueError, TypeError) as exc:
            raise SweepError(
                "scheduler", f"scheduler: cannot connect to {scheduler!r} ({exc})"
            ) from exc
        with client:
            yield client
        return
    if threads is not None and threads < 1:
        raise SweepError("threads", f"threads: expected a whole number >= 1, got {threads!r}")
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1,
            threads_per_worker=threads or min(2, os.cpu_count() or 1),
            processes=False,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def run_sweep(
    spec: SweepSpec,
    *,
    scheduler: str | None = None,
    client: Any | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Run every combination of a sweep on Dask and combine the results.

    Parameters
    ----------
    spec : SweepSpec
    scheduler : str, optional
        Address of a running Dask scheduler; default a local cluster (:func:`sweep_client`).
    client : distributed.Client, optional
        Use this client instead (left open).
    threads : int, optional
        Worker threads of the default local cluster.
    progress : callable, optional
        Called as ``progress(done, total)`` after each run finishes.

    Returns
    -------
    xarray.Dataset
        Dimension ``run`` (see the module docstring).

    Raises
    ------
    SweepError
        For a scenario that does not load, an unreachable scheduler, or a run whose policy
        reports bad input (named by its label). Any other error of a run is re-raised as is.
    """
    scenarios: dict[Path, Scenario] = {}
    for i, path in enumerate(spec.scenarios):
        try:
            scenarios[path] = load_scenario(path)
        except AmpflowError as exc:
            raise SweepError(f"scenarios[{i}]", f"scenarios[{i}]: {exc}") from exc
    runs = spec.runs()
    if client is not None:
        outputs = _submit(client, scenarios, runs, spec.series, progress)
    else:
        with sweep_client(scheduler=scheduler, threads=threads) as own:
            outputs = _submit(own, scenarios, runs, spec.series, progress)
    return _combine(spec, runs, outputs)


def _submit(
    client: Any,
    scenarios: Mapping[Path, Scenario],
    runs: Sequence[Run],
    series: bool,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    from distributed import as_completed

    shared = {path: client.scatter(sc, hash=False) for path, sc in scenarios.items()}
    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            _run_task, shared[run.scenario], run, series, key=f"ampflow-run-{token}-{i}", pure=False
        )
        for i, run in enumerate(runs)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for done, future in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call]
            if future.status == "error":
                i = index[future.key]
                exc = future.exception()
                if not isinstance(exc, AmpflowError):
                    future.result()  # a bug, not bad input: re-raise it with its traceback
                where = f"run {i} ({scenarios[runs[i].scenario].name} / {runs[i].policy.label})"
                raise SweepError(f"run {i}", f"{where}: {exc}") from exc
            if progress is not None:
                progress(done, len(futures))
        outputs: list[dict[str, Any]] = client.gather(futures)
    finally:
        client.cancel(futures)
        client.cancel(list(shared.values()))
    return outputs


def _combine(spec: SweepSpec, runs: Sequence[Run], outputs: Sequence[dict[str, Any]]) -> xr.Dataset:
    n = len(runs)
    coords: dict[str, Any] = {
        "run": ("run", np.arange(n)),
        "scenario": ("run", np.array([o["scenario"] for o in outputs], dtype=str)),
        "policy": ("run", np.array([r.policy.name for r in runs], dtype=str)),
        "params": ("run", np.array([r.policy.params_text for r in runs], dtype=str)),
        "label": ("run", np.array([r.policy.label for r in runs], dtype=str)),
    }
    for key in _SCALES:
        coords[key] = ("run", np.array([getattr(r, key) for r in runs], dtype=np.float64))
    data: dict[str, Any] = {}
    for key, unit in METRICS.items():
        values = [o["metrics"][key] for o in outputs]
        column = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        data[key] = xr.Variable(("run",), column, attrs={"units": unit})
    attrs: dict[str, Any] = {"sweep": spec.name, "n_runs": n}
    if spec.series and _same_axes(outputs):
        first = outputs[0]
        coords["time"] = ("time", first["time"], {"timezone": "UTC"})
        coords["site"] = ("site", first["site"])
        for key, about in (("site_power_kw", "net import"), ("site_limit_kw", "binding limit")):
            stacked = np.stack([o[key] for o in outputs])
            data[key] = xr.Variable(
                ("run", "time", "site"), stacked, attrs={"units": "kW", "long_name": about}
            )
        attrs.update(timezone=first["timezone"], step_s=first["step_s"])
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _same_axes(outputs: Sequence[dict[str, Any]]) -> bool:
    if not outputs or "time" not in outputs[0]:
        return False
    first = outputs[0]
    return all(
        np.array_equal(o["time"], first["time"]) and np.array_equal(o["site"], first["site"])
        for o in outputs[1:]
    )


def sweep_table(ds: xr.Dataset) -> pd.DataFrame:
    """The runs of a sweep result as a table: one row per run, coordinates then metrics.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`run_sweep`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``run``.
    """
    columns = [c for c in (*_COORDS, *METRICS) if c in ds.variables]
    return pd.DataFrame({c: ds[c].to_numpy() for c in columns}, index=ds["run"].to_numpy())
