"""``/sites``: create and read sites with their capacity tree, change limits, live state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, SiteIdPath, SiteManager, SiteViewer, Viewer
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.idempotency import IdempotencyKey, create_once
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.api.schemas.sites import (
    ConnectorState,
    SiteCreate,
    SitePublic,
    SiteState,
    SiteSummary,
    SiteUpdate,
    tree_problems,
)
from ampflow.gateway.db.base import utcnow
from ampflow.gateway.db.repo import control_state, sites

router = APIRouter(prefix="/sites", tags=["sites"])


@router.post("", status_code=201, response_model=SitePublic, responses=responses(409))
def create_site(
    body: SiteCreate, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> JSONResponse:
    """Create a site with its tree (grid connection, nodes, chargers, connectors)."""
    who.require(Action.MANAGE, body.id)
    problems = tree_problems(body)
    if problems:
        raise invalid(problems)

    def create(s: DbSession) -> SitePublic:
        site = sites.create_site(
            s,
            body.spec(),
            body.info(),
            charger_priority={c.id: c.priority for c in body.chargers},
        )
        return SitePublic.of(sites.get_site_tree(s, site.id))

    response = create_once(ctx, who, request, key, body, create)
    ctx.notify("site created")
    return response


@router.get("", response_model=list[SiteSummary], responses=responses())
def list_sites(
    ctx: Ctx, who: Viewer, site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
) -> list[SiteSummary]:
    """The sites this key may see (or one of them)."""
    with ctx.db.read() as s:
        rows = sites.list_sites(s, site_ids=who.visible(site_id))
        return [SiteSummary.model_validate(x) for x in rows]


@router.get("/{site_id}", response_model=SitePublic, responses=responses(404))
def get_site(site_id: SiteIdPath, ctx: Ctx, who: SiteViewer) -> SitePublic:
    """A site with its whole tree and limits."""
    with ctx.db.read() as s:
        return SitePublic.of(sites.get_site_tree(s, site_id))


@router.patch("/{site_id}", response_model=SitePublic, responses=responses(404, 409))
def update_site(site_id: SiteIdPath, body: SiteUpdate, ctx: Ctx, who: SiteManager) -> SitePublic:
    """Change a site's limits (kW and/or A per phase) or attributes; the loop reacts at once."""
    changes = body.model_dump(exclude_unset=True)
    with ctx.db.write() as s:
        sites.update_site(s, site_id, changes)
        out = SitePublic.of(sites.get_site_tree(s, site_id))
    ctx.notify("site limits changed")
    return out


@router.get("/{site_id}/state", response_model=SiteState, responses=responses(404))
def site_state(site_id: SiteIdPath, ctx: Ctx, who: SiteViewer) -> Response:
    """Live state: power per connector, its current limit, the site's effective limit."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        control = control_state.site_control(s, site.pk)
        live = control_state.connector_live(s, site.pk)
    connectors = [
        ConnectorState(
            id=f"{site_id}/{x.charger_id}/{x.number}",
            status=x.status,
            power_kw=x.power_kw,
            energy_wh=x.energy_wh,
            soc_pct=x.soc_pct,
            measured_at=x.measured_at,
            limit_kw=x.limit_kw,
            limit_a=x.limit_a,
            session_id=x.session_id,
        )
        for x in live
    ]
    state = SiteState(
        site_id=site_id,
        at=utcnow(),
        power_kw=round(sum(c.power_kw or 0.0 for c in connectors), 6),
        import_limit_kw=None if control is None else control.import_limit_kw,
        dr_cap_kw=None if control is None else control.dr_cap_kw,
        tod_cap_kw=None if control is None else control.tod_cap_kw,
        active_signals=[] if control is None else list(control.active_signals),
        tick=None if control is None else control.tick,
        decided_at=None if control is None else control.decided_at,
        connectors=connectors,
    )
    # Serialised once here; FastAPI would validate the model a second time on the hot path.
    return Response(state.model_dump_json(), media_type="application/json")
