"""Charging sessions and their targets; connector lookup by ``"site/charger/n"`` id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import SessionStatus, utcnow
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Charger, Connector, Session, Site

__all__ = [
    "ConnectorRef",
    "SessionRow",
    "find_connector",
    "get_session",
    "list_sessions",
    "parse_connector_id",
    "resolve_connectors",
    "start_session",
    "stop_session",
    "update_session",
]

TARGET_FIELDS = frozenset(
    {
        "departure_at",
        "energy_target_kwh",
        "soc_target_pct",
        "battery_kwh",
        "ev_max_kw",
        "priority",
        "boost",
        "v2g",
        "soc_pct",
    }
)


@dataclass(frozen=True)
class ConnectorRef:
    """A connector as named in the API: ``site/charger/number``."""

    site_id: str
    charger_id: str
    number: int

    def __str__(self) -> str:
        return f"{self.site_id}/{self.charger_id}/{self.number}"


@dataclass(frozen=True)
class SessionRow:
    """A session with the public ids of its site and connector."""

    session: Session
    site_id: str
    connector_id: str


def parse_connector_id(connector_id: str) -> ConnectorRef:
    """Split ``"site/charger/n"``; raises ``ValueError`` naming the expected form."""
    parts = connector_id.split("/")
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        raise ValueError(
            f"connector_id: expected 'site/charger/number' such as 'depot/cp-1/1', "
            f"got {connector_id!r}"
        )
    return ConnectorRef(parts[0], parts[1], int(parts[2]))


def find_connector(
    s: DbSession, ref: ConnectorRef, *, loc: Sequence[str | int] = ("body", "connector_id")
) -> Connector:
    """The connector ``ref`` names; an unknown one is a ConflictError at ``loc``."""
    connector = s.scalar(
        select(Connector)
        .join(Charger, Charger.pk == Connector.charger_pk)
        .join(Site, Site.pk == Connector.site_pk)
        .where(Site.id == ref.site_id, Charger.id == ref.charger_id, Connector.number == ref.number)
    )
    if connector is None:
        raise ConflictError(f"connector {str(ref)!r} does not exist", loc=loc)
    return connector


def resolve_connectors(s: DbSession, refs: Sequence[ConnectorRef]) -> dict[ConnectorRef, int]:
    """Primary keys of many connectors at once; unknown ones are left out."""
    if not refs:
        return {}
    keys = {(r.site_id, r.charger_id, r.number) for r in refs}
    rows = s.execute(
        select(Site.id, Charger.id, Connector.number, Connector.pk)
        .join(Charger, Charger.pk == Connector.charger_pk)
        .join(Site, Site.pk == Connector.site_pk)
        .where(tuple_(Site.id, Charger.id, Connector.number).in_(list(keys)))
    ).all()
    return {ConnectorRef(a, b, int(n)): int(pk) for a, b, n, pk in rows}


def _check_targets(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - TARGET_FIELDS
    if unknown:
        raise ValueError(f"session targets: unknown fields {sorted(unknown)}")


def start_session(
    s: DbSession,
    *,
    connector_id: str,
    started_at: datetime | None = None,
    id_token: str | None = None,
    status: SessionStatus = SessionStatus.ACTIVE,
    targets: Mapping[str, Any] | None = None,
) -> SessionRow:
    """Open a session on a free connector.

    Raises
    ------
    ConflictError
        For an unknown connector, or one that already has an open session.
    """
    ref = parse_connector_id(connector_id)
    connector = find_connector(s, ref)
    busy = s.scalar(
        select(Session.id).where(
            Session.connector_pk == connector.pk, Session.status.in_(SessionStatus.open())
        )
    )
    if busy is not None:
        raise ConflictError(
            f"connector {connector_id!r} already has open session {busy!r}",
            loc=("body", "connector_id"),
        )
    targets = dict(targets or {})
    _check_targets(targets)
    now = utcnow()
    session = Session(
        id=f"ses_{uuid.uuid4().hex[:20]}",
        site_pk=connector.site_pk,
        connector_pk=connector.pk,
        status=status.value,
        started_at=started_at or now,
        id_token=id_token,
        meter_start_wh=connector.energy_wh,
        targets_updated_at=now if targets else None,
        **targets,
    )
    s.add(session)
    s.flush()
    return SessionRow(session, ref.site_id, str(ref))


def _select_rows() -> Select[Session, str, str, int]:
    return (
        select(Session, Site.id, Charger.id, Connector.number)
        .join(Connector, Connector.pk == Session.connector_pk)
        .join(Charger, Charger.pk == Connector.charger_pk)
        .join(Site, Site.pk == Session.site_pk)
    )


def _row(session: Session, site_id: str, charger_id: str, number: int) -> SessionRow:
    return SessionRow(session, site_id, f"{site_id}/{charger_id}/{number}")


def get_session(s: DbSession, session_id: str) -> SessionRow:
    """A session by id. Raises NotFoundError."""
    row = s.execute(_select_rows().where(Session.id == session_id)).first()
    if row is None:
        raise NotFoundError(f"no session {session_id!r}", loc=("path", "session_id"))
    return _row(*row)


def update_session(s: DbSession, session_id: str, changes: Mapping[str, Any]) -> SessionRow:
    """Set targets (departure, energy or SoC target, priority, boost) of an open session.

    Raises
    ------
    NotFoundError
    ConflictError
        If the session has ended, or the departure is before its start.
    """
    _check_targets(changes)
    row = get_session(s, session_id)
    session = row.session
    if session.status == SessionStatus.COMPLETED:
        raise ConflictError(f"session {session_id!r} has ended", loc=("path", "session_id"))
    departure = changes.get("departure_at")
    if departure is not None and departure <= session.started_at:
        raise ConflictError(
            f"departure_at {departure.isoformat()} is not after the session's start "
            f"{session.started_at.isoformat()}",
            loc=("body", "departure_at"),
        )
    for key, value in changes.items():
        setattr(session, key, value)
    session.targets_updated_at = utcnow()
    s.flush()
    return row


def stop_session(
    s: DbSession,
    session_id: str,
    *,
    at: datetime | None = None,
    status: SessionStatus = SessionStatus.COMPLETED,
) -> SessionRow:
    """End a session (``COMPLETED``), or mark it ``STOPPING`` while a station is asked to stop.

    Stopping a completed session again is harmless.
    """
    row = get_session(s, session_id)
    session = row.session
    if session.status == SessionStatus.COMPLETED:
        return row
    session.status = status.value
    if status is SessionStatus.COMPLETED:
        session.ended_at = at or utcnow()
        session.power_kw = 0.0
    s.flush()
    return row


def list_sessions(
    s: DbSession,
    *,
    site_ids: Sequence[str] | None = None,
    statuses: Sequence[SessionStatus] = (),
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[SessionRow]:
    """Sessions, newest first, optionally of some sites, statuses, or started since a time."""
    q = _select_rows()
    if site_ids is not None:
        q = q.where(Site.id.in_(list(site_ids)))
    if statuses:
        q = q.where(Session.status.in_([st.value for st in statuses]))
    if since is not None:
        q = q.where(Session.started_at >= since)
    q = q.order_by(Session.started_at.desc(), Session.pk.desc()).limit(limit).offset(offset)
    return [_row(*r) for r in s.execute(q).all()]
