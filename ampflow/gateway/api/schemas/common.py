"""Types shared by the API schemas: RFC 3339 times, ids, bounded numbers, error bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

__all__ = [
    "ID_PATTERN",
    "Amps",
    "ErrorBody",
    "ErrorItem",
    "InputModel",
    "Kw",
    "LocalId",
    "OutputModel",
    "PhaseA",
    "PositiveKw",
    "Price",
    "SiteId",
    "UtcDateTime",
    "Weight",
    "keep",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_string(value: Any) -> Any:
    # Pydantic would also take a number (or a string of digits) as Unix time; RFC 3339 is text
    # that starts with the date and time.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError(
            "expected an RFC 3339 timestamp with an offset, such as 2026-03-02T08:00:00+01:00"
        )
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_string), AfterValidator(_to_utc)]
"""An RFC 3339 timestamp with an offset on input; always UTC (``Z``) on output."""

SiteId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A site id: letters, digits, ``.``, ``_``, ``:``, ``-``, 1 to 64 characters, no ``/``."""
LocalId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A node or charger id, unique within its site."""

Kw = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
"""A power limit [kW], 0 to 1 GW."""
PositiveKw = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
Amps = Annotated[float, Field(ge=0, le=1e5, allow_inf_nan=False)]
"""A current per phase [A]."""
PhaseA = Annotated[list[Amps], Field(min_length=3, max_length=3)]
"""Current limits on L1, L2, L3 [A]."""
Weight = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
"""A priority weight: 2 rises twice as fast as 1 and is served first when minimums do not fit."""
Price = Annotated[float, Field(ge=-1e4, le=1e4, allow_inf_nan=False)]
"""A price [currency/kWh]; negative prices exist."""


def keep() -> Any:
    """Default of a PATCH field that may be left out but not set to null: absent = unchanged."""
    return Field(default=None)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text may not contain NUL (\\x00) characters")
    if isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


class InputModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not silently ignored, and text
    with NUL characters (which PostgreSQL cannot store)."""

    model_config = ConfigDict(extra="forbid")

    _nul = field_validator("*", mode="before")(_no_nul)


class OutputModel(BaseModel):
    """Response bodies."""

    model_config = ConfigDict(from_attributes=True)


class ErrorItem(BaseModel):
    """One problem with the request: where, what, and of which kind."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Body of every 4xx answer: a message, or a list of field-level problems."""

    detail: str | list[ErrorItem]
