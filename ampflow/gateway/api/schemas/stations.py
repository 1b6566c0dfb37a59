"""Charging stations: Create, Update, Public."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from ampflow.gateway.api.schemas.common import InputModel, LocalId, OutputModel, SiteId, keep
from ampflow.gateway.db.models import Connector, Station

__all__ = [
    "STATION_ID_PATTERN",
    "StationCapabilities",
    "StationConnector",
    "StationCreate",
    "StationPublic",
    "StationUpdate",
]

STATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:*+|@-]{0,47}$"
StationId = Annotated[str, StringConstraints(pattern=STATION_ID_PATTERN)]
# OCPP security profiles 1 and 2: HTTP Basic password of 16 to 40 characters.
Password = Annotated[str, StringConstraints(min_length=16, max_length=40)]
Quirk = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")]


class StationCreate(InputModel):
    """Register a station: its OCPP identity, site, charger, and HTTP Basic password."""

    id: StationId = Field(description="OCPP identity, the last part of ws://.../ocpp/{id}")
    site_id: SiteId
    charger_id: LocalId | None = Field(default=None, description="The charger it drives")
    password: Password | None = Field(default=None, description="Stored hashed (scrypt)")


class StationUpdate(InputModel):
    """Rotate the password, (re)bind to a charger of its site, or set known quirks."""

    password: Password | None = None
    charger_id: LocalId | None = None
    quirks: Annotated[list[Quirk], Field(max_length=20)] = keep()


class StationCapabilities(OutputModel):
    rate_units: str | None
    max_schedule_periods: int | None
    max_stack_level: int | None
    smart_charging: bool | None


class StationConnector(OutputModel):
    id: str
    number: int
    status: str | None
    error_code: str | None
    status_at: datetime | None
    power_kw: float | None
    energy_wh: float | None


class StationPublic(OutputModel):
    id: str
    site_id: str
    charger_id: str | None
    has_password: bool
    registration_status: str
    ocpp_version: str | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    boot_at: datetime | None
    status: str | None
    last_seen_at: datetime | None = Field(description="Last contact")
    capabilities: StationCapabilities
    quirks: list[str]
    flags: list[str]
    created_at: datetime
    connectors: list[StationConnector]

    @classmethod
    def of(
        cls, st: Station, site_id: str, charger_id: str | None, connectors: list[Connector]
    ) -> StationPublic:
        return cls(
            id=st.id,
            site_id=site_id,
            charger_id=charger_id,
            has_password=st.password_hash is not None,
            registration_status=st.registration_status,
            ocpp_version=st.ocpp_version,
            vendor=st.vendor,
            model=st.model,
            serial_number=st.serial_number,
            firmware_version=st.firmware_version,
            boot_at=st.boot_at,
            status=st.status,
            last_seen_at=st.last_seen_at,
            capabilities=StationCapabilities(
                rate_units=st.rate_units,
                max_schedule_periods=st.max_schedule_periods,
                max_stack_level=st.max_stack_level,
                smart_charging=st.smart_charging,
            ),
            quirks=list(st.quirks or []),
            flags=list(st.flags or []),
            created_at=st.created_at,
            connectors=[
                StationConnector(
                    id=f"{site_id}/{charger_id}/{c.number}",
                    number=c.number,
                    status=c.status,
                    error_code=c.error_code,
                    status_at=c.status_at,
                    power_kw=c.power_kw,
                    energy_wh=c.energy_wh,
                )
                for c in connectors
            ],
        )
