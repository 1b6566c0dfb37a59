"""OCPP 2.0.1: the ChargePoint handler (inbound) and the calls Ampflow sends (outbound).

As in :mod:`.v16`, handlers only translate. A 2.0.1 transaction is one ``TransactionEvent``
stream (``Started``, ``Updated``..., ``Ended``) with an id the station chooses; a station may
start it before the driver is authorised (cable plugged in) and send the token later, so an
``Updated`` event for an unknown transaction starts it. Meter values inside transaction events
are stored like those of ``MeterValues``. ``NotifyEVChargingNeeds`` (ISO 15118) becomes the
session's departure time, energy request, maximum power and, for DC, battery size and SoC.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from ampflow.gateway.ocpp.capabilities import (
    V201_VARIABLES,
    Capabilities,
    capabilities_from_v201,
)
from ampflow.gateway.ocpp.events import (
    AuthStatus,
    BootInfo,
    ChargingNeeds,
    StatusChange,
    TxEnd,
    TxStart,
    parse_meter_values,
    parse_time,
    parse_time_or_none,
)
from ampflow.gateway.ocpp.profiles import (
    CompositeLimit,
    ProfilePurpose,
    ProfileSpec,
    limit_in_force,
)
from ampflow.gateway.ocpp.protocol import WIRE_LOGGER, CentralSystemMixin, after, on
from ampflow.gateway.ocpp.v16 import now_text

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.protocol import WebSocketConnection
    from ampflow.gateway.ocpp.station import StationLink

__all__ = ["ChargePoint201", "V201Calls"]

VERSION = "2.0.1"
SUBPROTOCOL = "ocpp2.0.1"


def _token_info(status: AuthStatus, expiry: datetime | None, group: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status.value}
    if expiry is not None:
        info["cache_expiry_date_time"] = expiry.isoformat().replace("+00:00", "Z")
    if group is not None:
        info["group_id_token"] = {"id_token": group[:36], "type": "Central"}
    return info


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def charging_needs(evse_id: int, needs: dict[str, Any]) -> ChargingNeeds:
    """The session targets in a NotifyEVChargingNeeds request (snake_case).

    Examples
    --------
    >>> n = charging_needs(1, {"requested_energy_transfer": "DC",
    ...     "departure_time": "2026-01-01T17:00:00Z",
    ...     "dc_charging_parameters": {"ev_max_current": 200, "ev_max_voltage": 500,
    ...         "energy_amount": 30000, "ev_max_power": 50000, "state_of_charge": 40,
    ...         "ev_energy_capacity": 60000, "full_soc": 90}})
    >>> n.energy_kwh, n.ev_max_kw, n.battery_kwh, n.soc_pct, n.soc_target_pct
    (30.0, 50.0, 60.0, 40.0, 90.0)
    """
    ac = needs.get("ac_charging_parameters") or {}
    dc = needs.get("dc_charging_parameters") or {}
    departure = needs.get("departure_time")
    energy = _number(dc.get("energy_amount", ac.get("energy_amount")))
    power = _number(dc.get("ev_max_power"))
    capacity = _number(dc.get("ev_energy_capacity"))
    return ChargingNeeds(
        connector=evse_id,
        departure_at=parse_time_or_none(departure),
        energy_kwh=None if energy is None else energy / 1000.0,
        ev_max_kw=None if power is None else power / 1000.0,
        battery_kwh=None if capacity is None else capacity / 1000.0,
        soc_pct=_number(dc.get("state_of_charge")),
        soc_target_pct=_number(dc.get("full_soc")),
        ev_max_a=_number(ac.get("ev_max_current")) if not dc else None,
    )


class ChargePoint201(CentralSystemMixin, ChargePoint):  # type: ignore[misc]
    """A 2.0.1 station's connection, as seen from the central system."""

    def __init__(
        self,
        link: StationLink,
        connection: WebSocketConnection,
        *,
        response_timeout: float,
        rate_per_s: float,
        rate_burst: int,
    ) -> None:
        ChargePoint.__init__(
            self, link.station_id, connection, response_timeout=response_timeout, logger=WIRE_LOGGER
        )
        self._setup(link, rate_per_s=rate_per_s, rate_burst=rate_burst)

    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charging_station: dict[str, Any], reason: str, **_: Any
    ) -> Any:
        status, interval = await self.link.boot(
            BootInfo(
                vendor=str(charging_station.get("vendor_name", "")),
                model=str(charging_station.get("model", "")),
                serial_number=charging_station.get("serial_number"),
                firmware_version=charging_station.get("firmware_version"),
                reason=reason,
            )
        )
        return call_result.BootNotification(
            current_time=now_text(), interval=interval, status=status
        )

    @after(Action.boot_notification)
    def after_boot_notification(self, **_: Any) -> None:
        self.link.after_boot()

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=now_text())

    @on(Action.status_notification)
    async def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> Any:
        at = parse_time(timestamp, default=self.link.now())
        await self.link.status(StatusChange(evse_id, connector_status, at))
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        auth = await self.link.authorize(str(id_token.get("id_token", "")))
        return call_result.Authorize(id_token_info=_token_info(*auth))

    @on(Action.transaction_event)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kw: Any,
    ) -> Any:
        tx_id = str(transaction_info.get("transaction_id"))
        at = parse_time(timestamp, default=self.link.now())
        evse = kw.get("evse") or {}
        token = (kw.get("id_token") or {}).get("id_token")
        auth = None if token is None else await self.link.authorize(str(token))
        meter = kw.get("meter_value")
        connector = evse.get("id") if isinstance(evse.get("id"), int) else None
        if event_type != "Ended" and connector is not None:
            _, summary = parse_meter_values(meter, now=at)
            if event_type == "Started" or not self.link.knows_transaction(tx_id):
                await self.link.start_transaction(
                    TxStart(
                        connector=connector,
                        at=at,
                        id_token=None if token is None else str(token),
                        meter_start_wh=None if summary is None else summary.energy_wh,
                        transaction_id=tx_id,
                        remote_start_id=transaction_info.get("remote_start_id"),
                    ),
                    authorized=auth is None or auth[0] is AuthStatus.ACCEPTED,
                )
        if meter and event_type != "Ended":
            number = connector if connector is not None else self.link.connector_of(tx_id)
            if number is not None:
                await self.link.meter_values(number, meter, tx_id)
        if event_type == "Ended":
            _, summary = parse_meter_values(meter, now=at)
            end = TxEnd(
                transaction_id=tx_id,
                at=at,
                meter_stop_wh=None if summary is None else summary.energy_wh,
                reason=transaction_info.get("stopped_reason"),
            )
            await self.link.stop_transaction(end, meter_values=meter)
        if auth is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info=_token_info(*auth))

    @after(Action.transaction_event)
    def after_transaction_event(
        self, event_type: str, transaction_info: dict[str, Any], **_: Any
    ) -> None:
        tx_id = str(transaction_info.get("transaction_id"))
        if event_type == "Ended":
            self.link.after_transaction_end(tx_id)
        else:
            number = self.link.connector_of(tx_id)
            if number is not None:
                self.link.after_transaction_change(number)

    @on(Action.meter_values)
    async def on_meter_values(
        self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> Any:
        await self.link.meter_values(evse_id, meter_value, None)
        return call_result.MeterValues()

    @on(Action.notify_ev_charging_needs)
    async def on_notify_ev_charging_needs(
        self, charging_needs: dict[str, Any], evse_id: int, **_: Any
    ) -> Any:
        ok = await self.link.charging_needs(_needs(evse_id, charging_needs))
        return call_result.NotifyEVChargingNeeds(status="Accepted" if ok else "Rejected")

    @on(Action.notify_ev_charging_schedule)
    def on_notify_ev_charging_schedule(self, **_: Any) -> Any:
        return call_result.NotifyEVChargingSchedule(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="Rejected")

    @on(Action.notify_event)
    def on_notify_event(self, **_: Any) -> Any:
        return call_result.NotifyEvent()

    @on(Action.notify_report)
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on(Action.notify_charging_limit)
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return call_result.NotifyChargingLimit()

    @on(Action.cleared_charging_limit)
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        return call_result.ClearedChargingLimit()

    @on(Action.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return call_result.ReportChargingProfiles()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event(self, type: str, **_: Any) -> Any:
        self.link.security_event(type)
        return call_result.SecurityEventNotification()


_needs = charging_needs

_PURPOSE = {
    ProfilePurpose.STATION_MAX: "ChargingStationMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
}


def _variable(key: str) -> dict[str, Any]:
    component, _, variable = key.partition(".")
    if not variable:
        raise ValueError(
            f"key: expected 'Component.Variable' such as "
            f"'OCPPCommCtrlr.HeartbeatInterval', got {key!r}"
        )
    return {"component": {"name": component}, "variable": {"name": variable}}


class V201Calls:
    """The outbound calls of 2.0.1, and how to read their answers."""

    version = VERSION

    @staticmethod
    def set_profile(spec: ProfileSpec) -> Any:
        profile: dict[str, Any] = {
            "id": spec.profile_id,
            "stackLevel": spec.stack_level,
            "chargingProfilePurpose": _PURPOSE[spec.purpose],
            "chargingProfileKind": spec.kind,
            "chargingSchedule": [{"id": spec.profile_id, **spec.schedule}],
        }
        if spec.transaction_id is not None:
            profile["transactionId"] = spec.transaction_id
        return call.SetChargingProfile(evse_id=spec.connector, charging_profile=profile)

    @staticmethod
    def clear_profile(
        *,
        profile_id: int | None = None,
        connector: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> Any:
        criteria: dict[str, Any] = {}
        if connector is not None:
            criteria["evseId"] = connector
        if purpose is not None:
            criteria["chargingProfilePurpose"] = _PURPOSE[purpose]
        if stack_level is not None:
            criteria["stackLevel"] = stack_level
        return call.ClearChargingProfile(
            charging_profile_id=profile_id, charging_profile_criteria=criteria or None
        )

    @staticmethod
    def composite(connector: int, duration_s: int, unit: str | None) -> Any:
        return call.GetCompositeSchedule(
            duration=duration_s, evse_id=connector, charging_rate_unit=unit
        )

    @staticmethod
    def parse_composite(response: Any, now: datetime) -> CompositeLimit | None:
        schedule = getattr(response, "schedule", None)
        if getattr(response, "status", None) != "Accepted" or not isinstance(schedule, dict):
            return None
        start = parse_time(schedule.get("schedule_start"), default=now)
        return limit_in_force(
            list(schedule.get("charging_schedule_period") or []),
            start=start,
            now=now,
            unit=str(schedule.get("charging_rate_unit", "A")),
        )

    @staticmethod
    def remote_start(connector: int, id_token: str, remote_start_id: int) -> Any:
        return call.RequestStartTransaction(
            id_token={"idToken": id_token[:36], "type": "Central"},
            remote_start_id=remote_start_id,
            evse_id=connector,
        )

    @staticmethod
    def remote_stop(transaction_id: str) -> Any:
        return call.RequestStopTransaction(transaction_id=transaction_id)

    @staticmethod
    def trigger(message: str, connector: int | None = None) -> Any:
        evse = None if connector is None else {"id": connector}
        return call.TriggerMessage(requested_message=message, evse=evse)

    @staticmethod
    def get_configuration(keys: list[str] | None = None) -> Any:
        """GetVariables for ``Component.Variable`` keys (every SmartChargingCtrlr key if None)."""
        data = (
            [_variable(k) for k in keys]
            if keys
            else [_variable(f"{c}.{v}") for c, v in V201_VARIABLES]
        )
        return call.GetVariables(get_variable_data=data)

    @staticmethod
    def change_configuration(key: str, value: str) -> Any:
        return call.SetVariables(set_variable_data=[{"attributeValue": value, **_variable(key)}])

    @staticmethod
    def reset(*, hard: bool) -> Any:
        return call.Reset(type="Immediate" if hard else "OnIdle")

    @staticmethod
    def capabilities_call() -> Any:
        return V201Calls.get_configuration(None)

    @staticmethod
    def parse_capabilities(response: Any) -> Capabilities:
        return capabilities_from_v201(getattr(response, "get_variable_result", None) or [])
