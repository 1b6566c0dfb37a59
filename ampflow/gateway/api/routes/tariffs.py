"""``/sites/{site_id}/tariffs``: OCPI 2.2.1 Tariff objects assigned to a site.

A tariff is accepted as OCPI 2.2.1 Tariff JSON and returned exactly as it was sent (numbers
included). A bad tariff is a 422 naming the JSON path, e.g. ``["body", "elements", 0,
"price_components", 1, "vat"]``. Replacing (PUT) or deleting a tariff never reprices a session
that already started: sessions are priced with the tariffs current at their start.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session as DbSession

from ampflow.engine.cdr import ocpi_json
from ampflow.engine.tariffs import Tariff, TariffError, parse_tariff
from ampflow.gateway.api.deps import Ctx, SiteIdPath, SiteManager, SiteOpsViewer
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.idempotency import IdempotencyKey
from ampflow.gateway.api.routes.billing import JsonBody, create_once_exact, exact_text
from ampflow.gateway.api.schemas.billing import TARIFF_BODY, TariffDoc
from ampflow.gateway.db.repo import billing as repo
from ampflow.gateway.db.repo import sites

__all__ = ["router", "tariff_loc"]

router = APIRouter(prefix="/sites/{site_id}/tariffs", tags=["tariffs"])

TariffIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:*-]{0,35}$", description="OCPI tariff id")
]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:*-]{0,35}$")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def tariff_loc(path: str) -> tuple[str | int, ...]:
    """An engine path (``elements[0].price_components[1].vat``) as an error ``loc``.

    Examples
    --------
    >>> tariff_loc("elements[0].price_components[1].vat")
    ('body', 'elements', 0, 'price_components', 1, 'vat')
    """
    parts: list[str | int] = ["body"]
    for name, index in _PART.findall(path):
        if name and name != "tariff":
            parts.append(name)
        elif index:
            parts.append(int(index))
    return tuple(parts)


def _parse(data: Any, *, tariff_id: str | None = None) -> Tariff:
    try:
        tariff = parse_tariff(data)
    except TariffError as exc:
        raise invalid([(tariff_loc(exc.path), str(exc))]) from None
    if not _ID.match(tariff.id):
        raise invalid(
            [(("body", "id"), f"expected letters, digits, '._:*-' (no spaces), got {tariff.id!r}")]
        )
    if tariff_id is not None and tariff.id != tariff_id:
        raise invalid(
            [(("body", "id"), f"expected the id in the path, {tariff_id!r}, got {tariff.id!r}")]
        )
    return tariff


def _store(
    s: DbSession, site_id: str, tariff: Tariff, text: str, actor: str, *, replace: bool
) -> bool:
    site = sites.get_site(s, site_id)
    _, replaced = repo.add_tariff(
        s,
        site,
        tariff_id=tariff.id,
        country_code=tariff.country_code,
        party_id=tariff.party_id,
        currency=tariff.currency,
        start_date_time=tariff.start_date_time,
        end_date_time=tariff.end_date_time,
        body=text,
        actor=actor,
        replace=replace,
    )
    return replaced


@router.get("", response_model=list[TariffDoc], responses=responses(404))
def list_tariffs(site_id: SiteIdPath, ctx: Ctx, who: SiteOpsViewer) -> Response:
    """The site's current tariffs, in the order a session's tariff is chosen: the first whose
    validity window contains the session start (and whose type fits) prices it."""
    with ctx.db.read() as s:
        rows = repo.list_tariffs(s, sites.get_site(s, site_id))
    return exact_text("[" + ", ".join(r.body for r in rows) + "]")


@router.post(
    "",
    status_code=201,
    response_model=TariffDoc,
    responses=responses(404, 409),
    openapi_extra={"requestBody": TARIFF_BODY},
)
def create_tariff(
    site_id: SiteIdPath,
    ctx: Ctx,
    who: SiteManager,
    data: JsonBody,
    request: Request,
    key: IdempotencyKey = None,
) -> Response:
    """Assign a new tariff (OCPI 2.2.1 Tariff JSON) to the site; 409 if its id is taken."""
    tariff = _parse(data)
    text = ocpi_json(data)

    def create(s: DbSession) -> str:
        _store(s, site_id, tariff, text, who.key_id, replace=False)
        return text

    return create_once_exact(ctx, who, request, key, data, create)


@router.get("/{tariff_id}", response_model=TariffDoc, responses=responses(404))
def get_tariff(
    site_id: SiteIdPath, tariff_id: TariffIdPath, ctx: Ctx, who: SiteOpsViewer
) -> Response:
    """A tariff, exactly as it was stored."""
    with ctx.db.read() as s:
        row = repo.get_tariff(s, sites.get_site(s, site_id), tariff_id)
    return exact_text(row.body)


@router.put(
    "/{tariff_id}",
    response_model=TariffDoc,
    responses={**responses(404), 201: {"model": TariffDoc, "description": "Created"}},
    openapi_extra={"requestBody": TARIFF_BODY},
)
def put_tariff(
    site_id: SiteIdPath, tariff_id: TariffIdPath, ctx: Ctx, who: SiteManager, data: JsonBody
) -> Response:
    """Create or replace a tariff (201 when created). A replacement prices the sessions that
    start from now on; earlier sessions keep the version they started with."""
    tariff = _parse(data, tariff_id=tariff_id)
    text = ocpi_json(data)
    with ctx.db.write() as s:
        replaced = _store(s, site_id, tariff, text, who.key_id, replace=True)
    return exact_text(text, status_code=200 if replaced else 201)


@router.delete("/{tariff_id}", status_code=204, responses=responses(404))
def delete_tariff(
    site_id: SiteIdPath, tariff_id: TariffIdPath, ctx: Ctx, who: SiteManager
) -> Response:
    """Retire a tariff: sessions that start from now on no longer use it (sessions that
    started before keep it, and their CDRs carry it)."""
    with ctx.db.write() as s:
        repo.retire_tariff(s, sites.get_site(s, site_id), tariff_id)
    return Response(status_code=204)
