"""OCPP 2.0.1 end to end over real WebSockets on 127.0.0.1: boot, authorize, a TransactionEvent
stream with meter values, ISO 15118 charging needs becoming the session's targets, profiles
(ChargingStationMaxProfile, TxDefaultProfile, TxProfile with its transaction id), the limit
honoured, composite schedule, a DR cap mid-transaction, and a W-only station."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ampflow.gateway.db.models import ChargingProfile, Session, Station
from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    setup_depot,
    until,
)

MAX_A = 31.8  # cp-1: 22 kW / (3 * 230 V), rounded down


def test_v201_transaction_needs_profiles_and_dr_cap(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CS1", "cp-1", None))
    core = Core(ev_max_kw=22.0)
    departure = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)

    async def scenario() -> None:
        async with connect(srv, "CS1", core, version="2.0.1") as cs:
            boot = await cs.boot(vendor="Acme", model="DC-Box")
            assert boot.status == "Accepted"
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault")
            assert core.profiles[(0, "max", 0)].periods[0][1] == MAX_A
            assert await cs.authorize("TAG-OK") == "Accepted"
            assert await cs.authorize("NOBODY") == "Invalid"
            await cs.status(1, "Occupied")
            assert await cs.start_tx(1, "tx-abc", "TAG-OK") == "Accepted"

            tx = await until(lambda: core.tx_profile(1), what="TxProfile")
            assert tx.transaction_id == "tx-abc"  # K01.FR.03
            assert tx.periods[0][1] == MAX_A
            profile = next(
                p for a, p in core.log if a == "SetChargingProfile" and p.get("transaction_id")
            )
            assert profile["charging_schedule"][0]["start_schedule"]  # Absolute with a start
            await until(lambda: any(a == "GetCompositeSchedule" for a, _ in core.log))
            assert await cs.meter(1) == pytest.approx(MAX_A * 0.69)

            needs = {
                "requested_energy_transfer": "AC_three_phase",
                "departure_time": departure.isoformat().replace("+00:00", "Z"),
                "ac_charging_parameters": {
                    "energy_amount": 10500,  # nearly an hour at 16 A: charge now
                    "ev_min_current": 6,
                    "ev_max_current": 16,
                    "ev_max_voltage": 400,
                },
            }
            assert await cs.needs(1, needs) == "Accepted"
            assert await cs.needs(2, needs) == "Rejected"  # no session on EVSE 2
            with srv.client() as c:
                ses = c.get("/sessions", params={"status": ["active"]}).json()[0]
                assert datetime.fromisoformat(ses["targets"]["departure_at"]) == departure
                assert ses["targets"]["energy_target_kwh"] == pytest.approx(10.5, abs=0.2)
                assert ses["targets"]["ev_max_kw"] == pytest.approx(16 * 0.69)
            # The EV's maximum is 16 A: the next profile follows it.
            await until(lambda: core.tx_profile(1).periods[0][1] == 16.0, what="16 A")

            with srv.client() as c:
                now = datetime.now(UTC)
                event = {
                    "site_id": "depot",
                    "start": now.isoformat(),
                    "end": (now + timedelta(hours=1)).isoformat(),
                    "cap_kw": 6,
                }
                assert c.post("/dr-events", json=event).status_code == 201
            await until(lambda: core.tx_profile(1).periods[0][1] == pytest.approx(8.6), what="DR")
            assert await cs.meter(1) <= 6.0
            await cs.stop_tx("tx-abc")

    asyncio.run(scenario())
    with srv.db.read() as s:
        st = s.query(Station).filter_by(id="CS1").one()
        assert st.ocpp_version == "2.0.1"
        assert (st.rate_units, st.max_schedule_periods, st.max_stack_level) == ("A,W", 10, 3)
        ses = s.query(Session).one()
        assert ses.status == "completed"
        assert ses.energy_kwh > 0
        accepted = s.query(ChargingProfile).filter_by(status="accepted").all()
        assert {p.purpose for p in accepted} >= {"station_max", "tx_default", "tx"}


def test_w_only_station_gets_watts(ocpp_server: Callable[..., Server]) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CS-W", "cp-1", None))
    core = Core(units=("W",), ev_max_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "CS-W", core, version="2.0.1") as cs:
            await cs.boot()
            await until(lambda: (0, "default", 0) in core.profiles, what="TxDefault")
            assert core.profiles[(0, "max", 0)].unit == "W"
            assert core.profiles[(0, "max", 0)].periods[0][1] == 22000.0
            await cs.start_tx(2, "tx-w", "TAG-OK")
            tx = await until(lambda: core.tx_profile(2), what="TxProfile")
            assert tx.unit == "W"
            assert tx.periods[0][1] == 22000.0
            assert await cs.meter(2) == pytest.approx(22.0)

    asyncio.run(scenario())
    assert all(p.unit == "W" for p in core.profiles.values())
