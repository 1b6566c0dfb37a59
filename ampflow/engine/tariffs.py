"""OCPI 2.2.1 Tariff objects: parsed from JSON, validated, kept exactly as received.

:func:`parse_tariff` turns an OCPI 2.2.1 Tariff JSON object (a ``dict`` as produced by
``json.loads``) into a frozen :class:`Tariff`. Every number becomes a :class:`~decimal.Decimal`
(floats through their shortest ``repr``, so ``0.2`` stays ``Decimal("0.2")``), every enum a
``StrEnum``, every date-time a tz-aware UTC ``datetime``. The original JSON is kept untouched and
:meth:`Tariff.to_json` returns a copy of it, so an API can accept and return tariffs unchanged.

Bad input raises :class:`TariffError`, which names the JSON path, the value and what was
expected, for example ``elements[0].price_components[1].vat: expected a number >= 0, got '20%'``.

Semantics kept from the specification (mod_tariffs, 2.2.1 and its 2.2.1-d2 clarifications):

* ``vat`` omitted means "no VAT information", which is not 0 %: costs including VAT are unknown.
* ``start_time``/``end_time`` are local times of day in the Location's time zone; a window wraps
  past midnight when ``end_time < start_time``; an ``end_time`` of ``"00:00"`` means end of day.
* ``start_date`` is inclusive, ``end_date`` exclusive; ``min_*`` limits are inclusive, ``max_*``
  limits exclusive; durations are in seconds from the start of the session.
* An element with a ``reservation`` restriction prices reservations, with FLAT and TIME only.
* A ``step_size`` of 0 is accepted and means "no rounding" (the unit itself is billed).

The time zone is not part of an OCPI tariff: it is the Location's ``time_zone``, passed to the
pricing functions in :mod:`ampflow.engine.pricing`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ampflow.engine.errors import AmpflowError

__all__ = [
    "DayOfWeek",
    "Price",
    "PriceComponent",
    "ReservationRestriction",
    "Tariff",
    "TariffDimension",
    "TariffElement",
    "TariffError",
    "TariffRestrictions",
    "TariffType",
    "parse_ocpi_datetime",
    "parse_tariff",
    "select_tariff",
]

_TIME_RE = re.compile(r"([0-1][0-9]|2[0-3]):[0-5][0-9]")
_DATE_RE = re.compile(r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_MISSING = object()


class TariffError(AmpflowError):
    """A Tariff JSON object is invalid; ``path``, ``value`` and ``expected`` say where and why."""

    def __init__(self, path: str, value: object, expected: str) -> None:
        self.path = path
        self.value = value
        self.expected = expected
        shown = "nothing (missing)" if value is _MISSING else repr(value)
        super().__init__(f"{path}: expected {expected}, got {shown}")


class TariffDimension(StrEnum):
    """What a price component prices (OCPI ``TariffDimensionType``)."""

    ENERGY = "ENERGY"  # per kWh, step_size in Wh
    FLAT = "FLAT"  # once per session
    PARKING_TIME = "PARKING_TIME"  # per hour not charging, step_size in s
    TIME = "TIME"  # per hour charging, step_size in s


class TariffType(StrEnum):
    """OCPI ``TariffType``: which sessions a tariff is meant for."""

    AD_HOC_PAYMENT = "AD_HOC_PAYMENT"
    PROFILE_CHEAP = "PROFILE_CHEAP"
    PROFILE_FAST = "PROFILE_FAST"
    PROFILE_GREEN = "PROFILE_GREEN"
    REGULAR = "REGULAR"


class DayOfWeek(StrEnum):
    """OCPI ``DayOfWeek``, in ISO order (``list(DayOfWeek)[d.weekday()]`` is day ``d``)."""

    MONDAY = "MONDAY"
    TUESDAY = "TUESDAY"
    WEDNESDAY = "WEDNESDAY"
    THURSDAY = "THURSDAY"
    FRIDAY = "FRIDAY"
    SATURDAY = "SATURDAY"
    SUNDAY = "SUNDAY"


class ReservationRestriction(StrEnum):
    """OCPI ``ReservationRestrictionType``."""

    RESERVATION = "RESERVATION"
    RESERVATION_EXPIRES = "RESERVATION_EXPIRES"


@dataclass(frozen=True, slots=True)
class Price:
    """An amount of money excluding and, when known, including VAT [currency].

    ``incl_vat`` is ``None`` when it cannot be known (a component without VAT information).
    """

    excl_vat: Decimal
    incl_vat: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceComponent:
    """One price of a tariff element.

    Parameters
    ----------
    type : TariffDimension
    price : Decimal
        Price per unit excluding VAT [currency/kWh, currency/h, or currency for FLAT].
    vat : Decimal or None
        VAT percentage; ``None`` (omitted) is "no VAT information", not 0 %.
    step_size : int
        Billing step [Wh for ENERGY, s for TIME and PARKING_TIME]; 0 means no rounding.
    """

    type: TariffDimension
    price: Decimal
    vat: Decimal | None
    step_size: int


@dataclass(frozen=True, slots=True)
class TariffRestrictions:
    """When a tariff element is active; all given restrictions must hold (they are ANDed).

    Times and dates are local, in the Location's time zone. ``end_time`` of ``00:00`` is end of
    day. Energy [kWh] is counted from the start of the session, power [kW] and current [A, sum
    over phases] are instantaneous, durations [s] count from the start of the session.
    An empty ``day_of_week`` means every day.
    """

    start_time: time | None = None
    end_time: time | None = None
    start_date: date | None = None
    end_date: date | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_current: Decimal | None = None
    max_current: Decimal | None = None
    min_power: Decimal | None = None
    max_power: Decimal | None = None
    min_duration: int | None = None
    max_duration: int | None = None
    day_of_week: frozenset[DayOfWeek] = frozenset()
    reservation: ReservationRestriction | None = None


@dataclass(frozen=True, slots=True)
class TariffElement:
    """Price components that apply together while the (optional) restrictions hold."""

    price_components: tuple[PriceComponent, ...]
    restrictions: TariffRestrictions | None = None

    def component(self, dimension: TariffDimension) -> PriceComponent | None:
        """The first price component of ``dimension`` in this element, if any."""
        return next((c for c in self.price_components if c.type is dimension), None)


@dataclass(frozen=True)
class Tariff:
    """A validated OCPI 2.2.1 Tariff. Build it with :func:`parse_tariff`.

    Attributes
    ----------
    country_code, party_id, id : str
        The owning CPO and the tariff's id.
    currency : str
        ISO 4217 code.
    elements : tuple of TariffElement
        In order: per dimension, the first element whose restrictions match is used.
    type : TariffType or None
        ``None`` means valid for all sessions.
    min_price, max_price : Price or None
        Bounds on the session's total cost, applied separately excluding and including VAT.
    start_date_time, end_date_time : datetime or None
        Validity window (UTC), start inclusive, end exclusive.
    last_updated : datetime
    """

    country_code: str
    party_id: str
    id: str
    currency: str
    elements: tuple[TariffElement, ...]
    last_updated: datetime
    type: TariffType | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    start_date_time: datetime | None = None
    end_date_time: datetime | None = None
    json: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The Tariff JSON object exactly as it was given (a deep copy)."""
        return copy.deepcopy(dict(self.json))

    def is_valid_at(self, instant: datetime) -> bool:
        """Whether ``instant`` (tz-aware) lies in ``[start_date_time, end_date_time)``."""
        _require_aware("instant", instant)
        if self.start_date_time is not None and instant < self.start_date_time:
            return False
        return self.end_date_time is None or instant < self.end_date_time


def parse_ocpi_datetime(value: object, path: str = "value") -> datetime:
    """Parse an OCPI DateTime (RFC 3339; no zone designator means UTC) to a UTC ``datetime``.

    Examples
    --------
    >>> parse_ocpi_datetime("2019-06-30T23:59:59Z")
    datetime.datetime(2019, 6, 30, 23, 59, 59, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(value, str):
        raise TariffError(path, value, "an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TariffError(
            path, value, "an RFC 3339 date-time such as 2019-06-30T23:59:59Z"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_tariff(data: Mapping[str, Any]) -> Tariff:
    """Validate an OCPI 2.2.1 Tariff JSON object and return it as a :class:`Tariff`.

    Parameters
    ----------
    data : mapping
        The Tariff object as decoded from JSON. Unknown fields are kept (in ``Tariff.json``)
        and ignored.

    Returns
    -------
    Tariff

    Raises
    ------
    TariffError
        Naming the JSON path, the value and what was expected.

    Examples
    --------
    >>> t = parse_tariff({
    ...     "country_code": "NL", "party_id": "AMP", "id": "t1", "currency": "EUR",
    ...     "elements": [{"price_components": [
    ...         {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}]}],
    ...     "last_updated": "2026-01-01T00:00:00Z"})
    >>> t.elements[0].price_components[0].price
    Decimal('0.25')
    >>> try:
    ...     parse_tariff({**t.to_json(), "currency": "euro"})
    ... except TariffError as e:
    ...     print(e)
    currency: expected an ISO 4217 code (3 capital letters), got 'euro'
    """
    if not isinstance(data, Mapping):
        raise TariffError("tariff", data, "a JSON object")
    raw = copy.deepcopy(dict(data))
    elements = _list(data, "elements", "", min_items=1)
    tariff = Tariff(
        country_code=_ci_string(data, "country_code", 2, exact=True),
        party_id=_ci_string(data, "party_id", 3, exact=True),
        id=_ci_string(data, "id", 36),
        currency=_currency(data),
        elements=tuple(_element(e, f"elements[{i}]") for i, e in enumerate(elements)),
        last_updated=parse_ocpi_datetime(_get(data, "last_updated", ""), "last_updated"),
        type=_enum(data, "type", "", TariffType, required=False),
        min_price=_price(data, "min_price"),
        max_price=_price(data, "max_price"),
        start_date_time=_opt_datetime(data, "start_date_time"),
        end_date_time=_opt_datetime(data, "end_date_time"),
        json=raw,
    )
    _check_tariff(data, tariff)
    return tariff


def select_tariff(
    tariffs: Iterable[Tariff], at: datetime, *, tariff_type: TariffType | None = None
) -> Tariff | None:
    """The first tariff valid at ``at`` (a session's start) for sessions of ``tariff_type``.

    A tariff without ``type`` is valid for every session; with ``tariff_type=None`` (no charging
    preference) a ``REGULAR`` tariff or one without ``type`` is chosen. Returns ``None`` when no
    tariff applies.
    """
    _require_aware("at", at)
    wanted = tariff_type or TariffType.REGULAR
    for tariff in tariffs:
        if tariff.is_valid_at(at) and tariff.type in (None, wanted):
            return tariff
    return None


# --- structure -------------------------------------------------------------------------------


def _check_tariff(data: Mapping[str, Any], tariff: Tariff) -> None:
    lo, hi = tariff.min_price, tariff.max_price
    if lo is not None and hi is not None:
        if lo.excl_vat > hi.excl_vat:
            raise TariffError("min_price.excl_vat", data["min_price"]["excl_vat"], "<= max_price")
        if lo.incl_vat is not None and hi.incl_vat is not None and lo.incl_vat > hi.incl_vat:
            raise TariffError("min_price.incl_vat", data["min_price"]["incl_vat"], "<= max_price")
    start, end = tariff.start_date_time, tariff.end_date_time
    if start is not None and end is not None and end <= start:
        raise TariffError("end_date_time", data["end_date_time"], "a date-time after start")
    url = data.get("tariff_alt_url")
    if url is not None and not isinstance(url, str):
        raise TariffError("tariff_alt_url", data["tariff_alt_url"], "a URL string")
    for i, text in enumerate(_list(data, "tariff_alt_text", "", min_items=0)):
        path = f"tariff_alt_text[{i}]"
        if not isinstance(text, Mapping):
            raise TariffError(path, text, "a DisplayText object")
        _string(text, "language", path, max_len=2)
        _string(text, "text", path, max_len=512)
    if data.get("energy_mix") is not None and not isinstance(data["energy_mix"], Mapping):
        raise TariffError("energy_mix", data["energy_mix"], "an EnergyMix object")


def _element(data: object, path: str) -> TariffElement:
    if not isinstance(data, Mapping):
        raise TariffError(path, data, "a TariffElement object")
    items = _list(data, "price_components", path, min_items=1)
    components = tuple(_component(c, f"{path}.price_components[{i}]") for i, c in enumerate(items))
    raw_r = data.get("restrictions")
    restrictions = None if raw_r is None else _restrictions(raw_r, f"{path}.restrictions")
    if restrictions is not None and restrictions.reservation is not None:
        for i, c in enumerate(components):
            if c.type not in (TariffDimension.FLAT, TariffDimension.TIME):
                raise TariffError(
                    f"{path}.price_components[{i}].type",
                    c.type.value,
                    "FLAT or TIME in an element with a reservation restriction",
                )
    return TariffElement(components, restrictions)


def _component(data: object, path: str) -> PriceComponent:
    if not isinstance(data, Mapping):
        raise TariffError(path, data, "a PriceComponent object")
    kind = _enum(data, "type", path, TariffDimension, required=True)
    assert kind is not None
    price = _number(data, "price", path)
    assert price is not None
    vat = _number(data, "vat", path, required=False, maximum=Decimal(100))
    step = _integer(data, "step_size", path, required=True)
    assert step is not None
    return PriceComponent(kind, price, vat, step)


def _restrictions(data: object, path: str) -> TariffRestrictions:
    if not isinstance(data, Mapping):
        raise TariffError(path, data, "a TariffRestrictions object")
    days = _list(data, "day_of_week", path, min_items=0)
    r = TariffRestrictions(
        start_time=_time(data, "start_time", path),
        end_time=_time(data, "end_time", path),
        start_date=_date(data, "start_date", path),
        end_date=_date(data, "end_date", path),
        min_kwh=_number(data, "min_kwh", path, required=False),
        max_kwh=_number(data, "max_kwh", path, required=False),
        min_current=_number(data, "min_current", path, required=False),
        max_current=_number(data, "max_current", path, required=False),
        min_power=_number(data, "min_power", path, required=False),
        max_power=_number(data, "max_power", path, required=False),
        min_duration=_integer(data, "min_duration", path, required=False),
        max_duration=_integer(data, "max_duration", path, required=False),
        day_of_week=frozenset(_day(d, f"{path}.day_of_week[{i}]") for i, d in enumerate(days)),
        reservation=_enum(data, "reservation", path, ReservationRestriction, required=False),
    )
    for name in ("kwh", "current", "power", "duration"):
        lo, hi = getattr(r, f"min_{name}"), getattr(r, f"max_{name}")
        if lo is not None and hi is not None and lo > hi:
            raise TariffError(f"{path}.max_{name}", data[f"max_{name}"], f">= min_{name} ({lo})")
    if r.start_date is not None and r.end_date is not None and r.end_date <= r.start_date:
        raise TariffError(f"{path}.end_date", data["end_date"], "a date after start_date")
    if r.start_time is not None and r.start_time == r.end_time and r.start_time != time(0):
        raise TariffError(
            f"{path}.end_time", data["end_time"], "a time different from start_time (ambiguous)"
        )
    return r


def _day(value: object, path: str) -> DayOfWeek:
    try:
        if not isinstance(value, str):
            raise ValueError
        return DayOfWeek(value)
    except ValueError:
        raise TariffError(path, value, f"one of {', '.join(DayOfWeek)}") from None


# --- scalar readers ----------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(data: Mapping[str, Any], key: str, path: str) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise TariffError(_join(path, key), _MISSING, "a value (the field is required)")
    return value


def _list(data: Mapping[str, Any], key: str, path: str, *, min_items: int) -> Sequence[Any]:
    value = data.get(key)
    if value is None:
        value = [] if min_items == 0 else _MISSING
    if not isinstance(value, list) or len(value) < min_items:
        what = "a list" if min_items == 0 else f"a list of at least {min_items} item(s)"
        raise TariffError(_join(path, key), value, what)
    return value


def _string(data: Mapping[str, Any], key: str, path: str, *, max_len: int) -> str:
    value = _get(data, key, path)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise TariffError(_join(path, key), value, f"a string of 1 to {max_len} characters")
    return value


def _ci_string(data: Mapping[str, Any], key: str, length: int, *, exact: bool = False) -> str:
    value = _get(data, key, "")
    ok = isinstance(value, str) and value.isascii() and value.isprintable()
    if not ok or not (len(value) == length if exact else 0 < len(value) <= length):
        size = f"exactly {length}" if exact else f"1 to {length}"
        raise TariffError(key, value, f"an ASCII string of {size} characters")
    return str(value)


def _currency(data: Mapping[str, Any]) -> str:
    value = _get(data, "currency", "")
    if not isinstance(value, str) or not _CURRENCY_RE.fullmatch(value):
        raise TariffError("currency", value, "an ISO 4217 code (3 capital letters)")
    return value


def _enum[E: StrEnum](
    data: Mapping[str, Any], key: str, path: str, kind: type[E], *, required: bool
) -> E | None:
    value = data.get(key)
    if value is None and not required:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise TariffError(
            _join(path, key), value if value is not None else _MISSING, f"one of {choices}"
        ) from None


def _to_decimal(value: object) -> Decimal | None:
    """A JSON number as an exact Decimal (a float through its shortest repr), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _number(
    data: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = True,
    maximum: Decimal | None = None,
) -> Decimal | None:
    value = data.get(key)
    if value is None and not required:
        return None
    number = _to_decimal(value)
    if number is None or number < 0 or (maximum is not None and number > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        shown = _MISSING if value is None else value
        raise TariffError(_join(path, key), shown, f"a number >= 0{bound}")
    return number


def _integer(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    number = _to_decimal(value)
    if number is None or number < 0 or number != number.to_integral_value():
        shown = _MISSING if value is None else value
        raise TariffError(_join(path, key), shown, "an integer >= 0")
    return int(number)


def _time(data: Mapping[str, Any], key: str, path: str) -> time | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise TariffError(_join(path, key), value, "a 24h time of day HH:MM, e.g. 13:30")
    return time(int(value[:2]), int(value[3:]))


def _date(data: Mapping[str, Any], key: str, path: str) -> date | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise TariffError(_join(path, key), value, "a date YYYY-MM-DD, e.g. 2015-12-24") from None


def _price(data: Mapping[str, Any], key: str) -> Price | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TariffError(key, value, "a Price object {excl_vat, incl_vat}")
    excl = _number(value, "excl_vat", key)
    assert excl is not None
    return Price(excl, _number(value, "incl_vat", key, required=False))


def _opt_datetime(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    return None if value is None else parse_ocpi_datetime(value, key)


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise AmpflowError(f"{name}: expected a tz-aware datetime, got {value!r}")
