"""The OCPP 1.6J side of a simulated charge point, on ``ocpp.v16.ChargePoint`` as a client.

Outbound: BootNotification, Heartbeat, StatusNotification, Authorize, Start/StopTransaction,
MeterValues. Inbound: SetChargingProfile, ClearChargingProfile, GetCompositeSchedule,
RemoteStart/StopTransaction, TriggerMessage, Get/ChangeConfiguration, Reset. Handlers only
translate to and from the :class:`~ampflow.gateway.stations._common.StationHost`; whatever must
be sent afterwards is posted to the station's outbox, never called from inside a handler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from operator import methodcaller
from typing import Any

from ocpp.exceptions import NotSupportedError
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from ampflow.gateway.stations._common import (
    MEASURANDS,
    EndedTx,
    StationHost,
    floor_tenth,
    iso,
    on,
    parse_ts,
)
from ampflow.gateway.stations.config import Quirk
from ampflow.gateway.stations.core import ConnectorStatus
from ampflow.gateway.stations.profiles import Kind, Period, Profile, Purpose, Recurrency

__all__ = ["Link16", "parse_profile"]

logger = logging.getLogger(__name__)

_PURPOSE = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}
_UNIT = {"A": "A", "W": "W"}
_RW_KEYS = ("HeartbeatInterval", "MeterValueSampleInterval", "ConnectionTimeOut")


def parse_profile(connector: int, raw: Mapping[str, Any], *, now: Any) -> Profile:
    """A 1.6 ``csChargingProfiles`` (snake-cased) as a :class:`Profile`.

    An Absolute profile without ``startSchedule`` starts when it is received, as common
    firmware does. Raises ValueError or KeyError for what the schema lets through but a station
    cannot use.
    """
    sched = raw["charging_schedule"]
    kind = Kind(raw["charging_profile_kind"])
    start = parse_ts(sched.get("start_schedule"), field="startSchedule")
    if kind is Kind.ABSOLUTE and start is None:
        start = now
    recurrency = raw.get("recurrency_kind")
    tx = raw.get("transaction_id")
    periods = tuple(
        Period(int(q["start_period"]), float(q["limit"]), q.get("number_phases"))
        for q in sched["charging_schedule_period"]
    )
    min_rate = sched.get("min_charging_rate")
    return Profile(
        profile_id=int(raw["charging_profile_id"]),
        connector=int(connector),
        stack_level=int(raw["stack_level"]),
        purpose=_PURPOSE[raw["charging_profile_purpose"]],
        kind=kind,
        unit=_UNIT[sched["charging_rate_unit"]],
        periods=periods,
        start_schedule=start,
        duration_s=None if sched.get("duration") is None else int(sched["duration"]),
        recurrency=None if recurrency is None else Recurrency(recurrency),
        valid_from=parse_ts(raw.get("valid_from"), field="validFrom"),
        valid_to=parse_ts(raw.get("valid_to"), field="validTo"),
        transaction_id=None if tx is None else str(tx),
        min_rate=None if min_rate is None else float(min_rate),
    )


class Link16(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """One 1.6J connection of a simulated station."""

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
        res = await self.call(
            call.BootNotification(
                charge_point_model=self.cfg.model,
                charge_point_vendor=self.cfg.vendor,
                firmware_version=self.cfg.firmware,
                charge_point_serial_number=self.cfg.station_id[:25],
            ),
            suppress=False,
        )
        return str(res.status), float(res.interval)

    async def heartbeat(self) -> None:
        await self.call(call.Heartbeat(), suppress=False)

    async def status(self, connector: int) -> None:
        core = self.host.core
        state = "Available" if connector == 0 else core.connector(connector).status.value
        await self.call(
            call.StatusNotification(
                connector_id=connector,
                error_code="NoError",
                status=state,
                timestamp=iso(self.host.now()),
            ),
            suppress=False,
        )

    async def authorize(self, id_tag: str) -> bool:
        res = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        return bool(res.id_tag_info["status"] == "Accepted")

    async def start_tx(self, connector: int, *, remote_id: int | None) -> bool:
        core = self.host.core
        c = core.connector(connector)
        now = self.host.now()
        res = await self.call(
            call.StartTransaction(
                connector_id=connector,
                id_tag=c.id_tag or "",
                meter_start=int(c.energy_wh),
                timestamp=iso(now),
            ),
            suppress=False,
        )
        core.begin_tx(connector, str(res.transaction_id), now=now)
        return bool(res.id_tag_info["status"] == "Accepted")

    async def stop_tx(self, ended: EndedTx) -> None:
        await self.call(
            call.StopTransaction(
                meter_stop=int(ended.meter_stop_wh),
                timestamp=iso(ended.at),
                transaction_id=int(ended.transaction_id),
                reason=ended.reason.value,
                id_tag=ended.id_tag,
            ),
            suppress=False,
        )

    async def meter(self, connector: int) -> None:
        core = self.host.core
        c = core.connector(connector)
        if c.tx is None:
            return
        await self.call(
            call.MeterValues(
                connector_id=connector,
                transaction_id=int(c.tx.transaction_id),
                meter_value=[
                    {"timestamp": iso(self.host.now()), "sampled_value": self._samples(connector)}
                ],
            ),
            suppress=False,
        )

    async def status_changed(
        self, connector: int, old: ConnectorStatus, new: ConnectorStatus
    ) -> None:
        await self.status(connector)

    def _samples(self, connector: int) -> list[dict[str, str]]:
        core = self.host.core
        c = core.connector(connector)
        phases = ("L1", "L2", "L3")[: c.phases]
        amps = core.current_a(c)
        offered_a = core.offered_a(c)

        def sv(measurand: str, value: float, unit: str, phase: str | None = None) -> dict[str, str]:
            out = {
                "value": f"{value:.3f}",
                "context": "Sample.Periodic",
                "measurand": measurand,
                "location": "Outlet",
                "unit": unit,
            }
            if phase is not None:
                out["phase"] = phase
            return out

        out = [
            sv(MEASURANDS[0], c.energy_wh, "Wh"),
            sv(MEASURANDS[1], c.power_w, "W"),
            *(sv(MEASURANDS[2], amps, "A", ph) for ph in phases),
            sv(MEASURANDS[3], offered_a, "A"),
            sv(MEASURANDS[4], c.limit_w, "W"),
        ]
        soc = c.soc_pct
        if soc is not None:
            out.append({**sv(MEASURANDS[5], soc, "Percent"), "location": "EV"})
        return out

    # --- inbound: smart charging --------------------------------------------------------------

    def _smart(self) -> None:
        if Quirk.NO_SMART_CHARGING in self.cfg.quirks:
            raise NotSupportedError(details={"cause": "this station has no smart charging"})

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        self._smart()
        try:
            profile = parse_profile(connector_id, cs_charging_profiles, now=self.host.now())
        except (KeyError, ValueError, TypeError) as exc:
            logger.info("%s: rejected an unusable profile: %s", self.cfg.station_id, exc)
            return call_result.SetChargingProfile(status="Rejected")
        rejected = self.host.apply_profile(profile, strict=False)
        return call_result.SetChargingProfile(status="Rejected" if rejected else "Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> Any:
        self._smart()
        n = self.host.clear_profiles(
            profile_id=id,
            connector=connector_id,
            purpose=None
            if charging_profile_purpose is None
            else _PURPOSE[charging_profile_purpose],
            stack_level=stack_level,
        )
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        self._smart()
        unit = charging_rate_unit or self.cfg.rate_units[0]
        if unit not in self.cfg.rate_units or not 0 <= connector_id <= self.cfg.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        now = self.host.now().replace(microsecond=0)
        periods = self.host.core.composite(connector_id, now, int(duration), unit)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=iso(now),
            charging_schedule={
                "duration": int(duration),
                "start_schedule": iso(now),
                "charging_rate_unit": unit,
                "charging_schedule_period": [
                    {"start_period": q.start_s, "limit": floor_tenth(q.limit)}
                    | ({} if q.number_phases is None else {"number_phases": q.number_phases})
                    for q in periods
                ],
            },
        )

    # --- inbound: remote control --------------------------------------------------------------

    @on(Action.remote_start_transaction)
    def on_remote_start_transaction(
        self,
        id_tag: str,
        connector_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        profile = None
        if charging_profile is not None:
            try:
                profile = parse_profile(connector_id or 1, charging_profile, now=self.host.now())
            except (KeyError, ValueError, TypeError):
                return call_result.RemoteStartTransaction(status="Rejected")
            if profile.purpose is not Purpose.TX or Quirk.NO_SMART_CHARGING in self.cfg.quirks:
                return call_result.RemoteStartTransaction(status="Rejected")
        ok = self.host.remote_start(connector_id, id_tag, profile, remote_id=None)
        return call_result.RemoteStartTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        ok = self.host.remote_stop(str(transaction_id))
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        if connector_id is not None and not 0 <= connector_id <= self.cfg.connectors:
            return call_result.TriggerMessage(status="Rejected")
        every = range(0, self.cfg.connectors + 1)
        targets = list(every) if connector_id is None else [connector_id]
        post = self.host.post
        if requested_message == "BootNotification":
            post("boot", methodcaller("boot", "Triggered"))
        elif requested_message == "Heartbeat":
            post("heartbeat", methodcaller("heartbeat"))
        elif requested_message == "StatusNotification":
            for n in targets:
                post("status", methodcaller("status", n))
        elif requested_message == "MeterValues":
            for n in (t for t in targets if t > 0):
                post("meter", methodcaller("meter", n))
        else:
            return call_result.TriggerMessage(status="NotImplemented")
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        self.host.request_reset(hard=type == "Hard")
        return call_result.Reset(status="Accepted")

    # --- inbound: configuration ---------------------------------------------------------------

    def configuration(self) -> dict[str, tuple[str, bool]]:
        """Configuration keys: value and whether read-only."""
        core, cfg = self.host.core, self.cfg
        smart = Quirk.NO_SMART_CHARGING not in cfg.quirks
        units = "Power" if Quirk.W_ONLY in cfg.quirks else "Current,Power"
        return {
            "HeartbeatInterval": (str(int(core.heartbeat_s or 0)), False),
            "MeterValueSampleInterval": (str(max(1, round(core.meter_interval_s))), False),
            "ConnectionTimeOut": (str(int(core.connection_timeout_s)), False),
            "NumberOfConnectors": (str(cfg.connectors), True),
            "SupportedFeatureProfiles": (
                "Core,RemoteTrigger" + (",SmartCharging" if smart else ""),
                True,
            ),
            "ChargeProfileMaxStackLevel": (str(cfg.max_stack_level), True),
            "ChargingScheduleAllowedChargingRateUnit": (units, True),
            "ChargingScheduleMaxPeriods": (str(cfg.max_periods), True),
            "MaxChargingProfilesInstalled": (str(cfg.max_profiles), True),
            "ConnectorSwitch3to1PhaseSupported": ("false", True),
            "AuthorizeRemoteTxRequests": ("false", True),
            "StopTransactionOnInvalidId": ("true", True),
            "MeterValuesSampledData": (",".join(MEASURANDS), True),
        }

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        table = self.configuration()
        wanted = key or list(table)
        known = [
            {"key": k, "readonly": table[k][1], "value": table[k][0]} for k in wanted if k in table
        ]
        unknown = [k for k in wanted if k not in table]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        table = self.configuration()
        if key not in table:
            return call_result.ChangeConfiguration(status="NotSupported")
        if key not in _RW_KEYS:
            return call_result.ChangeConfiguration(status="Rejected")
        try:
            seconds = int(value)
        except ValueError:
            return call_result.ChangeConfiguration(status="Rejected")
        if seconds < (0 if key == "HeartbeatInterval" else 1):
            return call_result.ChangeConfiguration(status="Rejected")
        core = self.host.core
        if key == "HeartbeatInterval":
            core.heartbeat_s = float(seconds) or None
        elif key == "MeterValueSampleInterval":
            core.meter_interval_s = float(seconds)
        else:
            core.connection_timeout_s = float(seconds)
        self.host.wake()
        return call_result.ChangeConfiguration(status="Accepted")
