"""OCPP 1.6J: the ChargePoint handler (inbound) and the calls Ampflow sends (outbound).

The handlers only translate a message into a domain event for the station's
:class:`~.station.StationLink` and its answer back into a ``call_result``; nothing here touches the
database or calls the station. :class:`V16Calls` builds the outbound calls the sink and the
commands need, and reads their answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from ampflow.gateway.ocpp.capabilities import Capabilities, capabilities_from_v16
from ampflow.gateway.ocpp.events import (
    AuthStatus,
    BootInfo,
    StatusChange,
    TxEnd,
    TxStart,
    parse_time,
)
from ampflow.gateway.ocpp.profiles import (
    CompositeLimit,
    ProfilePurpose,
    ProfileSpec,
    limit_in_force,
)
from ampflow.gateway.ocpp.protocol import WIRE_LOGGER, CentralSystemMixin, after, on

if TYPE_CHECKING:
    from ampflow.gateway.ocpp.protocol import WebSocketConnection
    from ampflow.gateway.ocpp.station import StationLink

__all__ = ["ChargePoint16", "V16Calls"]

VERSION = "1.6"
SUBPROTOCOL = "ocpp1.6"


def now_text() -> str:
    """The current time as OCPP wants it (UTC, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _id_tag_info(status: AuthStatus, expiry: datetime | None, parent: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status.value}
    if expiry is not None:
        info["expiry_date"] = expiry.isoformat().replace("+00:00", "Z")
    if parent is not None:
        info["parent_id_tag"] = parent[:20]
    return info


class ChargePoint16(CentralSystemMixin, ChargePoint):  # type: ignore[misc]
    """A 1.6 station's connection, as seen from the central system."""

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
        self, charge_point_vendor: str, charge_point_model: str, **kw: Any
    ) -> Any:
        status, interval = await self.link.boot(
            BootInfo(
                vendor=charge_point_vendor,
                model=charge_point_model,
                serial_number=kw.get("charge_point_serial_number"),
                firmware_version=kw.get("firmware_version"),
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
        self, connector_id: int, error_code: str, status: str, **kw: Any
    ) -> Any:
        at = parse_time(kw.get("timestamp"), default=self.link.now())
        code = None if error_code == "NoError" else error_code
        await self.link.status(StatusChange(connector_id, status, at, code))
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info=_id_tag_info(*await self.link.authorize(id_tag)))

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ) -> Any:
        auth = await self.link.authorize(id_tag)
        tx = await self.link.start_transaction(
            TxStart(
                connector=connector_id,
                at=parse_time(timestamp, default=self.link.now()),
                id_token=id_tag,
                meter_start_wh=float(meter_start),
            ),
            authorized=auth[0] is AuthStatus.ACCEPTED,
        )
        if tx is None:  # a connector we do not know: the station must stop
            return call_result.StartTransaction(
                transaction_id=0, id_tag_info=_id_tag_info(AuthStatus.INVALID, None, None)
            )
        return call_result.StartTransaction(
            transaction_id=int(tx.ocpp_id), id_tag_info=_id_tag_info(*auth)
        )

    @after(Action.start_transaction)
    def after_start_transaction(self, connector_id: int, **_: Any) -> None:
        self.link.after_transaction_change(connector_id)

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kw: Any
    ) -> Any:
        end = TxEnd(
            transaction_id=str(transaction_id),
            at=parse_time(timestamp, default=self.link.now()),
            meter_stop_wh=float(meter_stop),
            reason=kw.get("reason"),
        )
        await self.link.stop_transaction(end, meter_values=kw.get("transaction_data"))
        id_tag = kw.get("id_tag")
        if id_tag is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(
            id_tag_info=_id_tag_info(*await self.link.authorize(id_tag))
        )

    @after(Action.stop_transaction)
    def after_stop_transaction(self, transaction_id: int, **_: Any) -> None:
        self.link.after_transaction_end(str(transaction_id))

    @on(Action.meter_values)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kw: Any
    ) -> Any:
        tx = kw.get("transaction_id")
        await self.link.meter_values(connector_id, meter_value, None if tx is None else str(tx))
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="Rejected")

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event(self, type: str, **_: Any) -> Any:
        self.link.security_event(type)
        return call_result.SecurityEventNotification()


_PURPOSE = {
    ProfilePurpose.STATION_MAX: "ChargePointMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
}
_CAPABILITY_KEYS = [
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "ChargeProfileMaxStackLevel",
    "SupportedFeatureProfiles",
]


class V16Calls:
    """The outbound calls of 1.6, and how to read their answers."""

    version = VERSION

    @staticmethod
    def set_profile(spec: ProfileSpec) -> Any:
        profile: dict[str, Any] = {
            "chargingProfileId": spec.profile_id,
            "stackLevel": spec.stack_level,
            "chargingProfilePurpose": _PURPOSE[spec.purpose],
            "chargingProfileKind": spec.kind,
            "chargingSchedule": {k: v for k, v in spec.schedule.items() if k != "id"},
        }
        if spec.transaction_id is not None:
            profile["transactionId"] = int(spec.transaction_id)
        return call.SetChargingProfile(connector_id=spec.connector, cs_charging_profiles=profile)

    @staticmethod
    def clear_profile(
        *,
        profile_id: int | None = None,
        connector: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> Any:
        return call.ClearChargingProfile(
            id=profile_id,
            connector_id=connector,
            charging_profile_purpose=None if purpose is None else _PURPOSE[purpose],
            stack_level=stack_level,
        )

    @staticmethod
    def composite(connector: int, duration_s: int, unit: str | None) -> Any:
        return call.GetCompositeSchedule(
            connector_id=connector, duration=duration_s, charging_rate_unit=unit
        )

    @staticmethod
    def parse_composite(response: Any, now: datetime) -> CompositeLimit | None:
        schedule = getattr(response, "charging_schedule", None)
        if getattr(response, "status", None) != "Accepted" or not isinstance(schedule, dict):
            return None
        start = parse_time(
            getattr(response, "schedule_start", None) or schedule.get("start_schedule"),
            default=now,
        )
        return limit_in_force(
            list(schedule.get("charging_schedule_period") or []),
            start=start,
            now=now,
            unit=str(schedule.get("charging_rate_unit", "A")),
        )

    @staticmethod
    def remote_start(connector: int, id_token: str, remote_start_id: int) -> Any:
        return call.RemoteStartTransaction(id_tag=id_token[:20], connector_id=connector)

    @staticmethod
    def remote_stop(transaction_id: str) -> Any:
        return call.RemoteStopTransaction(transaction_id=int(transaction_id))

    @staticmethod
    def trigger(message: str, connector: int | None = None) -> Any:
        return call.TriggerMessage(requested_message=message, connector_id=connector)

    @staticmethod
    def get_configuration(keys: list[str] | None = None) -> Any:
        return call.GetConfiguration(key=keys)

    @staticmethod
    def change_configuration(key: str, value: str) -> Any:
        return call.ChangeConfiguration(key=key, value=value)

    @staticmethod
    def reset(*, hard: bool) -> Any:
        return call.Reset(type="Hard" if hard else "Soft")

    @staticmethod
    def capabilities_call() -> Any:
        return call.GetConfiguration(key=list(_CAPABILITY_KEYS))

    @staticmethod
    def parse_capabilities(response: Any) -> Capabilities:
        return capabilities_from_v16(getattr(response, "configuration_key", None) or [])
