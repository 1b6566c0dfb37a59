"""``/stations``: register stations with credentials; read status, connectors, firmware, contact."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, OpsViewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.idempotency import IdempotencyKey, create_once
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.api.schemas.stations import (
    STATION_ID_PATTERN,
    StationCreate,
    StationPublic,
    StationUpdate,
)
from ampflow.gateway.db.repo import stations
from ampflow.gateway.db.repo.stations import StationRow

router = APIRouter(prefix="/stations", tags=["stations"])

StationIdPath = Annotated[str, Path(pattern=STATION_ID_PATTERN, description="OCPP identity")]


def _public(s: DbSession, row: StationRow) -> StationPublic:
    return StationPublic.of(
        row.station, row.site_id, row.charger_id, stations.station_connectors(s, row.station)
    )


@router.post("", status_code=201, response_model=StationPublic, responses=responses(409))
def register_station(
    body: StationCreate, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> JSONResponse:
    """Register a station; its password is stored hashed and never returned."""
    who.require(Action.MANAGE, body.site_id)

    def create(s: DbSession) -> StationPublic:
        row = stations.register_station(
            s,
            station_id=body.id,
            site_id=body.site_id,
            charger_id=body.charger_id,
            password=body.password,
        )
        return _public(s, row)

    return create_once(ctx, who, request, key, body, create)


@router.get("", response_model=list[StationPublic], responses=responses())
def list_stations(
    ctx: Ctx, who: OpsViewer, site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
) -> list[StationPublic]:
    """Stations of the sites this key may see."""
    with ctx.db.read() as s:
        return [_public(s, r) for r in stations.list_stations(s, site_ids=who.visible(site_id))]


def _station(ctx: Ctx, who: Caller, station_id: str, action: Action) -> None:
    who.require(action)
    with ctx.db.read() as s:
        row = stations.get_station(s, station_id)
    who.require(action, row.site_id)


@router.get("/{station_id}", response_model=StationPublic, responses=responses(404))
def get_station(station_id: StationIdPath, ctx: Ctx, who: Caller) -> StationPublic:
    """A station: status, connectors, firmware, capabilities and last contact."""
    _station(ctx, who, station_id, Action.VIEW_OPS)
    with ctx.db.read() as s:
        return _public(s, stations.get_station(s, station_id))


@router.patch("/{station_id}", response_model=StationPublic, responses=responses(404, 409))
def update_station(
    station_id: StationIdPath, body: StationUpdate, ctx: Ctx, who: Caller
) -> StationPublic:
    """Rotate the password, bind to another charger of the site, or record quirks."""
    _station(ctx, who, station_id, Action.MANAGE)
    with ctx.db.write() as s:
        return _public(
            s, stations.update_station(s, station_id, body.model_dump(exclude_unset=True))
        )
