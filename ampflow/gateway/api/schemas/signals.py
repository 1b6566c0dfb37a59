"""DR events and price series: Create and Public."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from ampflow.gateway.api.schemas.common import (
    ID_PATTERN,
    InputModel,
    Kw,
    OutputModel,
    Price,
    SiteId,
    UtcDateTime,
)
from ampflow.gateway.db.base import SignalKind
from ampflow.gateway.db.models import Signal
from ampflow.gateway.db.repo.signals import IntervalSpec

__all__ = [
    "DrEventCreate",
    "DrEventPublic",
    "IntervalPublic",
    "PriceInterval",
    "PriceSeriesCreate",
    "PriceSeriesPublic",
]

SignalId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Program = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Priority = Annotated[int, Field(ge=0, le=1000, description="Lower wins, as in OpenADR")]
MAX_SPAN = timedelta(days=366)


def _after_start(end: datetime, info: ValidationInfo) -> datetime:
    start = info.data.get("start")
    if start is not None:
        if end <= start:
            raise ValueError(f"end must be after start ({start.isoformat()})")
        if end - start > MAX_SPAN:
            raise ValueError("an event may last at most 366 days")
    return end


class DrEventCreate(InputModel):
    """A demand-response event for a site: exactly one of ``cap_kw``, ``level``,
    ``export_cap_kw`` over ``[start, end)``."""

    id: SignalId | None = Field(default=None, description="Your id; one is made if absent")
    site_id: SiteId
    start: UtcDateTime
    end: UtcDateTime
    cap_kw: Kw | None = Field(default=None, description="Cap on the site's import [kW]")
    level: Annotated[int, Field(ge=0, le=3)] | None = Field(
        default=None, description="OpenADR SIMPLE level 0-3, a share of the import limit"
    )
    export_cap_kw: Kw | None = Field(default=None, description="Cap on the site's export [kW]")
    priority: Priority = 0
    program: Program | None = None

    _end = field_validator("end")(_after_start)

    @model_validator(mode="after")
    def _one_value(self) -> DrEventCreate:
        given = [x for x in (self.cap_kw, self.level, self.export_cap_kw) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of cap_kw, level, export_cap_kw")
        return self

    def kind_and_value(self) -> tuple[SignalKind, float]:
        if self.cap_kw is not None:
            return SignalKind.IMPORT_CAP_KW, self.cap_kw
        if self.level is not None:
            return SignalKind.SIMPLE_LEVEL, float(self.level)
        assert self.export_cap_kw is not None
        return SignalKind.EXPORT_CAP_KW, self.export_cap_kw

    def intervals(self) -> list[IntervalSpec]:
        return [IntervalSpec(self.start, self.end, self.kind_and_value()[1])]


class IntervalPublic(OutputModel):
    start: datetime
    end: datetime
    value: float


class DrEventPublic(OutputModel):
    id: str
    site_id: str
    source: str
    kind: str
    status: str
    start: datetime
    end: datetime
    cap_kw: float | None
    level: int | None
    export_cap_kw: float | None
    priority: int
    opt_state: str
    program: str | None
    external_id: str | None
    modification_number: int
    created_at: datetime
    cancelled_at: datetime | None
    intervals: list[IntervalPublic]

    @classmethod
    def of(cls, sig: Signal, site_id: str) -> DrEventPublic:
        first = sig.intervals[0].value if sig.intervals else None
        kind = SignalKind(sig.kind)
        return cls(
            id=sig.id,
            site_id=site_id,
            source=sig.source,
            kind=sig.kind,
            status=sig.status,
            start=sig.start_at,
            end=sig.end_at,
            cap_kw=first if kind is SignalKind.IMPORT_CAP_KW else None,
            level=int(first) if kind is SignalKind.SIMPLE_LEVEL and first is not None else None,
            export_cap_kw=first if kind is SignalKind.EXPORT_CAP_KW else None,
            priority=sig.priority,
            opt_state=sig.opt_state,
            program=sig.program,
            external_id=sig.external_id,
            modification_number=sig.modification_number,
            created_at=sig.created_at,
            cancelled_at=sig.cancelled_at,
            intervals=[
                IntervalPublic(start=i.start_at, end=i.end_at, value=i.value) for i in sig.intervals
            ],
        )


class PriceInterval(InputModel):
    start: UtcDateTime
    end: UtcDateTime
    price: Price = Field(description="[currency/kWh]")

    _end = field_validator("end")(_after_start)


class PriceSeriesCreate(InputModel):
    """Import or export prices for a site, as sorted non-overlapping intervals."""

    id: SignalId | None = None
    site_id: SiteId
    direction: Literal["import", "export"] = "import"
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"
    priority: Priority = 0
    intervals: Annotated[list[PriceInterval], Field(min_length=1, max_length=10_000)]

    def kind(self) -> SignalKind:
        return SignalKind.IMPORT_PRICE if self.direction == "import" else SignalKind.EXPORT_PRICE

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Intervals out of order or overlapping."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i in range(1, len(self.intervals)):
            prev, cur = self.intervals[i - 1], self.intervals[i]
            if cur.start < prev.end:
                out.append(
                    (
                        ("body", "intervals", i, "start"),
                        f"intervals must be sorted and not overlap: starts before the previous "
                        f"interval ends ({prev.end.isoformat()})",
                    )
                )
        return out

    def interval_specs(self) -> list[IntervalSpec]:
        return [IntervalSpec(x.start, x.end, x.price) for x in self.intervals]


class PriceSeriesPublic(OutputModel):
    id: str
    site_id: str
    direction: Literal["import", "export"]
    currency: str | None
    source: str
    status: str
    priority: int
    created_at: datetime
    intervals: list[IntervalPublic]

    @classmethod
    def of(cls, sig: Signal, site_id: str) -> PriceSeriesPublic:
        return cls(
            id=sig.id,
            site_id=site_id,
            direction="import" if sig.kind == SignalKind.IMPORT_PRICE else "export",
            currency=sig.currency,
            source=sig.source,
            status=sig.status,
            priority=sig.priority,
            created_at=sig.created_at,
            intervals=[
                IntervalPublic(start=i.start_at, end=i.end_at, value=i.value) for i in sig.intervals
            ],
        )
