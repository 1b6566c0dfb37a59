"""Price a charging session under an OCPI 2.2.1 tariff, exactly, with ``Decimal``.

:func:`price_session` takes a session's metered data (:class:`~ampflow.engine.periods.SessionUsage`)
and a :class:`~ampflow.engine.tariffs.Tariff`, cuts the session into charging periods
(:mod:`ampflow.engine.periods` explains where and why) and returns a :class:`PricedSession`: the
periods with their cost lines, and the session totals before and after ``min_price``/``max_price``.

step_size (OCPI 2.2.1-d2 rules)
-------------------------------
Rounding is applied once per session to the total of a dimension, with the step of the last
period's component, and the rounded-up remainder is billed in that last period
(3 + 3 + 3 kWh with a 10 kWh step bills 3, 3 and 4 kWh). ENERGY is rounded on its own. TIME and
PARKING_TIME are rounded once together: only the dimension of the last billed time period is
rounded, so 21 min charging + 7 min parking with 5-min steps bills 21 + 10 min. Rounding happens
only where a price component exists (a free dimension is never rounded). Reservation TIME is
rounded on its own.

Money
-----
Quantities are exact (energy on a 1e-9 kWh grid where interpolated, time in microseconds); costs
are exact too, except that a repeating fraction (a per-hour price times seconds) is cut at 12
decimals, so that every sum of costs is exact in any ``Decimal`` context. Costs are not rounded to
the currency here: OCPI sets no money-rounding rule, so that belongs to the CDR/invoice edge
(:mod:`ampflow.engine.cdr`). VAT is applied per
component; a component without VAT information makes the including-VAT totals unknown (``None``)
unless its cost is zero. ``min_price``/``max_price`` clamp the excluding- and including-VAT totals
separately.

The CDR's ENERGY is the imported energy; exported (V2G) energy is never netted against it: it is
settled by :mod:`ampflow.engine.settlement`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, localcontext
from zoneinfo import ZoneInfo

from ampflow.engine.periods import (
    PeriodKind,
    Piece,
    PricingError,
    SessionUsage,
    as_decimal,
    charging_pieces,
    reservation_pieces,
    us_between,
    zone,
)
from ampflow.engine.tariffs import Price, PriceComponent, Tariff, TariffDimension

__all__ = ["CostLine", "PricedPeriod", "PricedSession", "price_session"]

_US = 1_000_000
_PREC = 60
_MONEY_DECIMALS = 12
_MONEY_GRID = Decimal(1).scaleb(-_MONEY_DECIMALS)
_ZERO = Decimal(0)
_TIME_DIMS = (TariffDimension.TIME, TariffDimension.PARKING_TIME)


@dataclass(frozen=True, slots=True)
class CostLine:
    """One priced quantity of a period.

    Attributes
    ----------
    dimension : TariffDimension
    element : int
        Index of the tariff element whose component priced it.
    component : PriceComponent
    volume : Decimal
        Used quantity [kWh for ENERGY, s for TIME/PARKING_TIME, 1 for FLAT].
    billed_volume : Decimal
        The quantity billed after step_size rounding (same unit).
    cost : Price
        ``billed_volume`` at the component's price [currency].
    """

    dimension: TariffDimension
    element: int
    component: PriceComponent
    volume: Decimal
    billed_volume: Decimal
    cost: Price


@dataclass(frozen=True, slots=True)
class PricedPeriod:
    """A charging period: one combination of active tariff elements.

    ``energy_kwh`` [kWh] and ``duration_s`` [s] are what was used; power [kW] and current
    [A, sum over phases] are the extremes seen in the period (``None`` when unknown).
    ``elements`` maps each dimension to the active element's index.
    """

    kind: PeriodKind
    start: datetime
    end: datetime
    energy_kwh: Decimal
    duration_s: Decimal
    min_power_kw: Decimal | None
    max_power_kw: Decimal | None
    min_current_a: Decimal | None
    max_current_a: Decimal | None
    elements: tuple[tuple[TariffDimension, int], ...]
    lines: tuple[CostLine, ...]
    cost: Price


@dataclass(frozen=True)
class PricedSession:
    """A session priced under one tariff; all amounts exact and unrounded [currency].

    Attributes
    ----------
    tariff : Tariff
    time_zone : str
    start, stop : datetime
        The session (for an expired reservation: when it was made and when it expired).
    periods : tuple of PricedPeriod
        Reservation periods first, then charging and parking periods in time order.
    energy_kwh, time_s, parking_s, reservation_s : Decimal
        Totals [kWh, s]: imported energy, session duration, parking and reservation time.
    cost_before_limits : Price
        Sum of all period costs.
    total_cost : Price
        ``cost_before_limits`` clamped to ``min_price``/``max_price``.
    fixed_cost, energy_cost, time_cost, parking_cost, reservation_cost : Price or None
        Per-dimension sums (before limits); ``None`` when the tariff billed nothing of that kind.
    limits_applied : tuple of str
        Which limits changed the total, e.g. ``("max_price.excl_vat",)``.
    """

    tariff: Tariff
    time_zone: str
    start: datetime
    stop: datetime
    periods: tuple[PricedPeriod, ...]
    energy_kwh: Decimal
    time_s: Decimal
    parking_s: Decimal
    reservation_s: Decimal
    cost_before_limits: Price
    total_cost: Price
    fixed_cost: Price | None
    energy_cost: Price | None
    time_cost: Price | None
    parking_cost: Price | None
    reservation_cost: Price | None
    limits_applied: tuple[str, ...] = field(default=())


# --- pricing --------------------------------------------------------------------------------------


@dataclass
class _Draft:
    period: int
    dimension: TariffDimension
    element: int
    component: PriceComponent
    volume: Decimal
    reservation: bool
    billed: Decimal


def _drafts(tariff: Tariff, pieces: Sequence[Piece]) -> list[_Draft]:
    """The used quantities of every period, in time order, with the component pricing them."""
    out: list[_Draft] = []
    flat_done = {True: False, False: False}
    for k, piece in enumerate(pieces):
        reservation = piece.kind is PeriodKind.RESERVATION
        seconds = Decimal(piece.end - piece.start) / _US
        time_dim = (
            TariffDimension.PARKING_TIME
            if piece.kind is PeriodKind.PARKING
            else TariffDimension.TIME
        )
        volumes = {
            TariffDimension.FLAT: Decimal(1) if not flat_done[reservation] else _ZERO,
            TariffDimension.ENERGY: _ZERO if reservation else piece.energy_kwh,
            time_dim: seconds,
        }
        for dim, volume in volumes.items():
            i = piece.elements.get(dim)
            if i is None or volume <= 0:
                continue
            component = tariff.elements[i].component(dim)
            assert component is not None
            out.append(_Draft(k, dim, i, component, volume, reservation, volume))
            flat_done[reservation] |= dim is TariffDimension.FLAT
    return out


def _round_last(drafts: Sequence[_Draft], scale: int) -> None:
    """Round the drafts' total up to the last draft's step; the remainder is billed there."""
    if not drafts:
        return
    last = drafts[-1]
    step = last.component.step_size
    total = sum((d.volume for d in drafts), _ZERO) * scale
    if step == 0 or total == 0:
        return
    rounded = (total / step).to_integral_value(ROUND_CEILING) * step
    last.billed += (rounded - total) / scale


def _apply_step_sizes(drafts: Sequence[_Draft]) -> None:
    """OCPI step_size: once per session for ENERGY [Wh], once for TIME and PARKING_TIME [s]."""
    _round_last([d for d in drafts if d.dimension is TariffDimension.ENERGY], 1000)
    times = [d for d in drafts if d.dimension in _TIME_DIMS and not d.reservation]
    if times:
        _round_last([d for d in times if d.dimension is times[-1].dimension], 1)
    _round_last([d for d in drafts if d.reservation and d.dimension is TariffDimension.TIME], 1)


def _cost(component: PriceComponent, billed: Decimal) -> Price:
    if component.type is TariffDimension.ENERGY:
        excl = component.price * billed
    elif component.type is TariffDimension.FLAT:
        excl = component.price
    else:  # per hour, billed in seconds
        excl = component.price * billed / 3600
    if component.vat is not None:
        return Price(_fine(excl), _fine(excl * (100 + component.vat) / 100))
    return Price(_fine(excl), _ZERO if excl == 0 else None)


def _fine(amount: Decimal) -> Decimal:
    """``amount`` kept to at most 12 decimals (a repeating fraction of a time price is cut there,
    far below any currency's minor unit), so sums are exact in any ``Decimal`` context."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_MONEY_DECIMALS:
        return amount.quantize(_MONEY_GRID)
    return amount


def _sum(prices: Sequence[Price]) -> Price | None:
    if not prices:
        return None
    excl = sum((p.excl_vat for p in prices), _ZERO)
    incls = [p.incl_vat for p in prices]
    incl = None if None in incls else sum((i for i in incls if i is not None), _ZERO)
    return Price(excl, incl)


def _limit(tariff: Tariff, total: Price) -> tuple[Price, tuple[str, ...]]:
    """Clamp to min_price/max_price, separately excluding and including VAT."""
    excl, incl = total.excl_vat, total.incl_vat
    applied = []
    for name, bound in (("min_price", tariff.min_price), ("max_price", tariff.max_price)):
        if bound is None:
            continue
        sign = 1 if name == "min_price" else -1  # min: raise values below; max: lower above
        if sign * (bound.excl_vat - excl) > 0:
            excl = bound.excl_vat
            applied.append(f"{name}.excl_vat")
        if incl is not None and bound.incl_vat is not None and sign * (bound.incl_vat - incl) > 0:
            incl = bound.incl_vat
            applied.append(f"{name}.incl_vat")
    return Price(excl, incl), tuple(applied)


def _extremes(values: Sequence[Decimal | None]) -> tuple[Decimal | None, Decimal | None]:
    if not values or any(v is None for v in values):
        return None, None
    known = [v for v in values if v is not None]
    return min(known), max(known)


def _period(piece: Piece, t0: datetime, lines: tuple[CostLine, ...]) -> PricedPeriod:
    charging = piece.kind is PeriodKind.CHARGING
    p_lo, p_hi = _extremes(piece.powers) if charging else (None, None)
    c_lo, c_hi = _extremes(piece.currents) if charging else (None, None)
    return PricedPeriod(
        kind=piece.kind,
        start=(t0 + timedelta(microseconds=piece.start)).astimezone(UTC),
        end=(t0 + timedelta(microseconds=piece.end)).astimezone(UTC),
        energy_kwh=piece.energy_kwh,
        duration_s=Decimal(piece.end - piece.start) / _US,
        min_power_kw=p_lo,
        max_power_kw=p_hi,
        min_current_a=c_lo,
        max_current_a=c_hi,
        elements=tuple(sorted(piece.elements.items())),
        lines=lines,
        cost=_sum([line.cost for line in lines]) or Price(_ZERO, _ZERO),
    )


def price_session(
    tariff: Tariff,
    usage: SessionUsage,
    *,
    time_zone: str,
    idle_grace_s: int = 0,
    idle_power_kw: Decimal = _ZERO,
) -> PricedSession:
    """Cut a session into charging periods and price it under ``tariff``.

    Parameters
    ----------
    tariff : Tariff
        Must be valid (``start_date_time``/``end_date_time``) when the session (or its
        reservation) starts; that tariff prices the whole session.
    usage : SessionUsage
    time_zone : str
        The Location's IANA time zone, in which the tariff's times and dates are read.
    idle_grace_s : int, default 0
        Seconds after energy transfer stops before PARKING_TIME starts [s].
    idle_power_kw : Decimal, default 0
        A meter interval whose average import and export power stay at or below this moves no
        energy (standby draw) [kW].

    Returns
    -------
    PricedSession

    Raises
    ------
    PricingError
        For an unknown time zone, bad options, or a tariff not valid at the start.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> from ampflow.engine.periods import MeterSample, SessionUsage
    >>> from ampflow.engine.tariffs import parse_tariff
    >>> tariff = parse_tariff({"country_code": "NL", "party_id": "AMP", "id": "t1",
    ...     "currency": "EUR", "last_updated": "2026-01-01T00:00:00Z", "elements": [
    ...     {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1},
    ...                           {"type": "FLAT", "price": 0.5, "vat": 20, "step_size": 1}]}]})
    >>> t = datetime(2026, 3, 2, 9, tzinfo=UTC)
    >>> usage = SessionUsage(t, t.replace(hour=11), (MeterSample(t, Decimal(100)),
    ...     MeterSample(t.replace(hour=11), Decimal(120))))
    >>> priced = price_session(tariff, usage, time_zone="Europe/Amsterdam")
    >>> priced.total_cost.excl_vat, priced.total_cost.incl_vat
    (Decimal('5.50'), Decimal('6.10'))
    """
    if not isinstance(tariff, Tariff):
        raise PricingError(f"tariff: expected a Tariff (see parse_tariff), got {tariff!r}")
    if not isinstance(usage, SessionUsage):
        raise PricingError(f"usage: expected a SessionUsage, got {usage!r}")
    tz = zone(time_zone)
    if isinstance(idle_grace_s, bool) or not isinstance(idle_grace_s, int) or idle_grace_s < 0:
        raise PricingError(f"idle_grace_s: expected an integer >= 0, got {idle_grace_s!r}")
    idle_power_kw = as_decimal("idle_power_kw", idle_power_kw, minimum=_ZERO)
    first = usage.reservation.start if usage.reservation else usage.start
    if not tariff.is_valid_at(first):
        raise PricingError(
            f"tariff {tariff.id!r}: expected a tariff valid at {first.astimezone(UTC)}, "
            f"but it is valid from {tariff.start_date_time} to {tariff.end_date_time}"
        )
    with localcontext() as ctx:
        ctx.prec = _PREC
        return _price(tariff, usage, tz, idle_grace_s, idle_power_kw)


def _price(
    tariff: Tariff, usage: SessionUsage, tz: ZoneInfo, idle_grace_s: int, idle_power_kw: Decimal
) -> PricedSession:
    pieces: list[tuple[Piece, datetime]] = []
    expired = usage.reservation is not None and usage.reservation.expired
    if usage.reservation is not None:
        res = reservation_pieces(tariff, usage.reservation, tz)
        pieces += [(p, usage.reservation.start) for p in res]
    if usage.stop > usage.start:
        charging = charging_pieces(tariff, usage, tz, idle_grace_s, idle_power_kw)
        pieces += [(p, usage.start) for p in charging]
    drafts = _drafts(tariff, [p for p, _ in pieces])
    _apply_step_sizes(drafts)
    lines = [
        CostLine(
            d.dimension, d.element, d.component, d.volume, d.billed, _cost(d.component, d.billed)
        )
        for d in drafts
    ]
    periods = tuple(
        _period(piece, t0, tuple(ln for d, ln in zip(drafts, lines, strict=True) if d.period == k))
        for k, (piece, t0) in enumerate(pieces)
    )
    total = _sum([p.cost for p in periods]) or Price(_ZERO, _ZERO)
    limited, applied = _limit(tariff, total)

    def kind(test: Callable[[_Draft], bool]) -> Price | None:
        return _sum([ln.cost for d, ln in zip(drafts, lines, strict=True) if test(d)])

    def seconds(k: PeriodKind) -> Decimal:
        return sum((p.duration_s for p in periods if p.kind is k), _ZERO)

    return PricedSession(
        tariff=tariff,
        time_zone=tz.key,
        start=(usage.reservation.start if usage.reservation and expired else usage.start),
        stop=usage.stop.astimezone(UTC),
        periods=periods,
        energy_kwh=sum((p.energy_kwh for p in periods), _ZERO),
        time_s=Decimal(us_between(usage.stop - usage.start)) / _US,
        parking_s=seconds(PeriodKind.PARKING),
        reservation_s=seconds(PeriodKind.RESERVATION),
        cost_before_limits=total,
        total_cost=limited,
        fixed_cost=kind(lambda d: d.dimension is TariffDimension.FLAT and not d.reservation),
        energy_cost=kind(lambda d: d.dimension is TariffDimension.ENERGY),
        time_cost=kind(lambda d: d.dimension is TariffDimension.TIME and not d.reservation),
        parking_cost=kind(lambda d: d.dimension is TariffDimension.PARKING_TIME),
        reservation_cost=kind(lambda d: d.reservation),
        limits_applied=applied,
    )
