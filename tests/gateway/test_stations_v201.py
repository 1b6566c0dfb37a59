"""Simulated stations speaking OCPP 2.0.1 against the tiny central system, over WebSockets."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v201 import call

from ampflow.gateway.stations import OcppVersion, Quirk, SimulatedStation
from tests.gateway.test_stations import Csms, Seen, ev, run, running, station, until

V201 = OcppVersion.V201


def profile(
    limit: float,
    *,
    profile_id: int = 1,
    purpose: str = "TxProfile",
    transaction_id: str | None = None,
    unit: str = "A",
    stack_level: int = 0,
    kind: str | None = None,
    start: datetime | None = None,
) -> dict[str, Any]:
    kind = kind or ("Relative" if purpose == "TxProfile" else "Absolute")
    schedule: dict[str, Any] = {
        "id": profile_id,
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": 0, "limit": limit}],
    }
    if kind != "Relative":
        schedule["start_schedule"] = (start or datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    out: dict[str, Any] = {
        "id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": [schedule],
    }
    if transaction_id is not None:
        out["transaction_id"] = transaction_id
    return out


async def set_profile(csms: Csms, sid: str, evse: int, p: dict[str, Any]) -> tuple[str, str | None]:
    res = await csms.call(sid, call.SetChargingProfile(evse_id=evse, charging_profile=p))
    info = res.status_info or {}
    return str(res.status), info.get("reason_code")


def tx_events(seen: Seen, kind: str) -> list[dict[str, Any]]:
    return [e for e in seen.of("TransactionEvent") if e["event_type"] == kind]


def values(event: dict[str, Any]) -> dict[str, float]:
    out = {}
    for mv in event.get("meter_value", []):
        for sv in mv["sampled_value"]:
            key = sv["measurand"] + ("" if "phase" not in sv else f".{sv['phase']}")
            out[key] = float(sv["value"])
    return out


def powers_after(seen: Seen, t0: float) -> list[float]:
    """Power in the meter values of transaction events received after ``t0`` [W]."""
    return [
        values(e)["Power.Active.Import"]
        for e in tx_events(seen, "Updated")
        if e.get("meter_value") and e["received_at"] > t0
    ]


async def charging(csms: Csms, st: SimulatedStation) -> tuple[Seen, str]:
    seen = await until(lambda: csms.seen.get(st.cfg.station_id))
    await until(lambda: tx_events(seen, "Started"), what="a transaction")
    tx = await until(lambda: st.core.connector(1).tx)
    return seen, tx.transaction_id


def test_boot_transaction_events_ev_needs_and_end() -> None:
    async def main() -> None:
        async with Csms() as csms:
            # At speed 3600 the EV stays one simulated hour: one real second.
            st = station(csms, version=V201, evs=(ev(0.0, 3600.0),), speed=3600.0)
            async with running(st):
                seen = await until(lambda: csms.seen.get("CP-1"))
                ended = await until(lambda: tx_events(seen, "Ended"), what="the EV to leave")
                await until(
                    lambda: seen.of("StatusNotification")[-1]["connector_status"] == "Available"
                )
            boot = seen.of("BootNotification")[0]
            assert boot["reason"] == "PowerUp"
            assert boot["charging_station"]["model"] == "SimCharger"
            started = tx_events(seen, "Started")[0]
            assert started["id_token"]["id_token"] == "TAG-1"
            assert started["trigger_reason"] == "Authorized"
            tx = started["transaction_info"]["transaction_id"]
            updates = [e for e in tx_events(seen, "Updated") if e.get("meter_value")]
            assert updates
            assert all(e["transaction_info"]["transaction_id"] == tx for e in updates)
            seq = [e["seq_no"] for e in seen.of("TransactionEvent")]
            assert seq == list(range(len(seq)))
            assert max(values(e)["Power.Active.Import"] for e in updates) == pytest.approx(11000)
            assert ended[0]["transaction_info"]["stopped_reason"] == "EVDisconnected"
            assert ended[0]["trigger_reason"] == "EVDeparted"
            # ISO 15118: departure (one real second after plug-in) and the energy wanted.
            needs = seen.of("NotifyEVChargingNeeds")[0]
            departure = datetime.fromisoformat(needs["charging_needs"]["departure_time"])
            assert abs((departure - datetime.now(UTC)).total_seconds()) < 10
            assert needs["charging_needs"]["ac_charging_parameters"]["energy_amount"] > 900_000
            assert needs["charging_needs"]["requested_energy_transfer"] == "AC_three_phase"
            # 11 kW for a simulated hour is ~11 kWh (more or less one step).
            assert 9000 < values(ended[0])["Energy.Active.Import.Register"] < 13000

    run(main())


def test_tx_profile_rules_stack_levels_and_composite() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, version=V201, evs=(ev(),))
            async with running(st):
                seen, tx = await charging(csms, st)
                # K01.FR.03/33: a TxProfile carries the transaction's id, and a known one.
                assert await set_profile(csms, "CP-1", 1, profile(10.0)) == (
                    "Rejected",
                    "TxNotFound",
                )
                wrong = profile(10.0, transaction_id="nope")
                assert await set_profile(csms, "CP-1", 1, wrong) == ("Rejected", "TxNotFound")
                ok = profile(10.0, transaction_id=tx)
                assert await set_profile(csms, "CP-1", 1, ok) == ("Accepted", None)
                t0 = time.monotonic()
                assert st.core.power_w == pytest.approx(6900)
                # Another id on the same stack level and purpose is refused (K01.FR.39) ...
                dup = profile(12.0, profile_id=2, transaction_id=tx)
                assert await set_profile(csms, "CP-1", 1, dup) == ("Rejected", "DuplicateProfile")
                # ... the same id replaces (K01.FR.05).
                again = profile(8.0, transaction_id=tx)
                assert await set_profile(csms, "CP-1", 1, again) == ("Accepted", None)
                assert len(st.core.profiles) == 1
                # The station maximum: only on EVSE 0, never Relative (K01.FR.38).
                top = profile(7.0, profile_id=3, purpose="ChargingStationMaxProfile")
                assert (await set_profile(csms, "CP-1", 1, top))[0] == "Rejected"
                relative = profile(
                    7.0, profile_id=3, purpose="ChargingStationMaxProfile", kind="Relative"
                )
                assert await set_profile(csms, "CP-1", 0, relative) == (
                    "Rejected",
                    "InvalidProfile",
                )
                assert await set_profile(csms, "CP-1", 0, top) == ("Accepted", None)
                comp = await csms.call(
                    "CP-1",
                    call.GetCompositeSchedule(duration=300, evse_id=1, charging_rate_unit="A"),
                )
                assert comp.status == "Accepted"
                assert comp.schedule["charging_schedule_period"] == [
                    {"start_period": 0, "limit": 7.0, "number_phases": 3}
                ]
                station_wide = await csms.call(
                    "CP-1",
                    call.GetCompositeSchedule(duration=300, evse_id=0, charging_rate_unit="W"),
                )
                assert station_wide.schedule["charging_schedule_period"][0]["limit"] == 4830.0
                # An Absolute TxDefault that starts in a minute shows up as a second period.
                later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
                default = profile(6.0, profile_id=4, purpose="TxDefaultProfile", start=later)
                assert await set_profile(csms, "CP-1", 1, default) == ("Accepted", None)
                res = await csms.call(
                    "CP-1",
                    call.ClearChargingProfile(
                        charging_profile_criteria={"charging_profile_purpose": "TxProfile"}
                    ),
                )
                assert res.status == "Accepted"
                comp = await csms.call(
                    "CP-1",
                    call.GetCompositeSchedule(duration=300, evse_id=1, charging_rate_unit="A"),
                )
                limits = [
                    (q["start_period"] > 0, q["limit"])
                    for q in comp.schedule["charging_schedule_period"]
                ]
                assert limits == [(False, 7.0), (True, 6.0)]
                # Every meter value after the first acceptance stayed under what was accepted.
                await until(lambda: len(powers_after(seen, t0)) >= 3)
                assert max(powers_after(seen, t0)) <= 6900 + 1e-6

    run(main())


def test_request_start_stop_variables_and_reset() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, version=V201, evs=(ev(),))
            csms.refused.add("TAG-1")
            async with running(st):
                seen = await until(lambda: csms.seen.get("CP-1"))
                await until(lambda: st.core.connector(1).stopped, what="the refused card")
                res = await csms.call(
                    "CP-1",
                    call.RequestStartTransaction(
                        id_token={"id_token": "APP", "type": "Central"},
                        remote_start_id=42,
                        evse_id=1,
                        charging_profile=profile(9.0),
                    ),
                )
                assert res.status == "Accepted"
                started = await until(lambda: tx_events(seen, "Started"))
                assert started[0]["transaction_info"]["remote_start_id"] == 42
                assert started[0]["trigger_reason"] == "RemoteStart"
                await until(lambda: st.core.power_w > 0)
                assert st.core.power_w == pytest.approx(9 * 230 * 3)
                # Variables: read, write, unknown component and variable, read-only.
                got = await csms.call(
                    "CP-1",
                    call.GetVariables(
                        get_variable_data=[
                            {
                                "component": {"name": "SmartChargingCtrlr"},
                                "variable": {"name": "RateUnit"},
                            },
                            {
                                "component": {"name": "SmartChargingCtrlr"},
                                "variable": {"name": "Nope"},
                            },
                            {"component": {"name": "Nope"}, "variable": {"name": "RateUnit"}},
                        ]
                    ),
                )
                statuses = [r["attribute_status"] for r in got.get_variable_result]
                assert statuses == ["Accepted", "UnknownVariable", "UnknownComponent"]
                assert got.get_variable_result[0]["attribute_value"] == "A,W"
                put = await csms.call(
                    "CP-1",
                    call.SetVariables(
                        set_variable_data=[
                            {
                                "attribute_value": "20",
                                "component": {"name": "SampledDataCtrlr"},
                                "variable": {"name": "TxUpdatedInterval"},
                            },
                            {
                                "attribute_value": "1",
                                "component": {"name": "SmartChargingCtrlr"},
                                "variable": {"name": "ProfileStackLevel"},
                            },
                        ]
                    ),
                )
                assert [r["attribute_status"] for r in put.set_variable_result] == [
                    "Accepted",
                    "Rejected",
                ]
                assert st.core.meter_interval_s == 20
                # Reset OnIdle with a transaction running is scheduled; RequestStop ends it.
                res = await csms.call("CP-1", call.Reset(type="OnIdle"))
                assert res.status == "Scheduled"
                tx = st.core.connector(1).tx.transaction_id  # type: ignore[union-attr]
                res = await csms.call("CP-1", call.RequestStopTransaction(transaction_id=tx))
                assert res.status == "Accepted"
                ended = await until(lambda: tx_events(seen, "Ended"))
                assert ended[0]["transaction_info"]["stopped_reason"] == "Remote"
                # ... then the scheduled reset reboots the idle station.
                boots = await until(
                    lambda: len(seen.of("BootNotification")) == 2 and seen.of("BootNotification")
                )
                assert boots[1]["reason"] == "RemoteReset"
                await until(st.online.is_set)
                assert st.boots == 2

    run(main())


def test_w_only_and_no_smart_charging_on_2_0_1() -> None:
    async def main() -> None:
        async with Csms() as csms:
            w_only = station(
                csms, "CP-W", version=V201, evs=(ev(),), quirks=frozenset({Quirk.W_ONLY})
            )
            dumb = station(csms, "CP-D", version=V201, quirks=frozenset({Quirk.NO_SMART_CHARGING}))
            async with running(w_only, dumb):
                _, tx = await charging(csms, w_only)
                assert await set_profile(csms, "CP-W", 1, profile(10.0, transaction_id=tx)) == (
                    "Rejected",
                    "UnsupportedRateUnit",
                )
                in_w = profile(6000.0, unit="W", transaction_id=tx)
                assert await set_profile(csms, "CP-W", 1, in_w) == ("Accepted", None)
                assert w_only.core.power_w == pytest.approx(6000)
                comp = await csms.call("CP-W", call.GetCompositeSchedule(duration=60, evse_id=1))
                assert comp.schedule["charging_rate_unit"] == "W"
                await until(dumb.online.is_set)
                with pytest.raises(NotSupportedError):
                    await set_profile(csms, "CP-D", 0, profile(6.0, purpose="TxDefaultProfile"))

    run(main())
