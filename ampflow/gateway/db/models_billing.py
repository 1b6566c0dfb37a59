"""Billing tables: tariffs per site, billing settings, CDRs and their audit trail, V2G statements.

Design notes
------------
* Money and prices never pass through ``float``: OCPI documents (tariffs, CDRs, audit records,
  V2G statements) are stored as their exact JSON text (``body``), numbers written as decimals,
  and the per-site settings keep their amounts as decimal strings. The indexed columns beside a
  body only serve lookups (site, session, token, dates); the body is the record.
* A tariff is versioned: replacing or deleting it retires the current row (``retired_at``) and a
  replacement is a new row (``valid_from``). A session is priced with the tariff versions that
  were current when it started, so a change made during a session never reprices it.
* CDRs are never updated or deleted by the application: a correction is a Credit CDR (a row of
  its own, ``credit_reference_id`` naming the credited CDR, at most one credit per CDR) and, if
  needed, a new CDR. Every issue and credit writes a ``cdr_audit`` row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from ampflow.gateway.db.base import Base, UtcDateTime, utcnow

__all__ = ["CdrAuditRow", "CdrRow", "SiteBilling", "TariffRow", "V2gStatementRow"]

_CURRENT = "retired_at IS NULL"


class TariffRow(Base):
    """One version of an OCPI 2.2.1 tariff assigned to a site."""

    __tablename__ = "tariffs"
    __table_args__ = (
        Index("ix_tariffs_site_pk_tariff_id", "site_pk", "tariff_id"),
        # At most one current version of a tariff id per site.
        Index(
            "uq_tariffs_current",
            "site_pk",
            "tariff_id",
            unique=True,
            sqlite_where=text(_CURRENT),
            postgresql_where=text(_CURRENT),
        ),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    tariff_id: Mapped[str] = mapped_column(String(36))
    country_code: Mapped[str] = mapped_column(String(2))
    party_id: Mapped[str] = mapped_column(String(3))
    currency: Mapped[str] = mapped_column(String(3))
    start_date_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    end_date_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    body: Mapped[str] = mapped_column(Text)  # the Tariff JSON, numbers exact
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(24))  # API key id
    # Prices sessions that start in [valid_from, retired_at): valid_from is NULL for the first
    # version of a tariff id (nothing else could price those sessions), else when it was stored.
    valid_from: Mapped[datetime | None] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SiteBilling(Base):
    """A site's billing and V2G settlement settings (amounts as decimal strings)."""

    __tablename__ = "site_billing"

    site_pk: Mapped[int] = mapped_column(
        ForeignKey("sites.pk", ondelete="CASCADE"), primary_key=True
    )
    idle_grace_s: Mapped[int] = mapped_column(Integer, default=0)
    idle_power_kw: Mapped[str] = mapped_column(String(40), default="0")
    money_places: Mapped[int] = mapped_column(SmallInteger, default=2)
    v2g_interval_s: Mapped[int] = mapped_column(Integer, default=900)
    default_export_price: Mapped[str] = mapped_column(String(40), default="0")
    degradation_per_kwh: Mapped[str] = mapped_column(String(40), default="0")
    driver_share: Mapped[str] = mapped_column(String(40), default="0")
    missed_target_per_kwh: Mapped[str] = mapped_column(String(40), default="0")
    dr_payment_per_kwh: Mapped[str] = mapped_column(String(40), default="0")
    capacity_payment_per_kw: Mapped[str] = mapped_column(String(40), default="0")
    dr_excludes_export: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class CdrRow(Base):
    """An issued OCPI 2.2.1 CDR or Credit CDR; never changed once written."""

    __tablename__ = "cdrs"
    __table_args__ = (Index("ix_cdrs_site_pk_issued_at", "site_pk", "issued_at"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(39), unique=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.pk", ondelete="CASCADE"), index=True
    )
    credit: Mapped[bool] = mapped_column(Boolean, default=False)
    # The credited CDR's id; unique, so a CDR is credited at most once (also under races).
    credit_reference_id: Mapped[str | None] = mapped_column(String(39), unique=True)
    token_uid: Mapped[str] = mapped_column(String(36), index=True)
    contract_id: Mapped[str] = mapped_column(String(36), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())  # the CDR's last_updated
    body: Mapped[str] = mapped_column(Text)  # the CDR JSON, numbers exact


class CdrAuditRow(Base):
    """One entry of the CDR audit trail: a CDR issued, or credited (by whom and why)."""

    __tablename__ = "cdr_audit"

    pk: Mapped[int] = mapped_column(primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    cdr_id: Mapped[str] = mapped_column(String(39), index=True)
    reference_id: Mapped[str | None] = mapped_column(String(39), index=True)
    body: Mapped[str] = mapped_column(Text)  # the audit record JSON, numbers exact


class V2gStatementRow(Base):
    """The settlement statement of one V2G session."""

    __tablename__ = "v2g_statements"
    __table_args__ = (
        Index("ix_v2g_statements_site_pk_end_at", "site_pk", "end_at"),
        Index("ix_v2g_statements_driver_id_end_at", "driver_id", "end_at"),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.pk", ondelete="CASCADE"), unique=True
    )
    site_pk: Mapped[int] = mapped_column(ForeignKey("sites.pk", ondelete="CASCADE"))
    driver_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    body: Mapped[str] = mapped_column(Text)  # SessionStatement.to_dict() JSON, numbers exact
