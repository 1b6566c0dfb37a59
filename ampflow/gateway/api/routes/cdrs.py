"""``/cdrs`` (OCPI 2.2.1 CDRs, Credit CDRs, the audit trail) and ``/invoices``.

CDRs are produced when a session ends (:mod:`ampflow.gateway.billing`) and served exactly as
issued. They are never edited: ``POST /cdrs/{cdr_id}/credit`` (admin) issues a Credit CDR, and
optionally a corrected CDR after it; every step is in the audit trail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ampflow.engine.invoices import InvoiceKey, build_invoices, invoices_csv
from ampflow.gateway import billing
from ampflow.gateway.api.auth import Action, Principal
from ampflow.gateway.api.deps import Admin, Caller, Ctx, Limit, Offset, OpsViewer
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.idempotency import IdempotencyKey
from ampflow.gateway.api.routes.billing import create_once_exact, exact, exact_text
from ampflow.gateway.api.schemas.billing import (
    AuditEntry,
    CdrDoc,
    CdrIssue,
    CreditRequest,
    CreditResult,
    InvoiceDoc,
    Rfc3339,
)
from ampflow.gateway.api.schemas.common import ID_PATTERN
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Session, Site
from ampflow.gateway.db.models_billing import CdrRow
from ampflow.gateway.db.repo import billing as repo
from ampflow.gateway.db.repo import sessions as session_repo

__all__ = ["month_window", "router"]

router = APIRouter(tags=["cdrs"])

CdrIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:*-]{0,38}$", description="CDR id")
]
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
Month = Annotated[
    str | None,
    Query(pattern=MONTH_PATTERN, description="YYYY-MM (default: this month, in time_zone)"),
]
TimeZone = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="IANA zone of the calendar month (default: the site's, else UTC)",
    ),
]


def _actor(who: Principal) -> str:
    return f"key:{who.key_id}"


def _site_of(s: DbSession, row: CdrRow) -> str:
    return repo.site_ids(s, [row.site_pk])[row.site_pk]


def _cdr_for(ctx: Ctx, who: Principal, cdr_id: str) -> CdrRow:
    who.require(Action.VIEW_OPS)
    with ctx.db.read() as s:
        row = repo.get_cdr(s, cdr_id)
        who.require(Action.VIEW_OPS, _site_of(s, row))
    return row


@router.get("/cdrs", response_model=list[CdrDoc], responses=responses())
def list_cdrs(
    ctx: Ctx,
    who: OpsViewer,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    session_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    token_uid: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    contract_id: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    credit: Annotated[bool | None, Query(description="Only Credit CDRs, or none")] = None,
    since: Annotated[Rfc3339 | None, Query(description="Issued at or after")] = None,
    until: Annotated[Rfc3339 | None, Query(description="Issued before")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    """CDRs and Credit CDRs of the sites this key may see, newest first, as issued."""
    visible = who.visible(site_id)
    with ctx.db.read() as s:
        session_pk = None
        if session_id is not None:
            session_pk = s.scalar(select(Session.pk).where(Session.id == session_id))
            if session_pk is None:
                return exact_text("[]")
        where = repo.CdrFilter(
            site_pks=repo.site_pks(s, visible),
            session_pk=session_pk,
            token_uid=token_uid,
            contract_id=contract_id,
            issued_from=since,
            issued_before=until,
            credit=credit,
        )
        rows = repo.list_cdrs(s, where, limit=limit, offset=offset)
    return exact_text("[" + ", ".join(r.body for r in rows) + "]")


@router.get("/cdrs/{cdr_id}", response_model=CdrDoc, responses=responses(404))
def get_cdr(cdr_id: CdrIdPath, ctx: Ctx, who: Caller) -> Response:
    """A CDR (or Credit CDR) as issued: OCPI 2.2.1 JSON with exact decimals."""
    return exact_text(_cdr_for(ctx, who, cdr_id).body)


@router.post("/cdrs", status_code=201, response_model=CdrDoc, responses=responses(409))
def issue_cdr(
    body: CdrIssue, ctx: Ctx, who: Caller, request: Request, key: IdempotencyKey = None
) -> Response:
    """Issue the CDR of an ended session that has none standing: one that ended while its site
    had no tariff, or whose CDR was credited (a session's CDRs are otherwise issued when it
    ends). 409 when it has not ended, already has a CDR, or no tariff applies."""
    who.require(Action.MANAGE)
    with ctx.db.read() as s:
        try:
            row = session_repo.get_session(s, body.session_id)
        except NotFoundError as exc:
            raise ConflictError(exc.message, loc=("body", "session_id")) from None
    who.require(Action.MANAGE, row.site_id)

    def create(s: DbSession) -> str:
        ses = s.get_one(Session, row.session.pk)
        return billing.issue_cdr(s, ses, actor=_actor(who), tariff_id=body.tariff_id).body

    return create_once_exact(ctx, who, request, key, body.model_dump(mode="json"), create)


@router.post(
    "/cdrs/{cdr_id}/credit",
    status_code=201,
    response_model=CreditResult,
    responses=responses(404, 409),
)
def credit_cdr(
    cdr_id: CdrIdPath,
    body: CreditRequest,
    ctx: Ctx,
    who: Admin,
    request: Request,
    key: IdempotencyKey = None,
) -> Response:
    """Correct a CDR (admin): a Credit CDR cancels it (it is never edited), and with
    ``reissue`` the session is priced again into a new CDR (with ``tariff_id`` if given).
    409 when the CDR is a Credit CDR or was credited already."""

    def create(s: DbSession) -> str:
        done = billing.credit(
            s,
            cdr_id,
            actor=_actor(who),
            reason=body.reason,
            reissue=body.reissue,
            tariff_id=body.tariff_id,
        )
        again = "null" if done.reissued is None else done.reissued.body
        return f'{{"credit": {done.credit.body}, "reissued": {again}}}'

    return create_once_exact(ctx, who, request, key, body.model_dump(mode="json"), create)


@router.get("/cdrs/{cdr_id}/audit", response_model=list[AuditEntry], responses=responses(404))
def cdr_audit(cdr_id: CdrIdPath, ctx: Ctx, who: Caller) -> Response:
    """The audit trail of the CDR's session: every CDR issued for it and every credit, with
    who did it, when and why; oldest first."""
    row = _cdr_for(ctx, who, cdr_id)
    with ctx.db.read() as s:
        ids = [r.id for r in repo.list_cdrs(s, repo.CdrFilter(session_pk=row.session_pk))]
        entries = repo.audit_trail(s, ids or [cdr_id])
    return exact_text("[" + ", ".join(e.body for e in entries) + "]")


# --- invoices -------------------------------------------------------------------------------------


def month_window(month: str | None, time_zone: str) -> tuple[int, int, datetime, datetime]:
    """``(year, month, start, end)`` of a ``YYYY-MM`` month (default: now) in ``time_zone``,
    with ``start`` and ``end`` in UTC."""
    tz = ZoneInfo(time_zone)
    if month is None:
        now = datetime.now(tz)
        year, mon = now.year, now.month
    else:
        year, mon = int(month[:4]), int(month[5:7])
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=tz)
    return year, mon, start.astimezone(UTC), end.astimezone(UTC)


def zone_for(s: DbSession, time_zone: str | None, site_id: str | None) -> str:
    """The zone of a calendar month: ``time_zone``, else the site's, else UTC (422 if unknown)."""
    if time_zone is None:
        if site_id is None:
            return "UTC"
        tz = s.scalar(select(Site.timezone).where(Site.id == site_id))
        return tz or "UTC"
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(
            [
                (
                    ("query", "time_zone"),
                    f"expected an IANA time zone such as 'Europe/Amsterdam', got {time_zone!r}",
                )
            ]
        ) from None
    return time_zone


def _wants_csv(fmt: str | None, accept: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    best: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[media.strip().lower()] = q
    return best.get("text/csv", 0.0) > max(best.get("application/json", 0.0), 0.0)


@router.get(
    "/invoices",
    response_model=list[InvoiceDoc],
    responses={
        **responses(),
        200: {
            "description": "Invoices as JSON, or their lines as CSV",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
    tags=["invoices"],
)
def list_invoices(
    ctx: Ctx,
    who: OpsViewer,
    month: Month = None,
    key: InvoiceKey = InvoiceKey.TOKEN,
    holder: Annotated[str | None, Query(min_length=1, max_length=36)] = None,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    time_zone: TimeZone = None,
    month_of: Annotated[
        Literal["issued", "session_end"],
        Query(description="A CDR's month: when it was issued, or when its session ended"),
    ] = "issued",
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Invoices per token (``key=token``) or driver contract (``key=contract``) for one month:
    one line per CDR of the sites this key may see, credits included as negative lines.
    JSON, or CSV with ``format=csv`` or ``Accept: text/csv``."""
    visible = who.visible(site_id)
    with ctx.db.read() as s:
        tz = zone_for(s, time_zone, site_id)
        year, mon, start, end = month_window(month, tz)
        issued = month_of == "issued"
        where = repo.CdrFilter(
            site_pks=repo.site_pks(s, visible),
            token_uid=holder if key is InvoiceKey.TOKEN else None,
            contract_id=holder if key is InvoiceKey.CONTRACT else None,
            issued_from=start if issued else None,
            issued_before=end if issued else None,
            ended_from=None if issued else start,
            ended_before=None if issued else end,
        )
        rows = repo.list_cdrs(s, where, limit=1_000_000, newest_first=False)
    cdrs = [billing.loads(r.body) for r in rows]
    invoices = [
        inv
        for inv in build_invoices(cdrs, time_zone=tz, key=key, month_of=month_of)
        if (inv.year, inv.month) == (year, mon)
    ]
    if _wants_csv(format, accept):
        return Response(invoices_csv(invoices), media_type="text/csv")
    return exact([inv.to_dict() for inv in invoices])
