"""OCPP gateway: N stations sending MeterValues every 10 s, against a bare ``ocpp`` echo server.

For each N (500, 1,000 and 2,000 by default) two servers are measured, each in its own process:

* ``ampflow`` — ``ampflow serve`` (uvicorn, the API, the control loop ticking every 5 s, the OCPP
  gateway) on a SQLite file seeded with one site of N single-connector 11 kW chargers and N
  registered stations. Every MeterValues is parsed, stored (group commit, ``synchronous=FULL``),
  verified against the connector's limit, and answered only once committed. Each station also
  gets the boot sequence (GetConfiguration, ChargePointMaxProfile, TxDefaultProfile).
* ``echo`` — the baseline: ``websockets`` + an ``ocpp`` 1.6 ChargePoint that validates each message
  against the schema and answers it, storing nothing.

Both servers, and the load generator, freeze the objects alive out of the cyclic garbage
collector every 30 s (``ampflow serve`` does this itself, see ``OcppGateway(manage_gc=True)``):
at 2,000 connections a full collection otherwise stalls a process for about half a second.

The N stations are lightweight ``ocpp`` 1.6 clients in this process on one event loop: each
connects, boots, and then sends a MeterValues (energy register, power, three phase currents)
every 10 s at a random phase. Reported per server and N, over a measurement window after every
station is connected and warmed up:

* ``msgs_per_s`` — MeterValues answered per second;
* ``rtt_p50_ms`` / ``rtt_p99_ms`` — handling latency as a station sees it (send to answer);
* ``cpu_pct`` — the server process's CPU over the window (100 = one core), ``rss_mb`` its peak
  resident memory; ``client_cpu_pct`` is the load generator's, on the same two cores;
* ``connect_s`` — how long it took every station to connect and boot (the ampflow figure includes
  each station's boot sequence: GetConfiguration and two charging profiles).

The warm-up after connecting (40 s by default) lets the boot sequences finish and the first
collector freeze happen before the window opens.

Run ``python -m benchmarks.gateway --json``; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import emit, parser

HOST = "127.0.0.1"
INTERVAL_S = 10.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the baseline: a bare ocpp server -----------------------------------------------------------


def serve_echo() -> None:
    """A bare OCPP 1.6 central system: validate, answer, store nothing (run in a subprocess)."""
    import websockets
    from ocpp.v16 import ChargePoint, call_result
    from ocpp.v16.enums import Action
    from websockets.asyncio.server import serve
    from websockets.typing import Subprotocol

    from ampflow.gateway.ocpp.protocol import on

    _raise_fd_limit()

    def now() -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    class Echo(ChargePoint):  # type: ignore[misc]
        @on(Action.boot_notification)
        def boot(self, **_: Any) -> Any:
            return call_result.BootNotification(current_time=now(), interval=300, status="Accepted")

        @on(Action.status_notification)
        def status(self, **_: Any) -> Any:
            return call_result.StatusNotification()

        @on(Action.meter_values)
        def meter(self, **_: Any) -> Any:
            return call_result.MeterValues()

        @on(Action.heartbeat)
        def heartbeat(self, **_: Any) -> Any:
            return call_result.Heartbeat(current_time=now())

    async def handler(ws: Any) -> None:
        cp = Echo(ws.request.path.rsplit("/", 1)[-1], ws)
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    async def freeze() -> None:  # the same collector tuning as ampflow serve
        while True:
            await asyncio.sleep(30)
            gc.freeze()

    async def main() -> None:
        freezer = asyncio.create_task(freeze())
        protocols = [Subprotocol("ocpp1.6")]
        async with serve(handler, HOST, 0, subprotocols=protocols, backlog=4096) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"serving on ws://{HOST}:{port}", flush=True)
            await asyncio.Future()
        freezer.cancel()

    asyncio.run(main())


# -- seeding --------------------------------------------------------------------------------------


def seed(url: str, n: int) -> None:
    """One site of ``n`` single-connector chargers and ``n`` registered stations."""
    from ampflow.engine.topology import ChargerSpec, SiteSpec
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.models import Station
    from ampflow.gateway.db.repo import sites as site_repo

    db = Database(url)
    db.upgrade()
    spec = SiteSpec(
        "bench",
        import_kw=11.0 * n,
        chargers=[ChargerSpec(f"cp-{i:05d}", "bench", max_kw=11.0) for i in range(n)],
    )
    with db.write() as s:
        site = site_repo.create_site(s, spec, site_repo.SiteInfo(timezone="UTC"))
        for charger in site.chargers:
            s.add(
                Station(
                    id=f"ST{charger.id[3:]}",
                    site_pk=site.pk,
                    charger_pk=charger.pk,
                    quirks=[],
                    flags=[],
                )
            )
    db.dispose()


# -- the servers ----------------------------------------------------------------------------------


@dataclass
class ServerProc:
    proc: subprocess.Popen[str]
    url: str


@contextlib.contextmanager
def run_server(kind: str, n: int, workdir: Path) -> Iterator[ServerProc]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMPFLOW_")}
    if kind == "echo":
        cmd = [sys.executable, "-m", "benchmarks.gateway", "--echo-server"]
    else:
        db_file = workdir / f"bench-{n}.db"
        seed(f"sqlite:///{db_file}", n)
        env.update(
            {
                "AMPFLOW_DATABASE_URL": f"sqlite:///{db_file}",
                "AMPFLOW_DATA_DIR": str(workdir),
                "AMPFLOW_LOG_LEVEL": "warning",
            }
        )
        cmd = [str(Path(sys.executable).parent / "ampflow"), "serve", "--port", "0"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"serving on (?:ws|http)://([\d.]+:\d+)", line)
        if m:
            url = f"ws://{m.group(1)}" + ("" if kind == "echo" else "/ocpp")
            break
    if not url:
        proc.kill()
        raise RuntimeError(f"the {kind} server did not start")
    threading.Thread(target=lambda: proc.stdout and proc.stdout.read(), daemon=True).start()
    try:
        yield ServerProc(proc, url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Sampler:
    """CPU and peak RSS of a process, sampled every 0.5 s in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil  # type: ignore[import-untyped]

        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self._stop.wait(0.5)

    def cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


# -- the stations ---------------------------------------------------------------------------------


@dataclass
class Load:
    """What the stations saw, and the measurement window."""

    latencies: list[float] = field(default_factory=list)
    answered: int = 0
    errors: int = 0
    connected: int = 0
    connect_s: float = 0.0
    window: list[float] = field(default_factory=lambda: [math.inf, math.inf])
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)


def _station_class() -> Any:
    from ocpp.v16 import ChargePoint, call_result
    from ocpp.v16.enums import Action

    from ampflow.gateway.ocpp.protocol import on

    config = [
        {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
        {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "10"},
        {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core,SmartCharging"},
    ]

    class Station(ChargePoint):  # type: ignore[misc]
        """Answers what the central system asks at boot; reports meter values."""

        @on(Action.get_configuration)
        def get_configuration(self, **_: Any) -> Any:
            return call_result.GetConfiguration(configuration_key=config)

        @on(Action.set_charging_profile)
        def set_charging_profile(self, **_: Any) -> Any:
            return call_result.SetChargingProfile(status="Accepted")

        @on(Action.get_composite_schedule)
        def get_composite_schedule(self, **_: Any) -> Any:
            return call_result.GetCompositeSchedule(status="Rejected")

        @on(Action.clear_charging_profile)
        def clear_charging_profile(self, **_: Any) -> Any:
            return call_result.ClearChargingProfile(status="Accepted")

    return Station


def _meter_values(rng: random.Random, wh: float) -> tuple[Any, float]:
    from ocpp.v16 import call

    amps = rng.uniform(0.0, 16.0)
    wh += amps * 690 * INTERVAL_S / 3600
    values = [
        {"value": f"{wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": f"{amps * 690:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
        *(
            {"value": f"{amps:.2f}", "measurand": "Current.Import", "phase": p, "unit": "A"}
            for p in ("L1", "L2", "L3")
        ),
    ]
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    msg = call.MeterValues(
        connector_id=1, meter_value=[{"timestamp": stamp, "sampled_value": values}]
    )
    return msg, wh


async def _station(url: str, sid: str, load: Load, sem: asyncio.Semaphore) -> None:
    import websockets
    from ocpp.v16 import call
    from websockets.typing import Subprotocol

    async with sem:
        ws = await websockets.connect(
            f"{url}/{sid}",
            subprotocols=[Subprotocol("ocpp1.6")],
            open_timeout=120,
            ping_interval=None,
        )
        cp = _station_class()(sid, ws, response_timeout=60)
        runner = asyncio.create_task(cp.start())
        boot = call.BootNotification(charge_point_vendor="Bench", charge_point_model="B1")
        await cp.call(boot)
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )
    load.connected += 1
    rng = random.Random(sid)
    wh = rng.uniform(1e5, 1e6)
    try:
        while math.isinf(load.window[0]):
            await asyncio.sleep(0.2)
        await asyncio.sleep(rng.uniform(0, INTERVAL_S))  # every station at its own phase
        while time.monotonic() < load.window[1]:
            msg, wh = _meter_values(rng, wh)
            t0 = time.monotonic()
            try:
                await cp.call(msg, suppress=False)
            except Exception:  # noqa: BLE001 - counted; the load goes on
                load.errors += 1
            t1 = time.monotonic()
            if load.window[0] <= t0 < load.window[1]:
                load.latencies.append(t1 - t0)
                load.answered += 1
            await asyncio.sleep(max(0.0, INTERVAL_S - (t1 - t0)))
    finally:
        runner.cancel()
        await ws.close()


async def drive(
    url: str, n: int, *, duration_s: float, warmup_s: float, probes: dict[str, Sampler]
) -> Load:
    """Connect ``n`` stations, warm up, and measure for ``duration_s``."""
    import ocpp.messages

    ocpp.messages.ASYNC_VALIDATION = False  # the stations validate inline: cheaper
    load = Load()
    sem = asyncio.Semaphore(64)
    t_start = time.monotonic()
    tasks = [asyncio.create_task(_station(url, f"ST{i:05d}", load, sem)) for i in range(n)]
    while load.connected < n:
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} stations failed: {failed[0].exception()!r}")
        await asyncio.sleep(0.2)
    load.connect_s = time.monotonic() - t_start
    gc.freeze()  # the load generator's own full collections would show up as latency
    load.window[:] = [time.monotonic() + warmup_s, time.monotonic() + warmup_s + duration_s]
    await asyncio.sleep(warmup_s)
    start = {name: p.cpu_s() for name, p in probes.items()}
    t0 = time.monotonic()
    await asyncio.sleep(duration_s)
    span = time.monotonic() - t0
    load.cpu = {name: (p.cpu_s() - start[name], span) for name, p in probes.items()}
    await asyncio.gather(*tasks, return_exceptions=True)
    return load


def measure(
    kind: str, n: int, *, duration_s: float, warmup_s: float, workdir: Path
) -> dict[str, Any]:
    """One server, ``n`` stations."""
    with run_server(kind, n, workdir) as server:
        probes = {"server": Sampler(server.proc.pid), "client": Sampler(os.getpid())}
        try:
            load = asyncio.run(
                drive(server.url, n, duration_s=duration_s, warmup_s=warmup_s, probes=probes)
            )
        finally:
            for p in probes.values():
                p.stop()
    lat = sorted(load.latencies)

    def pct(name: str) -> float:
        used, span = load.cpu[name]
        return round(100 * used / span, 1)

    return {
        "stations": n,
        "connect_s": round(load.connect_s, 1),
        "msgs_per_s": round(load.answered / duration_s, 1),
        "rtt_p50_ms": round(1000 * statistics.median(lat), 2) if lat else None,
        "rtt_p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "errors": load.errors,
        "cpu_pct": pct("server"),
        "rss_mb": round(probes["server"].peak_rss / 2**20, 1),
        "client_cpu_pct": pct("client"),
    }


def main(argv: list[str] | None = None) -> None:
    p: argparse.ArgumentParser = parser(__doc__.splitlines()[0] if __doc__ else "gateway")
    p.add_argument("--sizes", default="500,1000,2000", help="numbers of stations")
    p.add_argument("--duration", type=float, default=30.0, help="measurement window [s]")
    p.add_argument("--warmup", type=float, default=40.0, help="after connecting [s]")
    p.add_argument("--servers", default="echo,ampflow", help="which servers to measure")
    p.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.echo_server:
        serve_echo()
        return
    _raise_fd_limit()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    out: dict[str, Any] = {
        "benchmark": "gateway",
        "interval_s": INTERVAL_S,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="ampflow-bench-gateway-") as tmp:
        for n in sizes:
            for kind in args.servers.split(","):
                row = measure(
                    kind, n, duration_s=args.duration, warmup_s=args.warmup, workdir=Path(tmp)
                )
                out["runs"].append({"server": kind, **row})
    ours = [r for r in out["runs"] if r["server"] == "ampflow"]
    ok = [
        r
        for r in ours
        if r["rtt_p99_ms"] is not None and r["rtt_p99_ms"] < 50 and r["rss_mb"] < 1024
    ]
    out["max_stations_p99_under_50ms_rss_under_1gb"] = max((r["stations"] for r in ok), default=0)
    emit(out, as_json=args.json)


if __name__ == "__main__":
    main()
