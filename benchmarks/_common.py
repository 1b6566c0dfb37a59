"""Shared helpers: timing by median of repeats, peak memory, JSON output; for the benchmarks
of ``ampflow serve`` in its own process, its start and stop, the store, seeding a fleet and
watching simulated stations."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any


def median_ms(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after ``warmup`` untimed runs [ms]."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far [MB]."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def emit(result: dict[str, Any], *, as_json: bool) -> None:
    """Print the result: one JSON object, or one line per key."""
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key:>28}: {value}\n")


# -- ampflow serve in its own process -------------------------------------------------------------

SECRET = "benchmark-secret-key-0123456789abcdef"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVING_ON = re.compile(r"serving on (https?://[\d.]+:\d+)")


def serve_command() -> list[str]:
    """``ampflow serve --port 0`` from this interpreter's environment."""
    return [str(Path(sys.executable).parent / "ampflow"), "serve", "--port", "0"]


def serve_env(url: str, data_dir: Path | str, **extra: str) -> dict[str, str]:
    """This process's environment without ``AMPFLOW_*``, plus test settings for ``ampflow serve``
    on the database at ``url`` (log level warning, unbuffered output) and ``extra``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AMPFLOW_")},
        "AMPFLOW_DATABASE_URL": url,
        "AMPFLOW_DATA_DIR": str(data_dir),
        "AMPFLOW_SECRET_KEY": SECRET,
        "AMPFLOW_ENVIRONMENT": "test",
        "AMPFLOW_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


async def start_serve(env: dict[str, str], log: IO[str]) -> asyncio.subprocess.Process:
    """``ampflow serve --port 0`` with ``env``: stdout piped (see :func:`serving_url`), stderr
    to ``log``."""
    return await asyncio.create_subprocess_exec(
        *serve_command(), env=env, stdout=asyncio.subprocess.PIPE, stderr=log
    )


async def serving_url(proc: asyncio.subprocess.Process) -> str:
    """The URL the server prints in its ``serving on ...`` line (waits up to 120 s)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        if not line:
            break
        m = SERVING_ON.search(line)
        if m:
            return m.group(1)
    raise RuntimeError("ampflow serve did not start (see serve.log)")


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the store ------------------------------------------------------------------------------------


def pg_url() -> str | None:
    """A PostgreSQL server that answers (``AMPFLOW_BENCH_DATABASE_URL``, else
    ``AMPFLOW_TEST_DATABASE_URL``, else :data:`DEFAULT_PG`), or None."""
    import sqlalchemy as sa

    url = (
        os.environ.get("AMPFLOW_BENCH_DATABASE_URL")
        or os.environ.get("AMPFLOW_TEST_DATABASE_URL")
        or DEFAULT_PG
    )
    try:
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except (sa.exc.SQLAlchemyError, ImportError):
        return None
    return url


@contextlib.contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """The URL of a fresh schema on the PostgreSQL server at ``base``, dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    schema = f"ampflow_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def seed_fleet(
    url: str, sites: Mapping[str, Sequence[tuple[str, str | None]]], *, kw: float
) -> str:
    """Migrate the database and create ``sites``: per site id, its ``(charger_id, station_id)``
    pairs (single-connector ``kw`` chargers; a station_id of None registers no station), an
    import connection of twice the chargers' total, and import prices that rise over the day
    (so the plan charges at full power now). Returns an admin API key."""
    from ampflow.engine.topology import ChargerSpec, SiteSpec
    from ampflow.gateway.db import Database
    from ampflow.gateway.db.base import Role, SignalKind
    from ampflow.gateway.db.repo import keys, signals, stations
    from ampflow.gateway.db.repo import sites as site_repo

    db = Database(url)
    db.upgrade()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    step = timedelta(minutes=15)
    with db.write() as s:
        for site, pairs in sites.items():
            chargers = [ChargerSpec(cid, site, max_kw=kw, connectors=1) for cid, _ in pairs]
            spec = SiteSpec(site, import_kw=2 * kw * len(pairs), chargers=chargers)
            site_repo.create_site(s, spec, site_repo.SiteInfo(timezone="UTC"))
            for cid, sid in pairs:
                if sid is not None:
                    stations.register_station(s, station_id=sid, site_id=site, charger_id=cid)
            signals.create_signal(
                s,
                site_id=site,
                kind=SignalKind.IMPORT_PRICE,
                intervals=[
                    signals.IntervalSpec(now + k * step, now + (k + 1) * step, 0.10 + 0.001 * k)
                    for k in range(-4, 96)
                ],
                currency="EUR",
            )
        _, token = keys.create_api_key(s, role=Role.ADMIN, pepper=SECRET.encode())
    db.dispose()
    return token


def dr_event(site: str, cap_kw: float) -> dict[str, Any]:
    """The body of ``POST /dr-events``: cap ``site`` at ``cap_kw`` from a minute ago for an hour."""
    now = datetime.now(UTC)
    return {
        "site_id": site,
        "start": (now - timedelta(minutes=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "cap_kw": cap_kw,
    }


# -- simulated stations ---------------------------------------------------------------------------


def sim_station(station_id: str, i: int, ws: str, *, clock: Any, version: Any, kw: float) -> Any:
    """A single-connector ``kw`` station with EV number ``i`` charging on it (80 kWh over 12
    simulated hours, token ``TAG{i:05d}``), connecting to ``ws``."""
    from ampflow.gateway.stations import EvPlan, SimulatedStation, StationConfig

    cfg = StationConfig(station_id, version=version, max_kw=kw, meter_interval_s=60.0)
    ev = EvPlan(f"ev-{i}", 0.0, 12 * 3600.0, 80.0, kw, f"TAG{i:05d}", connector=1)
    return SimulatedStation(cfg, ws, evs=[ev], clock=clock, step_s=10.0, response_timeout_s=60.0)


def limit_kw(station: Any) -> float:
    """What the station's profiles allow its connector now [kW]."""
    c = station.core.connector(1)
    limit_w, _ = station.core.profiles.limit(1, datetime.now(UTC), station.cfg, c.tx)
    return float(limit_w) / 1000.0


def at_full_power(station: Any) -> bool:
    """Charging under an accepted TxProfile of the whole charger (its ``max_kw``)."""
    if station.core.connector(1).tx is None:
        return False
    if not any(e.accepted and e.profile.purpose == "TxProfile" for e in station.profile_log):
        return False
    return limit_kw(station) >= float(station.cfg.max_kw) - 0.1


def at_most(kw: float) -> Callable[[Any], bool]:
    """Whether the station's profiles hold it at or below ``kw``."""
    return lambda station: limit_kw(station) <= kw + 1e-3


async def wait_all(
    stations: Sequence[Any],
    ok: Callable[[Any], bool],
    *,
    since: float,
    timeout: float,
    poll_s: float = 0.05,
    strict: bool = False,
) -> tuple[list[float], list[Any]]:
    """Per station for which ``ok`` came to hold within ``timeout``, the instant (monotonic) it
    accepted the last profile before (``since`` if none since then); and the stations for which
    it did not (``strict``: TimeoutError instead).

    The instants come from the stations' own profile logs, so ``poll_s`` only bounds how soon
    this returns; polling faster would take the event loop from the stations it measures."""
    pending = dict(enumerate(stations))
    done: list[float] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, st in list(pending.items()):
            if ok(st):
                accepted = [e.at for e in st.profile_log if e.accepted and e.at >= since]
                done.append(max(accepted) if accepted else since)
                del pending[key]
        await asyncio.sleep(poll_s)
    if strict and pending:
        raise TimeoutError(f"{len(pending)} of {len(stations)} stations not there in time")
    return done, list(pending.values())
