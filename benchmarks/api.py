"""HTTP API: GET a site's live state and POST a DR event, against a bare FastAPI endpoint.

The database holds 1,000 connectors (10 sites of 50 two-connector 11 kW chargers), 300 open
sessions, and a month of meter values for every connector at a 15-minute cadence (the clock-aligned
interval billing meters and OCPP ``ClockAlignedDataInterval=900`` use), two measurands each (energy
register and power): 5.76 million rows. ``ampflow serve`` runs in its own process (uvicorn, one
worker, control loop on) and a load generator in this process keeps ``concurrency`` requests in
flight over keep-alive connections on 127.0.0.1. The baseline is a bare FastAPI app (one ``def``
endpoint returning a constant JSON object) served the same way, measured in the same run.

Both SQLite (a file) and PostgreSQL are measured; PostgreSQL is used when a server answers at
``AMPFLOW_BENCH_DATABASE_URL`` (else ``AMPFLOW_TEST_DATABASE_URL``, else
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a schema of its own that is dropped
afterwards.

Run ``python -m benchmarks.api --json``; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from benchmarks._common import (
    SECRET,
    SERVING_ON,
    emit,
    parser,
    pg_schema,
    pg_url,
    serve_command,
    serve_env,
)

HOST = "127.0.0.1"


# -- the bare baseline ----------------------------------------------------------------------------


def serve_bare() -> None:
    """Serve a bare FastAPI app on an ephemeral port (run in a subprocess by the benchmark)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    body = {"site_id": "site-0", "power_kw": 0.0, "ok": True}

    @app.get("/bare")
    def bare() -> dict[str, Any]:
        return body

    @app.post("/bare")
    def bare_post(payload: dict[str, Any]) -> dict[str, Any]:
        return {"received": len(payload)}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    sock.listen(2048)
    print(f"serving on http://{HOST}:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


# -- seeding --------------------------------------------------------------------------------------


def _site_body(i: int, chargers: int) -> dict[str, Any]:
    sid = f"site-{i}"
    half = chargers // 2
    return {
        "id": sid,
        "timezone": "Europe/Amsterdam",
        "import_kw": 400,
        "phase_a": [630, 630, 630],
        "nodes": [
            {"id": "panel-a", "parent": sid, "import_kw": 250},
            {"id": "panel-b", "parent": sid, "import_kw": 250},
        ],
        "chargers": [
            {
                "id": f"cp-{k:03d}",
                "node": "panel-a" if k < half else "panel-b",
                "max_kw": 11,
                "connectors": 2,
            }
            for k in range(chargers)
        ],
    }


def seed(url: str, *, sites: int, chargers: int, days: int, cadence_s: int) -> dict[str, Any]:
    """Create the sites, sessions and meter values; returns what it made and how long it took."""
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.base import Measurand, Role
    from ampflow.gateway.db.repo import keys, sessions
    from ampflow.gateway.db.repo import sites as site_repo

    t0 = time.perf_counter()
    db = Database(url)
    db.upgrade()
    from ampflow.gateway.api.schemas.sites import SiteCreate

    with db.write() as s:
        for i in range(sites):
            body = SiteCreate.model_validate(_site_body(i, chargers))
            site_repo.create_site(s, body.spec(), body.info())
        _, admin = keys.create_api_key(s, role=Role.ADMIN, pepper=SECRET.encode())
        _, utility = keys.create_api_key(
            s,
            role=Role.UTILITY,
            pepper=SECRET.encode(),
            site_ids=[f"site-{i}" for i in range(sites)],
        )
    now = datetime.now(UTC)
    with db.write() as s:
        per_site = chargers * 2 * 3 // 10  # 30 % of the connectors, every third one
        for i in range(sites):
            for k in range(0, 3 * per_site, 3):
                sessions.start_session(
                    s,
                    connector_id=f"site-{i}/cp-{k // 2:03d}/{k % 2 + 1}",
                    started_at=now - timedelta(hours=1),
                    targets={
                        "energy_target_kwh": 20.0,
                        "departure_at": now + timedelta(hours=8),
                    },
                )
    t_tree = time.perf_counter() - t0
    with db.read() as s:
        pks = [int(x) for x in s.scalars(sa.text("SELECT pk FROM connectors ORDER BY pk"))]
    n_rows = _meter_rows(
        db,
        pks,
        days=days,
        cadence_s=cadence_s,
        end=now,
        measurands=(int(Measurand.ENERGY_IMPORT_WH), int(Measurand.POWER_IMPORT_W)),
    )
    size = _size_bytes(db)
    db.dispose()
    return {
        "connectors": len(pks),
        "meter_rows": n_rows,
        "meter_bytes_per_row": round(size / n_rows, 1) if size else None,
        "seed_s": round(time.perf_counter() - t0, 1),
        "seed_tree_s": round(t_tree, 2),
        "admin": admin,
        "utility": utility,
    }


def _meter_rows(
    db: Any,
    pks: list[int],
    *,
    days: int,
    cadence_s: int,
    end: datetime,
    measurands: tuple[int, ...],
) -> int:
    """Bulk-load meter values: generated inside PostgreSQL, or executemany in key order on
    SQLite. The energy register rises, the power is 0 or 1-11 kW.

    As in any bulk load, the primary key and the foreign key are checked once after the load
    rather than row by row (PostgreSQL), or the foreign key is not checked (SQLite: every
    connector pk comes from the connectors table).
    """
    n = days * 86400 // cadence_s
    t_end = int(end.timestamp()) // cadence_s * cadence_s
    t_first = t_end - cadence_s * n
    if db.dialect == "postgresql":
        energy_code, power_code = measurands
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE meter_values DROP CONSTRAINT pk_meter_values")
            conn.exec_driver_sql(
                "ALTER TABLE meter_values DROP CONSTRAINT fk_meter_values_connector_pk_connectors"
            )
            conn.execute(
                sa.text(
                    "INSERT INTO meter_values (connector_pk, measurand, phase, ts, value) "
                    "SELECT c.pk, m.m, 0, t.ts, CASE WHEN m.m = :energy "
                    "THEN 1e6 + c.pk + (t.ts - :t0) * 1.5 "
                    "ELSE (random() < 0.4)::int * (1000 + random() * 10000) END "
                    "FROM connectors c CROSS JOIN (VALUES (:energy), (:power)) AS m(m) "
                    "CROSS JOIN generate_series(:t0, :t1, :step) AS t(ts) "
                    "ORDER BY 1, 2, 3, 4"
                ),
                {
                    "energy": energy_code,
                    "power": power_code,
                    "t0": t_first + cadence_s,
                    "t1": t_end,
                    "step": cadence_s,
                },
            )
            conn.exec_driver_sql(
                "ALTER TABLE meter_values ADD CONSTRAINT pk_meter_values "
                "PRIMARY KEY (connector_pk, measurand, phase, ts)"
            )
            conn.exec_driver_sql(
                "ALTER TABLE meter_values ADD CONSTRAINT fk_meter_values_connector_pk_connectors "
                "FOREIGN KEY (connector_pk) REFERENCES connectors (pk) ON DELETE CASCADE"
            )
            conn.exec_driver_sql("ANALYZE meter_values")
        return len(pks) * len(measurands) * n
    ts = t_first + cadence_s * np.arange(1, n + 1, dtype=np.int64)
    rng = np.random.default_rng(0)
    total = 0
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("BEGIN")
        for pk in pks:
            power = np.where(rng.random(n) < 0.4, rng.uniform(1000, 11000, n), 0.0)
            energy = np.cumsum(power * cadence_s / 3600.0) + 1e6 * rng.random()
            rows = [
                (pk, m, 0, int(t), float(v))
                for m, values in zip(measurands, (energy, power), strict=True)
                for t, v in zip(ts, values, strict=True)
            ]
            cur.executemany("INSERT INTO meter_values VALUES (?, ?, ?, ?, ?)", rows)
            total += len(rows)
        cur.execute("COMMIT")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("ANALYZE")
    finally:
        raw.close()
    return total


def _size_bytes(db: Any) -> int | None:
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            return int(
                conn.exec_driver_sql("SELECT pg_total_relation_size('meter_values')").scalar_one()
            )
        page = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
        try:
            pages = conn.exec_driver_sql(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%meter_values%'"
            ).scalar_one()
            return int(pages) if pages else None
        except sa.exc.OperationalError:  # dbstat not compiled in
            count = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
            return count * page


# -- servers and load -----------------------------------------------------------------------------


class Server:
    """A server subprocess that prints ``serving on http://...``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in self.proc.stdout:
            m = SERVING_ON.search(line)
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(f"server {args} did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def load(
    url: str,
    make: Callable[[int], tuple[str, str, dict[str, Any] | None]],
    *,
    headers: dict[str, str],
    requests: int,
    concurrency: int,
    warmup: int = 50,
) -> dict[str, float]:
    """``requests`` calls over ``concurrency`` keep-alive connections; requests/s, p50/p99 [ms].

    The client is a minimal asyncio HTTP/1.1 loop over raw streams, so that on a small machine
    it takes as little CPU from the server as possible (a thread pool of httpx clients would cap
    even the bare endpoint at a few hundred requests per second here).
    """
    host, port = url.removeprefix("http://").split(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def connection(counter: Iterator[int], latencies: list[float], errors: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i in counter:
                method, path, body = make(i)
                data = b"" if body is None else json.dumps(body).encode()
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                )
                t = time.perf_counter()
                writer.write(head.encode() + data)
                status, length = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t)
                if status >= 400:
                    errors.append(status)
        finally:
            writer.close()
            await writer.wait_closed()

    async def run(n: int, offset: int, conns: int) -> tuple[float, list[float], list[int]]:
        counter = iter(range(offset, offset + n))
        latencies: list[float] = []
        errors: list[int] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(connection(counter, latencies, errors) for _ in range(conns)))
        return time.perf_counter() - t0, latencies, errors

    asyncio.run(run(warmup, 0, 1))
    wall, latencies, errors = asyncio.run(run(requests, warmup, concurrency))
    ms = np.array(latencies) * 1000
    return {
        "rps": round(requests / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": len(errors),
    }


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value.strip())
    raise RuntimeError(f"response without Content-Length: {head[:200]!r}")


@contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    base = pg_url()
    assert base is not None
    with pg_schema(base) as url:
        yield url


def run_backend(backend: str, args: argparse.Namespace, bare: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _database(backend, Path(tmp)) as url:
        made = seed(
            url, sites=args.sites, chargers=args.chargers, days=args.days, cadence_s=args.cadence_s
        )
        server = Server(serve_command(), serve_env(url, tmp))
        try:
            state = load(
                server.url,
                lambda i: ("GET", f"/sites/site-{i % args.sites}/state", None),
                headers={"Authorization": f"Bearer {made['admin']}"},
                requests=args.requests,
                concurrency=args.concurrency,
            )
            start = datetime.now(UTC) + timedelta(days=1)

            def event(i: int) -> tuple[str, str, dict[str, Any]]:
                t = start + timedelta(minutes=15 * i)
                return (
                    "POST",
                    "/dr-events",
                    {
                        "site_id": f"site-{i % args.sites}",
                        "start": t.isoformat(),
                        "end": (t + timedelta(hours=1)).isoformat(),
                        "cap_kw": 100 + i % 200,
                    },
                )

            post = load(
                server.url,
                event,
                headers={"Authorization": f"Bearer {made['utility']}"},
                requests=args.requests // 2,
                concurrency=args.concurrency,
            )
        finally:
            server.stop()
    return {
        "get_state": state,
        "post_dr_event": post,
        "get_state_vs_bare": round(bare["get"]["rps"] / state["rps"], 1),
        "post_dr_event_vs_bare": round(bare["post"]["rps"] / post["rps"], 1),
        "connectors": made["connectors"],
        "meter_rows": made["meter_rows"],
        "meter_bytes_per_row": made["meter_bytes_per_row"],
        "seed_s": made["seed_s"],
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=10)
    p.add_argument("--chargers", type=int, default=50, help="two-connector chargers per site")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--cadence-s", type=int, default=900)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_bare:
        serve_bare()
        return
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    bare_server = Server([sys.executable, "-m", "benchmarks.api", "--serve-bare"], env)
    try:
        bare = {
            "get": load(
                bare_server.url,
                lambda i: ("GET", "/bare", None),
                headers={},
                requests=args.requests,
                concurrency=args.concurrency,
            ),
            "post": load(
                bare_server.url,
                lambda i: ("POST", "/bare", {"i": i}),
                headers={},
                requests=args.requests // 2,
                concurrency=args.concurrency,
            ),
        }
    finally:
        bare_server.stop()
    result: dict[str, Any] = {
        "benchmark": "api",
        "setup": {
            "sites": args.sites,
            "connectors": args.sites * args.chargers * 2,
            "open_sessions": "30% of connectors",
            "meter_values": (
                f"{args.days} days x {args.cadence_s} s cadence x 2 measurands per connector"
            ),
            "concurrency": args.concurrency,
            "requests": args.requests,
            "server": "ampflow serve: uvicorn, 1 worker, control loop on",
            "client": "asyncio raw HTTP/1.1 keep-alive, in another process",
            "cpus": os.cpu_count(),
        },
        "bare_fastapi": bare,
    }
    for backend in args.backends.split(","):
        if backend == "postgresql" and pg_url() is None:
            result[backend] = "unreachable"
            continue
        result[backend] = run_backend(backend, args, bare)
    emit(result, as_json=args.json)


if __name__ == "__main__":
    main()
