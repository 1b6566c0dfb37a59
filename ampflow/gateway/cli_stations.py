"""``ampflow simulate-stations`` and ``ampflow demo-live``: simulated charge points at work.

``simulate-stations`` runs the stations of a scenario's site as real OCPP clients against a
central system (``ampflow serve``, or any other); ``demo-live`` is the main job a newcomer sees
(``make run``): the server, the stations, a DR event and a live view, stopped by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from ampflow.engine.errors import AmpflowError
from ampflow.gateway.stations import OcppVersion, Quirk, SimClock, SimulatedStation
from ampflow.gateway.stations.fleet import Fleet, fleet_from_scenario, run_fleet

__all__ = ["register"]

QuirkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--quirk",
        help="QUIRK=SHARE: give a share of the stations a quirk (w_only, ignores_number_phases, "
        "no_smart_charging, volatile_profiles), e.g. w_only=0.2; repeatable",
    ),
]
VersionOption = Annotated[str, typer.Option("--version", help="OCPP version: 1.6 or 2.0.1")]


def _quirks(items: list[str] | None) -> dict[Quirk, float]:
    out: dict[Quirk, float] = {}
    for item in items or []:
        name, sep, share = item.partition("=")
        try:
            quirk = Quirk(name)
        except ValueError:
            choices = ", ".join(q.value for q in Quirk)
            raise typer.BadParameter(
                f"expected one of {choices}, got {name!r}", param_hint="--quirk"
            ) from None
        try:
            value = float(share) if sep else 1.0
        except ValueError:
            raise typer.BadParameter(
                f"{name}: expected a share in [0, 1], got {share!r}", param_hint="--quirk"
            ) from None
        if not 0 <= value <= 1:
            raise typer.BadParameter(
                f"{name}: expected a share in [0, 1], got {value}", param_hint="--quirk"
            )
        out[quirk] = value
    return out


def _version(value: str) -> OcppVersion:
    try:
        return OcppVersion(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected 1.6 or 2.0.1, got {value!r}", param_hint="--version"
        ) from None


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stop)``; SIGINT, SIGTERM and SIGHUP set ``stop`` for a clean shutdown."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def _quiet_logs(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The ocpp package logs every message at INFO: only with --verbose.
    logging.getLogger("ocpp").setLevel(logging.INFO if verbose else logging.ERROR)


def simulate_stations(
    scenario: Annotated[
        str, typer.Option(help="Scenario YAML file or bundled scenario name (caltech-week, ...)")
    ],
    url: Annotated[
        str, typer.Option(help="Central system URL; stations connect to URL/{station_id}")
    ] = "ws://127.0.0.1:8000/ocpp",
    speed: Annotated[
        float, typer.Option(min=0.001, help="Simulated seconds per real second")
    ] = 60.0,
    stations: Annotated[
        int | None, typer.Option(min=1, help="Number of stations [default: every charger]")
    ] = None,
    version: VersionOption = "1.6",
    start: Annotated[
        str | None, typer.Option(help="Simulated start, local time [default: scenario start]")
    ] = None,
    hours: Annotated[
        float | None, typer.Option(min=0, help="Only EVs arriving in these simulated hours")
    ] = None,
    quirk: QuirkOption = None,
    password: Annotated[
        str | None, typer.Option(help="HTTP Basic password of every station (16-40 chars)")
    ] = None,
    meter_interval: Annotated[
        float, typer.Option(min=0.1, help="Real seconds between meter values")
    ] = 10.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many real seconds")
    ] = None,
    register_api: Annotated[
        str | None,
        typer.Option("--register", help="Register the stations first through this API URL"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="AMPFLOW_API_KEY", help="API key for --register (admin or manager)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary at the end")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every OCPP message")] = False,
) -> None:
    """Run a scenario's charging stations as OCPP clients of a central system."""
    from ampflow.scenarios.bundled import resolve_scenario
    from ampflow.scenarios.format import load_scenario

    _quiet_logs(verbose)
    try:
        sc = load_scenario(resolve_scenario(scenario))
    except AmpflowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from exc
    try:
        fleet = fleet_from_scenario(
            sc,
            start=start,
            hours=hours,
            stations=stations,
            version=_version(version),
            quirks=_quirks(quirk),
            password=password,
            meter_interval_s=meter_interval,
        )
    except (AmpflowError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if register_api is not None and not api_key:
        raise typer.BadParameter("--register needs an API key", param_hint="--api-key")
    console = Console(stderr=True)
    console.print(
        f"ampflow: {len(fleet.configs)} stations of site {fleet.site_id!r} (OCPP "
        f"{fleet.configs[0].version.value}), {fleet.n_evs} EVs, speed x{speed:g}, -> {url}"
    )
    registration = None if register_api is None else (register_api, str(api_key), password)

    async def main(stop: asyncio.Event) -> int:
        sims = await _simulate(
            fleet,
            url,
            speed=speed,
            duration=duration,
            register=registration,
            console=console,
            stop=stop,
        )
        if as_json:
            typer.echo(json.dumps(_summary(sims)))
        return 0

    raise typer.Exit(_run_until_signal(main))


async def _simulate(
    fleet: Fleet,
    url: str,
    *,
    speed: float,
    duration: float | None,
    register: tuple[str, str, str | None] | None,
    console: Console,
    stop: asyncio.Event,
) -> list[SimulatedStation]:
    """Run the fleet until ``stop`` (or ``duration``), with a status line every 10 s."""
    if register is not None:
        await _register(register[0], register[1], fleet, register[2])
    clock = SimClock(speed)
    sims = fleet.stations(url, clock=clock)
    task = asyncio.create_task(run_fleet(sims, stop, ramp_s=min(len(sims) / 50, 10.0)))
    t0 = time.monotonic()
    while not stop.is_set():
        if duration is not None and time.monotonic() - t0 >= duration:
            stop.set()
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10.0)
        console.print(_status_line(sims, fleet, clock), highlight=False)
    await asyncio.wait_for(task, 15)
    return sims


async def _register(api: str, key: str, fleet: Fleet, password: str | None) -> None:
    from ampflow.gateway.stations.demo import register_stations

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
        try:
            await register_stations(client, fleet, password=password)
        except httpx.HTTPStatusError as exc:
            raise typer.BadParameter(
                f"registering stations at {api} failed: {exc.response.status_code} "
                f"{exc.response.text[:300]}",
                param_hint="--register",
            ) from None
        except httpx.HTTPError as exc:
            raise typer.BadParameter(
                f"cannot reach {api}: {exc}", param_hint="--register"
            ) from None


def _summary(sims: list[SimulatedStation]) -> dict[str, Any]:
    from ampflow.gateway.live import station_summary

    out: dict[str, Any] = dict(station_summary(sims))
    out["drawn_kw"] = round(sum(s.core.power_w for s in sims) / 1000, 3)
    out["energy_kwh"] = round(sum(c.energy_wh for s in sims for c in s.core) / 1000, 3)
    errors = {s.cfg.station_id: s.last_error for s in sims if s.last_error and not s.booted}
    out["not_connected"] = errors
    return out


def _status_line(sims: list[SimulatedStation], fleet: Fleet, clock: SimClock) -> str:
    from ampflow.gateway.stations.demo import sim_now

    s = _summary(sims)
    return (
        f"sim {sim_now(fleet, clock):%a %H:%M} | online {s.get('online', 0)}/{len(sims)} | "
        f"charging {s.get('Charging', 0)} | paused by limit {s.get('SuspendedEVSE', 0)} | "
        f"drawing {s['drawn_kw']:.1f} kW | transactions {s.get('transactions', 0)} | profiles "
        f"{s.get('profiles accepted', 0)} accepted, {s.get('profiles rejected', 0)} rejected"
    )


def demo_live(
    scenario: Annotated[str, typer.Option(help="Bundled scenario or YAML path")] = "caltech-week",
    start: Annotated[str, typer.Option(help="Simulated start, local time")] = "2019-10-08T09:00",
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated s per real s")] = 60.0,
    stations: Annotated[int | None, typer.Option(min=1, help="Number of stations")] = None,
    version: VersionOption = "1.6",
    quirk: QuirkOption = None,
    dr_after: Annotated[float, typer.Option(min=0, help="DR event after this many s")] = 60.0,
    dr_minutes: Annotated[float, typer.Option(min=0.1, help="DR event length [min]")] = 5.0,
    dr_cap_kw: Annotated[
        float | None,
        typer.Option(min=0, help="DR cap on the site [kW; default: half its draw at the time]"),
    ] = None,
    host: Annotated[str, typer.Option(help="Server address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Server port (0: any)")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the server's data here [default: a temporary dir]")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many s [default: Ctrl-C]")
    ] = None,
    passwords: Annotated[
        bool, typer.Option(help="Stations authenticate with HTTP Basic passwords")
    ] = True,
) -> None:
    """The live demo: ampflow serve --demo, simulated OCPP stations, a DR event, a live view."""
    from ampflow.gateway.live import DemoDisplay
    from ampflow.gateway.stations.demo import DemoOptions, run_demo

    _quiet_logs(False)
    options = DemoOptions(
        scenario=scenario,
        start=start,
        speed=speed,
        stations=stations,
        version=_version(version),
        quirks=_quirks(quirk) if quirk else DemoOptions().quirks,
        dr_after_s=dr_after,
        dr_minutes=dr_minutes,
        dr_cap_kw=dr_cap_kw,
        host=host,
        port=port,
        data_dir=data_dir,
        duration_s=duration,
        passwords=passwords,
    )
    display = DemoDisplay(Console())

    async def main(stop: asyncio.Event) -> int:
        return await run_demo(options, live=display, stop=stop)

    try:
        code = _run_until_signal(main)
    except (AmpflowError, RuntimeError, httpx.HTTPError) as exc:
        Console(stderr=True).print(f"[red]ampflow demo-live:[/] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main ampflow app."""
    app.command("simulate-stations")(simulate_stations)
    app.command("demo-live")(demo_live)
