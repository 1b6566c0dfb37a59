"""Builders shared by the tariff, pricing, CDR and invoice tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ampflow.engine.periods import MeterSample, SessionUsage
from ampflow.engine.tariffs import Tariff, parse_tariff

D = Decimal


def tariff_json(elements: Sequence[Any], **extra: Any) -> dict[str, Any]:
    """A complete OCPI 2.2.1 Tariff object around ``elements``."""
    return {
        "country_code": "NL",
        "party_id": "AMP",
        "id": "tariff-1",
        "currency": "EUR",
        "elements": list(elements),
        "last_updated": "2026-01-01T00:00:00Z",
        **extra,
    }


def tariff(elements: Sequence[Any], **extra: Any) -> Tariff:
    return parse_tariff(tariff_json(elements, **extra))


def component(kind: str, price: float, step: int = 1, vat: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "price": price, "step_size": step}
    if vat is not None:
        out["vat"] = vat
    return out


def usage(
    start: datetime,
    legs: Sequence[tuple[float, str | Decimal]],
    *,
    parked_min: float = 0,
    **kwargs: Any,
) -> SessionUsage:
    """A session charging through ``legs`` = (minutes, kWh) at constant power each, then parked.

    Meter samples sit at the start and at the end of every leg and of the parking.
    """
    start = start.astimezone(UTC)  # real-time arithmetic (same-zone aware arithmetic is wall time)
    t, e = start, D(0)
    samples = [MeterSample(t, e)]
    for minutes, kwh in legs:
        t += timedelta(minutes=minutes)
        e += D(kwh)
        samples.append(MeterSample(t, e))
    if parked_min:
        t += timedelta(minutes=parked_min)
        samples.append(MeterSample(t, e))
    return SessionUsage(start, t, tuple(samples), **kwargs)
