"""The ``ampflow`` command line."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ampflow.engine.errors import AmpflowError
from ampflow.engine.profiles import charging_schedule
from ampflow.scenarios.demo import caltech_demo_problem, replay_day

app = typer.Typer(help="Ampflow: capacity-safe, cost-optimal EV charging.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Ampflow command line."""


@app.command()
def demo(
    day: Annotated[str, typer.Option(help="Caltech day to replay (2019-09-01..2019-12-31)")] = (
        "2019-10-29"
    ),
    import_kw: Annotated[float, typer.Option(min=1, help="Grid connection limit [kW]")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Replay one real Caltech day through the engine and show what it decided."""
    console = Console()
    try:
        problem = caltech_demo_problem(day, import_kw=import_kw)
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--day") from exc
    target = problem.sessions.e_target_kwh
    results = [replay_day(problem, use_plan=False)[0]]
    with_plan, plan = replay_day(problem, use_plan=True)
    results.append(with_plan)
    dc = problem.demand_charge_per_kw
    summary = {
        r.name: {
            "delivered_kwh": round(float(r.delivered_kwh.sum()), 2),
            "requested_kwh": round(float(target.sum()), 2),
            "sessions_served": round(r.served_share(target), 3),
            "peak_kw": round(r.peak_kw, 2),
            "energy_cost": round(r.energy_cost, 2),
            "demand_charge": round(r.peak_kw * dc, 2),
            "total_cost": round(r.energy_cost + r.peak_kw * dc, 2),
            "max_limit_violation": r.max_violation,
        }
        for r in results
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    topo = problem.topology
    console.print(
        f"[bold]Caltech garage, {day}[/]: {topo.n_connectors} EVSEs, grid limit {import_kw:g} kW, "
        f"{len(problem.sessions)} real sessions (ACN-Data), TOU tariff, demand charge {dc:g} $/kW"
    )
    table = Table(title="What each controller did")
    table.add_column("metric")
    for r in results:
        table.add_column(r.name, justify="right")
    for key in next(iter(summary.values())):
        table.add_row(key, *(str(summary[r.name][key]) for r in results))
    console.print(table)
    hourly = Table(title="Site load by hour [kW, mean]")
    hourly.add_column("hour")
    hourly.add_column("price $/kWh", justify="right")
    for r in results:
        hourly.add_column(r.name, justify="right")
    price = np.asarray(problem.import_price, dtype=np.float64)
    steps = 3600 // int(problem.dt_s)
    for h in range(problem.n_steps // steps):
        sl = slice(h * steps, (h + 1) * steps)
        hourly.add_row(
            f"{h:02d}:00",
            f"{price[sl].mean():.2f}",
            *(f"{r.site_kw[sl].mean():5.1f}" for r in results),
        )
    console.print(hourly)
    if plan is not None:
        conn = int(problem.sessions.connector[0])
        limits = plan.connector_power_kw(topo, problem.sessions)[conn]
        profile = charging_schedule(
            limits,
            dt_s=int(problem.dt_s),
            unit="A",
            number_phases=1,
            voltage_v=float(topo.voltage_v[conn]),
            max_periods=24,
        )
        console.print(f"OCPP 1.6 ChargingSchedule for {topo.connector_ids[conn]} (first plan):")
        console.print_json(json.dumps(profile))


def _register_areas() -> None:
    # Each area keeps its commands in its own module so the main app stays a table of contents.
    from ampflow.gateway import cli_forecast, cli_scenarios, cli_server, cli_stations

    cli_server.register(app)
    cli_scenarios.register(app)
    cli_stations.register(app)
    app.add_typer(cli_forecast.app, name="forecast")


_register_areas()
