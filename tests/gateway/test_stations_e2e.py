"""End to end: the API with the OCPP central system, simulated stations over real WebSockets on
127.0.0.1, and a DR event posted through the API. What the stations physically draw (their own
meters, sampled every 20 ms) must hold the site's limit, then the DR cap, then rise again when
the event is cancelled. For OCPP 1.6 and 2.0.1, with a W-only station and a password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ampflow.gateway.api import create_app
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Role
from ampflow.gateway.ocpp import OcppGateway
from ampflow.gateway.stations import (
    EvPlan,
    OcppVersion,
    Quirk,
    SimClock,
    SimulatedStation,
    StationConfig,
)
from tests.gateway.conftest import make_key, make_settings
from tests.gateway.live import LiveServer
from tests.gateway.test_stations import run, running, until

IMPORT_KW = 40.0
DR_CAP_KW = 15.0
TOL_KW = 0.05
N = 8  # 8 x 11 kW wanted on a 40 kW connection
PASSWORD = "station-password-0001"


def lot() -> dict[str, Any]:
    return {
        "id": "lot",
        "name": "Lot",
        "timezone": "Europe/Amsterdam",
        "import_kw": IMPORT_KW,
        "chargers": [
            {"id": f"c{i}", "node": "lot", "max_kw": 11.0, "connectors": 1} for i in range(N)
        ],
    }


class GatewayServer(LiveServer):
    """The API with the OCPP gateway mounted, on an ephemeral 127.0.0.1 port, in a thread."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        settings = make_settings(
            tmp_path,
            db.url.render_as_string(False),
            tick_s=1.0,
            replan_s=3600.0,
            ocpp={"authorize_unknown_tokens": True, "response_timeout_s": 5.0},
        )
        self.gateway = OcppGateway(db, settings)
        app = create_app(settings, db=db, sink=self.gateway.sink, commands=self.gateway.commands)
        self.gateway.mount(app)
        super().__init__(app, timeout_s=30.0, ws="websockets-sansio")
        self.ws = f"ws://127.0.0.1:{self.port}/ocpp"


@pytest.fixture
def server(db: Database, tmp_path: Path) -> Iterator[GatewayServer]:
    with GatewayServer(db, tmp_path) as srv:
        yield srv


def stations(srv: GatewayServer, version: OcppVersion) -> list[SimulatedStation]:
    clock = SimClock(1.0)
    out = []
    for i in range(N):
        quirks = frozenset({Quirk.W_ONLY}) if i == 1 else frozenset()
        cfg = StationConfig(
            f"ST-{i}",
            version=version,
            max_kw=11.0,
            quirks=quirks,
            meter_interval_s=1.0,
            password=PASSWORD if i == 0 else None,
        )
        ev = EvPlan(f"s{i}", 0.0, 1e9, 1000.0, 11.0, f"TAG-{i}")
        out.append(SimulatedStation(cfg, srv.ws, evs=[ev], clock=clock, step_s=0.05))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201])
def test_site_limit_and_dr_cap_hold_with_real_ocpp_traffic(
    server: GatewayServer, db: Database, version: OcppVersion
) -> None:
    admin = make_key(db, Role.ADMIN)
    utility = make_key(db, Role.UTILITY, ["lot"])
    with httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=30) as api:
        assert api.post("/sites", json=lot()).status_code == 201
        for i in range(N):
            body = {"id": f"ST-{i}", "site_id": "lot", "charger_id": f"c{i}"}
            if i == 0:
                body["password"] = PASSWORD
            assert api.post("/stations", json=body).status_code == 201
    sims = stations(server, version)
    samples: list[tuple[float, float]] = []

    def drawn() -> float:
        return sum(s.core.power_w for s in sims) / 1000.0

    async def sample(stop: asyncio.Event) -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), drawn()))
            await asyncio.sleep(0.02)

    async def main() -> None:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        async with (
            running(*sims),
            httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": utility}) as grid,
        ):
            # Every EV charges; together they want 88 kW and get the site's 40 kW.
            await until(lambda: all(s.core.connector(1).tx for s in sims), 30, "8 transactions")
            await until(lambda: drawn() > 0.9 * IMPORT_KW, 30, "the site to fill up")
            await asyncio.sleep(3.0)  # steady state: every station has its TxProfile
            steady = time.monotonic()
            now = datetime.now(UTC)
            event = {
                "site_id": "lot",
                "start": now.isoformat(),
                "end": (now + timedelta(minutes=10)).isoformat(),
                "cap_kw": DR_CAP_KW,
            }
            r = await grid.post("/dr-events", json=event)
            assert r.status_code == 201, r.text
            await until(lambda: drawn() <= DR_CAP_KW + TOL_KW, 30, "the DR cap")
            settled = time.monotonic()
            await asyncio.sleep(4.0)
            under_cap = [kw for t, kw in samples if t >= settled]
            cancel = await grid.post(f"/dr-events/{r.json()['id']}/cancel")
            assert cancel.status_code == 200
            await until(lambda: drawn() > 0.9 * IMPORT_KW, 30, "the cap to lift")
        stop.set()
        await sampler
        assert len(under_cap) > 50
        assert max(under_cap) <= DR_CAP_KW + TOL_KW
        assert max(kw for t, kw in samples if t >= steady) <= IMPORT_KW + TOL_KW

    run(main(), timeout=120)
    # Every profile the central system sent was valid for its station; the W-only one got W.
    assert all(e.accepted for s in sims for e in s.profile_log)
    assert {e.profile.unit for e in sims[1].profile_log} == {"W"}
    assert sims[0].boots == 1  # the station with a password connected
    # The site limit at every sample, the whole time, start-up included: stations booting with
    # transactions already running are taken as fixed load at their maximum, and that
    # assumption is never sent to them as a limit.
    peak = max(kw for _, kw in samples)
    if peak > IMPORT_KW + TOL_KW:
        t_peak = next(t for t, kw in samples if kw == peak)
        trace = [
            f"{sim.cfg.station_id} {e.at - t_peak:+.3f} s {e.profile.purpose} "
            f"{[q.limit for q in e.profile.periods]} {e.profile.unit}"
            for sim in sims
            for e in sim.profile_log
            if abs(e.at - t_peak) < 2.0
        ]
        pytest.fail(
            f"{peak:.1f} kW drawn on the {IMPORT_KW:g} kW site; profiles:\n" + "\n".join(trace)
        )
