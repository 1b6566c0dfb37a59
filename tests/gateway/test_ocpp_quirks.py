"""Capabilities and quirks, over real WebSockets: the per-model quirk table, quirks set through
the API, a station without smart charging, and one whose composite schedule shows it ignores
what it accepted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    setup_depot,
    station_flags,
    until,
)


def test_the_quirk_table_and_quirks_set_through_the_api(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("EVB", "cp-1", None), ("GOE", "cp-2", None))
    evbox, goe = Core(), Core(connectors=1, phases=1, ev_max_kw=7.4)

    async def scenario() -> None:
        async with connect(srv, "EVB", evbox) as a, connect(srv, "GOE", goe) as b:
            await a.boot(vendor="EVBox", model="Elvi")
            await b.boot(vendor="go-e GmbH", model="Gemini flex")
            await until(lambda: (0, "default", 0) in evbox.profiles, what="EVBox TxDefault")
            await until(lambda: (0, "default", 0) in goe.profiles, what="go-e TxDefault")
            # EVBox rejects ChargePointMaxProfile: it is not even sent.
            assert (0, "max", 0) not in evbox.profiles
            assert not any(
                p.get("charging_profile_purpose") == "ChargePointMaxProfile"
                for a_, p in evbox.log
                if a_ == "SetChargingProfile"
            )
            # go-e ignores numberPhases: it is left out.
            assert all(ph is None for p in goe.profiles.values() for _, _, ph in p.periods)
            assert all(ph == 3 for p in evbox.profiles.values() for _, _, ph in p.periods)
        # An operator records that EVB only takes W; it applies from the next connection.
        with srv.client() as c:
            r = c.patch("/stations/EVB", json={"quirks": ["w_only"]})
            assert r.status_code == 200, r.text
        watts = Core()
        async with connect(srv, "EVB", watts) as a:
            await a.boot(vendor="EVBox", model="Elvi")
            default = await until(lambda: watts.profiles.get((0, "default", 0)), what="TxDefault")
            assert default.unit == "W"

    asyncio.run(scenario())


def test_a_station_without_smart_charging_is_uncontrollable(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("DUMB", "cp-2", None))
    dumb = Core(connectors=1, phases=1, ev_max_kw=7.4, smart_charging=False)

    async def scenario() -> None:
        async with connect(srv, "DUMB", dumb) as cp:
            await cp.boot()
            await until(lambda: "no_smart_charging" in station_flags(srv, "DUMB"), what="flag")
            await cp.start_tx(1, "TAG-OK")
            assert await cp.meter(1) == 7.4
            with srv.client() as c:

                def fixed() -> bool:
                    rows = c.get("/sites/depot/schedule").json()["connectors"]
                    return {x["connector_id"]: x["limit_kw"] for x in rows}["depot/cp-2/1"] == 7.4

                await until(fixed, what="its 7.4 kW taken as fixed load")
            assert not any(a == "SetChargingProfile" for a, _ in dumb.log)

    asyncio.run(scenario())


def test_a_composite_schedule_above_the_accepted_limit_flags_the_station(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("LIAR", "cp-1", None))
    liar = Core(ev_max_kw=22.0, composite_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "LIAR", liar, version="2.0.1") as cs:
            await cs.boot()
            await until(lambda: (0, "default", 0) in liar.profiles, what="TxDefault")
            now = datetime.now(UTC)
            with srv.client() as c:
                event = {
                    "site_id": "depot",
                    "start": now.isoformat(),
                    "end": (now + timedelta(hours=1)).isoformat(),
                    "cap_kw": 10,
                }
                assert c.post("/dr-events", json=event).status_code == 201
            await cs.start_tx(1, "tx-1", "TAG-OK")
            await until(lambda: liar.tx_profile(1), what="TxProfile under the cap")
            await until(lambda: "ignores_profiles" in station_flags(srv, "LIAR"), what="flag")

    asyncio.run(scenario())
