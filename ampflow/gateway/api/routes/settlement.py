"""``/v2g``: V2G settlement statements per session, per driver and month, and per site and month
(the site against the utility).

A V2G session is settled when it ends (:func:`ampflow.gateway.billing.on_session_end`): its
export, per interval of the site's ``v2g_interval_s``, is valued at the site's export price, DR
events pay the site's DR rate, committed capacity its capacity rate; degradation, the driver's
share and a missed departure target are paid to the driver. Monthly statements are exact sums
of the session statements and reconcile: metered export equals settled export, and the
utility's, site's and drivers' balances sum to zero.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from ampflow.engine.v2g_statements import SiteStatement, driver_statements, site_statements
from ampflow.gateway import billing
from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, OpsViewer, SiteIdPath, SiteViewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.routes.billing import exact, exact_text
from ampflow.gateway.api.routes.cdrs import Month, TimeZone, month_window, zone_for
from ampflow.gateway.api.schemas.billing import (
    DriverStatementDoc,
    SessionStatementDoc,
    SiteStatementDoc,
)
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.db.errors import NotFoundError
from ampflow.gateway.db.repo import billing as repo
from ampflow.gateway.db.repo import sessions as session_repo
from ampflow.gateway.db.repo import sites

__all__ = ["router"]

router = APIRouter(prefix="/v2g", tags=["v2g"])

_ZERO = Decimal(0)


@router.get("/sessions/{session_id}", response_model=SessionStatementDoc, responses=responses(404))
def session_statement(
    session_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx, who: Caller
) -> Response:
    """The settlement statement of one V2G session: its lines (who pays whom, for what),
    metered and settled export, and each party's net."""
    who.require(Action.VIEW_OPS)
    with ctx.db.read() as s:
        row = session_repo.get_session(s, session_id)
        who.require(Action.VIEW_OPS, row.site_id)
        statement = repo.get_statement(s, row.session.pk)
    if statement is None:
        raise NotFoundError(
            f"session {session_id!r} has no V2G statement (it has not ended, exported nothing, "
            "or could not be settled)",
            loc=("path", "session_id"),
        )
    return exact_text(statement.body)


@router.get("/drivers", response_model=list[DriverStatementDoc], responses=responses())
def driver_months(
    ctx: Ctx,
    who: OpsViewer,
    month: Month = None,
    driver_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    time_zone: TimeZone = None,
) -> Response:
    """Each driver's V2G month (sessions that ended in it, at the sites this key may see):
    what the site paid them, per kind."""
    visible = who.visible(site_id)
    with ctx.db.read() as s:
        tz = zone_for(s, time_zone, site_id)
        _, _, start, end = month_window(month, tz)
        rows = repo.list_statements(
            s,
            site_pks=repo.site_pks(s, visible),
            driver_id=driver_id,
            end_from=start,
            end_before=end,
        )
    statements = [billing.statement_from_json(r.body) for r in rows]
    return exact([d.to_dict() for d in driver_statements(statements, time_zone=tz)])


@router.get("/sites/{site_id}", response_model=list[SiteStatementDoc], responses=responses(404))
def site_month(
    site_id: SiteIdPath, ctx: Ctx, who: SiteViewer, month: Month = None, time_zone: TimeZone = None
) -> Response:
    """The site's V2G month against the utility (one statement per currency; a month without
    V2G sessions has one empty statement): grid payments per kind, payouts to drivers, each
    party's net, and whether it reconciles."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        tz = zone_for(s, time_zone, site_id)
        year, mon, start, end = month_window(month, tz)
        rows = repo.list_statements(s, site_pks=[site.pk], end_from=start, end_before=end)
    found = site_statements([billing.statement_from_json(r.body) for r in rows], time_zone=tz)
    if not found:
        empty = SiteStatement(site_id, year, mon, site.currency, (), {}, {}, *([_ZERO] * 6))
        found = [empty]
    return exact([st.to_dict() for st in found])
