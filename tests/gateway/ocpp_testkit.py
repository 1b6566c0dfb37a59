"""Test kit for the OCPP gateway: the app on a real port, and small charge points on the
``ocpp`` package that behave like real chargers (validate and store profiles, compute the
composite limit, draw at most that, answer remote commands).

The full station simulator (``ampflow simulate-stations``) lives elsewhere; these stations are
deliberately small and deterministic, with switches for the faults the tests inject.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201

from ampflow.gateway.api import create_app
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.models import IdToken
from ampflow.gateway.ocpp import OcppGateway
from tests.gateway.conftest import DEPOT, make_key, make_settings

PASSWORD = "correct-horse-battery-staple"


def iso(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


# --- a charger's profile store -------------------------------------------------------------------

_PURPOSE = {
    "ChargePointMaxProfile": "max",
    "ChargingStationMaxProfile": "max",
    "TxDefaultProfile": "default",
    "TxProfile": "tx",
}


@dataclass
class Profile:
    id: int
    connector: int
    purpose: str
    stack_level: int
    kind: str
    start: datetime | None
    unit: str
    periods: list[tuple[int, float, int | None]]
    transaction_id: str | None


@dataclass
class Core:
    """What both versions' simulated chargers share: profiles, transactions, the EV."""

    connectors: int = 2
    units: tuple[str, ...] = ("A", "W")
    max_periods: int = 10
    phases: int = 3
    voltage_v: float = 230.0
    ev_max_kw: float = 11.0
    smart_charging: bool = True
    reject_profiles: bool = False  # answers Rejected to every SetChargingProfile
    ignore_profiles: bool = False  # accepts them and draws the EV's maximum anyway
    hang_on: set[str] = field(default_factory=set)  # actions it never answers
    composite_kw: float | None = None  # reports this composite limit whatever it holds
    profiles: dict[tuple[int, str, int], Profile] = field(default_factory=dict)
    txs: dict[int, str] = field(default_factory=dict)
    tx_start: dict[int, datetime] = field(default_factory=dict)
    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    energy_wh: dict[int, float] = field(default_factory=dict)

    def install(self, connector: int, p: dict[str, Any], schedule: dict[str, Any]) -> str:
        purpose = _PURPOSE.get(p["charging_profile_purpose"], "?")
        unit = schedule["charging_rate_unit"]
        periods = schedule["charging_schedule_period"]
        tx = p.get("transaction_id")
        if self.reject_profiles or not self.smart_charging or unit not in self.units:
            return "Rejected"
        if len(periods) > self.max_periods or float(periods[0]["start_period"]) != 0:
            return "Rejected"
        if purpose == "max" and connector != 0:
            return "Rejected"
        if purpose == "tx" and (connector not in self.txs or str(tx) != self.txs[connector]):
            return "Rejected"  # a TxProfile needs the running transaction (K01.FR.09/33)
        prof = Profile(
            id=int(p.get("charging_profile_id", p.get("id", 0))),
            connector=connector,
            purpose=purpose,
            stack_level=int(p["stack_level"]),
            kind=p["charging_profile_kind"],
            start=_time(schedule.get("start_schedule")),
            unit=unit,
            periods=[
                (int(x["start_period"]), float(x["limit"]), x.get("number_phases")) for x in periods
            ],
            transaction_id=None if tx is None else str(tx),
        )
        for key, old in list(self.profiles.items()):
            if old.id == prof.id:
                del self.profiles[key]
        self.profiles[(connector, purpose, prof.stack_level)] = prof
        return "Accepted"

    def clear(self, *, profile_id: int | None, connector: int | None, purpose: str | None) -> str:
        doomed = [
            k
            for k, p in self.profiles.items()
            if (profile_id is None or p.id == profile_id)
            and (connector is None or p.connector == connector)
            and (purpose is None or p.purpose == _PURPOSE.get(purpose))
        ]
        for k in doomed:
            del self.profiles[k]
        return "Accepted" if doomed else "Unknown"

    def _period_kw(self, p: Profile, now: datetime) -> float:
        start = p.start or self.tx_start.get(p.connector) or now
        offset = (now - start).total_seconds()
        limit, phases = p.periods[0][1], p.periods[0][2]
        for sp, lim, ph in p.periods:
            if sp <= offset:
                limit, phases = lim, ph
        if p.unit == "W":
            return limit / 1000.0
        return limit * self.voltage_v * (phases or self.phases) / 1000.0

    def _best(self, connector: int, purpose: str) -> Profile | None:
        found = [p for (c, pu, _), p in self.profiles.items() if c == connector and pu == purpose]
        return max(found, key=lambda p: p.stack_level) if found else None

    def limit_kw(self, connector: int, now: datetime | None = None) -> float | None:
        """The composite limit in force on ``connector`` [kW] (None: none applies)."""
        now = now or datetime.now(UTC)
        values = []
        if (cap := self._best(0, "max")) is not None:
            values.append(self._period_kw(cap, now))
        tx = self._best(connector, "tx") if connector in self.txs else None
        if tx is not None and tx.transaction_id == self.txs.get(connector):
            values.append(self._period_kw(tx, now))
        else:
            default = self._best(connector, "default") or self._best(0, "default")
            if default is not None:
                values.append(self._period_kw(default, now))
        return min(values) if values else None

    def draw_kw(self, connector: int) -> float:
        """What the EV on ``connector`` draws [kW]."""
        if connector not in self.txs:
            return 0.0
        limit = self.limit_kw(connector)
        if self.ignore_profiles or limit is None:
            return self.ev_max_kw
        return min(self.ev_max_kw, limit)

    def composite(self, connector: int, unit: str | None) -> tuple[str, float]:
        kw = self.composite_kw if self.composite_kw is not None else self.limit_kw(connector)
        kw = self.ev_max_kw * 2 if kw is None else kw
        unit = unit or self.units[0]
        value = kw * 1000.0 if unit == "W" else kw * 1000.0 / (self.voltage_v * self.phases)
        return unit, int(value * 10) / 10.0

    def tx_profile(self, connector: int) -> Profile | None:
        return self._best(connector, "tx")

    async def hang(self, action: str) -> None:
        if action in self.hang_on:
            await asyncio.Event().wait()  # never answers (its receive loop is stuck, too)


# --- OCPP 1.6 --------------------------------------------------------------------------------


def _config16(core: Core) -> list[dict[str, Any]]:
    units = ",".join({"A": "Current", "W": "Power"}[u] for u in core.units)
    features = "Core,RemoteTrigger" + (",SmartCharging" if core.smart_charging else "")
    return [
        {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": units},
        {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": str(core.max_periods)},
        {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "3"},
        {"key": "SupportedFeatureProfiles", "readonly": True, "value": features},
    ]


class Station16(Cp16):  # type: ignore[misc]
    """A 1.6 charge point."""

    def __init__(self, station_id: str, ws: Any, core: Core) -> None:
        super().__init__(station_id, ws, response_timeout=15)
        self.core = core
        self.remote_starts: list[tuple[int, str]] = []
        self.resets: list[str] = []

    @on(Action16.set_charging_profile)
    async def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        self.core.log.append(("SetChargingProfile", cs_charging_profiles))
        await self.core.hang("SetChargingProfile")
        status = self.core.install(
            connector_id, cs_charging_profiles, cs_charging_profiles["charging_schedule"]
        )
        return result16.SetChargingProfile(status=status)

    @on(Action16.clear_charging_profile)
    def on_clear(self, **kw: Any) -> Any:
        status = self.core.clear(
            profile_id=kw.get("id"),
            connector=kw.get("connector_id"),
            purpose=kw.get("charging_profile_purpose"),
        )
        return result16.ClearChargingProfile(status=status)

    @on(Action16.get_composite_schedule)
    def on_composite(self, connector_id: int, duration: int, **kw: Any) -> Any:
        self.core.log.append(("GetCompositeSchedule", {"connector_id": connector_id}))
        unit, limit = self.core.composite(connector_id, kw.get("charging_rate_unit"))
        return result16.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=iso(),
            charging_schedule={
                "duration": duration,
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            },
        )

    @on(Action16.get_configuration)
    def on_get_configuration(self, **_: Any) -> Any:
        return result16.GetConfiguration(configuration_key=_config16(self.core))

    @on(Action16.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        self.core.log.append(("ChangeConfiguration", {key: value}))
        return result16.ChangeConfiguration(status="Accepted")

    @on(Action16.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, **_: Any) -> Any:
        self.remote_starts.append((connector_id or 1, id_tag))
        return result16.RemoteStartTransaction(status="Accepted")

    @after(Action16.remote_start_transaction)
    async def after_remote_start(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> None:
        await self.start_tx(connector_id or 1, id_tag)

    @on(Action16.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> Any:
        known = str(transaction_id) in self.core.txs.values()
        return result16.RemoteStopTransaction(status="Accepted" if known else "Rejected")

    @after(Action16.remote_stop_transaction)
    async def after_remote_stop(self, transaction_id: int) -> None:
        if str(transaction_id) in self.core.txs.values():
            await self.stop_tx(str(transaction_id), reason="Remote")

    @on(Action16.trigger_message)
    def on_trigger(self, requested_message: str, **_: Any) -> Any:
        self.core.log.append(("TriggerMessage", {"requested_message": requested_message}))
        return result16.TriggerMessage(status="Accepted")

    @on(Action16.reset)
    def on_reset(self, type: str) -> Any:
        self.resets.append(type)
        return result16.Reset(status="Accepted")

    # -- what the charger sends ------------------------------------------------------------

    async def boot(self, vendor: str = "Ampflow", model: str = "Sim16") -> Any:
        return await self.call(
            call16.BootNotification(charge_point_vendor=vendor, charge_point_model=model)
        )

    async def authorize(self, id_tag: str) -> str:
        r = await self.call(call16.Authorize(id_tag=id_tag))
        return str(r.id_tag_info["status"])

    async def status(self, connector: int, status: str) -> None:
        await self.call(
            call16.StatusNotification(
                connector_id=connector, error_code="NoError", status=status, timestamp=iso()
            )
        )

    async def start_tx(self, connector: int, id_tag: str) -> tuple[int, str]:
        meter = int(self.core.energy_wh.get(connector, 1000.0))
        r = await self.call(
            call16.StartTransaction(
                connector_id=connector, id_tag=id_tag, meter_start=meter, timestamp=iso()
            )
        )
        status = str(r.id_tag_info["status"])
        if status == "Accepted":
            self.core.txs[connector] = str(r.transaction_id)
            self.core.tx_start[connector] = datetime.now(UTC)
        return int(r.transaction_id), status

    async def meter(
        self, connector: int, *, seconds: float = 10.0, extra: list[Any] | None = None
    ) -> float:
        """Report ``seconds`` of drawing what the limit allows; returns the power [kW]."""
        kw = self.core.draw_kw(connector)
        wh = self.core.energy_wh.get(connector, 1000.0) + kw * 1000.0 * seconds / 3600.0
        self.core.energy_wh[connector] = wh
        values = [
            {"value": f"{wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": f"{kw * 1000:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
            *(extra or []),
        ]
        tx = self.core.txs.get(connector)
        await self.call(
            call16.MeterValues(
                connector_id=connector,
                transaction_id=None if tx is None else int(tx),
                meter_value=[{"timestamp": iso(), "sampled_value": values}],
            )
        )
        return kw

    async def stop_tx(self, transaction_id: str, *, reason: str = "Local") -> None:
        connector = next(c for c, t in self.core.txs.items() if t == transaction_id)
        await self.call(
            call16.StopTransaction(
                meter_stop=int(self.core.energy_wh.get(connector, 1000.0)),
                timestamp=iso(),
                transaction_id=int(transaction_id),
                reason=reason,
            )
        )
        del self.core.txs[connector]
        for key in [
            k for k, p in self.core.profiles.items() if p.purpose == "tx" and k[0] == connector
        ]:
            del self.core.profiles[key]  # a TxProfile ends with its transaction


# --- OCPP 2.0.1 --------------------------------------------------------------------------------


class Station201(Cp201):  # type: ignore[misc]
    """A 2.0.1 charging station (one connector per EVSE)."""

    def __init__(self, station_id: str, ws: Any, core: Core) -> None:
        super().__init__(station_id, ws, response_timeout=15)
        self.core = core
        self.seq = 0
        self.remote_starts: list[tuple[int, str, int]] = []

    @on(Action201.set_charging_profile)
    async def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        self.core.log.append(("SetChargingProfile", charging_profile))
        await self.core.hang("SetChargingProfile")
        status = self.core.install(
            evse_id, charging_profile, charging_profile["charging_schedule"][0]
        )
        return result201.SetChargingProfile(status=status)

    @on(Action201.clear_charging_profile)
    def on_clear(self, **kw: Any) -> Any:
        criteria = kw.get("charging_profile_criteria") or {}
        status = self.core.clear(
            profile_id=kw.get("charging_profile_id"),
            connector=criteria.get("evse_id"),
            purpose=criteria.get("charging_profile_purpose"),
        )
        return result201.ClearChargingProfile(status=status)

    @on(Action201.get_composite_schedule)
    def on_composite(self, duration: int, evse_id: int, **kw: Any) -> Any:
        self.core.log.append(("GetCompositeSchedule", {"evse_id": evse_id}))
        unit, limit = self.core.composite(evse_id, kw.get("charging_rate_unit"))
        return result201.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": iso(),
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            },
        )

    @on(Action201.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]]) -> Any:
        values = {
            "Enabled": "true" if self.core.smart_charging else "false",
            "RateUnit": ",".join(self.core.units),
            "PeriodsPerSchedule": str(self.core.max_periods),
            "ProfileStackLevel": "3",
        }
        out = []
        for d in get_variable_data:
            name = d["variable"]["name"]
            item = {"component": d["component"], "variable": d["variable"]}
            if name in values:
                out.append(
                    {"attribute_status": "Accepted", "attribute_value": values[name], **item}
                )
            else:
                out.append({"attribute_status": "UnknownVariable", **item})
        return result201.GetVariables(get_variable_result=out)

    @on(Action201.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]]) -> Any:
        self.core.log.append(("SetVariables", {"data": set_variable_data}))
        return result201.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in set_variable_data
            ]
        )

    @on(Action201.request_start_transaction)
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **kw: Any) -> Any:
        self.remote_starts.append((kw.get("evse_id") or 1, id_token["id_token"], remote_start_id))
        return result201.RequestStartTransaction(status="Accepted")

    @after(Action201.request_start_transaction)
    async def after_request_start(
        self, id_token: dict[str, Any], remote_start_id: int, **kw: Any
    ) -> None:
        await self.start_tx(
            kw.get("evse_id") or 1,
            f"tx-remote-{remote_start_id}",
            id_token["id_token"],
            remote_start_id=remote_start_id,
        )

    @on(Action201.request_stop_transaction)
    def on_request_stop(self, transaction_id: str) -> Any:
        known = transaction_id in self.core.txs.values()
        return result201.RequestStopTransaction(status="Accepted" if known else "Rejected")

    @after(Action201.request_stop_transaction)
    async def after_request_stop(self, transaction_id: str) -> None:
        if transaction_id in self.core.txs.values():
            await self.stop_tx(transaction_id, reason="Remote")

    @on(Action201.trigger_message)
    def on_trigger(self, requested_message: str, **_: Any) -> Any:
        self.core.log.append(("TriggerMessage", {"requested_message": requested_message}))
        return result201.TriggerMessage(status="Accepted")

    @on(Action201.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        return result201.Reset(status="Accepted")

    # -- what the station sends ------------------------------------------------------------

    async def boot(self, vendor: str = "Ampflow", model: str = "Sim201") -> Any:
        return await self.call(
            call201.BootNotification(
                charging_station={"model": model, "vendor_name": vendor}, reason="PowerUp"
            )
        )

    async def authorize(self, token: str) -> str:
        r = await self.call(call201.Authorize(id_token={"id_token": token, "type": "ISO14443"}))
        return str(r.id_token_info["status"])

    async def status(self, evse: int, status: str) -> None:
        await self.call(
            call201.StatusNotification(
                timestamp=iso(), connector_status=status, evse_id=evse, connector_id=1
            )
        )

    def _meter_value(self, evse: int, seconds: float, context: str) -> dict[str, Any]:
        kw = self.core.draw_kw(evse)
        wh = self.core.energy_wh.get(evse, 1000.0) + kw * 1000.0 * seconds / 3600.0
        self.core.energy_wh[evse] = wh
        values: list[dict[str, Any]] = [
            {
                "value": wh / 1000.0,
                "measurand": "Energy.Active.Import.Register",
                "context": context,
                "unit_of_measure": {"unit": "kWh"},
            }
        ]
        if context != "Transaction.Begin":  # the register only, as many chargers do
            values.append(
                {"value": kw * 1000.0, "measurand": "Power.Active.Import", "context": context}
            )
        return {"timestamp": iso(), "sampled_value": values}

    async def event(self, kind: str, tx_id: str, evse: int, trigger: str, **kw: Any) -> Any:
        self.seq += 1
        info = {"transaction_id": tx_id, **kw.pop("info", {})}
        return await self.call(
            call201.TransactionEvent(
                event_type=kind,
                timestamp=iso(),
                trigger_reason=trigger,
                seq_no=self.seq,
                transaction_info=info,
                evse={"id": evse, "connector_id": 1},
                **kw,
            )
        )

    async def start_tx(
        self, evse: int, tx_id: str, token: str, *, remote_start_id: int | None = None
    ) -> str:
        info = {} if remote_start_id is None else {"remote_start_id": remote_start_id}
        r = await self.event(
            "Started",
            tx_id,
            evse,
            "Authorized",
            id_token={"id_token": token, "type": "ISO14443"},
            meter_value=[self._meter_value(evse, 0, "Transaction.Begin")],
            info=info,
        )
        status = str((r.id_token_info or {}).get("status", "Accepted"))
        if status == "Accepted":
            self.core.txs[evse] = tx_id
            self.core.tx_start[evse] = datetime.now(UTC)
        return status

    async def meter(self, evse: int, *, seconds: float = 10.0) -> float:
        tx = self.core.txs.get(evse)
        mv = self._meter_value(evse, seconds, "Sample.Periodic")
        if tx is None:
            await self.call(call201.MeterValues(evse_id=evse, meter_value=[mv]))
        else:
            await self.event("Updated", tx, evse, "MeterValuePeriodic", meter_value=[mv])
        return self.core.draw_kw(evse)

    async def stop_tx(self, tx_id: str, *, reason: str = "Local") -> None:
        evse = next(c for c, t in self.core.txs.items() if t == tx_id)
        await self.event(
            "Ended",
            tx_id,
            evse,
            "StopAuthorized" if reason == "Local" else "RemoteStop",
            meter_value=[self._meter_value(evse, 0, "Transaction.End")],
            info={"stopped_reason": reason},
        )
        del self.core.txs[evse]
        for key in [k for k, p in self.core.profiles.items() if p.purpose == "tx" and k[0] == evse]:
            del self.core.profiles[key]

    async def needs(self, evse: int, needs: dict[str, Any]) -> str:
        r = await self.call(call201.NotifyEVChargingNeeds(evse_id=evse, charging_needs=needs))
        return str(r.status)


# --- the server ------------------------------------------------------------------------------


class Server:
    """The API with the OCPP gateway mounted, on a 127.0.0.1 port, in a thread."""

    def __init__(
        self,
        db: Database,
        settings: Any,
        *,
        control: bool = True,
        ssl: dict[str, Any] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.gateway = OcppGateway(db, settings)
        self.app = create_app(
            settings, db=db, sink=self.gateway.sink, commands=self.gateway.commands, control=control
        )
        self.gateway.mount(self.app)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if ssl else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.ws = f"{'wss' if ssl else 'ws'}://127.0.0.1:{self.port}/ocpp"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", ws="websockets-sansio", **(ssl or {}))
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.admin = ""

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.admin = make_key(self.db, Role.ADMIN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30.0,
            verify=False,
        )

    @property
    def control(self) -> Any:
        return self.app.state.ctx.control


def rising_prices(hours: int = 24) -> list[dict[str, Any]]:
    """Import prices that rise every 15 minutes from now: the plan charges as early as it can
    (with flat prices any order is optimal and a plan may defer a session)."""
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    t0 -= timedelta(minutes=t0.minute % 15)
    step = timedelta(minutes=15)
    return [
        {
            "start": (t0 + k * step).isoformat(),
            "end": (t0 + (k + 1) * step).isoformat(),
            "price": round(0.10 + 0.001 * k, 4),
        }
        for k in range(hours * 4)
    ]


def setup_depot(srv: Server, *stations: tuple[str, str, str | None]) -> None:
    """The depot site, rising prices, and stations ``(id, charger, password)``; id tags
    ``TAG-OK`` (accepted) and ``TAG-BLOCKED`` in the store."""
    with srv.client() as c:
        r = c.post("/sites", json=DEPOT)
        assert r.status_code == 201, r.text
        r = c.post("/prices", json={"site_id": "depot", "intervals": rising_prices()})
        assert r.status_code == 201, r.text
        for sid, charger, password in stations:
            body: dict[str, Any] = {"id": sid, "site_id": "depot", "charger_id": charger}
            if password is not None:
                body["password"] = password
            r = c.post("/stations", json=body)
            assert r.status_code == 201, r.text
    with srv.db.write() as s:
        s.add(IdToken(token="TAG-OK", status="Accepted"))
        s.add(IdToken(token="TAG-BLOCKED", status="Blocked"))


@contextlib.asynccontextmanager
async def connect(
    srv: Server,
    station_id: str,
    core: Core,
    *,
    version: str = "1.6",
    password: str | None = None,
    user: str | None = None,
) -> AsyncIterator[Any]:
    """A charge point connected to ``srv``; its receive loop runs until the block ends."""
    headers = {}
    if password is not None:
        token = base64.b64encode(f"{user or station_id}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    kind = Station16 if version == "1.6" else Station201
    sub = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    async with websockets.connect(
        f"{srv.ws}/{station_id}", subprotocols=[sub], additional_headers=headers, open_timeout=10
    ) as ws:
        cp = kind(station_id, ws, core)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


async def until(pred: Callable[[], Any], *, timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``pred`` until it is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or pred}")


def settings_for(tmp_path: Path, db: Database, **ocpp: Any) -> Any:
    """Test settings: the loop runs when woken; a session without targets is assumed to leave
    in 15 minutes, so the plan must charge it now (with flat prices any time would do)."""
    values: dict[str, Any] = {"response_timeout_s": 3.0, "retries": 1, "batch_wait_s": 2.0}
    values.update(ocpp)
    return make_settings(
        tmp_path,
        db.url.render_as_string(False),
        ocpp=values,
        tick_s=3600.0,
        replan_s=3600.0,
        default_dwell_h=0.25,
    )


@pytest.fixture(name="ocpp_server")
def ocpp_server_fixture(db: Database, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``server(**ocpp_settings)``: the app with the gateway on a live port."""
    stack = contextlib.ExitStack()

    def start(*, control: bool = True, ssl: dict[str, Any] | None = None, **ocpp: Any) -> Server:
        return stack.enter_context(
            Server(db, settings_for(tmp_path, db, **ocpp), control=control, ssl=ssl)
        )

    with stack:
        yield start


async def on_server(srv: Server, coro: Any, *, timeout: float = 20.0) -> Any:
    """Run a gateway coroutine on the server's loop and await it from the test's loop."""
    loop = srv.gateway._loop
    assert loop is not None
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    return await asyncio.wait_for(asyncio.wrap_future(future), timeout)


def station_flags(srv: Server, station_id: str) -> list[str]:
    with srv.client() as c:
        r = c.get(f"/stations/{station_id}")
        assert r.status_code == 200, r.text
        return list(r.json()["flags"])
