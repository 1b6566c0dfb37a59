"""``/sessions``: live and past sessions, targets, remote start and stop, meter series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway import billing
from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, Limit, Offset, OpsViewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.idempotency import IdempotencyKey, create_once
from ampflow.gateway.api.schemas.common import ID_PATTERN, UtcDateTime
from ampflow.gateway.api.schemas.sessions import (
    MeasurandName,
    MeterPoint,
    MeterSeries,
    SessionPublic,
    SessionStart,
    SessionUpdate,
)
from ampflow.gateway.db.base import Phase, SessionStatus
from ampflow.gateway.db.models import ConnectorControl, SiteControl
from ampflow.gateway.db.repo import meter, sessions
from ampflow.gateway.db.repo.sessions import SessionRow

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Session id")]
_UNITS = {
    MeasurandName.ENERGY_IMPORT: "Wh",
    MeasurandName.ENERGY_EXPORT: "Wh",
    MeasurandName.POWER_IMPORT: "W",
    MeasurandName.POWER_EXPORT: "W",
    MeasurandName.POWER_OFFERED: "W",
    MeasurandName.CURRENT_IMPORT: "A",
    MeasurandName.CURRENT_EXPORT: "A",
    MeasurandName.CURRENT_OFFERED: "A",
    MeasurandName.VOLTAGE: "V",
    MeasurandName.SOC: "Percent",
    MeasurandName.TEMPERATURE: "Celsius",
    MeasurandName.FREQUENCY: "Hz",
}


def _public(s: DbSession, row: SessionRow) -> SessionPublic:
    ses = row.session
    return SessionPublic.of(
        ses,
        row.site_id,
        row.connector_id,
        s.get(ConnectorControl, ses.connector_pk),
        s.get(SiteControl, ses.site_pk),
    )


@router.get("", response_model=list[SessionPublic], responses=responses())
def list_sessions(
    ctx: Ctx,
    who: OpsViewer,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: Annotated[list[SessionStatus] | None, Query()] = None,
    since: Annotated[UtcDateTime | None, Query(description="Started at or after")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SessionPublic]:
    """Live and past sessions, newest first."""
    visible = who.visible(site_id)
    with ctx.db.read() as s:
        rows = sessions.list_sessions(
            s, site_ids=visible, statuses=status or (), since=since, limit=limit, offset=offset
        )
        return [_public(s, r) for r in rows]


def _session_for(ctx: Ctx, who: Caller, session_id: str, action: Action) -> None:
    who.require(action)
    with ctx.db.read() as s:
        row = sessions.get_session(s, session_id)
    who.require(action, row.site_id)


@router.get("/{session_id}", response_model=SessionPublic, responses=responses(404))
def get_session(session_id: SessionIdPath, ctx: Ctx, who: Caller) -> SessionPublic:
    """A session: energy, power, current limit, targets and planned schedule."""
    _session_for(ctx, who, session_id, Action.VIEW_OPS)
    with ctx.db.read() as s:
        return _public(s, sessions.get_session(s, session_id))


@router.post("", status_code=201, response_model=SessionPublic, responses=responses(409))
def start_session(
    body: SessionStart, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> JSONResponse:
    """Start a session on a connector: through its station when one is connected
    (status ``requested`` until it starts), else recorded directly as ``active``."""
    site_id = body.connector_id.split("/", 1)[0]
    who.require(Action.MANAGE, site_id)
    asked = ctx.commands.handles(body.connector_id)
    status = SessionStatus.REQUESTED if asked else SessionStatus.ACTIVE
    targets = body.model_dump(exclude={"connector_id", "id_token"}, exclude_unset=True)
    started: list[str] = []

    def create(s: DbSession) -> SessionPublic:
        row = sessions.start_session(
            s,
            connector_id=body.connector_id,
            id_token=body.id_token,
            status=status,
            targets=targets,
        )
        started.append(row.session.id)
        return _public(s, row)

    response = create_once(ctx, who, request, key, body, create)
    if started:
        if asked:
            ctx.commands.remote_start(started[0], body.connector_id, id_token=body.id_token)
        ctx.notify("session started")
    return response


@router.patch("/{session_id}", response_model=SessionPublic, responses=responses(404, 409))
def update_session(
    session_id: SessionIdPath, body: SessionUpdate, ctx: Ctx, who: Caller
) -> SessionPublic:
    """Set a departure time, an energy or SoC target, a priority or boost; re-plans at once."""
    _session_for(ctx, who, session_id, Action.MANAGE)
    with ctx.db.write() as s:
        row = sessions.update_session(s, session_id, body.model_dump(exclude_unset=True))
        out = _public(s, row)
    ctx.notify("session targets changed")
    return out


@router.post("/{session_id}/stop", response_model=SessionPublic, responses=responses(404))
def stop_session(session_id: SessionIdPath, ctx: Ctx, who: Caller) -> SessionPublic:
    """Stop a session: through its station when connected (status ``stopping``), else ended
    at once. Stopping an ended session is harmless."""
    _session_for(ctx, who, session_id, Action.MANAGE)
    with ctx.db.read() as s:
        connector_id = sessions.get_session(s, session_id).connector_id
    asked = ctx.commands.handles(connector_id)
    status = SessionStatus.STOPPING if asked else SessionStatus.COMPLETED
    with ctx.db.write() as s:
        row = sessions.stop_session(s, session_id, status=status)
        billing.on_session_end(s, row.session)  # its CDR (and V2G statement), if it ended
        out = _public(s, row)
    if asked:
        ctx.commands.remote_stop(session_id, connector_id)
    ctx.notify("session stopped")
    return out


@router.get("/{session_id}/meter-values", response_model=MeterSeries, responses=responses(404))
def session_meter_values(
    session_id: SessionIdPath,
    ctx: Ctx,
    who: Caller,
    measurand: MeasurandName = MeasurandName.ENERGY_IMPORT,
    phase: Annotated[Phase, Query(description="0 total, 1-3 L1-L3, 4 N")] = Phase.NONE,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> MeterSeries:
    """The session's meter values of one measurand, in its canonical unit, oldest first."""
    _session_for(ctx, who, session_id, Action.VIEW_OPS)
    with ctx.db.read() as s:
        row = sessions.get_session(s, session_id)
        ses = row.session
        points = meter.read_meter_values(
            s,
            ses.connector_pk,
            measurand.code,
            start=ses.started_at,
            end=ses.ended_at,
            phase=phase,
            limit=limit,
        )
    return MeterSeries(
        connector_id=row.connector_id,
        measurand=measurand,
        unit=_UNITS[measurand],
        points=[MeterPoint(timestamp=t, value=v) for t, v in points],
    )
