"""Tariffs, billing settings, CDRs, the CDR audit trail and V2G statements.

Plain functions over a session, like the other repositories: they never commit, and raise
:class:`~ampflow.gateway.db.errors.NotFoundError` or ``ConflictError`` naming the field. Documents
are stored and returned as exact JSON text (see :mod:`ampflow.gateway.db.models_billing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import utcnow
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Site
from ampflow.gateway.db.models_billing import (
    CdrAuditRow,
    CdrRow,
    SiteBilling,
    TariffRow,
    V2gStatementRow,
)

__all__ = [
    "BILLING_FIELDS",
    "CdrFilter",
    "add_audit",
    "add_cdr",
    "add_tariff",
    "audit_trail",
    "billing_settings",
    "cdr_credit",
    "current_cdr",
    "get_cdr",
    "get_statement",
    "get_tariff",
    "list_cdrs",
    "list_statements",
    "list_tariffs",
    "retire_tariff",
    "save_statement",
    "site_ids",
    "site_pks",
    "tariffs_at",
    "update_billing",
]

BILLING_FIELDS = frozenset(
    {
        "idle_grace_s",
        "idle_power_kw",
        "money_places",
        "v2g_interval_s",
        "default_export_price",
        "degradation_per_kwh",
        "driver_share",
        "missed_target_per_kwh",
        "dr_payment_per_kwh",
        "capacity_payment_per_kw",
        "dr_excludes_export",
    }
)
_DEFAULTS: dict[str, Any] = {
    "idle_grace_s": 0,
    "idle_power_kw": "0",
    "money_places": 2,
    "v2g_interval_s": 900,
    "default_export_price": "0",
    "degradation_per_kwh": "0",
    "driver_share": "0",
    "missed_target_per_kwh": "0",
    "dr_payment_per_kwh": "0",
    "capacity_payment_per_kw": "0",
    "dr_excludes_export": False,
}


def site_ids(s: DbSession, site_pks: Sequence[int]) -> dict[int, str]:
    """Public ids of sites by primary key."""
    if not site_pks:
        return {}
    rows = s.execute(select(Site.pk, Site.id).where(Site.pk.in_(sorted(set(site_pks))))).all()
    return {int(pk): str(sid) for pk, sid in rows}


def site_pks(s: DbSession, ids: Sequence[str] | None) -> list[int] | None:
    """Primary keys of the sites named (``None``: every site); unknown ids are left out."""
    if ids is None:
        return None
    return [int(pk) for pk in s.scalars(select(Site.pk).where(Site.id.in_(list(ids)))).all()]


# --- tariffs --------------------------------------------------------------------------------------


def _current(site_pk: int, tariff_id: str) -> Select[TariffRow]:
    return select(TariffRow).where(
        TariffRow.site_pk == site_pk,
        TariffRow.tariff_id == tariff_id,
        TariffRow.retired_at.is_(None),
    )


def get_tariff(s: DbSession, site: Site, tariff_id: str) -> TariffRow:
    """The current version of a site's tariff. Raises NotFoundError."""
    row = s.scalar(_current(site.pk, tariff_id))
    if row is None:
        raise NotFoundError(
            f"site {site.id!r} has no tariff {tariff_id!r}", loc=("path", "tariff_id")
        )
    return row


def list_tariffs(s: DbSession, site: Site) -> list[TariffRow]:
    """A site's current tariffs, in the order they are tried (see :func:`tariffs_at`)."""
    q = select(TariffRow).where(TariffRow.site_pk == site.pk, TariffRow.retired_at.is_(None))
    return _ordered(s.scalars(q).all())


def _ordered(rows: Sequence[TariffRow]) -> list[TariffRow]:
    # The price list that started last comes first (no start = oldest), then by id.
    def key(r: TariffRow) -> tuple[float, str]:
        start = r.start_date_time
        return (-(start.timestamp()) if start is not None else float("inf"), r.tariff_id)

    return sorted(rows, key=key)


def tariffs_at(s: DbSession, site_pk: int, at: datetime) -> list[TariffRow]:
    """The tariff versions of a site that were current at ``at`` (a session start), in the
    order they are tried: the one whose validity started last first, then by id.

    The first version of a tariff id also prices sessions that started before it was stored
    (nothing else could); a replacement prices those that start after it was stored."""
    q = select(TariffRow).where(
        TariffRow.site_pk == site_pk,
        or_(TariffRow.valid_from.is_(None), TariffRow.valid_from <= at),
        or_(TariffRow.retired_at.is_(None), TariffRow.retired_at > at),
    )
    return _ordered(s.scalars(q).all())


def add_tariff(
    s: DbSession,
    site: Site,
    *,
    tariff_id: str,
    country_code: str,
    party_id: str,
    currency: str,
    start_date_time: datetime | None,
    end_date_time: datetime | None,
    body: str,
    actor: str | None,
    replace: bool,
    at: datetime | None = None,
) -> tuple[TariffRow, bool]:
    """Store a tariff version; returns it and whether it replaced a current one.

    Raises
    ------
    ConflictError
        If the site already has a current tariff with this id and ``replace`` is false.
    """
    now = at or utcnow()
    old = s.scalar(_current(site.pk, tariff_id))
    earlier = s.scalar(
        select(TariffRow.pk).where(TariffRow.site_pk == site.pk, TariffRow.tariff_id == tariff_id)
    )
    if old is not None:
        if not replace:
            raise ConflictError(
                f"site {site.id!r} already has tariff {tariff_id!r}; PUT it to replace it",
                loc=("body", "id"),
            )
        old.retired_at = now
        s.flush()
    row = TariffRow(
        site_pk=site.pk,
        tariff_id=tariff_id,
        country_code=country_code,
        party_id=party_id,
        currency=currency,
        start_date_time=start_date_time,
        end_date_time=end_date_time,
        body=body,
        created_at=now,
        created_by=actor,
        valid_from=None if earlier is None else now,
    )
    s.add(row)
    s.flush()
    return row, old is not None


def retire_tariff(s: DbSession, site: Site, tariff_id: str, *, at: datetime | None = None) -> None:
    """Retire a site's tariff: sessions started from now on no longer use it."""
    row = get_tariff(s, site, tariff_id)
    row.retired_at = at or utcnow()
    s.flush()


# --- settings -------------------------------------------------------------------------------------


def billing_settings(s: DbSession, site_pk: int) -> SiteBilling:
    """A site's billing settings (the defaults, not stored, if never set)."""
    row = s.get(SiteBilling, site_pk)
    if row is None:
        row = SiteBilling(site_pk=site_pk, updated_at=None, **_DEFAULTS)
    return row


def update_billing(s: DbSession, site: Site, changes: Mapping[str, Any]) -> SiteBilling:
    """Set some billing settings of a site (the others keep their value)."""
    unknown = set(changes) - BILLING_FIELDS
    if unknown:
        raise ValueError(f"billing settings: unknown fields {sorted(unknown)}")
    row = s.get(SiteBilling, site.pk)
    if row is None:
        row = SiteBilling(site_pk=site.pk, **_DEFAULTS)
        s.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    s.flush()
    return row


# --- CDRs -----------------------------------------------------------------------------------------


def add_cdr(s: DbSession, row: CdrRow) -> CdrRow:
    """Store a CDR (or Credit CDR).

    Raises
    ------
    ConflictError
        If its id exists, or the CDR it credits was credited already.
    """
    if s.scalar(select(CdrRow.pk).where(CdrRow.id == row.id)) is not None:
        raise ConflictError(f"CDR {row.id!r} exists already", loc=("path", "cdr_id"))
    ref = row.credit_reference_id
    if ref is not None and cdr_credit(s, ref) is not None:
        raise ConflictError(f"CDR {ref!r} was credited already", loc=("path", "cdr_id"))
    s.add(row)
    s.flush()
    return row


def get_cdr(s: DbSession, cdr_id: str) -> CdrRow:
    """A CDR by id. Raises NotFoundError."""
    row = s.scalar(select(CdrRow).where(CdrRow.id == cdr_id))
    if row is None:
        raise NotFoundError(f"no CDR {cdr_id!r}", loc=("path", "cdr_id"))
    return row


def cdr_credit(s: DbSession, cdr_id: str) -> CdrRow | None:
    """The Credit CDR that cancelled ``cdr_id``, if any."""
    return s.scalar(select(CdrRow).where(CdrRow.credit_reference_id == cdr_id))


def current_cdr(s: DbSession, session_pk: int) -> CdrRow | None:
    """A session's CDR that stands: not a credit, and not credited."""
    credited = select(CdrRow.credit_reference_id).where(CdrRow.credit_reference_id.is_not(None))
    return s.scalar(
        select(CdrRow)
        .where(
            CdrRow.session_pk == session_pk,
            CdrRow.credit.is_(False),
            CdrRow.id.not_in(credited),
        )
        .order_by(CdrRow.pk.desc())
    )


@dataclass(frozen=True)
class CdrFilter:
    """Which CDRs a listing shows; ``site_pks`` None means every site."""

    site_pks: Sequence[int] | None = None
    session_pk: int | None = None
    token_uid: str | None = None
    contract_id: str | None = None
    issued_from: datetime | None = None
    issued_before: datetime | None = None
    ended_from: datetime | None = None
    ended_before: datetime | None = None
    credit: bool | None = None


def list_cdrs(
    s: DbSession, where: CdrFilter, *, limit: int = 100, offset: int = 0, newest_first: bool = True
) -> list[CdrRow]:
    """CDRs matching ``where``, by issue time."""
    q = select(CdrRow)
    if where.site_pks is not None:
        q = q.where(CdrRow.site_pk.in_(list(where.site_pks)))
    if where.session_pk is not None:
        q = q.where(CdrRow.session_pk == where.session_pk)
    if where.token_uid is not None:
        q = q.where(CdrRow.token_uid == where.token_uid)
    if where.contract_id is not None:
        q = q.where(CdrRow.contract_id == where.contract_id)
    if where.issued_from is not None:
        q = q.where(CdrRow.issued_at >= where.issued_from)
    if where.issued_before is not None:
        q = q.where(CdrRow.issued_at < where.issued_before)
    if where.ended_from is not None:
        q = q.where(CdrRow.end_at >= where.ended_from)
    if where.ended_before is not None:
        q = q.where(CdrRow.end_at < where.ended_before)
    if where.credit is not None:
        q = q.where(CdrRow.credit.is_(where.credit))
    order = (CdrRow.issued_at.desc(), CdrRow.pk.desc()) if newest_first else (CdrRow.pk,)
    return list(s.scalars(q.order_by(*order).limit(limit).offset(offset)).all())


def add_audit(
    s: DbSession,
    *,
    site_pk: int,
    at: datetime,
    action: str,
    actor: str,
    cdr_id: str,
    reference_id: str | None,
    body: str,
) -> CdrAuditRow:
    """Append an audit entry."""
    row = CdrAuditRow(
        site_pk=site_pk,
        at=at,
        action=action,
        actor=actor,
        cdr_id=cdr_id,
        reference_id=reference_id,
        body=body,
    )
    s.add(row)
    s.flush()
    return row


def audit_trail(s: DbSession, cdr_ids: Sequence[str]) -> list[CdrAuditRow]:
    """Audit entries about any of ``cdr_ids`` (as the CDR or the one it references), oldest
    first."""
    ids = list(cdr_ids)
    q = select(CdrAuditRow).where(
        or_(CdrAuditRow.cdr_id.in_(ids), CdrAuditRow.reference_id.in_(ids))
    )
    return list(s.scalars(q.order_by(CdrAuditRow.at, CdrAuditRow.pk)).all())


# --- V2G statements -------------------------------------------------------------------------------


def save_statement(s: DbSession, row: V2gStatementRow) -> V2gStatementRow:
    """Store a session's statement; a session is settled once (ConflictError otherwise)."""
    exists = s.scalar(
        select(V2gStatementRow.pk).where(V2gStatementRow.session_pk == row.session_pk)
    )
    if exists is not None:
        raise ConflictError("the session is settled already", loc=("path", "session_id"))
    s.add(row)
    s.flush()
    return row


def get_statement(s: DbSession, session_pk: int) -> V2gStatementRow | None:
    """A session's V2G statement, if it was settled."""
    return s.scalar(select(V2gStatementRow).where(V2gStatementRow.session_pk == session_pk))


def list_statements(
    s: DbSession,
    *,
    site_pks: Sequence[int] | None,
    driver_id: str | None = None,
    end_from: datetime,
    end_before: datetime,
    limit: int = 100_000,
) -> list[V2gStatementRow]:
    """Statements of sessions that ended in ``[end_from, end_before)``, oldest first."""
    q = select(V2gStatementRow).where(
        V2gStatementRow.end_at >= end_from, V2gStatementRow.end_at < end_before
    )
    if site_pks is not None:
        q = q.where(V2gStatementRow.site_pk.in_(list(site_pks)))
    if driver_id is not None:
        q = q.where(V2gStatementRow.driver_id == driver_id)
    q = q.order_by(V2gStatementRow.end_at, V2gStatementRow.pk).limit(limit)
    return list(s.scalars(q).all())
