"""OCPP 1.6J end to end over real WebSockets on 127.0.0.1: boot, authorize, a transaction with
meter values, the profiles it gets (station maximum, TxDefault, TxProfile) and the limit the
charger honours, verification by composite schedule, a DR cap mid-transaction, stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ampflow.gateway.db.models import ChargingProfile, Session, Station, Transaction
from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    setup_depot,
    until,
)

# cp-1: 22 kW, 3 phases at 230 V, on a 30 kW panel of a 50 kW site.
MAX_A = 31.8  # 22 kW / (3 * 230 V) = 31.88 A, rounded down


def test_v16_boot_transaction_profiles_and_dr_cap(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None))
    core = Core(ev_max_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "CP1", core) as cp:
            boot = await cp.boot(vendor="Acme", model="Wallbox")
            assert boot.status == "Accepted"
            assert boot.interval == srv.settings.ocpp.heartbeat_s
            # The boot sequence: capabilities, the station's ceiling, a safe TxDefault.
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault 0 A")
            station_max = core.profiles[(0, "max", 0)]
            assert station_max.periods[0][1] == MAX_A
            assert station_max.unit == "A"
            assert core.profiles[(0, "default", 0)].periods[0][1] == 0.0

            assert await cp.authorize("TAG-OK") == "Accepted"
            assert await cp.authorize("TAG-BLOCKED") == "Blocked"
            assert await cp.authorize("NOBODY") == "Invalid"
            await cp.status(1, "Preparing")
            tx_id, status = await cp.start_tx(1, "TAG-OK")
            assert status == "Accepted"
            assert tx_id > 0

            # The loop plans the session and the TxProfile arrives: the whole charger.
            tx = await until(lambda: core.tx_profile(1), what="TxProfile")
            assert tx.transaction_id == str(tx_id)
            assert tx.periods[0][1] == MAX_A
            assert core.limit_kw(1) == pytest.approx(MAX_A * 0.69)
            # Verified by the composite schedule after it was accepted.
            await until(lambda: any(a == "GetCompositeSchedule" for a, _ in core.log))

            kw = await cp.meter(1)
            assert kw == pytest.approx(MAX_A * 0.69)  # the charger honours the limit
            with srv.client() as c:
                ses = c.get("/sessions", params={"status": ["active"]}).json()
                assert [x["connector_id"] for x in ses] == ["depot/cp-1/1"]
                assert ses[0]["power_kw"] == pytest.approx(kw, abs=0.01)
                assert ses[0]["energy_kwh"] == pytest.approx(kw * 10 / 3600, abs=1e-3)

                # A DR cap arrives through the API mid-transaction: a lower TxProfile follows.
                now = datetime.now(UTC)
                event = {
                    "site_id": "depot",
                    "start": now.isoformat(),
                    "end": (now + timedelta(hours=1)).isoformat(),
                    "cap_kw": 6,
                }
                assert c.post("/dr-events", json=event).status_code == 201
            await until(
                lambda: core.limit_kw(1) is not None and core.limit_kw(1) <= 6.0,
                what="the DR cap at the charger",
            )
            assert core.tx_profile(1).periods[0][1] == pytest.approx(8.6)  # 6 kW / 690 V
            assert await cp.meter(1) <= 6.0

            await cp.stop_tx(str(tx_id))
            with srv.client() as c:
                done = c.get("/sessions", params={"status": ["completed"]}).json()
                assert done[0]["connector_id"] == "depot/cp-1/1"

    asyncio.run(scenario())
    with srv.db.read() as s:
        st = s.query(Station).filter_by(id="CP1").one()
        assert (st.vendor, st.model, st.ocpp_version) == ("Acme", "Wallbox", "1.6")
        assert (st.rate_units, st.max_schedule_periods, st.smart_charging) == ("A,W", 10, True)
        assert st.flags == []
        tx = s.query(Transaction).one()
        assert tx.stopped_at is not None
        assert tx.meter_stop_wh is not None
        assert s.query(Session).one().status == "completed"
        purposes = {p.purpose for p in s.query(ChargingProfile).filter_by(status="accepted")}
        assert purposes >= {"station_max", "tx_default"}
        assert s.query(ChargingProfile).filter_by(purpose="tx").count() >= 2
