"""Sessions (targets, progress, plan) and meter values: Create, Update, Public."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ampflow.gateway.api.schemas.common import (
    InputModel,
    OutputModel,
    PositiveKw,
    UtcDateTime,
    Weight,
    keep,
)
from ampflow.gateway.db.base import Measurand, Phase
from ampflow.gateway.db.models import ConnectorControl, Session, SiteControl

__all__ = [
    "CONNECTOR_ID_PATTERN",
    "MeasurandName",
    "MeterBatch",
    "MeterBatchResult",
    "MeterPoint",
    "MeterSeries",
    "MeterValueIn",
    "PlannedSchedule",
    "SessionPublic",
    "SessionStart",
    "SessionTargets",
    "SessionUpdate",
]

CONNECTOR_ID_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}/[A-Za-z0-9][A-Za-z0-9._:-]{0,63}/[1-9][0-9]?$"
)
ConnectorId = Annotated[str, StringConstraints(pattern=CONNECTOR_ID_PATTERN)]
IdToken = Annotated[str, StringConstraints(min_length=1, max_length=36)]
Kwh = Annotated[float, Field(ge=0, le=1e4, allow_inf_nan=False)]
Pct = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class SessionStart(InputModel):
    """Start a session on a connector (through the station, once the OCPP gateway runs)."""

    connector_id: ConnectorId = Field(description="site/charger/number")
    id_token: IdToken | None = None
    departure_at: UtcDateTime | None = None
    energy_target_kwh: Kwh | None = None
    soc_target_pct: Pct | None = None
    battery_kwh: Kwh | None = None
    ev_max_kw: PositiveKw | None = None
    priority: Weight = 1.0
    boost: bool = False
    v2g: bool = False


class SessionUpdate(InputModel):
    """New targets from a driver or fleet system; the next scheduling step honours them.

    Absent fields are kept; null clears a target.
    """

    departure_at: UtcDateTime | None = None
    energy_target_kwh: Kwh | None = None
    soc_target_pct: Pct | None = None
    soc_pct: Pct | None = Field(default=None, description="The EV's state of charge now")
    battery_kwh: Kwh | None = None
    ev_max_kw: PositiveKw | None = None
    priority: Weight = keep()
    boost: bool = keep()
    v2g: bool = keep()


class SessionTargets(OutputModel):
    departure_at: datetime | None
    energy_target_kwh: float | None
    soc_target_pct: float | None
    battery_kwh: float | None
    ev_max_kw: float | None
    priority: float
    boost: bool
    v2g: bool
    updated_at: datetime | None


class PlannedSchedule(OutputModel):
    """The connector's planned limits [kW] per step from ``start``."""

    start: datetime
    step_s: int
    computed_at: datetime | None
    limits_kw: list[float]


class SessionPublic(OutputModel):
    id: str
    site_id: str
    connector_id: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    id_token: str | None
    energy_kwh: float = Field(description="Delivered so far [kWh]")
    power_kw: float | None
    soc_pct: float | None
    limit_kw: float | None = Field(description="Current limit decided by the control loop")
    limit_a: float | None
    targets: SessionTargets
    planned: PlannedSchedule | None

    @classmethod
    def of(
        cls,
        ses: Session,
        site_id: str,
        connector_id: str,
        control: ConnectorControl | None = None,
        site: SiteControl | None = None,
    ) -> SessionPublic:
        planned = None
        if (
            control is not None
            and site is not None
            and site.plan_start_at is not None
            and site.plan_step_s
            and control.plan_kw
            and ses.status != "completed"
        ):
            planned = PlannedSchedule(
                start=site.plan_start_at,
                step_s=site.plan_step_s,
                computed_at=site.plan_computed_at,
                limits_kw=list(control.plan_kw),
            )
        live = ses.status != "completed" and control is not None
        return cls(
            id=ses.id,
            site_id=site_id,
            connector_id=connector_id,
            status=ses.status,
            started_at=ses.started_at,
            ended_at=ses.ended_at,
            id_token=ses.id_token,
            energy_kwh=ses.energy_kwh,
            power_kw=ses.power_kw,
            soc_pct=ses.soc_pct,
            limit_kw=control.limit_kw if live and control is not None else None,
            limit_a=control.limit_a if live and control is not None else None,
            targets=SessionTargets(
                departure_at=ses.departure_at,
                energy_target_kwh=ses.energy_target_kwh,
                soc_target_pct=ses.soc_target_pct,
                battery_kwh=ses.battery_kwh,
                ev_max_kw=ses.ev_max_kw,
                priority=ses.priority,
                boost=ses.boost,
                v2g=ses.v2g,
                updated_at=ses.targets_updated_at,
            ),
            planned=planned,
        )


class MeasurandName(StrEnum):
    """OCPP measurand names we store."""

    ENERGY_IMPORT = "Energy.Active.Import.Register"
    ENERGY_EXPORT = "Energy.Active.Export.Register"
    POWER_IMPORT = "Power.Active.Import"
    POWER_EXPORT = "Power.Active.Export"
    CURRENT_IMPORT = "Current.Import"
    CURRENT_EXPORT = "Current.Export"
    VOLTAGE = "Voltage"
    SOC = "SoC"
    POWER_OFFERED = "Power.Offered"
    CURRENT_OFFERED = "Current.Offered"
    TEMPERATURE = "Temperature"
    FREQUENCY = "Frequency"

    @property
    def code(self) -> Measurand:
        return Measurand(list(MeasurandName).index(self) + 1)


Unit = Literal["Wh", "kWh", "W", "kW", "A", "V", "Percent", "Celsius", "Hz"]
_SCALE = {"kWh": 1000.0, "kW": 1000.0}
_UNIT_OK: dict[Measurand, tuple[str, ...]] = {
    Measurand.ENERGY_IMPORT_WH: ("Wh", "kWh"),
    Measurand.ENERGY_EXPORT_WH: ("Wh", "kWh"),
    Measurand.POWER_IMPORT_W: ("W", "kW"),
    Measurand.POWER_EXPORT_W: ("W", "kW"),
    Measurand.POWER_OFFERED_W: ("W", "kW"),
    Measurand.CURRENT_IMPORT_A: ("A",),
    Measurand.CURRENT_EXPORT_A: ("A",),
    Measurand.CURRENT_OFFERED_A: ("A",),
    Measurand.VOLTAGE_V: ("V",),
    Measurand.SOC_PCT: ("Percent",),
    Measurand.TEMPERATURE_C: ("Celsius",),
    Measurand.FREQUENCY_HZ: ("Hz",),
}


class MeterValueIn(InputModel):
    """One sampled value, in the unit given (converted to Wh, W, A, V, % on the way in)."""

    connector_id: ConnectorId
    timestamp: UtcDateTime
    measurand: MeasurandName = MeasurandName.ENERGY_IMPORT
    phase: Literal["L1", "L2", "L3", "N"] | None = None
    value: Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]
    unit: Unit | None = Field(default=None, description="Default: the canonical unit")

    def unit_problem(self) -> str | None:
        code = self.measurand.code
        if self.unit is not None and self.unit not in _UNIT_OK[code]:
            expected = list(_UNIT_OK[code])
            return f"unit {self.unit!r} does not fit {self.measurand.value}: expected {expected}"
        return None

    def canonical(self) -> tuple[Measurand, Phase, int, float]:
        scale = _SCALE.get(self.unit or "", 1.0)
        phase = Phase[self.phase] if self.phase is not None else Phase.NONE
        return self.measurand.code, phase, int(self.timestamp.timestamp()), self.value * scale


class MeterBatch(InputModel):
    """Meter values from a meter, a simulator or another system (stations use OCPP)."""

    values: Annotated[list[MeterValueIn], Field(min_length=1, max_length=5000)]


class MeterBatchResult(OutputModel):
    accepted: int = Field(description="Values stored (repeats of stored values are ignored)")


class MeterPoint(OutputModel):
    timestamp: datetime
    value: float


class MeterSeries(OutputModel):
    connector_id: str
    measurand: MeasurandName
    unit: str
    points: list[MeterPoint]
