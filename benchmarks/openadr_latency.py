"""OpenADR latency: an event created on the VTN -> SetChargingProfile accepted at 1,000 stations.

``ampflow serve`` runs in its own process (uvicorn, OCPP gateway, control loop, and an OpenADR
2.0b VEN configured in its TOML file). This process runs openleadr's ``OpenADRServer`` as the
VTN and 1,000 simulated OCPP 1.6 charge points (:mod:`ampflow.gateway.stations`, one 11 kW
three-phase connector each, one EV charging on each) on 127.0.0.1. Rising import prices make
the plan charge every EV at full power, so every charger holds an 11 kW TxProfile before the
event.

One measurement: the VTN creates a LOAD_DISPATCH event (a site cap of ``share`` x 11 kW per
charger, starting now); the clock stops when every station has accepted a SetChargingProfile
that holds it at or below its share of the cap (the station's own profile log, in this
process's monotonic time). It is split into

* ``poll_wait_s``: event created -> the VTN hands it to the VEN in an ``oadrDistributeEvent``
  (openleadr's delivery callback): the 2.0b pull model's wait, at most one poll period;
* ``ampflow_s``: handed out -> all 1,000 profiles accepted: parsing, mapping and storing the
  event, the control loop's allocation under the new cap, and the gateway's 1,000
  SetChargingProfile calls with their answers (target <= 2 s). Within it, ``stored_s`` is
  handed out -> the signal is in the database (the VEN's own work), ``answer_s`` -> the VTN has
  the VEN's optIn, and ``first_profile_s`` -> the first station accepted its new profile.

The baseline, measured in the same run on the same fleet, is the same cap posted to the HTTP API
(``POST /dr-events``): the path without OpenADR. Each measurement is followed by a
cancellation and a wait until every charger is back at full power.

The store is PostgreSQL when a server answers at ``AMPFLOW_BENCH_DATABASE_URL`` (else
``AMPFLOW_TEST_DATABASE_URL``, else ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a
schema of its own dropped afterwards; else a SQLite file (``--database`` chooses). At 1,000
stations SQLite's single writer is the bottleneck of the OCPP gateway (``database is locked``).

Run ``python -m benchmarks.openadr_latency --json``; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    at_full_power,
    at_most,
    dr_event,
    emit,
    parser,
    pg_schema,
    pg_url,
    seed_fleet,
    serve_env,
    serving_url,
    sim_station,
    start_serve,
    stop_process,
    wait_all,
)

SITE = "fleet"
KW = 11.0  # per charger
PROGRAM = "http://utility.bench/dr"


# -- the store ----------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """``(backend, url)``: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    base = pg_url() if kind in ("auto", "postgresql") else None
    if base is None:
        if kind == "postgresql":
            raise RuntimeError("no PostgreSQL server answers")
        yield "sqlite", f"sqlite:///{workdir / 'ampflow.db'}"
        return
    with pg_schema(base) as url:
        yield "postgresql", url


def seed(url: str, n: int) -> str:
    """The site with ``n`` chargers and their stations, rising prices; returns an admin key."""
    return seed_fleet(url, {SITE: [(f"cp-{i:04d}", f"st-{i:04d}") for i in range(n)]}, kw=KW)


# -- the VTN ------------------------------------------------------------------------------------


class Vtn:
    """openleadr's VTN; records when it hands out each event and what the VEN answered."""

    def __init__(self, poll_s: float) -> None:
        from openleadr import OpenADRServer

        self.server = OpenADRServer(
            vtn_id="BENCH_VTN",
            http_host="127.0.0.1",
            http_port=0,
            requested_poll_freq=timedelta(seconds=poll_s),
            show_fingerprint=False,
            ven_lookup=lambda ven_id: self.vens.get(ven_id, {}),
        )
        self.server.add_handler("on_create_party_registration", self._register)
        self.vens: dict[str, dict[str, Any]] = {}
        self.delivered: dict[str, float] = {}
        self.answered: dict[str, tuple[float, str]] = {}
        self.url = ""

    async def start(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):  # openleadr prints a banner
            await self.server.run()
        port = self.server.app_runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"

    async def _register(self, info: dict[str, Any]) -> tuple[str, str]:
        ven_id = f"ven-{len(self.vens) + 1}"
        self.vens[ven_id] = {
            "ven_id": ven_id,
            "ven_name": info["ven_name"],
            "fingerprint": None,
            "registration_id": f"reg-{ven_id}",
        }
        return ven_id, f"reg-{ven_id}"

    def dispatch(self, event_id: str, cap_kw: float) -> float:
        """Queue a LOAD_DISPATCH event (cap in kW, now for an hour); returns the instant."""
        import dataclasses

        from openleadr import enums, objects

        (ven_id,) = self.vens
        t0 = datetime.now(UTC) - timedelta(minutes=1)
        power = dataclasses.replace(enums.MEASUREMENTS.ACTIVE_POWER, scale="k")
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id,
                modification_number=0,
                market_context=PROGRAM,
                event_status="far",
                created_date_time=datetime.now(UTC),
            ),
            event_signals=[
                objects.EventSignal(
                    intervals=[
                        objects.Interval(
                            dtstart=t0, duration=timedelta(hours=1), signal_payload=cap_kw, uid=0
                        )
                    ],
                    signal_name="LOAD_DISPATCH",
                    signal_type="setpoint",
                    signal_id=f"{event_id}-0",
                    measurement=power,
                )
            ],
            targets=[{"ven_id": ven_id}],
        )

        def delivered() -> None:
            self.delivered.setdefault(event_id, time.monotonic())

        def answered(ven_id: str, event_id: str, opt_type: str) -> None:
            self.answered[event_id] = (time.monotonic(), opt_type)

        at = time.monotonic()
        self.server.add_raw_event(ven_id, event, callback=answered, delivery_callback=delivered)
        return at

    def cancel(self, event_id: str) -> None:
        (ven_id,) = self.vens
        self.server.cancel_event(ven_id, event_id)


# -- the fleet ----------------------------------------------------------------------------------


async def wait_last(
    stations: list[Any], ok: Callable[[Any], bool], *, since: float, timeout: float
) -> tuple[float, list[Any]]:
    """When (monotonic) the last station accepted the profile that made ``ok`` hold, and the
    stations for which it did not hold within ``timeout``."""
    # The instants come from the stations' own profile logs: polling faster than the default
    # only takes the shared event loop from the 1,000 stations being measured.
    done, late = await wait_all(stations, ok, since=since, timeout=timeout)
    return (max(done) if done else math.nan), late


# -- one run ------------------------------------------------------------------------------------


async def measure(
    args: argparse.Namespace, workdir: Path, backend: str, url: str
) -> dict[str, Any]:
    import ocpp.messages

    from ampflow.gateway.stations import OcppVersion, SimClock, run_fleet

    # Validate inline in the load generator, as benchmarks.dr_latency does (cheaper than the
    # thread pool; the server keeps its own setting in its own process).
    ocpp.messages.ASYNC_VALIDATION = False

    n = args.stations
    token = seed(url, n)
    vtn = Vtn(args.poll_s)
    logging.getLogger("openleadr").setLevel(logging.ERROR)  # after its import set INFO
    await vtn.start()
    config = workdir / "ampflow.toml"
    config.write_text(
        "\n".join(
            [
                "[ocpp]",
                "authorize_unknown_tokens = true",
                "response_timeout_s = 30.0",
                "",
                "[[openadr.vens]]",
                'name = "utility"',
                'protocol = "2.0b"',
                f'vtn_url = "{vtn.url}"',
                'ven_name = "ampflow-bench"',
                "allow_insecure = true",
                f'sites = [{{ site_id = "{SITE}" }}]',
            ]
        )
    )
    env = serve_env(url, workdir, AMPFLOW_LOG_LEVEL=args.log_level, AMPFLOW_CONFIG=str(config))
    log = (workdir / "serve.log").open("w")
    proc = await start_serve(env, log)
    stop = asyncio.Event()
    fleet_task: asyncio.Task[None] | None = None
    try:
        base = await serving_url(proc)
        t_reg = time.monotonic() + 60
        while not vtn.vens and time.monotonic() < t_reg:
            await asyncio.sleep(0.05)
        if not vtn.vens:
            raise RuntimeError("the VEN did not register with the VTN")
        clock = SimClock()
        ws = f"{base.replace('http', 'ws')}/ocpp"
        stations = [
            sim_station(f"st-{i:04d}", i, ws, clock=clock, version=OcppVersion.V16, kw=KW)
            for i in range(n)
        ]
        fleet_task = asyncio.create_task(run_fleet(stations, stop, ramp_s=args.ramp_s))
        t_full = time.monotonic()
        _, late = await wait_last(stations, at_full_power, since=t_full, timeout=args.ready_s)
        setup_s = time.monotonic() - t_full
        ready = [st for st in stations if st not in late]
        _progress(f"{len(ready)} of {n} stations at full power after {setup_s:.1f} s")
        if len(ready) < 0.9 * n:
            raise RuntimeError(f"only {len(ready)} of {n} stations reached full power")

        # An idle connection is dropped after 2 s, before the server's keep-alive (5 s) can close
        # it under a request sent after a long wait for the stations (httpx.ReadError).
        async with httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(keepalive_expiry=2.0),
        ) as api:
            # Caps for the measured stations: with stations left out the others' shares are
            # only lower, so each measured one still ends at or below its share.
            baseline = await _baseline(api, ready, len(ready), args.repeats)
            openadr = await _openadr(vtn, ready, len(ready), args.repeats, url)
    finally:
        stop.set()
        if fleet_task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fleet_task, 30)
        await stop_process(proc)
        await vtn.server.stop()
        log.close()
        if args.serve_log:
            Path(args.serve_log).write_text((workdir / "serve.log").read_text())
        elif sys.exc_info()[0] is not None:
            sys.stderr.write((workdir / "serve.log").read_text()[-20000:])
    ampflow = [x["ampflow_s"] for x in openadr]
    return {
        "benchmark": "openadr_latency",
        "stations": n,
        "stations_measured": len(ready),
        "database": backend,
        "poll_period_s": args.poll_s,
        "fleet_ready_s": round(setup_s, 2),
        "poll_wait_s": [x["poll_wait_s"] for x in openadr],
        "ampflow_s": ampflow,
        "event_to_all_accepted_s": [x["total_s"] for x in openadr],
        "answer_s": [x["answer_s"] for x in openadr],
        "stored_s": [x["stored_s"] for x in openadr],
        "first_profile_s": [x["first_profile_s"] for x in openadr],
        "median_poll_wait_s": round(statistics.median(x["poll_wait_s"] for x in openadr), 3),
        "median_ampflow_s": round(statistics.median(ampflow), 3),
        "max_ampflow_s": round(max(ampflow), 3),
        "baseline_api_post_to_all_accepted_s": baseline,
        "median_baseline_api_s": round(statistics.median(baseline), 3),
        "target_ampflow_s": 2.0,
        "target_met": max(ampflow) <= 2.0,
    }


def _progress(text: str) -> None:
    sys.stderr.write(f"[openadr_latency] {text}\n")
    sys.stderr.flush()


async def _recover(stations: list[Any]) -> None:
    _, late = await wait_last(stations, at_full_power, since=time.monotonic(), timeout=300)
    if late:
        _progress(f"{len(late)} stations not back at full power; measuring on")


async def _baseline(
    api: httpx.AsyncClient, stations: list[Any], n: int, repeats: int
) -> list[float]:
    out = []
    for k in range(repeats):
        share = 0.7 - 0.05 * k
        body = dr_event(SITE, share * KW * n)
        t0 = time.monotonic()
        r = await api.post("/dr-events", json=body)
        r.raise_for_status()
        done, missed = await wait_last(stations, at_most(share * KW), since=t0, timeout=120)
        if missed:
            raise RuntimeError(f"{len(missed)} stations did not follow the API cap in 120 s")
        out.append(round(done - t0, 3))
        _progress(f"API cap {k}: all accepted after {done - t0:.3f} s")
        (await api.post(f"/dr-events/{r.json()['id']}/cancel")).raise_for_status()
        await _recover(stations)
    return out


def _stored_at(url: str, external_id: str) -> float:
    """When the VEN's signal appears in the database (polled every 20 ms, so as not to take
    the GIL from the stations being measured; monotonic)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    query = sa.text("SELECT 1 FROM signals WHERE external_id = :x")
    deadline = time.monotonic() + 120
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                if conn.execute(query, {"x": external_id}).first() is not None:
                    return time.monotonic()
                conn.rollback()  # a fresh snapshot next time
                time.sleep(0.02)
    finally:
        engine.dispose()
    return float("nan")


async def _openadr(
    vtn: Vtn, stations: list[Any], n: int, repeats: int, url: str
) -> list[dict[str, float]]:
    out = []
    for k in range(repeats):
        share = 0.5 + 0.05 * k
        event_id = f"bench-{k}"
        t0 = vtn.dispatch(event_id, share * KW * n)
        stored = asyncio.create_task(asyncio.to_thread(_stored_at, url, f"utility|{event_id}|0"))
        done, missed = await wait_last(stations, at_most(share * KW), since=t0, timeout=120)
        if missed:
            raise RuntimeError(f"{len(missed)} stations did not follow the event in 120 s")
        first = min(
            min((e.at for e in st.profile_log if e.accepted and e.at >= t0), default=done)
            for st in stations
        )
        handed = vtn.delivered[event_id]
        # The optIn may reach the VTN after the stations have their profiles: wait for it.
        t_answer = time.monotonic() + 30
        while event_id not in vtn.answered and time.monotonic() < t_answer:
            await asyncio.sleep(0.05)
        answer = vtn.answered.get(event_id, (float("nan"), ""))
        if answer[1] != "optIn":
            raise RuntimeError(f"the VEN answered {answer[1]!r} to {event_id}")
        out.append(
            {
                "poll_wait_s": round(handed - t0, 3),
                "ampflow_s": round(done - handed, 3),
                "total_s": round(done - t0, 3),
                "answer_s": round(answer[0] - handed, 3),
                "stored_s": round(await stored - handed, 3),
                "first_profile_s": round(first - handed, 3),
            }
        )
        _progress(f"OpenADR event {k}: {out[-1]}")
        vtn.cancel(event_id)
        await _recover(stations)
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--poll-s", type=float, default=1.0, help="the VTN's poll period [s]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ramp-s", type=float, default=10.0, help="spread the connections [s]")
    p.add_argument(
        "--ready-s",
        type=float,
        default=300.0,
        help="how long the fleet may take to charge at full power; stations that do not are "
        "left out of the measurement (at most 10 %%)",
    )
    p.add_argument("--log-level", default="warning", help="of ampflow serve")
    p.add_argument(
        "--database",
        choices=["auto", "sqlite", "postgresql"],
        default="auto",
        help="auto: PostgreSQL when a server answers, else SQLite",
    )
    p.add_argument("--serve-log", default="", help="keep ampflow serve's log in this file")
    args = p.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="ampflow-openadr-bench-") as tmp,
        database(args.database, Path(tmp)) as (backend, url),
    ):
        result = asyncio.run(measure(args, Path(tmp), backend, url))
    emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
