"""End to end: a transaction through the OCPP gateway (1.6J and 2.0.1, real WebSockets on
127.0.0.1) ends with an exact OCPI CDR priced with the site's tariff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

import pytest

from ampflow.gateway.db.base import Measurand
from ampflow.gateway.db.models import MeterValue, Session, Transaction
from tests.gateway.billing_kit import loads, tariff
from tests.gateway.ocpp_testkit import (
    Core,
    Server,
    connect,
    ocpp_server_fixture,  # noqa: F401 - the fixture
    setup_depot,
    until,
)

CENT = Decimal("0.01")


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _expected_energy_kwh(srv: Server) -> Decimal:
    """What the meter moved: the register's highest reading (meter values and meterStop) less
    the first (meterStart, else the first reading) [kWh]."""
    with srv.db.read() as s:
        tx = s.query(Transaction).one()
        values = [
            _dec(v.value)
            for v in s.query(MeterValue).filter_by(measurand=int(Measurand.ENERGY_IMPORT_WH))
        ]
        if tx.meter_stop_wh is not None:
            values.append(_dec(tx.meter_stop_wh))
        first = _dec(tx.meter_start_wh) if tx.meter_start_wh is not None else values[0]
    return (max(values) - first) / 1000


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_transaction_through_the_gateway_ends_with_an_exact_cdr(
    ocpp_server: Callable[..., Server], version: str
) -> None:
    srv = ocpp_server()
    setup_depot(srv, ("CP1", "cp-1", None))
    with srv.client() as c:
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
    core = Core(ev_max_kw=22.0)

    async def scenario() -> None:
        async with connect(srv, "CP1", core, version=version) as cp:
            assert (await cp.boot()).status == "Accepted"
            await until(lambda: core.limit_kw(1) == 0.0, what="TxDefault 0 A")
            if version == "1.6":
                tx_id, status = await cp.start_tx(1, "TAG-OK")
                tx = str(tx_id)
            else:
                tx, status = "tx-bill", await cp.start_tx(1, "tx-bill", "TAG-OK")
            assert status == "Accepted"
            await until(lambda: (core.limit_kw(1) or 0.0) > 1.0, what="a limit to charge at")
            for _ in range(3):
                assert await cp.meter(1, seconds=600.0) > 0  # ten minutes' worth each
            await cp.stop_tx(tx)

    asyncio.run(scenario())
    with srv.client() as c:
        sessions = c.get("/sessions", params={"status": ["completed"]}).json()
        [cdr] = loads(c.get("/cdrs", params={"session_id": sessions[0]["id"]}).text)
    energy = _expected_energy_kwh(srv)
    assert energy > 5  # three times 10 minutes at about 22 kW
    assert cdr["total_energy"] == energy.quantize(Decimal("0.0001"), ROUND_HALF_UP)
    exact_excl = energy * Decimal("0.25") + Decimal("0.50")
    exact_incl = energy * Decimal("0.25") * Decimal("1.1") + Decimal("0.60")
    assert cdr["total_cost"] == {
        "excl_vat": exact_excl.quantize(CENT, ROUND_HALF_UP),
        "incl_vat": exact_incl.quantize(CENT, ROUND_HALF_UP),
    }
    assert cdr["auth_method"] == "AUTH_REQUEST"
    assert cdr["cdr_token"]["uid"] == "TAG-OK"
    assert cdr["cdr_location"]["evse_uid"] == "cp-1/1"
    with srv.db.read() as s:
        ses = s.query(Session).one()
        assert cdr["session_id"] == ses.id
        assert ses.ended_at is not None
        assert cdr["end_date_time"].startswith(ses.ended_at.strftime("%Y-%m-%dT%H:%M:%S"))
