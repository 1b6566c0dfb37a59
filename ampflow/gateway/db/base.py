"""Declarative base, column types and the small enums stored in the database.

Times are stored as UTC: ``timestamp with time zone`` on PostgreSQL, and naive UTC text on
SQLite (which sorts correctly). :class:`UtcDateTime` refuses naive datetimes on the way in and
returns tz-aware UTC datetimes on the way out, on both databases. Meter values use integer epoch
seconds instead (see :mod:`ampflow.gateway.db.models`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "Base",
    "ChargingProfileStatus",
    "JsonType",
    "Measurand",
    "OptState",
    "Phase",
    "Role",
    "SessionStatus",
    "SignalKind",
    "SignalSource",
    "SignalStatus",
    "UtcDateTime",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every table; constraint names follow one convention so migrations can name them."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC; naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"expected a timezone-aware datetime, got naive {value.isoformat()}")
        utc = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class Role(StrEnum):
    """What an API key may do."""

    ADMIN = "admin"
    SITE_MANAGER = "site_manager"  # manage its sites: tree, limits, stations, sessions
    UTILITY = "utility"  # post DR events and prices for its sites
    ANALYST = "analyst"  # read-only


class SignalSource(StrEnum):
    """Where a signal came from."""

    API = "api"
    OPENADR2 = "openadr2"
    OPENADR3 = "openadr3"


class SignalKind(StrEnum):
    """What a signal's interval values mean."""

    IMPORT_CAP_KW = "import_cap_kw"  # absolute cap on the site's import [kW]
    SIMPLE_LEVEL = "simple_level"  # OpenADR SIMPLE 0..3, a share of the import limit
    EXPORT_CAP_KW = "export_cap_kw"  # absolute cap on the site's export [kW]
    IMPORT_PRICE = "import_price"  # [currency/kWh]
    EXPORT_PRICE = "export_price"  # [currency/kWh]

    @property
    def is_price(self) -> bool:
        return self in (SignalKind.IMPORT_PRICE, SignalKind.EXPORT_PRICE)


class SignalStatus(StrEnum):
    """Whether a signal still applies."""

    ACTIVE = "active"
    CANCELLED = "cancelled"


class OptState(StrEnum):
    """The site's answer to a DR event; an opted-out event sets no cap."""

    NONE = "none"
    OPT_IN = "opt_in"
    OPT_OUT = "opt_out"


class SessionStatus(StrEnum):
    """Life cycle of a charging session."""

    REQUESTED = "requested"  # remote start asked for, no transaction yet
    ACTIVE = "active"
    STOPPING = "stopping"  # remote stop asked for
    COMPLETED = "completed"

    @classmethod
    def open(cls) -> tuple[SessionStatus, ...]:
        """Statuses during which the session occupies its connector."""
        return (cls.REQUESTED, cls.ACTIVE, cls.STOPPING)


class ChargingProfileStatus(StrEnum):
    """Send status of an issued OCPP charging profile."""

    PENDING = "pending"
    SENT = "sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"  # no answer after the retries, or a CallError
    SUPERSEDED = "superseded"
    CLEARED = "cleared"


class Measurand(IntEnum):
    """Compact codes of the meter values we keep, each in one canonical unit."""

    ENERGY_IMPORT_WH = 1  # Energy.Active.Import.Register [Wh]
    ENERGY_EXPORT_WH = 2  # Energy.Active.Export.Register [Wh]
    POWER_IMPORT_W = 3  # Power.Active.Import [W]
    POWER_EXPORT_W = 4  # Power.Active.Export [W]
    CURRENT_IMPORT_A = 5  # Current.Import [A]
    CURRENT_EXPORT_A = 6  # Current.Export [A]
    VOLTAGE_V = 7  # Voltage [V]
    SOC_PCT = 8  # SoC [%]
    POWER_OFFERED_W = 9  # Power.Offered [W]
    CURRENT_OFFERED_A = 10  # Current.Offered [A]
    TEMPERATURE_C = 11  # Temperature [Celsius]
    FREQUENCY_HZ = 12  # Frequency [Hz]


class Phase(IntEnum):
    """Phase of a meter value; 0 for totals and phase-less measurands."""

    NONE = 0
    L1 = 1
    L2 = 2
    L3 = 3
    N = 4
