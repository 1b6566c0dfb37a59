"""Tables: the capacity tree, stations, sessions, meter values, signals, limits and plans, keys.

Design notes
------------
* Rows carry an integer surrogate key ``pk`` for joins and compact foreign keys, and a public
  string ``id`` where the API names them (site ``depot``, charger ``cp-1`` within its site,
  session ``ses_...``). Connectors are ``charger`` + ``number`` (OCPP connectorId / evseId).
* Limits: ``NULL`` means "no limit" for optional ones (a panel without a kW rating); kW limits
  and per-phase current limits [A] can be set together, and both apply.
* Meter values are narrow: ``(connector_pk, measurand, phase, ts)`` is the primary key (no
  surrogate id), ``ts`` is integer epoch seconds, ``measurand`` and ``phase`` are small integer
  codes (:class:`~ampflow.gateway.db.base.Measurand`, :class:`~ampflow.gateway.db.base.Phase`)
  and ``value`` is in the measurand's canonical unit. On SQLite the table is ``WITHOUT ROWID``,
  so rows are stored once, clustered by that key (about 20 bytes a row); a station that re-sends
  a value after a reconnect hits the same key, so ingest is idempotent.
* Signals (DR events and prices, from the API or OpenADR) share one table, with their values in
  ``signal_intervals``; OpenADR events keep their external id and modification number.
* The control loop writes what it decided to ``site_control`` and ``connector_control``: the
  current plan (arrays as JSON, one row per site and per connector, replaced on each re-plan) and
  the limits last sent. Issued OCPP profiles, with their send status, go to ``charging_profiles``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ampflow.gateway.db.base import Base, JsonType, UtcDateTime, utcnow

__all__ = [
    "ApiKey",
    "ApiKeySite",
    "Charger",
    "ChargingProfile",
    "Connector",
    "ConnectorControl",
    "IdToken",
    "IdempotencyRecord",
    "LimitWindow",
    "MeterValue",
    "Node",
    "Session",
    "Signal",
    "SignalInterval",
    "Site",
    "SiteControl",
    "Station",
    "Transaction",
]

_OPEN_SESSION = "status IN ('requested', 'active', 'stopping')"


def _created() -> Mapped[datetime]:
    return mapped_column(UtcDateTime(), default=utcnow)


def _updated() -> Mapped[datetime]:
    return mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Site(Base):
    """A grid connection, the root of its capacity tree."""

    __tablename__ = "sites"

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64))
    import_kw: Mapped[float] = mapped_column(Float)
    export_kw: Mapped[float] = mapped_column(Float, default=0.0)
    voltage_v: Mapped[float] = mapped_column(Float, default=230.0)
    power_factor: Mapped[float] = mapped_column(Float, default=1.0)
    phase_a_l1: Mapped[float | None] = mapped_column(Float)
    phase_a_l2: Mapped[float | None] = mapped_column(Float)
    phase_a_l3: Mapped[float | None] = mapped_column(Float)
    # The lowest import limit the site can honour (its uncontrollable load) [kW]: limits and caps
    # below it are refused.
    min_import_kw: Mapped[float] = mapped_column(Float, default=0.0)
    demand_charge_per_kw: Mapped[float] = mapped_column(Float, default=0.0)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    # Bumped on every change of the tree or its limits; the control loop recompiles on change.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    nodes: Mapped[list[Node]] = relationship(
        back_populates="site", cascade="all, delete-orphan", order_by="Node.pk"
    )
    chargers: Mapped[list[Charger]] = relationship(
        back_populates="site", cascade="all, delete-orphan", order_by="Charger.pk"
    )


class Node(Base):
    """A feeder, panel or cable below the grid connection."""

    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("site_pk", "id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(64))
    parent_pk: Mapped[int | None] = mapped_column(
        ForeignKey("nodes.pk", ondelete="CASCADE"), index=True
    )  # NULL: directly below the grid connection
    import_kw: Mapped[float | None] = mapped_column(Float)  # NULL: no kW limit
    export_kw: Mapped[float | None] = mapped_column(Float)  # NULL: same as import_kw
    phase_a_l1: Mapped[float | None] = mapped_column(Float)
    phase_a_l2: Mapped[float | None] = mapped_column(Float)
    phase_a_l3: Mapped[float | None] = mapped_column(Float)

    site: Mapped[Site] = relationship(back_populates="nodes")


class Charger(Base):
    """A charging station's electrical model: its connectors share ``max_kw``."""

    __tablename__ = "chargers"
    __table_args__ = (UniqueConstraint("site_pk", "id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(64))
    node_pk: Mapped[int | None] = mapped_column(
        ForeignKey("nodes.pk", ondelete="RESTRICT"), index=True
    )  # NULL: directly below the grid connection
    max_kw: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(2), default="AC")
    phases: Mapped[int] = mapped_column(SmallInteger, default=3)
    phase: Mapped[str | None] = mapped_column(String(5))
    rotation: Mapped[str] = mapped_column(String(3), default="RST")
    min_a: Mapped[float] = mapped_column(Float, default=6.0)
    min_kw: Mapped[float] = mapped_column(Float, default=0.0)
    voltage_v: Mapped[float | None] = mapped_column(Float)
    bidirectional: Mapped[bool] = mapped_column(Boolean, default=False)
    discharge_max_kw: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float, default=1.0)

    site: Mapped[Site] = relationship(back_populates="chargers")
    connectors: Mapped[list[Connector]] = relationship(
        back_populates="charger", cascade="all, delete-orphan", order_by="Connector.number"
    )


class Connector(Base):
    """One outlet (OCPP connector / EVSE) and its latest readings."""

    __tablename__ = "connectors"
    __table_args__ = (UniqueConstraint("charger_pk", "number"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    charger_pk: Mapped[int] = mapped_column(ForeignKey("chargers.pk", ondelete="CASCADE"))
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(SmallInteger)
    priority: Mapped[float] = mapped_column(Float, default=1.0)
    status: Mapped[str | None] = mapped_column(String(32))  # OCPP status
    error_code: Mapped[str | None] = mapped_column(String(50))
    status_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    power_kw: Mapped[float | None] = mapped_column(Float)
    energy_wh: Mapped[float | None] = mapped_column(Float)  # energy register
    soc_pct: Mapped[float | None] = mapped_column(Float)
    measured_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    charger: Mapped[Charger] = relationship(back_populates="connectors")


class LimitWindow(Base):
    """A time-of-day limit: weekdays and a local-time window in the site's time zone.

    ``weekdays`` is a bit mask (bit 0 = Monday). Minutes count from local midnight; ``end_min``
    of 1440 is the end of the day, and ``start_min > end_min`` wraps past midnight (the window
    belongs to the weekday it starts on).
    """

    __tablename__ = "limit_windows"

    pk: Mapped[int] = mapped_column(primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"), index=True)
    node_pk: Mapped[int | None] = mapped_column(ForeignKey("nodes.pk", ondelete="CASCADE"))
    weekdays: Mapped[int] = mapped_column(SmallInteger, default=0b1111111)
    start_min: Mapped[int] = mapped_column(SmallInteger)
    end_min: Mapped[int] = mapped_column(SmallInteger)
    import_kw: Mapped[float | None] = mapped_column(Float)
    import_a: Mapped[float | None] = mapped_column(Float)  # per phase
    export_kw: Mapped[float | None] = mapped_column(Float)


class Station(Base):
    """An OCPP charging station: credentials, boot information, capabilities, last contact."""

    __tablename__ = "stations"

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)  # OCPP identity in the URL
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"), index=True)
    charger_pk: Mapped[int | None] = mapped_column(
        ForeignKey("chargers.pk", ondelete="SET NULL"), unique=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(200))  # scrypt, see crypto.py
    registration_status: Mapped[str] = mapped_column(String(16), default="Accepted")
    ocpp_version: Mapped[str | None] = mapped_column(String(8))
    vendor: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(50))
    serial_number: Mapped[str | None] = mapped_column(String(50))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    boot_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str | None] = mapped_column(String(32))  # connector 0 / station status
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Capabilities read from the station; NULL until known.
    rate_units: Mapped[str | None] = mapped_column(String(8))  # "A", "W" or "A,W"
    max_schedule_periods: Mapped[int | None] = mapped_column(Integer)
    max_stack_level: Mapped[int | None] = mapped_column(Integer)
    smart_charging: Mapped[bool | None] = mapped_column(Boolean)
    quirks: Mapped[list[str]] = mapped_column(JsonType, default=list)
    flags: Mapped[list[str]] = mapped_column(JsonType, default=list)  # e.g. "over_limit"
    created_at: Mapped[datetime] = _created()


class IdToken(Base):
    """An authorisation token (OCPP idTag / IdToken) and the driver it bills to."""

    __tablename__ = "id_tokens"

    pk: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(20), default="Central")
    status: Mapped[str] = mapped_column(String(16), default="Accepted")
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    group_token: Mapped[str | None] = mapped_column(String(36))
    driver_id: Mapped[str | None] = mapped_column(String(64))
    site_pk: Mapped[int | None] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    created_at: Mapped[datetime] = _created()


class Session(Base):
    """An EV on a connector: what it has had, what it wants, and what it may draw."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_site_pk_status_started_at", "site_pk", "status", "started_at"),
        # At most one open session per connector.
        Index(
            "uq_sessions_open_connector",
            "connector_pk",
            unique=True,
            sqlite_where=text(_OPEN_SESSION),
            postgresql_where=text(_OPEN_SESSION),
        ),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    connector_pk: Mapped[int] = mapped_column(
        ForeignKey("connectors.pk", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    id_token: Mapped[str | None] = mapped_column(String(36))
    # Targets, set by the driver, a fleet system or ISO 15118.
    departure_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    energy_target_kwh: Mapped[float | None] = mapped_column(Float)
    soc_target_pct: Mapped[float | None] = mapped_column(Float)
    battery_kwh: Mapped[float | None] = mapped_column(Float)
    ev_max_kw: Mapped[float | None] = mapped_column(Float)
    v2g: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[float] = mapped_column(Float, default=1.0)
    boost: Mapped[bool] = mapped_column(Boolean, default=False)
    targets_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Progress, from meter values: energy since the register read meter_start_wh.
    meter_start_wh: Mapped[float | None] = mapped_column(Float)
    energy_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    power_kw: Mapped[float | None] = mapped_column(Float)
    soc_pct: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Transaction(Base):
    """The OCPP transaction behind a session."""

    __tablename__ = "transactions"
    __table_args__ = (UniqueConstraint("station_pk", "ocpp_transaction_id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)  # also the 1.6 integer transactionId
    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.pk", ondelete="CASCADE"), unique=True
    )
    station_pk: Mapped[int] = mapped_column(ForeignKey("stations.pk", ondelete="CASCADE"))
    ocpp_transaction_id: Mapped[str] = mapped_column(String(36))
    id_tag: Mapped[str | None] = mapped_column(String(36))
    meter_start_wh: Mapped[float | None] = mapped_column(Float)
    meter_stop_wh: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    stop_reason: Mapped[str | None] = mapped_column(String(32))


class MeterValue(Base):
    """One sampled value; see the module notes for the compact layout."""

    __tablename__ = "meter_values"
    __table_args__ = ({"sqlite_with_rowid": False},)

    connector_pk: Mapped[int] = mapped_column(
        ForeignKey("connectors.pk", ondelete="CASCADE"), primary_key=True
    )
    measurand: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    phase: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds, UTC
    value: Mapped[float] = mapped_column(Float)


class Signal(Base):
    """A DR event or a price series for a site, from the API or an OpenADR VTN."""

    __tablename__ = "signals"
    __table_args__ = (
        UniqueConstraint("source", "site_pk", "external_id"),
        Index("ix_signals_site_pk_kind_end_at", "site_pk", "kind", "end_at"),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    external_id: Mapped[str | None] = mapped_column(String(128))  # VTN event id
    modification_number: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # lower wins, as in OpenADR
    opt_state: Mapped[str] = mapped_column(String(8), default="none")
    program: Mapped[str | None] = mapped_column(String(128))
    currency: Mapped[str | None] = mapped_column(String(3))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    intervals: Mapped[list[SignalInterval]] = relationship(
        cascade="all, delete-orphan", order_by="SignalInterval.idx", lazy="selectin"
    )


class SignalInterval(Base):
    """One interval of a signal: a cap, a level or a price over ``[start_at, end_at)``."""

    __tablename__ = "signal_intervals"

    signal_pk: Mapped[int] = mapped_column(
        ForeignKey("signals.pk", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    value: Mapped[float] = mapped_column(Float)


class ChargingProfile(Base):
    """An OCPP charging profile issued to a station, and what became of it."""

    __tablename__ = "charging_profiles"
    __table_args__ = (Index("ix_charging_profiles_station_pk_status", "station_pk", "status"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    station_pk: Mapped[int] = mapped_column(ForeignKey("stations.pk", ondelete="CASCADE"))
    connector_pk: Mapped[int | None] = mapped_column(
        ForeignKey("connectors.pk", ondelete="CASCADE"), index=True
    )  # NULL: connector / EVSE 0
    transaction_pk: Mapped[int | None] = mapped_column(
        ForeignKey("transactions.pk", ondelete="SET NULL")
    )
    ocpp_profile_id: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(32))
    stack_level: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16), default="Absolute")
    rate_unit: Mapped[str] = mapped_column(String(1))
    schedule: Mapped[dict[str, Any]] = mapped_column(JsonType)
    limit_kw: Mapped[float | None] = mapped_column(Float)  # first period, for display
    valid_from: Mapped[datetime | None] = mapped_column(UtcDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    responded_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[str | None] = mapped_column(String(200))


class SiteControl(Base):
    """What the control loop last decided for a site, and its current plan."""

    __tablename__ = "site_control"

    site_pk: Mapped[int] = mapped_column(
        ForeignKey("sites.pk", ondelete="CASCADE"), primary_key=True
    )
    tick: Mapped[int] = mapped_column(BigInteger, default=0)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    import_limit_kw: Mapped[float | None] = mapped_column(Float)  # effective, caps included
    dr_cap_kw: Mapped[float | None] = mapped_column(Float)
    tod_cap_kw: Mapped[float | None] = mapped_column(Float)
    allocated_kw: Mapped[float | None] = mapped_column(Float)
    active_signals: Mapped[list[str]] = mapped_column(JsonType, default=list)
    plan_computed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    plan_start_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    plan_step_s: Mapped[int | None] = mapped_column(Integer)
    plan_status: Mapped[str | None] = mapped_column(String(16))
    plan_message: Mapped[str | None] = mapped_column(String(500))
    plan_site_kw: Mapped[list[float]] = mapped_column(JsonType, default=list)
    plan_limit_kw: Mapped[list[float | None]] = mapped_column(JsonType, default=list)
    plan_import_price: Mapped[list[float]] = mapped_column(JsonType, default=list)


class ConnectorControl(Base):
    """A connector's current plan and the limit last decided (and sent) for it."""

    __tablename__ = "connector_control"

    connector_pk: Mapped[int] = mapped_column(
        ForeignKey("connectors.pk", ondelete="CASCADE"), primary_key=True
    )
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"), index=True)
    limit_kw: Mapped[float | None] = mapped_column(Float)
    limit_a: Mapped[float | None] = mapped_column(Float)  # per phase
    tick: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_status: Mapped[str | None] = mapped_column(String(16))  # "recorded" until a gateway
    plan_kw: Mapped[list[float]] = mapped_column(JsonType, default=list)


class ApiKey(Base):
    """An API key: only an HMAC of its secret is stored."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(24), unique=True)  # public part of the key
    name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    sites: Mapped[list[ApiKeySite]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ApiKeySite.site_id"
    )


class ApiKeySite(Base):
    """A site in a key's scope (by id, so a key may name a site before it is created)."""

    __tablename__ = "api_key_sites"

    key_pk: Mapped[int] = mapped_column(
        ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class IdempotencyRecord(Base):
    """The response to a creating POST, replayed when its ``Idempotency-Key`` comes again."""

    __tablename__ = "idempotency_records"

    key_pk: Mapped[int] = mapped_column(
        ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request body
    status_code: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[Any] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)


# The billing tables live in their own module; importing it here registers them on the metadata.
from ampflow.gateway.db import models_billing as _models_billing  # noqa: E402, F401
