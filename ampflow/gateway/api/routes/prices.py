"""``/prices``: import and export price series per site (from a utility or an aggregator)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.api.auth import Action
from ampflow.gateway.api.deps import Caller, Ctx, Limit, Offset, Viewer
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.idempotency import IdempotencyKey, create_once
from ampflow.gateway.api.schemas.common import ID_PATTERN, UtcDateTime
from ampflow.gateway.api.schemas.signals import PriceSeriesCreate, PriceSeriesPublic
from ampflow.gateway.db.base import SignalKind, SignalStatus
from ampflow.gateway.db.repo import signals

router = APIRouter(prefix="/prices", tags=["prices"])

PRICE_KINDS = (SignalKind.IMPORT_PRICE, SignalKind.EXPORT_PRICE)


@router.post("", status_code=201, response_model=PriceSeriesPublic, responses=responses(409))
def post_prices(
    body: PriceSeriesCreate, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> JSONResponse:
    """Post a price series; the next plan uses it."""
    who.require(Action.SIGNAL, body.site_id)
    problems = body.problems()
    if problems:
        raise invalid(problems)

    def create(s: DbSession) -> PriceSeriesPublic:
        sig = signals.create_signal(
            s,
            site_id=body.site_id,
            kind=body.kind(),
            intervals=body.interval_specs(),
            signal_id=body.id,
            priority=body.priority,
            currency=body.currency,
        )
        return PriceSeriesPublic.of(sig, body.site_id)

    response = create_once(ctx, who, request, key, body, create)
    ctx.notify("prices posted")
    return response


@router.get("", response_model=list[PriceSeriesPublic], responses=responses())
def list_prices(
    ctx: Ctx,
    who: Viewer,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    direction: Literal["import", "export"] | None = None,
    start: Annotated[UtcDateTime | None, Query(description="Overlapping [start, end)")] = None,
    end: Annotated[UtcDateTime | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[PriceSeriesPublic]:
    """Price series of the sites this key may see."""
    visible = who.visible(site_id)
    kinds: tuple[SignalKind, ...] = PRICE_KINDS
    if direction is not None:
        kinds = (SignalKind.IMPORT_PRICE if direction == "import" else SignalKind.EXPORT_PRICE,)
    window = None
    if start is not None or end is not None:
        window = (
            start or datetime.min.replace(tzinfo=UTC),
            end or datetime.max.replace(tzinfo=UTC),
        )
    with ctx.db.read() as s:
        rows = signals.list_signals(
            s,
            site_ids=visible,
            kinds=kinds,
            status=SignalStatus.ACTIVE,
            overlapping=window,
            limit=limit,
            offset=offset,
        )
        return [PriceSeriesPublic.of(sig, sid) for sig, sid in rows]


@router.get("/{series_id}", response_model=PriceSeriesPublic, responses=responses(404))
def get_prices(
    series_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx, who: Viewer
) -> PriceSeriesPublic:
    """One price series."""
    with ctx.db.read() as s:
        sig = signals.get_signal(s, series_id, kinds=PRICE_KINDS)
        site_id = signals.site_id_of(s, sig)
        who.require(Action.VIEW_GRID, site_id)
        return PriceSeriesPublic.of(sig, site_id)
