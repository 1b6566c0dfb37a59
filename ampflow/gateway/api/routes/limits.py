"""``/sites/{site_id}/limit-schedule``: time-of-day limits in the site's time zone."""

from __future__ import annotations

from fastapi import APIRouter

from ampflow.gateway.api.deps import Ctx, SiteIdPath, SiteManager, SiteViewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.schemas.sites import (
    LimitScheduleIn,
    LimitSchedulePublic,
    LimitWindowPublic,
)
from ampflow.gateway.db.repo import sites

router = APIRouter(prefix="/sites/{site_id}/limit-schedule", tags=["limits"])


@router.get("", response_model=LimitSchedulePublic, responses=responses(404))
def get_limit_schedule(site_id: SiteIdPath, ctx: Ctx, who: SiteViewer) -> LimitSchedulePublic:
    """The site's time-of-day limits."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        rows = sites.limit_windows(s, site)
        return LimitSchedulePublic(
            site_id=site.id,
            timezone=site.timezone,
            windows=[LimitWindowPublic.of(w, node) for w, node in rows],
        )


@router.put("", response_model=LimitSchedulePublic, responses=responses(404, 409))
def put_limit_schedule(
    site_id: SiteIdPath, body: LimitScheduleIn, ctx: Ctx, who: SiteManager
) -> LimitSchedulePublic:
    """Replace the time-of-day limits (weekdays and local-time windows) in one go."""
    specs = [w.spec(i) for i, w in enumerate(body.windows)]
    with ctx.db.write() as s:
        rows = sites.set_limit_windows(s, site_id, specs)
        site = sites.get_site(s, site_id)
        out = LimitSchedulePublic(
            site_id=site.id,
            timezone=site.timezone,
            windows=[LimitWindowPublic.of(w, node) for w, node in rows],
        )
    ctx.notify("limit schedule changed")
    return out
