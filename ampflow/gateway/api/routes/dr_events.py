"""``/dr-events``: a utility posts, lists and cancels demand-response events for its sites."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, Limit, Offset, Viewer
from ampflow.gateway.api.errors import responses
from ampflow.gateway.api.idempotency import IdempotencyKey, create_once
from ampflow.gateway.api.schemas.common import ID_PATTERN, UtcDateTime
from ampflow.gateway.api.schemas.signals import DrEventCreate, DrEventPublic
from ampflow.gateway.db.base import SignalKind, SignalStatus
from ampflow.gateway.db.repo import signals

router = APIRouter(prefix="/dr-events", tags=["dr-events"])

DR_KINDS = (SignalKind.IMPORT_CAP_KW, SignalKind.SIMPLE_LEVEL, SignalKind.EXPORT_CAP_KW)
EventIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="DR event id")]


@router.post("", status_code=201, response_model=DrEventPublic, responses=responses(409))
def post_event(
    body: DrEventCreate, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> JSONResponse:
    """Post a DR event: a cap in kW or a SIMPLE level over an interval. Applied at once."""
    who.require(Action.SIGNAL, body.site_id)
    kind, _ = body.kind_and_value()

    def create(s: DbSession) -> DrEventPublic:
        sig = signals.create_signal(
            s,
            site_id=body.site_id,
            kind=kind,
            intervals=body.intervals(),
            signal_id=body.id,
            priority=body.priority,
            program=body.program,
        )
        return DrEventPublic.of(sig, body.site_id)

    response = create_once(ctx, who, request, key, body, create)
    ctx.notify("DR event posted")
    return response


@router.get("", response_model=list[DrEventPublic], responses=responses())
def list_events(
    ctx: Ctx,
    who: Viewer,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: SignalStatus | None = None,
    start: Annotated[UtcDateTime | None, Query(description="Overlapping [start, end)")] = None,
    end: Annotated[UtcDateTime | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DrEventPublic]:
    """DR events of the sites this key may see, by start time; OpenADR events included."""
    visible = who.visible(site_id)
    window = None
    if start is not None or end is not None:
        lo = start or datetime.min.replace(tzinfo=UTC)
        hi = end or datetime.max.replace(tzinfo=UTC)
        window = (lo, hi)
    with ctx.db.read() as s:
        rows = signals.list_signals(
            s,
            site_ids=visible,
            kinds=DR_KINDS,
            status=status,
            overlapping=window,
            limit=limit,
            offset=offset,
        )
        return [DrEventPublic.of(sig, sid) for sig, sid in rows]


def _event(ctx: Ctx, who: Caller, event_id: str, action: Action) -> tuple[str, str]:
    with ctx.db.read() as s:
        sig = signals.get_signal(s, event_id, kinds=DR_KINDS)
        site_id = signals.site_id_of(s, sig)
    who.require(action, site_id)
    return sig.id, site_id


@router.get("/{event_id}", response_model=DrEventPublic, responses=responses(404))
def get_event(event_id: EventIdPath, ctx: Ctx, who: Caller) -> DrEventPublic:
    """One DR event."""
    who.require(Action.VIEW_GRID)
    _, site_id = _event(ctx, who, event_id, Action.VIEW_GRID)
    with ctx.db.read() as s:
        return DrEventPublic.of(signals.get_signal(s, event_id, kinds=DR_KINDS), site_id)


@router.post("/{event_id}/cancel", response_model=DrEventPublic, responses=responses(404))
def cancel_event(event_id: EventIdPath, ctx: Ctx, who: Caller) -> DrEventPublic:
    """Cancel a DR event; its cap is lifted at once. Cancelling twice is harmless."""
    who.require(Action.SIGNAL)
    _, site_id = _event(ctx, who, event_id, Action.SIGNAL)
    with ctx.db.write() as s:
        out = DrEventPublic.of(signals.cancel_signal(s, event_id, kinds=DR_KINDS), site_id)
    ctx.notify("DR event cancelled")
    return out
