"""What the control loop decided: limits per connector, the plan per site and connector.

The loop writes here; the API reads it (``/sites/{id}/schedule`` and the live state), and the
loop reads it back after a restart so that it does not re-send unchanged limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db.base import SessionStatus
from ampflow.gateway.db.models import (
    Charger,
    Connector,
    ConnectorControl,
    Session,
    SiteControl,
)

__all__ = [
    "ConnectorDecision",
    "ConnectorLive",
    "SiteDecision",
    "SitePlan",
    "connector_live",
    "last_limits",
    "last_tick",
    "save_decisions",
    "save_plans",
    "site_control",
]


@dataclass(frozen=True, slots=True)
class SiteDecision:
    """One tick's outcome for a site."""

    site_pk: int
    import_limit_kw: float | None
    dr_cap_kw: float | None
    tod_cap_kw: float | None
    allocated_kw: float
    active_signals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectorDecision:
    """A connector's new limit and what the sink made of it."""

    connector_pk: int
    site_pk: int
    limit_kw: float
    limit_a: float
    sent_status: str


@dataclass(frozen=True, slots=True)
class SitePlan:
    """A site's plan: per-step arrays starting at ``start_at`` (rounded by the caller)."""

    site_pk: int
    status: str
    message: str
    site_kw: Sequence[float]
    limit_kw: Sequence[float | None]  # None: no limit
    import_price: Sequence[float]
    connector_kw: dict[int, list[float]]  # connector pk -> per-step limit [kW]


def _upsert(
    s: DbSession, table: type[SiteControl] | type[ConnectorControl], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    key = "site_pk" if table is SiteControl else "connector_pk"
    updates = {c: stmt.excluded[c] for c in rows[0] if c != key}
    s.execute(stmt.on_conflict_do_update(index_elements=[key], set_=updates), rows)


def save_decisions(
    s: DbSession,
    *,
    tick: int,
    at: datetime,
    sites: Sequence[SiteDecision],
    connectors: Sequence[ConnectorDecision],
) -> None:
    """Record a tick: every site's row, and the connectors whose limit changed."""
    _upsert(
        s,
        SiteControl,
        [
            {
                "site_pk": d.site_pk,
                "tick": tick,
                "decided_at": at,
                "import_limit_kw": d.import_limit_kw,
                "dr_cap_kw": d.dr_cap_kw,
                "tod_cap_kw": d.tod_cap_kw,
                "allocated_kw": d.allocated_kw,
                "active_signals": list(d.active_signals),
            }
            for d in sites
        ],
    )
    _upsert(
        s,
        ConnectorControl,
        [
            {
                "connector_pk": d.connector_pk,
                "site_pk": d.site_pk,
                "limit_kw": d.limit_kw,
                "limit_a": d.limit_a,
                "tick": tick,
                "decided_at": at,
                "sent_status": d.sent_status,
            }
            for d in connectors
        ],
    )


def save_plans(
    s: DbSession,
    *,
    computed_at: datetime,
    start_at: datetime,
    step_s: int,
    plans: Sequence[SitePlan],
) -> None:
    """Replace the plans of these sites and their connectors."""
    _upsert(
        s,
        SiteControl,
        [
            {
                "site_pk": p.site_pk,
                "plan_computed_at": computed_at,
                "plan_start_at": start_at,
                "plan_step_s": step_s,
                "plan_status": p.status,
                "plan_message": p.message[:500],
                "plan_site_kw": list(p.site_kw),
                "plan_limit_kw": [None if x is None else round(x, 4) for x in p.limit_kw],
                "plan_import_price": list(p.import_price),
            }
            for p in plans
        ],
    )
    _upsert(
        s,
        ConnectorControl,
        [
            {"connector_pk": pk, "site_pk": p.site_pk, "plan_kw": list(kw)}
            for p in plans
            for pk, kw in p.connector_kw.items()
        ],
    )


def last_limits(s: DbSession) -> dict[int, float]:
    """The last decided limit of every connector that has one [kW]."""
    rows = s.execute(
        select(ConnectorControl.connector_pk, ConnectorControl.limit_kw).where(
            ConnectorControl.limit_kw.is_not(None)
        )
    ).all()
    return {int(pk): float(kw) for pk, kw in rows if kw is not None}


def last_tick(s: DbSession) -> int:
    """The highest tick recorded (0 before the first), so ticks keep counting after a restart."""
    return int(s.scalar(select(func.max(SiteControl.tick))) or 0)


def site_control(s: DbSession, site_pk: int) -> SiteControl | None:
    """The control row of a site (None before the first tick)."""
    return s.get(SiteControl, site_pk)


class ConnectorLive(NamedTuple):
    """One connector's live state: readings, decided limit, open session (and plan, if asked)."""

    charger_id: str
    number: int
    status: str | None
    power_kw: float | None
    energy_wh: float | None
    soc_pct: float | None
    measured_at: datetime | None
    limit_kw: float | None
    limit_a: float | None
    tick: int | None
    decided_at: datetime | None
    sent_status: str | None
    session_id: str | None
    plan_kw: list[float] | None


def connector_live(s: DbSession, site_pk: int, *, with_plan: bool = False) -> list[ConnectorLive]:
    """Every connector of a site with its decided limit and open session, in one query.

    Plain columns rather than ORM objects: this is the hot path of the live-state endpoint.
    """
    open_session = (Session.connector_pk == Connector.pk) & Session.status.in_(
        [st.value for st in SessionStatus.open()]
    )
    plan = ConnectorControl.plan_kw if with_plan else sa.null()
    q = (
        select(
            Charger.id,
            Connector.number,
            Connector.status,
            Connector.power_kw,
            Connector.energy_wh,
            Connector.soc_pct,
            Connector.measured_at,
            ConnectorControl.limit_kw,
            ConnectorControl.limit_a,
            ConnectorControl.tick,
            ConnectorControl.decided_at,
            ConnectorControl.sent_status,
            Session.id,
            plan,
        )
        .join(Charger, Charger.pk == Connector.charger_pk)
        .outerjoin(ConnectorControl, ConnectorControl.connector_pk == Connector.pk)
        .outerjoin(Session, open_session)
        .where(Connector.site_pk == site_pk)
        .order_by(Charger.id, Connector.number)
    )
    return [ConnectorLive._make(row) for row in s.execute(q).all()]
