"""``/sites/{site_id}/billing`` settings and ``/sites/{site_id}/price-preview``; the helpers the
billing routes share to read and write exact JSON.

Money never goes through ``float`` here: request bodies that carry OCPI documents are parsed with
``Decimal`` numbers, and responses are written by :func:`ampflow.engine.cdr.ocpi_json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session as DbSession

from ampflow.engine.cdr import ocpi_datetime, ocpi_json
from ampflow.engine.periods import SessionUsage
from ampflow.engine.pricing import PricedPeriod, PricedSession, price_session
from ampflow.engine.tariffs import Price, Tariff, parse_tariff, select_tariff
from ampflow.gateway.api.auth import Principal
from ampflow.gateway.api.context import AppContext
from ampflow.gateway.api.deps import Ctx, SiteIdPath, SiteManager, SiteOpsViewer
from ampflow.gateway.api.errors import invalid, responses
from ampflow.gateway.api.idempotency import run_once
from ampflow.gateway.api.schemas.billing import (
    BillingSettings,
    BillingSettingsUpdate,
    PricePreviewDoc,
    PricePreviewRequest,
)
from ampflow.gateway.billing import BillingOptions, loads
from ampflow.gateway.db.base import utcnow
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import Site
from ampflow.gateway.db.models_billing import SiteBilling
from ampflow.gateway.db.repo import billing as repo
from ampflow.gateway.db.repo import sessions as session_repo
from ampflow.gateway.db.repo import sites

__all__ = ["JsonBody", "create_once_exact", "exact", "exact_text", "router"]

router = APIRouter(prefix="/sites/{site_id}", tags=["billing"])

MAX_BODY_BYTES = 1_000_000


def exact(obj: Any, *, status_code: int = 200) -> Response:
    """A JSON response with every ``Decimal`` written exactly."""
    return exact_text(ocpi_json(obj), status_code=status_code)


def exact_text(text: str, *, status_code: int = 200) -> Response:
    """A JSON response from JSON text."""
    return Response(text, status_code=status_code, media_type="application/json")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise invalid([(("body",), f"expected at most {MAX_BODY_BYTES} bytes, got {len(raw)}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise invalid(
            [(("body",), f"expected JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except RecursionError:
        raise invalid([(("body",), "expected JSON nested at most a few hundred levels")]) from None


JsonBody = Annotated[Any, Depends(_json_body)]
"""The request body as JSON with exact ``Decimal`` numbers (documented per route)."""


def create_once_exact(
    ctx: AppContext,
    who: Principal,
    request: Request,
    key: str | None,
    fingerprint_of: Any,
    create: Callable[[DbSession], str],
    *,
    status_code: int = 201,
) -> Response:
    """Run ``create`` (which returns JSON text) in one write transaction, at most once per
    ``Idempotency-Key``, as :func:`ampflow.gateway.api.idempotency.create_once` does for
    pydantic bodies; the stored response is the exact text."""
    fingerprint = hashlib.sha256(ocpi_json(fingerprint_of).encode()).hexdigest()
    return run_once(
        ctx,
        who,
        request,
        key,
        fingerprint,
        create,
        lambda text, code: exact_text(str(text), status_code=code),
        status_code=status_code,
    )


# --- settings -------------------------------------------------------------------------------------


def _settings(site: Site, row: SiteBilling) -> BillingSettings:
    return BillingSettings(
        site_id=site.id,
        idle_grace_s=row.idle_grace_s,
        idle_power_kw=row.idle_power_kw,
        money_places=row.money_places,
        v2g_interval_s=row.v2g_interval_s,
        default_export_price=row.default_export_price,
        degradation_per_kwh=row.degradation_per_kwh,
        driver_share=row.driver_share,
        missed_target_per_kwh=row.missed_target_per_kwh,
        dr_payment_per_kwh=row.dr_payment_per_kwh,
        capacity_payment_per_kw=row.capacity_payment_per_kw,
        dr_excludes_export=row.dr_excludes_export,
    )


@router.get("/billing", response_model=BillingSettings, responses=responses(404))
def get_billing(site_id: SiteIdPath, ctx: Ctx, who: SiteOpsViewer) -> BillingSettings:
    """The site's billing settings: idle grace, money rounding, and how V2G is settled."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        return _settings(site, repo.billing_settings(s, site.pk))


@router.patch("/billing", response_model=BillingSettings, responses=responses(404))
def update_billing(
    site_id: SiteIdPath, body: BillingSettingsUpdate, ctx: Ctx, who: SiteManager
) -> BillingSettings:
    """Change billing settings; they apply to sessions that end from now on."""
    changes = {
        k: (format(v, "f") if isinstance(v, Decimal) else v)
        for k, v in body.model_dump(exclude_unset=True).items()
    }
    nulls = [k for k, v in changes.items() if v is None]
    if nulls:
        raise invalid([(("body", k), "expected a value, got null") for k in nulls])
    with ctx.db.write() as s:
        site = sites.get_site(s, site_id)
        return _settings(site, repo.update_billing(s, site, changes))


# --- price preview --------------------------------------------------------------------------------


def _money(price: Price) -> dict[str, Any]:
    out: dict[str, Any] = {"excl_vat": price.excl_vat}
    if price.incl_vat is not None:
        out["incl_vat"] = price.incl_vat
    return out


def _rounded(price: Price, places: int) -> Price:
    q = Decimal(1).scaleb(-places)
    incl = None if price.incl_vat is None else price.incl_vat.quantize(q, ROUND_HALF_UP)
    return Price(price.excl_vat.quantize(q, ROUND_HALF_UP), incl)


def _period(p: PricedPeriod) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "start": ocpi_datetime(p.start),
        "end": ocpi_datetime(p.end),
        "energy_kwh": p.energy_kwh,
        "duration_s": p.duration_s,
        "cost": _money(p.cost),
        "lines": [
            {
                "dimension": ln.dimension.value,
                "element": ln.element,
                "price": ln.component.price,
                "vat": ln.component.vat,
                "step_size": ln.component.step_size,
                "volume": ln.volume,
                "billed_volume": ln.billed_volume,
                "cost": _money(ln.cost),
            }
            for ln in p.lines
        ],
    }


def breakdown(priced: PricedSession, *, money_places: int) -> dict[str, Any]:
    """A priced session as the preview's JSON (numbers are ``Decimal``)."""
    hour = Decimal(3600)
    return {
        "tariff_id": priced.tariff.id,
        "currency": priced.tariff.currency,
        "time_zone": priced.time_zone,
        "start": ocpi_datetime(priced.start),
        "stop": ocpi_datetime(priced.stop),
        "energy_kwh": priced.energy_kwh,
        "time_h": priced.time_s / hour,
        "parking_time_h": priced.parking_s / hour,
        "cost_before_limits": _money(priced.cost_before_limits),
        "total_cost_exact": _money(priced.total_cost),
        "total_cost": _money(_rounded(priced.total_cost, money_places)),
        "limits_applied": list(priced.limits_applied),
        "periods": [_period(p) for p in priced.periods],
    }


def _preview_tariff(s: DbSession, site: Site, tariff_id: str | None, start: datetime) -> Tariff:
    if tariff_id is not None:
        try:
            row = repo.get_tariff(s, site, tariff_id)
        except NotFoundError as exc:
            raise ConflictError(exc.message, loc=("body", "tariff_id")) from None
        return parse_tariff(loads(row.body))
    rows = repo.tariffs_at(s, site.pk, start) if start <= utcnow() else repo.list_tariffs(s, site)
    chosen = select_tariff([parse_tariff(loads(r.body)) for r in rows], start)
    if chosen is None:
        raise ConflictError(
            f"site {site.id!r} has no tariff valid at {start.isoformat()}", loc=("body", "start")
        )
    return chosen


def _planned(s: DbSession, site: Site, body: PricePreviewRequest) -> SessionUsage:
    start, stop, energy = body.start, body.stop, body.energy_kwh
    if body.session_id is not None:
        row = session_repo.get_session(s, body.session_id)
        if row.site_id != site.id:
            raise ConflictError(
                f"session {body.session_id!r} is not at site {site.id!r}",
                loc=("body", "session_id"),
            )
        ses = row.session
        start = start or ses.started_at
        stop = stop or ses.departure_at or ses.ended_at
        if energy is None and ses.energy_target_kwh is not None:
            energy = Decimal(repr(ses.energy_target_kwh))
    if start is None or stop is None or energy is None:
        given = (("start", start), ("stop", stop), ("energy_kwh", energy))
        raise invalid(
            [
                (("body", n), "expected a value (or a session_id that has one)")
                for n, v in given
                if v is None
            ]
        )
    if stop <= start:
        raise invalid([(("body", "stop"), f"expected a time after start {start.isoformat()}")])
    end = body.charging_end
    if end is not None and not start <= end <= stop:
        raise invalid([(("body", "charging_end"), "expected a time between start and stop")])
    if energy > 0 and end == start:
        raise invalid([(("body", "energy_kwh"), "expected 0 when charging ends at the start")])
    return SessionUsage.planned(start, stop, energy, charging_end=end)


@router.post("/price-preview", response_model=PricePreviewDoc, responses=responses(404, 409))
def price_preview(
    site_id: SiteIdPath, body: PricePreviewRequest, ctx: Ctx, who: SiteOpsViewer
) -> Response:
    """What would this session cost: ``energy_kwh`` delivered at constant power from ``start``
    (until ``charging_end``, default ``stop``), parked until ``stop``, priced with the site's
    tariff valid at ``start`` (or ``tariff_id``). Nothing is stored."""
    with ctx.db.read() as s:
        site = sites.get_site(s, site_id)
        usage = _planned(s, site, body)
        tariff = _preview_tariff(s, site, body.tariff_id, usage.start)
        options = BillingOptions.for_site(s, site)
    priced = price_session(
        tariff,
        usage,
        time_zone=site.timezone,
        idle_grace_s=options.idle_grace_s,
        idle_power_kw=options.idle_power_kw,
    )
    return exact(breakdown(priced, money_places=options.money_places))
