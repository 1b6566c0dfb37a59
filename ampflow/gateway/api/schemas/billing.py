"""Billing: tariffs (OCPI 2.2.1 JSON), billing settings, CDRs, credits, invoices, V2G statements
and price previews.

OCPI documents and money are served as exact JSON (numbers written as decimals, never through
``float``), so most response models here only document the shape: they are the OpenAPI schema of
a body built by :func:`ampflow.engine.cdr.ocpi_json`. Extra fields are allowed where OCPI has
more than is listed.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints

from ampflow.gateway.api.schemas.common import (
    ID_PATTERN,
    InputModel,
    OutputModel,
    UtcDateTime,
    keep,
)

__all__ = [
    "TARIFF_BODY",
    "AuditEntry",
    "BillingSettings",
    "BillingSettingsUpdate",
    "CdrDoc",
    "CdrIssue",
    "CreditRequest",
    "CreditResult",
    "DriverStatementDoc",
    "InvoiceDoc",
    "OcpiId",
    "PricePreviewDoc",
    "PricePreviewRequest",
    "Rfc3339",
    "SessionStatementDoc",
    "SiteStatementDoc",
    "TariffDoc",
]

_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _rfc3339_only(value: Any) -> Any:
    """Refuse what pydantic would otherwise read as a date-time (a number of seconds)."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError(
            "expected an RFC 3339 timestamp with an offset, such as 2026-03-02T08:00:00+01:00"
        )
    return value


Rfc3339 = Annotated[UtcDateTime, BeforeValidator(_rfc3339_only)]
"""An RFC 3339 timestamp with an offset (never a number of seconds); UTC on output."""

OcpiId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:*-]{0,35}$")]
"""A tariff or CDR id: up to 36 characters (39 for a Credit CDR)."""
CdrId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:*-]{0,38}$")]
Amount = Annotated[Decimal, Field(ge=0, le=10_000, allow_inf_nan=False, max_digits=24)]
"""A non-negative amount [currency/kWh, currency/kW] given as a number or a decimal string."""
Kwh = Annotated[Decimal, Field(ge=0, le=10_000, allow_inf_nan=False, max_digits=24)]

_OBJECT: dict[str, Any] = {"type": "object"}
TARIFF_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "title": "Tariff",
                "description": "An OCPI 2.2.1 Tariff object, stored and returned unchanged",
                "type": "object",
                "required": [
                    "country_code",
                    "party_id",
                    "id",
                    "currency",
                    "elements",
                    "last_updated",
                ],
                "properties": {
                    "country_code": {"type": "string", "minLength": 2, "maxLength": 2},
                    "party_id": {"type": "string", "minLength": 3, "maxLength": 3},
                    "id": {"type": "string", "minLength": 1, "maxLength": 36},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "type": {"type": "string"},
                    "elements": {"type": "array", "minItems": 1, "items": _OBJECT},
                    "min_price": _OBJECT,
                    "max_price": _OBJECT,
                    "start_date_time": {"type": "string"},
                    "end_date_time": {"type": "string"},
                    "last_updated": {"type": "string"},
                },
            }
        }
    },
}
"""The OpenAPI request body of a tariff (read from the raw body, so numbers stay exact)."""


class _Doc(OutputModel):
    """A documented shape; the body may carry more fields."""

    model_config = ConfigDict(extra="allow")


class TariffDoc(_Doc):
    """An OCPI 2.2.1 Tariff, exactly as it was stored."""

    country_code: str
    party_id: str
    id: str
    currency: str
    elements: list[dict[str, Any]]
    last_updated: str


class MoneyDoc(_Doc):
    """An OCPI Price [currency]; ``incl_vat`` is absent when it is unknown."""

    excl_vat: float
    incl_vat: float | None = None


class CdrDoc(_Doc):
    """An OCPI 2.2.1 CDR (or Credit CDR, with ``credit`` and ``credit_reference_id``)."""

    id: str
    country_code: str
    party_id: str
    session_id: str
    start_date_time: str
    end_date_time: str
    currency: str
    total_cost: MoneyDoc
    total_energy: float
    total_time: float
    last_updated: str


class CdrIssue(InputModel):
    """Issue the CDR of an ended session that has none standing (e.g. no tariff applied when
    it ended, or its CDR was credited)."""

    session_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    tariff_id: OcpiId | None = Field(
        default=None, description="Price with this current tariff instead of the one valid at start"
    )


class CreditRequest(InputModel):
    """Cancel a CDR with a Credit CDR; optionally issue a corrected CDR after it."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
    reissue: bool = False
    tariff_id: OcpiId | None = Field(
        default=None, description="With reissue: price the corrected CDR with this tariff"
    )


class CreditResult(OutputModel):
    credit: CdrDoc
    reissued: CdrDoc | None


class AuditEntry(OutputModel):
    """One entry of the CDR audit trail."""

    at: str
    actor: str
    action: Literal["ISSUED", "CREDITED"]
    cdr_id: str
    reference_id: str | None
    reason: str
    total_cost: MoneyDoc


class InvoiceLineDoc(_Doc):
    cdr_id: str
    credit: bool
    credit_reference_id: str | None
    session_id: str | None
    start_date_time: str
    end_date_time: str
    location_id: str
    evse_id: str
    energy_kwh: float
    time_h: float
    parking_time_h: float
    cost: MoneyDoc


class InvoiceDoc(_Doc):
    """The CDRs of one token (or contract) in one month and currency."""

    invoice_id: str
    key: Literal["token", "contract"]
    holder: str
    month: str
    currency: str
    lines: list[InvoiceLineDoc]
    total: MoneyDoc


class BillingSettings(OutputModel):
    """A site's billing and V2G settlement settings; amounts are decimal strings."""

    site_id: str
    idle_grace_s: int = Field(description="Parking time starts this long after charging [s]")
    idle_power_kw: str = Field(description="Standby draw that is not charging [kW]")
    money_places: int = Field(description="Decimal places of money in CDRs")
    v2g_interval_s: int = Field(description="Settlement interval of V2G export [s]")
    default_export_price: str = Field(description="Export price where no series applies")
    degradation_per_kwh: str
    driver_share: str
    missed_target_per_kwh: str
    dr_payment_per_kwh: str
    capacity_payment_per_kw: str
    dr_excludes_export: bool


class BillingSettingsUpdate(InputModel):
    """Change some billing settings; absent fields keep their value."""

    idle_grace_s: Annotated[int, Field(ge=0, le=86_400)] = keep()
    idle_power_kw: Annotated[Decimal, Field(ge=0, le=1000, allow_inf_nan=False)] = keep()
    money_places: Annotated[int, Field(ge=0, le=6)] = keep()
    v2g_interval_s: Annotated[int, Field(ge=60, le=86_400)] = keep()
    default_export_price: Amount = keep()
    degradation_per_kwh: Amount = keep()
    driver_share: Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False)] = keep()
    missed_target_per_kwh: Amount = keep()
    dr_payment_per_kwh: Amount = keep()
    capacity_payment_per_kw: Amount = keep()
    dr_excludes_export: bool = keep()


class PricePreviewRequest(InputModel):
    """What would a session cost: ``start``, ``stop`` and ``energy_kwh``, or a ``session_id``
    whose start, departure and energy target are used (fields given here override them)."""

    session_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None
    start: Rfc3339 | None = None
    stop: Rfc3339 | None = None
    energy_kwh: Kwh | None = None
    charging_end: Rfc3339 | None = Field(
        default=None, description="Energy is delivered until then, parked after (default stop)"
    )
    tariff_id: OcpiId | None = Field(
        default=None, description="Price with this tariff (default: the one valid at start)"
    )


class CostLineDoc(_Doc):
    dimension: str
    element: int
    price: float
    vat: float | None
    step_size: int
    volume: float
    billed_volume: float
    cost: MoneyDoc


class PeriodDoc(_Doc):
    kind: str
    start: str
    end: str
    energy_kwh: float
    duration_s: float
    cost: MoneyDoc
    lines: list[CostLineDoc]


class PricePreviewDoc(_Doc):
    """A priced breakdown: exact amounts, and ``total_cost`` rounded as a CDR would show it."""

    tariff_id: str
    currency: str
    time_zone: str
    start: str
    stop: str
    energy_kwh: float
    time_h: float
    parking_time_h: float
    cost_before_limits: MoneyDoc
    total_cost_exact: MoneyDoc
    total_cost: MoneyDoc
    limits_applied: list[str]
    periods: list[PeriodDoc]


class StatementLineDoc(_Doc):
    kind: str
    payer: str
    payee: str
    quantity: float
    unit: str
    rate: float
    amount: float
    start: str | None
    end: str | None
    reference: str | None


class SessionStatementDoc(_Doc):
    """The V2G settlement of one session."""

    session_id: str
    driver_id: str
    site_id: str
    currency: str
    start: str
    end: str
    metered_export_kwh: float
    settled_export_kwh: float
    grid_payment: float
    net: dict[str, float]
    lines: list[StatementLineDoc]


class KindTotal(_Doc):
    quantity: float
    amount: float


class DriverStatementDoc(_Doc):
    """A driver's V2G month."""

    driver_id: str
    month: str
    currency: str
    sessions: list[str]
    export_kwh: float
    totals: dict[str, KindTotal]
    net: float


class SiteStatementDoc(_Doc):
    """A site's V2G month against the utility; ``reconciles`` checks the sums."""

    site_id: str
    month: str
    currency: str
    sessions: list[str]
    metered_export_kwh: float
    settled_export_kwh: float
    grid: dict[str, KindTotal]
    payouts: dict[str, KindTotal]
    grid_payment: float
    driver_payout: float
    site_net: float
    utility_net: float
    reconciles: bool
