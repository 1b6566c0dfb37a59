"""``/sites/{site_id}/nodes|chargers``: grow the tree; node and charger limits; priorities."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ampflow.gateway.api.deps import Ctx, SiteIdPath, SiteManager
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.api.schemas.sites import (
    ChargerCreate,
    ChargerUpdate,
    ConnectorPublic,
    ConnectorUpdate,
    NodeCreate,
    NodeUpdate,
    SitePublic,
    connector_public,
)
from ampflow.gateway.db.repo import sites

router = APIRouter(prefix="/sites/{site_id}", tags=["sites"])

NodeIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Node id")]
ChargerIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Charger id")]
NumberPath = Annotated[int, Path(ge=1, le=16, description="Connector number (OCPP connectorId)")]


def _tree(ctx: Ctx, site_id: str) -> SitePublic:
    with ctx.db.read() as s:
        return SitePublic.of(sites.get_site_tree(s, site_id))


@router.post("/nodes", status_code=201, response_model=SitePublic, responses=responses(404, 409))
def add_node(site_id: SiteIdPath, body: NodeCreate, ctx: Ctx, who: SiteManager) -> SitePublic:
    """Add a node (feeder, panel) below another node or the grid connection."""
    with ctx.db.write() as s:
        sites.add_node(s, site_id, body.spec())
        out = SitePublic.of(sites.get_site_tree(s, site_id))
    ctx.notify("node added")
    return out


@router.patch("/nodes/{node_id}", response_model=SitePublic, responses=responses(404, 409))
def update_node(
    site_id: SiteIdPath, node_id: NodeIdPath, body: NodeUpdate, ctx: Ctx, who: SiteManager
) -> SitePublic:
    """Change a node's limits in kW and/or A per phase; null removes a limit."""
    with ctx.db.write() as s:
        sites.update_node(s, site_id, node_id, body.model_dump(exclude_unset=True))
        out = SitePublic.of(sites.get_site_tree(s, site_id))
    ctx.notify("node limits changed")
    return out


@router.post("/chargers", status_code=201, response_model=SitePublic, responses=responses(404, 409))
def add_charger(site_id: SiteIdPath, body: ChargerCreate, ctx: Ctx, who: SiteManager) -> SitePublic:
    """Add a charger and its connectors."""
    if body.kind == "AC" and body.phases == 1 and body.phase is None:
        raise invalid([(("body", "phase"), "a single-phase AC charger needs phase")])
    with ctx.db.write() as s:
        sites.add_charger(s, site_id, body.spec(), priority=body.priority)
        out = SitePublic.of(sites.get_site_tree(s, site_id))
    ctx.notify("charger added")
    return out


@router.patch("/chargers/{charger_id}", response_model=SitePublic, responses=responses(404, 409))
def update_charger(
    site_id: SiteIdPath, charger_id: ChargerIdPath, body: ChargerUpdate, ctx: Ctx, who: SiteManager
) -> SitePublic:
    """Change a charger's limits, priority (weight) or number of connectors."""
    with ctx.db.write() as s:
        sites.update_charger(s, site_id, charger_id, body.model_dump(exclude_unset=True))
        out = SitePublic.of(sites.get_site_tree(s, site_id))
    ctx.notify("charger changed")
    return out


@router.patch(
    "/chargers/{charger_id}/connectors/{number}",
    response_model=ConnectorPublic,
    responses=responses(404),
)
def update_connector(
    site_id: SiteIdPath,
    charger_id: ChargerIdPath,
    number: NumberPath,
    body: ConnectorUpdate,
    ctx: Ctx,
    who: SiteManager,
) -> ConnectorPublic:
    """Set a connector's priority weight."""
    with ctx.db.write() as s:
        connector = sites.update_connector(s, site_id, charger_id, number, priority=body.priority)
        out = connector_public(site_id, charger_id, connector)
    ctx.notify("priority changed")
    return out
