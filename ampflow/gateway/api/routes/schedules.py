"""``/sites/{site_id}/schedule``: the current plan per site and connector, and limits last sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ampflow.gateway.api.deps import Ctx, SiteIdPath, SiteViewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.api.schemas.schedules import ConnectorSchedule, SiteSchedule
from ampflow.gateway.db.errors import NotFoundError
from ampflow.gateway.db.repo import control_state, sites

router = APIRouter(prefix="/sites/{site_id}", tags=["schedules"])


@router.get("/schedule", response_model=SiteSchedule, responses=responses(404))
def site_schedule(site_id: SiteIdPath, ctx: Ctx, who: SiteViewer) -> SiteSchedule:
    """The site's plan, its effective limit now and every connector's limit last sent."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        sc = control_state.site_control(s, site.pk)
        live = control_state.connector_live(s, site.pk, with_plan=True)
    connectors = [ConnectorSchedule.of(f"{site_id}/{x.charger_id}/{x.number}", x) for x in live]
    return SiteSchedule.of(site_id, sc, connectors)


@router.get(
    "/chargers/{charger_id}/connectors/{number}/schedule",
    response_model=ConnectorSchedule,
    responses=responses(404),
)
def connector_schedule(
    site_id: SiteIdPath,
    charger_id: Annotated[str, Path(pattern=ID_PATTERN)],
    number: Annotated[int, Path(ge=1, le=16)],
    ctx: Ctx,
    who: SiteViewer,
) -> ConnectorSchedule:
    """One connector's plan and the limit last sent to it."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        for x in control_state.connector_live(s, site.pk, with_plan=True):
            if x.charger_id == charger_id and x.number == number:
                return ConnectorSchedule.of(f"{site_id}/{charger_id}/{number}", x)
    raise NotFoundError(
        f"site {site_id!r} has no connector {charger_id}/{number}", loc=("path", "number")
    )
