"""``ampflow replay``, ``compare``, ``plot`` and ``sweep``: scenario replay for analysts."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from ampflow.engine.errors import AmpflowError
from ampflow.scenarios.bundled import resolve_scenario
from ampflow.scenarios.format import Scenario, load_scenario
from ampflow.scenarios.policies import POLICIES, make_policy
from ampflow.scenarios.results import METRICS, metrics, write_result
from ampflow.scenarios.simulator import simulate
from ampflow.scenarios.sweep import SweepError, load_sweep_spec, run_sweep, sweep_table

ScenarioArg = Annotated[
    str,
    typer.Argument(
        help="Scenario YAML file, or a bundled scenario name (caltech-week, caltech-week-dr, "
        "jpl-week, v2g-depot)"
    ),
]


def _load(arg: str) -> Scenario:
    try:
        return load_scenario(resolve_scenario(arg))
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from exc


def _policy_params(params: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def mpc_forecasts(
    sc: Scenario, sessions: pd.DataFrame, *, early_quantile: float = 0.1
) -> dict[str, Any]:
    """``mpc`` parameters from forecasters fitted on ``sessions`` (ACN layout, from
    :func:`ampflow.scenarios.acn.read_acn`) before the scenario starts: a session forecaster
    (its median departure, a soft early target at its ``early_quantile``, both read given the
    stay so far) and an arrival forecaster (capacity reserved for the EVs it expects). Used by
    ``replay --history`` and by ``benchmarks.quality``.
    """
    from ampflow.forecasting import ArrivalForecaster, SessionForecaster, fit_before

    sessions = sessions.assign(site_id=sc.topology.site_ids[0])
    levels = tuple(sorted({early_quantile, 0.1, 0.25, 0.5, 0.75, 0.9}))
    model = SessionForecaster(quantiles=levels, timezone=sc.timezone)
    arrivals = ArrivalForecaster(step="15min", timezone=sc.timezone)
    return {
        "forecaster": fit_before(model, sessions, sc.start),
        "arrivals": fit_before(arrivals, sessions, sc.start, end=sc.start),
        "early_quantile": early_quantile,
        "early_penalty_per_kwh": 2.0,
    }


def _forecasters(sc: Scenario, history: str, params: dict[str, Any]) -> dict[str, Any]:
    """:func:`mpc_forecasts` on ``--history``: a file, or a bundled ACN file's name; the
    session forecaster also predicts an ``early_quantile`` given in ``params``."""
    from ampflow.scenarios.acn import acn_path, read_acn

    early = params.get("early_quantile", 0.1)
    if isinstance(early, bool) or not isinstance(early, int | float) or not 0 < early < 0.5:
        raise typer.BadParameter(
            f"early_quantile: expected a number in (0, 0.5) with --history, got {early!r}",
            param_hint="--param",
        )

    try:
        path = Path(history) if Path(history).exists() else acn_path(history)
        sessions = read_acn(path)
    except (AmpflowError, OSError, ValueError, KeyError) as exc:
        raise typer.BadParameter(
            f"{history!r}: expected ACN-layout sessions (a file, or a bundled name such as "
            f"caltech_2019-05-01_2019-08-31): {exc}",
            param_hint="--history",
        ) from exc
    try:
        return mpc_forecasts(sc, sessions, early_quantile=float(early))
    except (AmpflowError, ValueError) as exc:
        raise typer.BadParameter(
            f"{history!r}: cannot fit forecasters on it before the scenario starts "
            f"({sc.start}): {exc}",
            param_hint="--history",
        ) from exc


def replay(
    scenario: ScenarioArg,
    policy: Annotated[str, typer.Option(help=f"One of {', '.join(POLICIES)}")] = "mpc",
    out: Annotated[Path | None, typer.Option(help="Write the result as netCDF (.nc)")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Policy parameter KEY=VALUE, e.g. replan_s=900")
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(
            help="mpc only: ACN-layout sessions (a file or a bundled name) to fit departure and "
            "arrival forecasters on, using only sessions before the scenario starts"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
) -> None:
    """Replay a scenario under one policy; print its metrics."""
    sc = _load(scenario)
    params = _policy_params(param or [])
    if history is not None:
        if policy != "mpc":
            raise typer.BadParameter("only the mpc policy uses forecasts", param_hint="--history")
        params = {**_forecasters(sc, history, params), **params}
    try:
        pol = make_policy(policy, **params)
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policy") from exc
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"{sc.name} / {policy}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json and not console.is_terminal,
    ) as bar:
        task = bar.add_task("replay", total=sc.n_steps)
        ds = simulate(sc, pol, progress=_advance(bar, task))
    if out is not None:
        write_result(ds, out)
    m = metrics(ds)
    if as_json:
        typer.echo(json.dumps(m))
        return
    table = Table(title=f"{sc.name}: {policy}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, unit in METRICS.items():
        table.add_row(f"{key} [{unit}]", _fmt(m[key]))
    Console().print(table)
    if out is not None:
        Console().print(f"result written to {out}")


def compare(
    scenario: ScenarioArg,
    policies: Annotated[str, typer.Option(help="Comma-separated policy names")] = (
        "uncontrolled,llf,allocator,mpc,offline"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
) -> None:
    """Replay a scenario under several policies and print one table."""
    sc = _load(scenario)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    try:
        pols = [make_policy(n) for n in names]
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policies") from exc
    console = Console(stderr=True)
    results = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json and not console.is_terminal,
    ) as bar:
        for pol in pols:
            task = bar.add_task(f"{sc.name} / {pol.name}", total=sc.n_steps)
            ds = simulate(sc, pol, progress=_advance(bar, task))
            results[pol.name] = metrics(ds)
    if as_json:
        typer.echo(json.dumps(results))
        return
    table = Table(title=f"{sc.name}: policies compared")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for key, unit in METRICS.items():
        table.add_row(f"{key} [{unit}]", *(_fmt(results[n][key]) for n in results))
    Console().print(table)


def plot(
    result: Annotated[Path, typer.Argument(help="A result netCDF file (ampflow replay --out)")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the PNGs; default: beside the result")
    ] = None,
) -> None:
    """Write the figures of a replay result as PNGs and print their paths."""
    from ampflow.scenarios.plots import plot_result  # matplotlib only when plotting

    try:
        paths = plot_result(result, out if out is not None else result.parent)
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="RESULT") from exc
    for path in paths:
        typer.echo(str(path))


_SWEEP_COLUMNS = {
    "scenario": "scenario",
    "label": "policy",
    "capacity_scale": "cap x",
    "price_scale": "price x",
    "export_price_scale": "export x",
    "energy_delivered_fraction": "delivered",
    "sessions_served_share": "served",
    "total_cost": "cost",
    "peak_kw": "peak kW",
    "over_limit_kwh": "over kWh",
}


def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep spec YAML (see ampflow.scenarios.sweep)")],
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of a running Dask scheduler; default a local cluster"),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Worker threads of the local cluster")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the combined result (.nc)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON")] = False,
) -> None:
    """Replay a grid of scenarios x policies x parameters on Dask; print one row per run."""
    try:
        parsed = load_sweep_spec(spec)
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="SPEC") from exc
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"sweep {parsed.name}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=as_json and not console.is_terminal,
    ) as bar:
        task = bar.add_task("sweep", total=len(parsed.runs()))
        try:
            ds = run_sweep(
                parsed, scheduler=scheduler, threads=threads, progress=_advance(bar, task)
            )
        except SweepError as exc:
            if exc.key.startswith("run"):
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(1) from exc
            hint = "--scheduler" if exc.key == "scheduler" else "SPEC"
            raise typer.BadParameter(str(exc), param_hint=hint) from exc
    if out is not None:
        write_result(ds, out)
    table = sweep_table(ds)
    if as_json:
        records = json.loads(table.to_json(orient="records"))
        typer.echo(json.dumps({"sweep": parsed.name, "runs": records}))
        return
    view = Table(title=f"sweep {parsed.name}: {len(table)} runs")
    # The policy, the other axes that vary, then the headline metrics.
    shown = [c for c in _SWEEP_COLUMNS if c == "label" or c in METRICS or table[c].nunique() > 1]
    for column in shown:
        view.add_column(_SWEEP_COLUMNS[column], justify="left" if column == "label" else "right")
    for _, row in table.iterrows():
        view.add_row(*(_fmt(row[c]) for c in shown))
    Console().print(view)
    if out is not None:
        Console().print(f"result written to {out}")


def _advance(bar: Progress, task: TaskID) -> Callable[[int, int], None]:
    def update(done: int, _total: int) -> None:
        bar.update(task, completed=done)

    return update


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main ``ampflow`` app."""
    app.command()(replay)
    app.command()(compare)
    app.command()(plot)
    app.command()(sweep)
