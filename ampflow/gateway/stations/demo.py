"""``ampflow demo-live``: the server, simulated stations, a DR event and a live view, together.

:func:`run_demo` runs, in one process tree:

1. ``ampflow serve --demo`` as a child process, in a fresh data directory (so every run starts
   from the same state), with unknown idTags accepted (the scenario's EVs carry no registered
   cards); it reads the URL and the demo keys the server prints;
2. registers one station per charger of the demo site through the HTTP API, each with an
   HTTP Basic password (OCPP security profile 1), and stops the demo's synthetic EVs, whose place
   the stations' real transactions take;
3. runs the simulated stations of a bundled scenario (one day of ``caltech-week`` by default) at
   a speed-up, over real OCPP WebSockets;
4. posts a DR event through the API after ``dr_after_s`` seconds;
5. shows site power against its limit (:mod:`ampflow.gateway.live`) until Ctrl-C or
   ``duration_s``, while the API stays open for a browser.

Ctrl-C stops the stations, then the server (it gets SIGINT and shuts down cleanly), and removes
the temporary data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from ampflow.gateway.stations.config import OcppVersion, Quirk
from ampflow.gateway.stations.fleet import Fleet, fleet_from_scenario, run_fleet
from ampflow.gateway.stations.runtime import SimClock, SimulatedStation

__all__ = [
    "DemoOptions",
    "ServerProcess",
    "post_dr_event",
    "register_stations",
    "run_demo",
    "start_server",
]

logger = logging.getLogger(__name__)

_SERVE = "from ampflow.gateway.cli import app; app(prog_name='ampflow')"
_KEY = re.compile(r"^\s+(admin|site_manager|utility|analyst)\s+(amp_\S+)\s*$")


@dataclass(frozen=True)
class DemoOptions:
    """What ``ampflow demo-live`` runs (see the module notes).

    Attributes
    ----------
    scenario : str
        Bundled scenario name or YAML path; its first site must be the demo site (``caltech``).
    start : str
        Simulated start, local time of the scenario.
    hours : float
        Simulated hours of EVs.
    speed : float
        Simulated seconds per real second.
    stations : int or None
        Number of stations (default: every charger).
    version : OcppVersion
    quirks : mapping of Quirk to float
        Share of the stations with each quirk.
    dr_after_s, dr_minutes : float
        The DR event: when (real seconds after the stations start), how long (real minutes).
    dr_cap_kw : float or None
        Its cap [kW]; by default half of what the site draws when it is posted.
    host, port : str, int
        Where the server listens (port 0: any free port).
    data_dir : Path or None
        Keep the server's state here (default: a temporary directory, removed at the end).
    duration_s : float or None
        Stop by itself after this many seconds (default: run until Ctrl-C).
    passwords : bool
        Register the stations with HTTP Basic passwords.
    """

    scenario: str = "caltech-week"
    start: str = "2019-10-08T09:00"
    hours: float = 24.0
    speed: float = 60.0
    stations: int | None = None
    version: OcppVersion = OcppVersion.V16
    quirks: dict[Quirk, float] = field(
        default_factory=lambda: {Quirk.W_ONLY: 0.1, Quirk.IGNORES_NUMBER_PHASES: 0.1}
    )
    dr_after_s: float = 60.0
    dr_minutes: float = 5.0
    dr_cap_kw: float | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None
    duration_s: float | None = None
    passwords: bool = True


@dataclass
class ServerProcess:
    """A running ``ampflow serve --demo`` child: its URL, demo keys and recent output."""

    proc: asyncio.subprocess.Process
    url: str
    keys: dict[str, str]
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://").replace("https://", "wss://") + "/ocpp"

    async def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT (a clean shutdown), then SIGKILL after ``timeout_s``; the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return int(self.proc.returncode or 0)


async def start_server(
    data_dir: Path, *, host: str, port: int, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``ampflow serve --demo`` in ``data_dir`` and wait until it listens."""
    child_env = {
        **os.environ,
        "AMPFLOW_DATA_DIR": str(data_dir),
        "AMPFLOW_LOG_LEVEL": "warning",
        "AMPFLOW_OCPP__AUTHORIZE_UNKNOWN_TOKENS": "true",
        **(env or {}),
    }
    child_env.pop("AMPFLOW_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVE,
        "serve",
        "--demo",
        "--host",
        host,
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env,
        # Its own process group: Ctrl-C in the terminal reaches only us, and we stop the
        # stations before we ask the server to shut down (one SIGINT: a graceful shutdown).
        process_group=0,
        preexec_fn=_die_with_parent,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    output: deque[str] = deque(maxlen=200)
    keys: dict[str, str] = {}
    url = ""
    deadline = time.monotonic() + 120
    while not url:
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        except TimeoutError:
            raw = b""
        if not raw:
            err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"ampflow serve did not start:\n{''.join(output)}{err}")
        line = raw.decode(errors="replace")
        output.append(line)
        if m := _KEY.match(line):
            keys[m.group(1)] = m.group(2)
        if m := re.search(r"serving on (https?://\S+?:\d+)", line):
            url = m.group(1)
    server = ServerProcess(proc, url, keys, output)
    server._readers = [
        asyncio.create_task(_drain(proc.stdout, output)),
        asyncio.create_task(_drain(proc.stderr, output)),
    ]
    return server


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo process dies (Linux), so no server is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _drain(stream: asyncio.StreamReader, into: deque[str]) -> None:
    while raw := await stream.readline():
        into.append(raw.decode(errors="replace"))


async def register_stations(
    client: httpx.AsyncClient, fleet: Fleet, *, password: str | None, concurrency: int = 8
) -> int:
    """Register the fleet's stations (bound to their chargers) through the API; returns how
    many were new. Stations that exist already get ``password`` set."""
    gate = asyncio.Semaphore(concurrency)

    async def one(station_id: str) -> int:
        body: dict[str, Any] = {"id": station_id, "site_id": fleet.site_id}
        if fleet.charger_of.get(station_id):
            body["charger_id"] = fleet.charger_of[station_id]
        if password is not None:
            body["password"] = password
        async with gate:
            r = await client.post("/stations", json=body)
            if r.status_code == 409 and password is not None:
                r = await client.patch(f"/stations/{station_id}", json={"password": password})
                r.raise_for_status()
                return 0
            if r.status_code != 409:
                r.raise_for_status()
            return int(r.status_code == 201)

    done = await asyncio.gather(*(one(cfg.station_id) for cfg in fleet.configs))
    return sum(done)


async def stop_open_sessions(client: httpx.AsyncClient, site_id: str) -> int:
    """Stop the site's open sessions (the demo's synthetic EVs); returns how many."""
    r = await client.get("/sessions", params={"site_id": site_id, "status": "active"})
    r.raise_for_status()
    ids = [row["id"] for row in r.json()]
    for sid in ids:
        (await client.post(f"/sessions/{sid}/stop")).raise_for_status()
    return len(ids)


async def post_dr_event(
    client: httpx.AsyncClient, site_id: str, *, cap_kw: float, minutes: float
) -> dict[str, Any]:
    """Post a DR cap on ``site_id`` from now for ``minutes``; the created event."""
    now = datetime.now(UTC)
    body = {
        "site_id": site_id,
        "start": now.isoformat(),
        "end": (now + timedelta(minutes=minutes)).isoformat(),
        "cap_kw": cap_kw,
    }
    r = await client.post("/dr-events", json=body)
    r.raise_for_status()
    event: dict[str, Any] = r.json()
    return event


def build_fleet(options: DemoOptions, *, password: str | None) -> Fleet:
    """The demo's stations from its scenario."""
    from ampflow.scenarios.bundled import resolve_scenario
    from ampflow.scenarios.format import load_scenario

    scenario = load_scenario(resolve_scenario(options.scenario))
    return fleet_from_scenario(
        scenario,
        start=options.start,
        hours=options.hours,
        stations=options.stations,
        version=options.version,
        quirks=options.quirks,
        password=password,
        meter_interval_s=5.0,
    )


@contextlib.asynccontextmanager
async def _data_dir(given: Path | None) -> AsyncIterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    tmp = Path(tempfile.mkdtemp(prefix="ampflow-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def run_demo(options: DemoOptions, *, live: Any, stop: asyncio.Event | None = None) -> int:
    """Run the demo (see the module notes) until ``stop`` is set or ``options.duration_s``
    passes; ``live`` shows it (:class:`ampflow.gateway.live.DemoDisplay`)."""
    password = secrets.token_urlsafe(18) if options.passwords else None
    fleet = build_fleet(options, password=password)
    stop = stop or asyncio.Event()
    async with _data_dir(options.data_dir) as data_dir:
        live.status(f"starting ampflow serve --demo (data in {data_dir}) ...")
        server = await start_server(data_dir, host=options.host, port=options.port)
        stations: list[SimulatedStation] = []
        fleet_task: asyncio.Task[None] | None = None
        try:
            headers = {"Authorization": f"Bearer {server.keys['admin']}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
                live.status(f"registering {len(fleet.configs)} stations ...")
                await register_stations(api, fleet, password=password)
                stopped = await stop_open_sessions(api, fleet.site_id)
                live.note(
                    f"server up at {server.url}; {stopped} synthetic EVs replaced by stations"
                )
                clock = SimClock(options.speed)
                stations = fleet.stations(server.ws_url, clock=clock, step_s=0.5)
                fleet_task = asyncio.create_task(run_fleet(stations, stop, ramp_s=2.0))
                await live.run(
                    server=server,
                    api=api,
                    fleet=fleet,
                    stations=stations,
                    clock=clock,
                    options=options,
                    stop=stop,
                )
        finally:
            stop.set()  # the stations first, then the server
            if fleet_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fleet_task), 10)
            code = await server.stop()
            live.status(f"ampflow serve exited with code {code}")
    return 0


def sim_now(fleet: Fleet, clock: SimClock) -> datetime:
    """The simulated time of the fleet, in the scenario's time zone."""
    t = fleet.start + timedelta(seconds=clock.sim_s())
    return t.astimezone(ZoneInfo(fleet.timezone))


async def site_state(api: httpx.AsyncClient, site_id: str) -> dict[str, Any] | None:
    """The site's live state from the API, or None if it cannot be read now."""
    try:
        r = await api.get(f"/sites/{site_id}/state", timeout=5)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    state: dict[str, Any] = r.json()
    return state


def drawn_kw(stations: Sequence[SimulatedStation]) -> float:
    """What the simulated stations draw now [kW]."""
    return sum(st.core.power_w for st in stations) / 1000.0
