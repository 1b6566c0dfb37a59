"""Simulated stations (OCPP 1.6J) against a tiny central system, over real WebSockets.

The central system here is written with the ``ocpp`` package in a few lines: it accepts every
station, records what they send, and lets the test send commands. Every test binds to
127.0.0.1 on an ephemeral port and is bounded in time (``run``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ampflow.gateway.stations import (
    EvPlan,
    Quirk,
    SimClock,
    SimulatedStation,
    StationConfig,
)
from ampflow.gateway.stations._common import on

LIMIT_S = 60.0  # no test runs longer


def run(coro: Awaitable[Any], timeout: float = LIMIT_S) -> Any:
    """Run a coroutine to completion, bounded in time."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(probe: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``probe`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or probe}")


# --- a tiny central system --------------------------------------------------------------------


@dataclass
class Seen:
    """What one station sent: (action, payload) in order."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.messages if a == action]


class Csms16(Cp16):  # type: ignore[misc]
    def __init__(self, sid: str, ws: ServerConnection, hub: Csms) -> None:
        super().__init__(sid, ws)
        self.hub, self.seen = hub, hub.seen.setdefault(sid, Seen())

    def _note(self, action: str, payload: dict[str, Any]) -> None:
        self.seen.messages.append((action, payload))

    @on("BootNotification")
    def boot(self, **kw: Any) -> Any:
        self._note("BootNotification", kw)
        return result16.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=300, status="Accepted"
        )

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self._note("Heartbeat", kw)
        return result16.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self._note("StatusNotification", kw)
        return result16.StatusNotification()

    @on("Authorize")
    def authorize(self, id_tag: str, **kw: Any) -> Any:
        self._note("Authorize", {"id_tag": id_tag})
        ok = id_tag not in self.hub.refused
        return result16.Authorize(id_tag_info={"status": "Accepted" if ok else "Invalid"})

    @on("StartTransaction")
    def start_tx(self, **kw: Any) -> Any:
        self._note("StartTransaction", kw)
        return result16.StartTransaction(
            transaction_id=next(self.hub.tx_ids), id_tag_info={"status": "Accepted"}
        )

    @on("StopTransaction")
    def stop_tx(self, **kw: Any) -> Any:
        self._note("StopTransaction", kw)
        return result16.StopTransaction()

    @on("MeterValues")
    def meter_values(self, **kw: Any) -> Any:
        kw["received_at"] = time.monotonic()
        self._note("MeterValues", kw)
        return result16.MeterValues()


class Csms201(Cp201):  # type: ignore[misc]
    def __init__(self, sid: str, ws: ServerConnection, hub: Csms) -> None:
        super().__init__(sid, ws)
        self.hub, self.seen = hub, hub.seen.setdefault(sid, Seen())

    def _note(self, action: str, payload: dict[str, Any]) -> None:
        self.seen.messages.append((action, payload))

    @on("BootNotification")
    def boot(self, **kw: Any) -> Any:
        self._note("BootNotification", kw)
        return result201.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=300, status="Accepted"
        )

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self._note("Heartbeat", kw)
        return result201.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self._note("StatusNotification", kw)
        return result201.StatusNotification()

    @on("Authorize")
    def authorize(self, id_token: dict[str, Any], **kw: Any) -> Any:
        self._note("Authorize", {"id_token": id_token})
        ok = id_token["id_token"] not in self.hub.refused
        return result201.Authorize(id_token_info={"status": "Accepted" if ok else "Invalid"})

    @on("TransactionEvent")
    def tx_event(self, **kw: Any) -> Any:
        kw["received_at"] = time.monotonic()
        self._note("TransactionEvent", kw)
        return result201.TransactionEvent()

    @on("MeterValues")
    def meter_values(self, **kw: Any) -> Any:
        self._note("MeterValues", kw)
        return result201.MeterValues()

    @on("NotifyEVChargingNeeds")
    def ev_needs(self, **kw: Any) -> Any:
        self._note("NotifyEVChargingNeeds", kw)
        return result201.NotifyEVChargingNeeds(status="Accepted")


class Csms:
    """Accepts every station at ``ws://127.0.0.1:PORT/ocpp/{id}`` (1.6 and 2.0.1)."""

    def __init__(self, *, passwords: dict[str, str] | None = None) -> None:
        self.passwords = passwords
        self.cps: dict[str, Any] = {}
        self.seen: dict[str, Seen] = {}
        self.refused: set[str] = set()
        self.tx_ids = itertools.count(100)
        self.connects: dict[str, int] = {}
        self.url = ""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Csms:
        server = await self._stack.enter_async_context(
            serve(
                self._handle,
                "127.0.0.1",
                0,
                subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
                process_request=self._auth,
            )
        )
        port = next(iter(server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ocpp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _auth(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.passwords is None:
            return None
        sid = request.path.rsplit("/", 1)[-1]
        want = base64.b64encode(f"{sid}:{self.passwords.get(sid, '')}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {want}":
            return ws.respond(http.HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        sid = ws.request.path.rsplit("/", 1)[-1]
        cls = Csms16 if ws.subprotocol == "ocpp1.6" else Csms201
        cp = cls(sid, ws, self)
        self.cps[sid] = cp
        self.connects[sid] = self.connects.get(sid, 0) + 1
        with contextlib.suppress(ConnectionClosed):
            await cp.start()

    async def call(self, sid: str, payload: Any) -> Any:
        """Send a command to a station and return its result (CallErrors raise)."""
        return await self.cps[sid].call(payload, suppress=False)

    async def drop(self, sid: str) -> None:
        """Close a station's socket from the server side."""
        await self.cps[sid]._connection.close()


# --- helpers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(*stations: SimulatedStation) -> Any:
    """Run ``stations`` in the background; stop them at the end."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in stations]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


def ev(
    arrival_s: float = 0.0, departure_s: float = 1e9, kwh: float = 1e3, kw: float = 22.0
) -> EvPlan:
    return EvPlan("s", arrival_s, departure_s, kwh, kw, "TAG-1", battery_kwh=60.0, soc_arrival=0.2)


def station(
    csms: Csms, sid: str = "CP-1", *, evs: tuple[EvPlan, ...] = (), speed: float = 1.0, **cfg: Any
) -> SimulatedStation:
    config = StationConfig(sid, meter_interval_s=cfg.pop("meter_interval_s", 0.1), **cfg)
    return SimulatedStation(config, csms.url, evs=evs, clock=SimClock(speed), step_s=0.05)


def samples(payload: dict[str, Any]) -> dict[str, float]:
    """A MeterValues payload's values by measurand (phases summed for currents)."""
    out: dict[str, float] = {}
    for mv in payload["meter_value"]:
        for sv in mv["sampled_value"]:
            key = sv["measurand"] + ("" if "phase" not in sv else f".{sv['phase']}")
            out[key] = float(sv["value"])
    return out


def tx_profile(
    limit: float,
    *,
    profile_id: int = 1,
    unit: str = "A",
    purpose: str = "TxProfile",
    stack_level: int = 0,
    transaction_id: int | None = None,
    periods: int = 1,
    number_phases: int | None = None,
) -> dict[str, Any]:
    period: dict[str, Any] = {"start_period": 0, "limit": limit}
    if number_phases is not None:
        period["number_phases"] = number_phases
    profile: dict[str, Any] = {
        "charging_profile_id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative" if purpose == "TxProfile" else "Absolute",
        "charging_schedule": {
            "charging_rate_unit": unit,
            "charging_schedule_period": [period]
            + [{"start_period": 60 * k, "limit": limit} for k in range(1, periods)],
        },
    }
    if purpose != "TxProfile":
        profile["charging_schedule"]["start_schedule"] = (
            datetime.now(UTC) - timedelta(seconds=1)
        ).isoformat()
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


async def set_profile(csms: Csms, sid: str, connector: int, profile: dict[str, Any]) -> str:
    res = await csms.call(
        sid, call16.SetChargingProfile(connector_id=connector, cs_charging_profiles=profile)
    )
    return str(res.status)


# --- tests ------------------------------------------------------------------------------------


def test_smoke_boot_transaction_meter_values_and_stop() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, evs=(ev(0.0, 3.0),), speed=1.0)
            async with running(st):
                seen = await until(lambda: csms.seen.get("CP-1"), what="a connection")
                await until(lambda: seen.of("StopTransaction"), what="the EV to leave")
                await until(
                    lambda: any(
                        p["status"] == "Available" for p in seen.of("StatusNotification")[2:]
                    )
                )
            actions = [a for a, _ in seen.messages]
            assert actions[0] == "BootNotification"
            assert actions.index("Authorize") < actions.index("StartTransaction")
            assert actions.index("StartTransaction") < actions.index("StopTransaction")
            start = seen.of("StartTransaction")[0]
            stop = seen.of("StopTransaction")[0]
            assert stop["transaction_id"] == 100
            assert stop["reason"] == "EVDisconnected"
            meters = [samples(m) for m in seen.of("MeterValues")]
            assert len(meters) >= 5
            energy = [m["Energy.Active.Import.Register"] for m in meters]
            assert energy == sorted(energy)
            assert energy[-1] > energy[0]
            # 22 kW EV on an 11 kW station: it draws the station's maximum, 16 A per phase.
            assert max(m["Power.Active.Import"] for m in meters) == pytest.approx(11000, abs=1)
            assert meters[-1]["Current.Import.L1"] == pytest.approx(15.942, abs=0.01)
            assert 20 < meters[-1]["SoC"] < 21
            # 11 kW for ~3 s is ~9 Wh; the register and the stop agree.
            delivered = stop["meter_stop"] - start["meter_start"]
            assert 5 <= delivered <= 12

    run(main())


async def charging(csms: Csms, st: SimulatedStation) -> tuple[Seen, int]:
    """Wait until ``st`` has a running transaction; its Seen and transaction id."""
    seen = await until(lambda: csms.seen.get(st.cfg.station_id), what="a connection")
    await until(lambda: seen.of("StartTransaction"), what="a transaction")
    tx = await until(lambda: st.core.connector(1).tx, what="the transaction id")
    return seen, int(tx.transaction_id)


def power_after(seen: Seen, t0: float) -> list[float]:
    """Power of the meter values received after monotonic time ``t0`` [W]."""
    return [
        samples(m)["Power.Active.Import"] for m in seen.of("MeterValues") if m["received_at"] > t0
    ]


def test_received_profiles_are_honoured_and_stacked() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, evs=(ev(),))
            async with running(st):
                seen, tx = await charging(csms, st)
                await until(lambda: power_after(seen, 0) and power_after(seen, 0)[-1] > 10000)
                # A TxProfile of 10 A on 3 phases at 230 V: 6.9 kW from the moment it is accepted.
                assert (
                    await set_profile(csms, "CP-1", 1, tx_profile(10.0, transaction_id=tx))
                    == "Accepted"
                )
                t_accepted = time.monotonic()
                assert st.core.power_w == pytest.approx(6900)
                await until(lambda: len(power_after(seen, t_accepted)) >= 3)
                assert max(power_after(seen, t_accepted)) <= 6900 + 1e-6
                # A station maximum of 8 A (stack 0) caps the TxProfile: composite = min(8, 10).
                cap = tx_profile(8.0, profile_id=2, purpose="ChargePointMaxProfile")
                assert await set_profile(csms, "CP-1", 0, cap) == "Accepted"
                t_cap = time.monotonic()
                await until(lambda: len(power_after(seen, t_cap)) >= 3)
                assert max(power_after(seen, t_cap)) <= 8 * 230 * 3 + 1e-6
                comp = await csms.call(
                    "CP-1",
                    call16.GetCompositeSchedule(
                        connector_id=1, duration=600, charging_rate_unit="A"
                    ),
                )
                assert comp.status == "Accepted"
                periods = comp.charging_schedule["charging_schedule_period"]
                assert [float(q["limit"]) for q in periods] == [8.0]
                # A higher stack level of the same purpose wins; in W this time.
                higher = tx_profile(
                    5000.0, profile_id=3, unit="W", stack_level=2, transaction_id=tx
                )
                assert await set_profile(csms, "CP-1", 1, higher) == "Accepted"
                assert st.core.power_w == pytest.approx(5000)
                comp = await csms.call(
                    "CP-1",
                    call16.GetCompositeSchedule(
                        connector_id=1, duration=600, charging_rate_unit="W"
                    ),
                )
                assert float(comp.charging_schedule["charging_schedule_period"][0]["limit"]) == 5000
                # Clearing the TxProfiles leaves the station maximum (no TxDefault here).
                res = await csms.call(
                    "CP-1",
                    call16.ClearChargingProfile(
                        connector_id=1, charging_profile_purpose="TxProfile"
                    ),
                )
                assert res.status == "Accepted"
                assert st.core.power_w == pytest.approx(8 * 230 * 3)
                res = await csms.call("CP-1", call16.ClearChargingProfile(id=99))
                assert res.status == "Unknown"

    run(main())


def test_tx_default_applies_to_new_transactions_and_a_tx_profile_overrides_it() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, evs=(ev(0.5),))
            async with running(st):
                seen = await until(lambda: csms.seen.get("CP-1"))
                await until(lambda: seen.of("StatusNotification"))
                default = tx_profile(6.0, purpose="TxDefaultProfile", profile_id=7)
                assert await set_profile(csms, "CP-1", 0, default) == "Accepted"
                _, tx = await charging(csms, st)
                await until(lambda: power_after(seen, 0))
                # The transaction starts at the safe default, never above it.
                assert max(power_after(seen, 0)) <= 6 * 230 * 3 + 1e-6
                assert (
                    await set_profile(csms, "CP-1", 1, tx_profile(12.0, transaction_id=tx))
                    == "Accepted"
                )
                assert st.core.power_w == pytest.approx(12 * 230 * 3)
                # The limit falls below the EV's minimum (6 A): the EV pauses, SuspendedEVSE.
                low = tx_profile(4.0, profile_id=2, stack_level=1, transaction_id=tx)
                assert await set_profile(csms, "CP-1", 1, low) == "Accepted"
                assert st.core.power_w == 0
                await until(lambda: seen.of("StatusNotification")[-1]["status"] == "SuspendedEVSE")

    run(main())


def test_invalid_profiles_are_rejected_as_the_spec_requires() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, max_periods=4, max_stack_level=3, connectors=2)
            st2 = station(csms, "CP-W", quirks=frozenset({Quirk.W_ONLY}), evs=(ev(),))
            async with running(st, st2):
                await until(lambda: st.online.is_set() and st2.online.is_set())
                # A TxProfile without a transaction on the connector.
                assert await set_profile(csms, "CP-1", 1, tx_profile(10.0)) == "Rejected"
                # Too many periods, a stack level above the maximum, a missing connector.
                many = tx_profile(10.0, purpose="TxDefaultProfile", periods=5)
                assert await set_profile(csms, "CP-1", 1, many) == "Rejected"
                four = tx_profile(10.0, purpose="TxDefaultProfile", periods=4)
                assert await set_profile(csms, "CP-1", 1, four) == "Accepted"
                high = tx_profile(10.0, purpose="TxDefaultProfile", stack_level=4, profile_id=2)
                assert await set_profile(csms, "CP-1", 1, high) == "Rejected"
                assert (
                    await set_profile(csms, "CP-1", 3, tx_profile(10.0, purpose="TxDefaultProfile"))
                    == "Rejected"
                )
                # A station maximum belongs on connector 0.
                cap = tx_profile(10.0, purpose="ChargePointMaxProfile", profile_id=3)
                assert await set_profile(csms, "CP-1", 1, cap) == "Rejected"
                # A schedule whose first period does not start at 0.
                bad = tx_profile(10.0, purpose="TxDefaultProfile", profile_id=4)
                bad["charging_schedule"]["charging_schedule_period"][0]["start_period"] = 10
                assert await set_profile(csms, "CP-1", 1, bad) == "Rejected"
                assert [e.accepted for e in st.profile_log] == [
                    False,
                    False,
                    True,
                    False,
                    False,
                    False,
                    False,
                ]
                assert st.profile_log[1].rejection is not None
                assert "5 periods > 4" in st.profile_log[1].rejection.detail
                # The W-only station: A is refused, W accepted; a wrong transaction id is refused.
                _, tx = await charging(csms, st2)
                assert (
                    await set_profile(csms, "CP-W", 1, tx_profile(10.0, transaction_id=tx))
                    == "Rejected"
                )
                assert st2.profile_log[-1].rejection.code == "UnsupportedRateUnit"  # type: ignore[union-attr]
                wrong = tx_profile(5000.0, unit="W", transaction_id=tx + 1)
                assert await set_profile(csms, "CP-W", 1, wrong) == "Rejected"
                ok = tx_profile(5000.0, unit="W", transaction_id=tx)
                assert await set_profile(csms, "CP-W", 1, ok) == "Accepted"
                assert st2.core.power_w == pytest.approx(5000)
                res = await csms.call(
                    "CP-W",
                    call16.GetCompositeSchedule(
                        connector_id=1, duration=60, charging_rate_unit="A"
                    ),
                )
                assert res.status == "Rejected"
                conf = await csms.call(
                    "CP-W", call16.GetConfiguration(key=["ChargingScheduleAllowedChargingRateUnit"])
                )
                assert conf.configuration_key[0]["value"] == "Power"

    run(main())


def test_number_phases_honoured_or_ignored_by_quirk() -> None:
    async def main() -> None:
        async with Csms() as csms:
            good = station(csms, "CP-G", evs=(ev(),))
            quirky = station(
                csms, "CP-Q", evs=(ev(),), quirks=frozenset({Quirk.IGNORES_NUMBER_PHASES})
            )
            async with running(good, quirky):
                for st in (good, quirky):
                    _, tx = await charging(csms, st)
                    one_phase = tx_profile(10.0, transaction_id=tx, number_phases=1)
                    assert await set_profile(csms, st.cfg.station_id, 1, one_phase) == "Accepted"
                # 10 A on one phase is 2.3 kW; the quirky station puts 10 A on all three.
                assert good.core.power_w == pytest.approx(2300)
                assert quirky.core.power_w == pytest.approx(6900)
                # Both stay within 10 A per phase.
                for st in (good, quirky):
                    assert st.core.current_a(st.core.connector(1)) <= 10 + 1e-9

    run(main())


def test_no_smart_charging_answers_not_supported() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, quirks=frozenset({Quirk.NO_SMART_CHARGING}))
            async with running(st):
                await until(st.online.is_set)
                with pytest.raises(NotSupportedError):
                    await set_profile(csms, "CP-1", 0, tx_profile(10.0, purpose="TxDefaultProfile"))
                conf = await csms.call(
                    "CP-1", call16.GetConfiguration(key=["SupportedFeatureProfiles"])
                )
                assert "SmartCharging" not in conf.configuration_key[0]["value"]

    run(main())


def test_reset_reboots_keeps_station_profiles_and_drops_tx_profiles() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, evs=(ev(),))
            async with running(st):
                seen, tx = await charging(csms, st)
                cap = tx_profile(12.0, purpose="ChargePointMaxProfile", profile_id=5)
                assert await set_profile(csms, "CP-1", 0, cap) == "Accepted"
                assert (
                    await set_profile(csms, "CP-1", 1, tx_profile(9.0, transaction_id=tx))
                    == "Accepted"
                )
                res = await csms.call("CP-1", call16.Reset(type="Soft"))
                assert res.status == "Accepted"
                await until(lambda: len(seen.of("BootNotification")) == 2, what="a second boot")
                assert seen.of("StopTransaction")[0]["reason"] == "SoftReset"
                # The EV is still plugged in: a new transaction starts after the boot.
                await until(lambda: len(seen.of("StartTransaction")) == 2)
                await until(lambda: st.core.connector(1).tx is not None)
                assert csms.connects["CP-1"] == 2
                assert st.boots == 2
                # The station maximum survived the reboot; the TxProfile died with its transaction.
                kept = {p.profile_id for p in st.core.profiles}
                assert kept == {5}
                assert st.core.power_w == pytest.approx(12 * 230 * 3)
                # Messages after the reset came after the Reset reply: the boot is a new one.
                actions = [a for a, _ in seen.messages]
                assert actions.index("StopTransaction") < len(actions) - actions[::-1].index(
                    "BootNotification"
                )

    run(main())


def test_volatile_profiles_are_forgotten_on_reconnect_and_others_kept() -> None:
    async def main() -> None:
        async with Csms() as csms:
            keeps = station(csms, "CP-K")
            forgets = station(csms, "CP-V", quirks=frozenset({Quirk.VOLATILE_PROFILES}))
            async with running(keeps, forgets):
                await until(lambda: keeps.online.is_set() and forgets.online.is_set())
                for sid in ("CP-K", "CP-V"):
                    cap = tx_profile(10.0, purpose="ChargePointMaxProfile")
                    assert await set_profile(csms, sid, 0, cap) == "Accepted"
                    await csms.drop(sid)
                await until(
                    lambda: csms.connects.get("CP-K") == 2 and csms.connects.get("CP-V") == 2
                )
                await until(lambda: keeps.online.is_set() and forgets.online.is_set())
                # A reconnect is not a reboot: no second BootNotification.
                assert keeps.boots == 1
                assert len(csms.seen["CP-K"].of("BootNotification")) == 1
                assert len(keeps.core.profiles) == 1
                assert len(forgets.core.profiles) == 0

    run(main())


def test_remote_start_stop_trigger_and_configuration() -> None:
    async def main() -> None:
        async with Csms() as csms:
            st = station(csms, evs=(ev(),))
            csms.refused.add("TAG-1")  # the EV's own card is refused: it waits
            async with running(st):
                seen = await until(lambda: csms.seen.get("CP-1"))
                await until(lambda: seen.of("Authorize"))
                await until(lambda: st.core.connector(1).stopped)
                assert not seen.of("StartTransaction")
                # RemoteStart with a TxProfile (TC_059): the transaction starts at its limit.
                profile = tx_profile(7.0)
                res = await csms.call(
                    "CP-1",
                    call16.RemoteStartTransaction(
                        id_tag="REMOTE", connector_id=1, charging_profile=profile
                    ),
                )
                assert res.status == "Accepted"
                start = await until(lambda: seen.of("StartTransaction"))
                assert start[0]["id_tag"] == "REMOTE"
                await until(lambda: st.core.power_w > 0)
                assert st.core.power_w == pytest.approx(7 * 230 * 3)
                res = await csms.call(
                    "CP-1", call16.RemoteStartTransaction(id_tag="AGAIN", connector_id=1)
                )
                assert res.status == "Rejected"  # busy
                tx = int(st.core.connector(1).tx.transaction_id)  # type: ignore[union-attr]
                assert (
                    await csms.call("CP-1", call16.RemoteStopTransaction(transaction_id=tx + 5))
                ).status == "Rejected"
                assert (
                    await csms.call("CP-1", call16.RemoteStopTransaction(transaction_id=tx))
                ).status == "Accepted"
                stop = await until(lambda: seen.of("StopTransaction"))
                assert stop[0]["reason"] == "Remote"
                assert stop[0]["transaction_id"] == tx
                await until(lambda: seen.of("StatusNotification")[-1]["status"] == "Finishing")
                # TriggerMessage: the reply first, then the message.
                n_hb = len(seen.of("Heartbeat"))
                res = await csms.call("CP-1", call16.TriggerMessage(requested_message="Heartbeat"))
                assert res.status == "Accepted"
                await until(lambda: len(seen.of("Heartbeat")) == n_hb + 1)
                res = await csms.call(
                    "CP-1",
                    call16.TriggerMessage(requested_message="StatusNotification", connector_id=1),
                )
                assert res.status == "Accepted"
                res = await csms.call(
                    "CP-1", call16.TriggerMessage(requested_message="DiagnosticsStatusNotification")
                )
                assert res.status == "NotImplemented"
                # Configuration: read, change, refuse read-only and unknown keys.
                conf = await csms.call(
                    "CP-1", call16.GetConfiguration(key=["ChargeProfileMaxStackLevel", "Nope"])
                )
                assert conf.configuration_key == [
                    {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"}
                ]
                assert conf.unknown_key == ["Nope"]
                change = call16.ChangeConfiguration
                assert (
                    await csms.call("CP-1", change(key="MeterValueSampleInterval", value="30"))
                ).status == "Accepted"
                assert st.core.meter_interval_s == 30
                assert (
                    await csms.call("CP-1", change(key="NumberOfConnectors", value="3"))
                ).status == "Rejected"
                assert (
                    await csms.call("CP-1", change(key="HeartbeatInterval", value="soon"))
                ).status == "Rejected"
                assert (
                    await csms.call("CP-1", change(key="Nope", value="1"))
                ).status == "NotSupported"

    run(main())


def test_http_basic_auth_security_profile_1() -> None:
    async def main() -> None:
        password = "s3cret-password-0123"
        async with Csms(passwords={"CP-A": password}) as csms:
            good = station(csms, "CP-A", password=password)
            bad = station(csms, "CP-B", password="wrong-password-01234")
            async with running(good, bad):
                await until(good.online.is_set)
                await until(lambda: bad.last_error is not None)
                assert "401" in str(bad.last_error)
                assert "CP-B" not in csms.cps
                assert good.boots == 1

    run(main())
