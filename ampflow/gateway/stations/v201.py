"""The OCPP 2.0.1 side of a simulated charging station, on ``ocpp.v201.ChargePoint`` as a client.

Outbound: BootNotification, Heartbeat, StatusNotification, Authorize, TransactionEvent
(Started on authorisation, Updated with periodic meter values and charging-state changes,
Ended), NotifyEVChargingNeeds (ISO 15118: departure time and energy) and MeterValues. Inbound:
SetChargingProfile, ClearChargingProfile, GetCompositeSchedule, RequestStart/StopTransaction,
TriggerMessage, Get/SetVariables, Reset. EVSE ids play the part of 1.6 connector ids (one
connector per EVSE). Handlers never call; follow-ups go to the station's outbox.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from operator import methodcaller
from typing import Any

from ocpp.exceptions import NotSupportedError
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from ampflow.gateway.stations._common import (
    MEASURANDS,
    EndedTx,
    StationHost,
    StopReason,
    iso,
    on,
    parse_ts,
)
from ampflow.gateway.stations.config import Quirk
from ampflow.gateway.stations.core import ConnectorState, ConnectorStatus
from ampflow.gateway.stations.profiles import Kind, Period, Profile, Purpose, Recurrency

__all__ = ["Link201", "parse_profile"]

logger = logging.getLogger(__name__)

_STOPPED = {
    StopReason.EV_DISCONNECTED: ("EVDisconnected", "EVDeparted"),
    StopReason.REMOTE: ("Remote", "RemoteStop"),
    StopReason.SOFT_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.HARD_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.DEAUTHORIZED: ("DeAuthorized", "Deauthorized"),
    StopReason.LOCAL: ("Local", "StopAuthorized"),
}
_CHARGING_STATE = {
    ConnectorStatus.CHARGING: "Charging",
    ConnectorStatus.SUSPENDED_EV: "SuspendedEV",
    ConnectorStatus.SUSPENDED_EVSE: "SuspendedEVSE",
}
_RW = {
    ("OCPPCommCtrlr", "HeartbeatInterval"),
    ("SampledDataCtrlr", "TxUpdatedInterval"),
    ("TxCtrlr", "EVConnectionTimeOut"),
}


def parse_profile(evse_id: int, raw: Mapping[str, Any]) -> Profile:
    """A 2.0.1 ``chargingProfile`` (snake-cased) as a :class:`Profile`.

    Raises ValueError or KeyError for what a station cannot use, e.g. more than one schedule
    without ISO 15118 (K01.FR.34).
    """
    schedules = raw["charging_schedule"]
    if len(schedules) != 1:
        raise ValueError(f"chargingSchedule: expected 1 schedule, got {len(schedules)}")
    sched = schedules[0]
    recurrency = raw.get("recurrency_kind")
    tx = raw.get("transaction_id")
    min_rate = sched.get("min_charging_rate")
    return Profile(
        profile_id=int(raw["id"]),
        connector=int(evse_id),
        stack_level=int(raw["stack_level"]),
        purpose=Purpose(raw["charging_profile_purpose"]),
        kind=Kind(raw["charging_profile_kind"]),
        unit=str(sched["charging_rate_unit"]),
        periods=tuple(
            Period(int(q["start_period"]), float(q["limit"]), q.get("number_phases"))
            for q in sched["charging_schedule_period"]
        ),
        start_schedule=parse_ts(sched.get("start_schedule"), field="startSchedule"),
        duration_s=None if sched.get("duration") is None else int(sched["duration"]),
        recurrency=None if recurrency is None else Recurrency(recurrency),
        valid_from=parse_ts(raw.get("valid_from"), field="validFrom"),
        valid_to=parse_ts(raw.get("valid_to"), field="validTo"),
        transaction_id=None if tx is None else str(tx),
        min_rate=None if min_rate is None else float(min_rate),
    )


def _info(code: str, detail: str) -> dict[str, str]:
    return {"reason_code": code[:20], "additional_info": detail[:512]}


class Link201(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """One 2.0.1 connection of a simulated station."""

    def __init__(self, host: StationHost, connection: Any, *, response_timeout: float) -> None:
        super().__init__(host.core.cfg.station_id, connection, response_timeout=response_timeout)
        self.host = host
        self.cfg = host.core.cfg

    async def route_message(self, raw_msg: str) -> None:
        """Route one message; what its handler posted is released once the reply is out."""
        self.host.handling(True)
        try:
            await super().route_message(raw_msg)
        finally:
            self.host.handling(False)
        self.host.flush_posted()

    # --- outbound -----------------------------------------------------------------------------

    async def boot(self, reason: str) -> tuple[str, float]:
        reasons = {"PowerUp", "RemoteReset", "Triggered", "LocalReset"}
        res = await self.call(
            call.BootNotification(
                charging_station={
                    "model": self.cfg.model,
                    "vendor_name": self.cfg.vendor,
                    "firmware_version": self.cfg.firmware,
                    "serial_number": self.cfg.station_id[:25],
                },
                reason=reason if reason in reasons else "Unknown",
            ),
            suppress=False,
        )
        return str(res.status), float(res.interval)

    async def heartbeat(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def status(self, connector: int) -> None:
        if connector == 0:
            return  # 2.0.1 reports connectors of EVSEs only
        c = self.host.core.connector(connector)
        state = "Available" if c.ev is None else "Occupied"
        await self.call(
            call.StatusNotification(
                timestamp=iso(self.host.now()),
                connector_status=state,
                evse_id=connector,
                connector_id=1,
            ),
            suppress=False,
        )

    async def authorize(self, id_tag: str) -> bool:
        res = await self.call(
            call.Authorize(id_token={"id_token": id_tag, "type": "ISO14443"}), suppress=False
        )
        return bool(res.id_token_info["status"] == "Accepted")

    async def start_tx(self, connector: int, *, remote_id: int | None) -> bool:
        core = self.host.core
        c = core.connector(connector)
        now = self.host.now()
        # Unique across runs: a central system must not mistake it for an old transaction.
        tx_id = f"{self.cfg.station_id[:20]}-{uuid.uuid4().hex[:12]}"
        core.begin_tx(connector, tx_id, now=now)
        info: dict[str, Any] = {"transaction_id": tx_id, "charging_state": "EVConnected"}
        if remote_id is not None:
            info["remote_start_id"] = remote_id
        res = await self.call(
            call.TransactionEvent(
                event_type="Started",
                timestamp=iso(now),
                trigger_reason="RemoteStart" if remote_id is not None else "Authorized",
                seq_no=c.seq(),
                transaction_info=info,
                evse={"id": connector, "connector_id": 1},
                id_token={"id_token": c.id_tag or "", "type": "ISO14443"},
                meter_value=[self._meter_value(c, context="Transaction.Begin")],
            ),
            suppress=False,
        )
        token = res.id_token_info
        return token is None or token.get("status") == "Accepted"

    async def stop_tx(self, ended: EndedTx) -> None:
        stopped, trigger = _STOPPED[ended.reason]
        await self.call(
            call.TransactionEvent(
                event_type="Ended",
                timestamp=iso(ended.at),
                trigger_reason=trigger,
                seq_no=ended.seq_no,
                transaction_info={
                    "transaction_id": ended.transaction_id,
                    "stopped_reason": stopped,
                    "charging_state": "Idle"
                    if ended.reason is StopReason.EV_DISCONNECTED
                    else "EVConnected",
                },
                evse={"id": ended.connector, "connector_id": 1},
                meter_value=[
                    {
                        "timestamp": iso(ended.at),
                        "sampled_value": [
                            {
                                "value": round(ended.meter_stop_wh, 3),
                                "context": "Transaction.End",
                                "measurand": MEASURANDS[0],
                                "unit_of_measure": {"unit": "Wh"},
                            }
                        ],
                    }
                ],
            ),
            suppress=False,
        )

    async def meter(self, connector: int) -> None:
        await self._tx_update(connector, "MeterValuePeriodic", with_meter=True)

    async def status_changed(
        self, connector: int, old: ConnectorStatus, new: ConnectorStatus
    ) -> None:
        was, now = old is ConnectorStatus.AVAILABLE, new is ConnectorStatus.AVAILABLE
        if was != now:
            await self.status(connector)
        state = self.host.core.connector(connector)
        if state.tx is not None and _CHARGING_STATE.get(old) != _CHARGING_STATE.get(new):
            await self._tx_update(connector, "ChargingStateChanged", with_meter=False)

    async def ev_needs(self, connector: int, *, departure: Any, energy_wh: float) -> None:
        """NotifyEVChargingNeeds (ISO 15118): departure time and energy still wanted."""
        c = self.host.core.connector(connector)
        if c.ev is None:
            return
        phases = self.cfg.phases
        await self.call(
            call.NotifyEVChargingNeeds(
                evse_id=connector,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase"
                    if phases == 3
                    else "AC_single_phase",
                    "departure_time": iso(departure),
                    "ac_charging_parameters": {
                        "energy_amount": max(int(energy_wh), 0),
                        "ev_min_current": int(self.cfg.min_a),
                        "ev_max_current": int(
                            min(c.ev.max_kw, self.cfg.max_kw) * 1000 / (self.cfg.voltage_v * phases)
                        ),
                        "ev_max_voltage": int(self.cfg.voltage_v),
                    },
                },
            ),
            suppress=False,
        )

    async def _tx_update(self, connector: int, trigger: str, *, with_meter: bool) -> None:
        c = self.host.core.connector(connector)
        if c.tx is None:
            return
        extra: dict[str, Any] = {}
        if with_meter:
            extra["meter_value"] = [self._meter_value(c, context="Sample.Periodic")]
        await self.call(
            call.TransactionEvent(
                event_type="Updated",
                timestamp=iso(self.host.now()),
                trigger_reason=trigger,
                seq_no=c.seq(),
                transaction_info={
                    "transaction_id": c.tx.transaction_id,
                    "charging_state": _CHARGING_STATE.get(c.status, "EVConnected"),
                },
                evse={"id": connector, "connector_id": 1},
                **extra,
            ),
            suppress=False,
        )

    def _meter_value(self, c: ConnectorState, *, context: str) -> dict[str, Any]:
        core = self.host.core
        amps = round(core.current_a(c), 3)
        offered = round(core.offered_a(c), 3)

        def sv(measurand: str, value: float, unit: str, **more: Any) -> dict[str, Any]:
            return {
                "value": round(value, 3),
                "context": context,
                "measurand": measurand,
                "unit_of_measure": {"unit": unit},
                **more,
            }

        values = [
            sv(MEASURANDS[0], c.energy_wh, "Wh"),
            sv(MEASURANDS[1], c.power_w, "W"),
            *(sv(MEASURANDS[2], amps, "A", phase=ph) for ph in ("L1", "L2", "L3")[: c.phases]),
            sv(MEASURANDS[3], offered, "A"),
            sv(MEASURANDS[4], c.limit_w, "W"),
        ]
        soc = c.soc_pct
        if soc is not None:
            values.append(sv(MEASURANDS[5], soc, "Percent", location="EV"))
        return {"timestamp": iso(self.host.now()), "sampled_value": values}

    # --- inbound: smart charging --------------------------------------------------------------

    def _smart(self) -> None:
        if Quirk.NO_SMART_CHARGING in self.cfg.quirks:
            raise NotSupportedError(details={"cause": "this station has no smart charging"})

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> Any:
        self._smart()
        try:
            profile = parse_profile(evse_id, charging_profile)
        except (KeyError, ValueError, TypeError) as exc:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info("InvalidSchedule", str(exc))
            )
        if profile.purpose is Purpose.STATION_MAX and profile.connector != 0:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info("InvalidValue", "evseId must be 0")
            )
        rejected = self.host.apply_profile(profile, strict=True)
        if rejected is not None:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info(rejected.code, rejected.detail)
            )
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        self._smart()
        crit = charging_profile_criteria or {}
        purpose = crit.get("charging_profile_purpose")
        n = self.host.clear_profiles(
            profile_id=charging_profile_id,
            connector=crit.get("evse_id"),
            purpose=None if purpose is None else Purpose(purpose),
            stack_level=crit.get("stack_level"),
        )
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        self._smart()
        unit = charging_rate_unit or self.cfg.rate_units[0]
        if unit not in self.cfg.rate_units:
            return call_result.GetCompositeSchedule(
                status="Rejected", status_info=_info("UnsupportedRateUnit", unit)
            )
        if not 0 <= evse_id <= self.cfg.connectors:
            return call_result.GetCompositeSchedule(
                status="Rejected", status_info=_info("UnknownEvse", str(evse_id))
            )
        now = self.host.now().replace(microsecond=0)
        periods = self.host.core.composite(evse_id, now, int(duration), unit)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": int(duration),
                "schedule_start": iso(now),
                "charging_rate_unit": unit,
                "charging_schedule_period": [
                    {"start_period": q.start_s, "limit": round(q.limit, 1)}
                    | ({} if q.number_phases is None else {"number_phases": q.number_phases})
                    for q in periods
                ],
            },
        )

    # --- inbound: remote control --------------------------------------------------------------

    @on(Action.request_start_transaction)
    def on_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        profile = None
        if charging_profile is not None:
            try:
                profile = parse_profile(evse_id or 1, charging_profile)
            except (KeyError, ValueError, TypeError) as exc:
                return call_result.RequestStartTransaction(
                    status="Rejected", status_info=_info("InvalidProfile", str(exc))
                )
            if profile.purpose is not Purpose.TX or Quirk.NO_SMART_CHARGING in self.cfg.quirks:
                return call_result.RequestStartTransaction(
                    status="Rejected", status_info=_info("InvalidProfile", "not a TxProfile")
                )
        ok = self.host.remote_start(
            evse_id, str(id_token["id_token"]), profile, remote_id=remote_start_id
        )
        return call_result.RequestStartTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        ok = self.host.remote_stop(str(transaction_id))
        return call_result.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        evse_id = None if evse is None else int(evse["id"])
        if evse_id is not None and not 0 <= evse_id <= self.cfg.connectors:
            return call_result.TriggerMessage(status="Rejected")
        targets = range(1, self.cfg.connectors + 1) if not evse_id else [evse_id]
        post = self.host.post
        if requested_message == "BootNotification":
            post("boot", methodcaller("boot", "Triggered"))
        elif requested_message == "Heartbeat":
            post("heartbeat", methodcaller("heartbeat"))
        elif requested_message == "StatusNotification":
            for n in targets:
                post("status", methodcaller("status", n))
        elif requested_message in ("MeterValues", "TransactionEvent"):
            for n in targets:
                post("meter", methodcaller("_tx_update", n, "Trigger", with_meter=True))
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.reset)
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id is not None:
            return call_result.Reset(
                status="Rejected", status_info=_info("UnsupportedRequest", "EVSE reset")
            )
        busy = any(c.tx is not None for c in self.host.core)
        when_idle = type == "OnIdle" and busy
        self.host.request_reset(hard=True, when_idle=when_idle)
        return call_result.Reset(status="Scheduled" if when_idle else "Accepted")

    # --- inbound: device model ----------------------------------------------------------------

    def variables(self) -> dict[tuple[str, str], tuple[str, bool]]:
        """(component, variable) -> (value, read-only)."""
        core, cfg = self.host.core, self.cfg
        smart = Quirk.NO_SMART_CHARGING not in cfg.quirks
        return {
            ("OCPPCommCtrlr", "HeartbeatInterval"): (str(int(core.heartbeat_s or 0)), False),
            ("SampledDataCtrlr", "TxUpdatedInterval"): (str(round(core.meter_interval_s)), False),
            ("SampledDataCtrlr", "TxUpdatedMeasurands"): (",".join(MEASURANDS), True),
            ("TxCtrlr", "EVConnectionTimeOut"): (str(int(core.connection_timeout_s)), False),
            ("TxCtrlr", "TxStartPoint"): ("Authorized", True),
            ("SmartChargingCtrlr", "Enabled"): (str(smart).lower(), True),
            ("SmartChargingCtrlr", "Available"): (str(smart).lower(), True),
            ("SmartChargingCtrlr", "RateUnit"): (",".join(cfg.rate_units), True),
            ("SmartChargingCtrlr", "PeriodsPerSchedule"): (str(cfg.max_periods), True),
            ("SmartChargingCtrlr", "ProfileStackLevel"): (str(cfg.max_stack_level), True),
            ("SmartChargingCtrlr", "Entries"): (str(cfg.max_profiles), True),
            ("SmartChargingCtrlr", "Phases3to1"): ("false", True),
            ("ChargingStation", "SupplyPhases"): (str(cfg.phases), True),
            ("SecurityCtrlr", "SecurityProfile"): ("1" if cfg.password else "0", True),
        }

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        table = self.variables()
        components = {comp for comp, _ in table}
        out = []
        for item in get_variable_data:
            comp, var = item["component"]["name"], item["variable"]["name"]
            result: dict[str, Any] = {"component": item["component"], "variable": item["variable"]}
            if comp not in components:
                result["attribute_status"] = "UnknownComponent"
            elif (comp, var) not in table:
                result["attribute_status"] = "UnknownVariable"
            elif item.get("attribute_type", "Actual") != "Actual":
                result["attribute_status"] = "NotSupportedAttributeType"
            else:
                result["attribute_status"] = "Accepted"
                result["attribute_value"] = table[(comp, var)][0]
            out.append(result)
        return call_result.GetVariables(get_variable_result=out)

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        table = self.variables()
        components = {comp for comp, _ in table}
        out = []
        for item in set_variable_data:
            key = (item["component"]["name"], item["variable"]["name"])
            out.append(
                {
                    "attribute_status": self._set(key, str(item["attribute_value"]), components),
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        self.host.wake()
        return call_result.SetVariables(set_variable_result=out)

    def _set(self, key: tuple[str, str], value: str, components: set[str]) -> str:
        table = self.variables()
        if key[0] not in components:
            return "UnknownComponent"
        if key not in table:
            return "UnknownVariable"
        if key not in _RW:
            return "Rejected"
        try:
            seconds = int(value)
        except ValueError:
            return "Rejected"
        if seconds < 0 or (seconds == 0 and key != ("OCPPCommCtrlr", "HeartbeatInterval")):
            return "Rejected"
        core = self.host.core
        if key[1] == "HeartbeatInterval":
            core.heartbeat_s = float(seconds) or None
        elif key[1] == "TxUpdatedInterval":
            core.meter_interval_s = float(seconds)
        else:
            core.connection_timeout_s = float(seconds)
        return "Accepted"
