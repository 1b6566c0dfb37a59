"""What real stations do to a central system, over real WebSockets: reconnect with the same id,
reboot, reject or ignore profiles, stop answering; Ampflow restarting under open transactions;
remote start and stop from the API; the other outbound commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ampflow.gateway.db import Database
from ampflow.gateway.db.models import Session, Transaction
from ampflow.gateway.ocpp import CommandStatus, ProfilePurpose
from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    on_server,
    settings_for,
    setup_depot,
    station_flags,
    until,
)

MAX_A = 31.8


def dr_cap(srv: Server, cap_kw: float) -> None:
    now = datetime.now(UTC)
    with srv.client() as c:
        r = c.post(
            "/dr-events",
            json={
                "site_id": "depot",
                "start": now.isoformat(),
                "end": (now + timedelta(hours=1)).isoformat(),
                "cap_kw": cap_kw,
            },
        )
        assert r.status_code == 201, r.text


def test_reconnect_replaces_the_socket_and_resends_profiles(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None))
    core = Core(ev_max_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "CP1", core) as cp:
            await cp.boot()
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault")
            tx_id, _ = await cp.start_tx(1, "TAG-OK")
            await until(lambda: core.tx_profile(1), what="TxProfile")
            # The same station comes back on a new socket (the old one is a zombie) having
            # lost its profiles, as some chargers do; it does not boot again.
            fresh = Core(ev_max_kw=22.0, txs=dict(core.txs), tx_start=dict(core.tx_start))
            async with connect(srv, "CP1", fresh):
                await until(lambda: cp._connection.close_code is not None, what="old closed")
                assert cp._connection.close_code == 1000
                tx = await until(lambda: fresh.tx_profile(1), what="TxProfile re-sent")
                assert tx.transaction_id == str(tx_id)
                assert tx.periods[0][1] == MAX_A
                assert fresh.profiles[(0, "max", 0)].periods[0][1] == MAX_A
                assert (0, "default", 0) in fresh.profiles
                assert srv.gateway.links["CP1"].connections == 2

    asyncio.run(scenario())


def test_reboot_runs_the_boot_sequence_again(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CS1", "cp-1", None))
    core = Core(ev_max_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "CS1", core, version="2.0.1") as cs:
            await cs.boot()
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault")
            assert await cs.start_tx(1, "tx-1", "TAG-OK") == "Accepted"
            await until(lambda: core.tx_profile(1), what="TxProfile")
            # A reboot: profiles and the transaction are gone; the station boots again and
            # then reports how the transaction ended.
            txs = dict(core.txs)
            core.profiles.clear()
            core.txs.clear()
            asked = sum(1 for a, _ in core.log if a == "SetChargingProfile")
            await cs.boot()
            await until(lambda: (0, "default", 0) in core.profiles, what="TxDefault again")
            assert (0, "max", 0) in core.profiles
            assert sum(1 for a, _ in core.log if a == "SetChargingProfile") >= asked + 2
            core.txs.update(txs)
            await cs.stop_tx("tx-1", reason="PowerLoss")

    asyncio.run(scenario())
    with srv.db.read() as s:
        assert s.query(Session).one().status == "completed"
        assert s.query(Transaction).one().stop_reason == "PowerLoss"


def test_a_station_that_rejects_profiles_is_uncontrollable_load(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None), ("CP2", "cp-2", None))
    bad = Core(reject_profiles=True, ev_max_kw=22.0)
    good = Core(connectors=1, phases=1, ev_max_kw=7.4)

    async def scenario() -> None:
        async with connect(srv, "CP1", bad) as cp1, connect(srv, "CP2", good) as cp2:
            await cp1.boot()
            await cp2.boot()
            await until(lambda: "rejects_profiles" in station_flags(srv, "CP1"), what="flag")
            with srv.client() as c:

                def limits() -> dict[str, float]:
                    rows = c.get("/sites/depot/schedule").json()["connectors"]
                    return {x["connector_id"]: x["limit_kw"] for x in rows}

                # CP1 may draw 22 kW on each connector whatever it is told: the loop takes it
                # as fixed load; CP2 has accepted its 0 A default.
                want = {"depot/cp-1/1": 22.0, "depot/cp-1/2": 22.0, "depot/cp-2/1": 0.0}
                await until(lambda: limits() == want, what="CP1 as 2 x 22 kW of fixed load")
            await cp2.start_tx(1, "TAG-OK")
            tx = await until(lambda: good.tx_profile(1), what="CP2's TxProfile")
            # 44 kW of the site's 50 kW and 64 of its 80 A per phase are taken: CP2, on L2,
            # gets the 16 A left.
            assert tx.periods[0][1] == pytest.approx(16.2)
            assert not bad.profiles

    asyncio.run(scenario())


def test_a_station_drawing_above_its_limit_is_flagged_and_others_make_room(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server(verify_grace_s=0.0)
    setup_depot(srv, ("CS1", "cp-1", None), ("CS2", "cp-2", None))
    greedy = Core(ignore_profiles=True, ev_max_kw=11.0)
    polite = Core(connectors=1, phases=1, ev_max_kw=7.4)

    async def scenario() -> None:
        async with (
            connect(srv, "CS1", greedy, version="2.0.1") as cs1,
            connect(srv, "CS2", polite, version="2.0.1") as cs2,
        ):
            await cs1.boot()
            await cs2.boot()
            await until(lambda: (0, "default", 0) in polite.profiles, what="CS2 ready")
            await until(lambda: (0, "default", 0) in greedy.profiles, what="CS1 ready")
            dr_cap(srv, 15.0)
            await cs1.start_tx(1, "tx-g", "TAG-OK")
            await cs2.start_tx(1, "tx-p", "TAG-OK")
            await until(lambda: polite.tx_profile(1) and greedy.tx_profile(1), what="profiles")
            assert greedy.tx_profile(1).periods[0][1] * 0.69 + polite.limit_kw(1) <= 15.0 + 1e-6
            for _ in range(3):  # CS1 draws 11 kW whatever its profile says
                assert await cs1.meter(1) == 11.0
            await until(lambda: "over_limit" in station_flags(srv, "CS1"), what="over_limit")
            # Its 11 kW are now fixed load: CS2 gets what the 15 kW cap leaves.
            await until(lambda: polite.limit_kw(1) <= 4.0 + 1e-6, what="CS2 lowered")
            assert await cs2.meter(1) <= 4.0 + 1e-6

    asyncio.run(scenario())


def test_a_station_that_stops_answering_is_flagged_unresponsive(
    ocpp_server: Callable[..., Server],
) -> None:
    srv = ocpp_server(response_timeout_s=0.5, retries=1)
    setup_depot(srv, ("CP1", "cp-1", None))
    core = Core(hang_on={"SetChargingProfile"})

    async def scenario() -> None:
        async with connect(srv, "CP1", core) as cp:
            await cp.boot()
            await until(lambda: "unresponsive" in station_flags(srv, "CP1"), what="flag")
        history = list(srv.gateway.links["CP1"].queue.history)
        timed_out = [o for o in history if o.status is CommandStatus.TIMEOUT]
        assert timed_out
        assert timed_out[0].attempts == 2  # one retry

    asyncio.run(scenario())


def test_a_restart_resumes_open_transactions(db: Database, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, db)
    core = Core(ev_max_kw=22.0)
    tx_id = 0

    async def before() -> None:
        nonlocal tx_id
        async with connect(first, "CP1", core) as cp:
            await cp.boot()
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault")
            tx_id, _ = await cp.start_tx(1, "TAG-OK")
            await until(lambda: core.tx_profile(1), what="TxProfile")
            await cp.meter(1)

    async def after() -> None:
        fresh = Core(ev_max_kw=22.0, txs=dict(core.txs), tx_start=dict(core.tx_start))
        fresh.energy_wh.update(core.energy_wh)
        async with connect(second, "CP1", fresh) as cp:  # it reconnects, it did not reboot
            tx = await until(lambda: fresh.tx_profile(1), what="TxProfile after the restart")
            assert tx.transaction_id == str(tx_id)
            await cp.meter(1)
            await cp.stop_tx(str(tx_id))

    with Server(db, settings) as first:
        setup_depot(first, ("CP1", "cp-1", None))
        asyncio.run(before())
    with Server(db, settings) as second:
        asyncio.run(after())
    with db.read() as s:
        ses = s.query(Session).one()
        assert ses.status == "completed"
        assert ses.energy_kwh == pytest.approx(2 * 21.942 * 10 / 3600, abs=2e-3)  # whole Wh


def test_remote_start_and_stop_through_the_api(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None), ("CS2", "cp-2", None))
    c16, c201 = Core(), Core(connectors=1, phases=1)

    async def scenario() -> None:
        async with (
            connect(srv, "CP1", c16) as cp,
            connect(srv, "CS2", c201, version="2.0.1") as cs,
        ):
            await cp.boot()
            await cs.boot()
            with srv.client() as c:
                ids = {}
                for connector in ("depot/cp-1/2", "depot/cp-2/1"):
                    r = c.post("/sessions", json={"connector_id": connector})
                    assert r.status_code == 201, r.text
                    assert r.json()["status"] == "requested"
                    ids[connector] = r.json()["id"]

                def active() -> bool:
                    rows = c.get("/sessions", params={"status": ["active"]}).json()
                    return {x["id"] for x in rows} == set(ids.values())

                await until(active, what="both sessions active")
                await until(lambda: c16.txs and c201.txs, what="the stations' transactions")
                assert cp.remote_starts == [(2, cp.remote_starts[0][1])]
                assert c16.txs.keys() == {2}
                assert c201.txs.keys() == {1}
                for sid in ids.values():
                    assert c.post(f"/sessions/{sid}/stop").json()["status"] == "stopping"

                def completed() -> bool:
                    rows = c.get("/sessions", params={"status": ["completed"]}).json()
                    return {x["id"] for x in rows} == set(ids.values())

                await until(completed, what="both sessions completed")
            await until(lambda: not c16.txs and not c201.txs, what="the stations idle")

    asyncio.run(scenario())


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_outbound_commands(ocpp_server: Callable[..., Server], version: str) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("ST", "cp-1", None))
    core = Core()
    gw = srv.gateway
    key = "SmartChargingCtrlr.RateUnit" if version != "1.6" else "ChargingScheduleMaxPeriods"

    async def scenario() -> None:
        async with connect(srv, "ST", core, version=version) as st:
            await st.boot()
            await until(lambda: (0, "default", 0) in core.profiles, what="TxDefault")
            out: Any = await on_server(srv, gw.trigger_message("ST", "MeterValues", connector=1))
            assert out.ok
            assert ("TriggerMessage", {"requested_message": "MeterValues"}) in core.log
            out = await on_server(srv, gw.get_configuration("ST", [key]))
            assert out.ok
            assert out.response is not None
            out = await on_server(srv, gw.change_configuration("ST", key, "5"))
            assert out.ok
            outcome, limit = await on_server(srv, gw.get_composite_schedule("ST", 1))
            assert outcome.ok
            assert limit is not None
            assert limit.limit == 0.0  # the TxDefault
            out = await on_server(
                srv, gw.clear_charging_profile("ST", purpose=ProfilePurpose.TX_DEFAULT, connector=0)
            )
            assert out.ok
            assert (0, "default", 0) not in core.profiles
            out = await on_server(srv, gw.clear_charging_profile("ST", profile_id=4242))
            assert out.status is CommandStatus.REJECTED  # nothing to clear: Unknown
            assert (await on_server(srv, gw.reset("ST"))).ok
            offline = await on_server(srv, gw.reset("NOPE"))
            assert offline.status is CommandStatus.OFFLINE

    asyncio.run(scenario())
