"""OCPI 2.2.1 CDRs from priced sessions, Credit CDRs for corrections, and their audit trail.

:func:`build_cdr` turns a :class:`~ampflow.engine.pricing.PricedSession` and the session's
identities (:class:`CdrContext`) into an OCPI 2.2.1 CDR JSON object (a ``dict`` whose numbers are
``Decimal``; :func:`ocpi_json` writes it as JSON text without going through ``float``).
A CDR is never edited: :func:`credit_cdr` issues a Credit CDR that carries all the original's data
with negated costs, ``credit = true`` and ``credit_reference_id``, and an :class:`AuditRecord`;
a corrected CDR is then a new CDR with a new id.

Number formats follow OCPI: quantities (kWh, hours, kW, A) with 4 decimals; money is rounded to
``money_places`` (default 2, half up) only here, at the edge. Each per-dimension total is rounded
on its own, so they may differ from ``total_cost`` by a rounding unit; ``total_cost`` is the
rounded limited total. Credit CDRs negate ``total_cost`` and every other ``total_*_cost``
(the 2.2.1 text only requires ``total_cost``; negating all keeps invoice sums consistent).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from ampflow.engine.errors import AmpflowError
from ampflow.engine.periods import PeriodKind
from ampflow.engine.pricing import PricedPeriod, PricedSession
from ampflow.engine.tariffs import Price, Tariff

__all__ = [
    "AuditAction",
    "AuditRecord",
    "AuthMethod",
    "CdrContext",
    "CdrError",
    "CdrToken",
    "TokenType",
    "audit_record",
    "build_cdr",
    "credit_cdr",
    "ocpi_datetime",
    "ocpi_json",
]

_Q4 = Decimal("0.0001")
_ZERO = Decimal(0)
_COST_FIELDS = (
    "total_cost",
    "total_fixed_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_reservation_cost",
)


class CdrError(AmpflowError):
    """A CDR cannot be built or credited (names the field, its value and what was expected)."""


class AuthMethod(StrEnum):
    """OCPI ``AuthMethod``: how the session was authorised."""

    AUTH_REQUEST = "AUTH_REQUEST"
    COMMAND = "COMMAND"
    WHITELIST = "WHITELIST"


class TokenType(StrEnum):
    """OCPI ``TokenType``."""

    AD_HOC_USER = "AD_HOC_USER"
    APP_USER = "APP_USER"
    OTHER = "OTHER"
    RFID = "RFID"


class AuditAction(StrEnum):
    """What happened to a CDR."""

    ISSUED = "ISSUED"
    CREDITED = "CREDITED"


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise CdrError(f"{name}: expected a tz-aware datetime, got {value!r}")
    return value


def _check_id(name: str, value: object, max_len: int) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= max_len or not value.isprintable():
        raise CdrError(f"{name}: expected a string of 1 to {max_len} characters, got {value!r}")


@dataclass(frozen=True, slots=True)
class CdrToken:
    """OCPI 2.2.1 ``CdrToken``: the token that started the session.

    ``country_code`` and ``party_id`` are those of the eMSP that issued the token; left empty,
    they default to the CPO's own (a token of the site's own drivers).
    """

    uid: str
    contract_id: str
    type: TokenType = TokenType.RFID
    country_code: str = ""
    party_id: str = ""

    def __post_init__(self) -> None:
        _check_id("token.uid", self.uid, 36)
        _check_id("token.contract_id", self.contract_id, 36)
        try:
            object.__setattr__(self, "type", TokenType(self.type))
        except ValueError:
            raise CdrError(
                f"token.type: expected one of {', '.join(TokenType)}, got {self.type!r}"
            ) from None

    def to_json(self, country_code: str, party_id: str) -> dict[str, Any]:
        """The ``cdr_token`` object; the eMSP's codes default to the CDR owner's."""
        return {
            "country_code": self.country_code or country_code,
            "party_id": self.party_id or party_id,
            "uid": self.uid,
            "type": self.type.value,
            "contract_id": self.contract_id,
        }


@dataclass(frozen=True)
class CdrContext:
    """What a CDR carries besides metering: ids, token and location, as at session start.

    Parameters
    ----------
    cdr_id : str
        At most 36 characters (39 are reserved for credit CDRs).
    country_code, party_id : str
        The CPO owning the CDR (2 and 3 characters).
    session_id : str
    token : CdrToken
    auth_method : AuthMethod
    location_id, evse_uid, evse_id, connector_id : str
    location : mapping, optional
        The other ``CdrLocation`` fields (``name``, ``address``, ``city``, ``postal_code``,
        ``state``, ``country``, ``coordinates``, ``connector_standard``, ``connector_format``,
        ``connector_power_type``), copied as given.
    authorization_reference, meter_id, remark : str, optional
    """

    cdr_id: str
    country_code: str
    party_id: str
    session_id: str
    token: CdrToken
    auth_method: AuthMethod
    location_id: str
    evse_uid: str
    evse_id: str
    connector_id: str
    location: Mapping[str, Any] = field(default_factory=dict)
    authorization_reference: str | None = None
    meter_id: str | None = None
    remark: str | None = None

    def __post_init__(self) -> None:
        _check_id("cdr_id", self.cdr_id, 36)
        for name, size in (("country_code", 2), ("party_id", 3)):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) != size:
                raise CdrError(f"{name}: expected exactly {size} characters, got {value!r}")
        for name, size in (
            ("session_id", 36),
            ("location_id", 36),
            ("evse_uid", 36),
            ("evse_id", 48),
            ("connector_id", 36),
        ):
            _check_id(name, getattr(self, name), size)
        try:
            object.__setattr__(self, "auth_method", AuthMethod(self.auth_method))
        except ValueError:
            raise CdrError(
                f"auth_method: expected one of {', '.join(AuthMethod)}, got {self.auth_method!r}"
            ) from None
        if not isinstance(self.location, Mapping):
            raise CdrError(
                f"location: expected a mapping of CdrLocation fields, got {self.location!r}"
            )


def ocpi_datetime(value: datetime) -> str:
    """An OCPI DateTime: UTC with ``Z``; fractional seconds only when there are any.

    Examples
    --------
    >>> from datetime import datetime, timezone, timedelta
    >>> ocpi_datetime(datetime(2026, 3, 29, 3, 0, tzinfo=timezone(timedelta(hours=2))))
    '2026-03-29T01:00:00Z'
    """
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def ocpi_json(obj: Any) -> str:
    """JSON text of a CDR or invoice dict, writing every ``Decimal`` exactly as a JSON number.

    Examples
    --------
    >>> ocpi_json({"total_cost": {"excl_vat": Decimal("0.10")}, "credit": True})
    '{"total_cost": {"excl_vat": 0.10}, "credit": true}'
    """
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise CdrError(f"ocpi_json: expected a finite number, got {obj!r}")
        return format(obj, "f")
    if isinstance(obj, Mapping):
        items = (f"{json.dumps(str(k))}: {ocpi_json(v)}" for k, v in obj.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ", ".join(ocpi_json(v) for v in obj) + "]"
    return json.dumps(obj)


def _q4(value: Decimal) -> Decimal:
    return value.quantize(_Q4, ROUND_HALF_UP)


def _money(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _price_json(price: Price, places: int) -> dict[str, Any]:
    out: dict[str, Any] = {"excl_vat": _money(price.excl_vat, places)}
    if price.incl_vat is not None:
        out["incl_vat"] = _money(price.incl_vat, places)
    return out


def _uses(tariff: Tariff, names: tuple[str, str]) -> bool:
    return any(
        el.restrictions is not None and any(getattr(el.restrictions, n) is not None for n in names)
        for el in tariff.elements
    )


def _dimensions(period: PricedPeriod, power: bool, current: bool) -> list[dict[str, Any]]:
    hours = _q4(period.duration_s / 3600)
    dims: list[tuple[str, Decimal]] = []
    if period.kind is PeriodKind.RESERVATION:
        return [{"type": "RESERVATION_TIME", "volume": hours}]
    if period.kind is PeriodKind.CHARGING or period.energy_kwh > 0:
        dims.append(("ENERGY", _q4(period.energy_kwh)))
    dims.append(("TIME" if period.kind is PeriodKind.CHARGING else "PARKING_TIME", hours))
    pairs = []
    if power:
        pairs += [("MIN_POWER", period.min_power_kw), ("MAX_POWER", period.max_power_kw)]
    if current:
        pairs += [("MIN_CURRENT", period.min_current_a), ("MAX_CURRENT", period.max_current_a)]
    dims += [(name, _q4(v)) for name, v in pairs if v is not None]
    return [{"type": name, "volume": volume} for name, volume in dims]


def build_cdr(
    priced: PricedSession,
    context: CdrContext,
    *,
    last_updated: datetime,
    money_places: int = 2,
) -> dict[str, Any]:
    """The OCPI 2.2.1 CDR of a priced session.

    Parameters
    ----------
    priced : PricedSession
        From :func:`ampflow.engine.pricing.price_session`.
    context : CdrContext
    last_updated : datetime
        When the CDR is created (tz-aware).
    money_places : int, default 2
        Decimal places of money amounts (the currency's minor unit).

    Returns
    -------
    dict
        The CDR JSON object; numbers are ``Decimal``. ``tariffs`` holds the tariff JSON as given.
    """
    if not isinstance(priced, PricedSession):
        raise CdrError(f"priced: expected a PricedSession (see price_session), got {priced!r}")
    if not isinstance(context, CdrContext):
        raise CdrError(f"context: expected a CdrContext, got {context!r}")
    _aware("last_updated", last_updated)
    if isinstance(money_places, bool) or not isinstance(money_places, int) or money_places < 0:
        raise CdrError(f"money_places: expected an integer >= 0, got {money_places!r}")
    tariff = priced.tariff
    power = _uses(tariff, ("min_power", "max_power"))
    current = _uses(tariff, ("min_current", "max_current"))
    location = {
        **dict(context.location),
        "id": context.location_id,
        "evse_uid": context.evse_uid,
        "evse_id": context.evse_id,
        "connector_id": context.connector_id,
    }
    cdr: dict[str, Any] = {
        "country_code": context.country_code,
        "party_id": context.party_id,
        "id": context.cdr_id,
        "start_date_time": ocpi_datetime(priced.start),
        "end_date_time": ocpi_datetime(priced.stop),
        "session_id": context.session_id,
        "cdr_token": context.token.to_json(context.country_code, context.party_id),
        "auth_method": context.auth_method.value,
        "authorization_reference": context.authorization_reference,
        "cdr_location": location,
        "meter_id": context.meter_id,
        "currency": tariff.currency,
        "tariffs": [tariff.to_json()],
        "charging_periods": [
            {
                "start_date_time": ocpi_datetime(p.start),
                "dimensions": _dimensions(p, power, current),
                "tariff_id": tariff.id,
            }
            for p in priced.periods
        ],
        "total_cost": _price_json(priced.total_cost, money_places),
        "total_energy": _q4(priced.energy_kwh),
        "total_time": _q4(priced.time_s / 3600),
        "total_parking_time": _q4(priced.parking_s / 3600),
        "remark": context.remark,
        "last_updated": ocpi_datetime(last_updated),
    }
    for name, price in (
        ("total_fixed_cost", priced.fixed_cost),
        ("total_energy_cost", priced.energy_cost),
        ("total_time_cost", priced.time_cost),
        ("total_parking_cost", priced.parking_cost),
        ("total_reservation_cost", priced.reservation_cost),
    ):
        if price is not None:
            cdr[name] = _price_json(price, money_places)
    return {k: v for k, v in cdr.items() if v is not None}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the CDR audit trail.

    Attributes
    ----------
    at : datetime
        When it happened (UTC).
    actor : str
        Who did it (a user id or ``"system"``).
    action : AuditAction
    cdr_id : str
        The CDR issued (for a credit, the Credit CDR's id).
    reference_id : str or None
        For a credit, the id of the credited CDR.
    reason : str
    total_cost : Price
        The CDR's ``total_cost`` as issued (negative for a credit).
    """

    at: datetime
    actor: str
    action: AuditAction
    cdr_id: str
    reference_id: str | None
    reason: str
    total_cost: Price

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict (numbers are ``Decimal``)."""
        cost: dict[str, Any] = {"excl_vat": self.total_cost.excl_vat}
        if self.total_cost.incl_vat is not None:
            cost["incl_vat"] = self.total_cost.incl_vat
        return {
            "at": ocpi_datetime(self.at),
            "actor": self.actor,
            "action": self.action.value,
            "cdr_id": self.cdr_id,
            "reference_id": self.reference_id,
            "reason": self.reason,
            "total_cost": cost,
        }


def _number(value: object, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        raise CdrError(f"{path}: expected a number, got {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise CdrError(f"{path}: expected a finite number, got {value!r}")
    return number


def _cdr_price(cdr: Mapping[str, Any], name: str) -> Price:
    value = cdr.get(name)
    if not isinstance(value, Mapping) or "excl_vat" not in value:
        raise CdrError(f"{name}: expected a Price object {{excl_vat, incl_vat}}, got {value!r}")
    incl = value.get("incl_vat")
    return Price(
        _number(value["excl_vat"], f"{name}.excl_vat"),
        None if incl is None else _number(incl, f"{name}.incl_vat"),
    )


def audit_record(
    cdr: Mapping[str, Any], *, action: AuditAction, actor: str, at: datetime, reason: str = ""
) -> AuditRecord:
    """The audit entry for issuing (or crediting) ``cdr``."""
    _aware("at", at)
    _check_id("actor", actor, 255)
    ref = cdr.get("credit_reference_id") if action is AuditAction.CREDITED else None
    return AuditRecord(
        at.astimezone(UTC),
        actor,
        AuditAction(action),
        str(cdr.get("id")),
        None if ref is None else str(ref),
        reason,
        _cdr_price(cdr, "total_cost"),
    )


def credit_cdr(
    original: Mapping[str, Any],
    *,
    last_updated: datetime,
    actor: str,
    reason: str,
    credit_id: str | None = None,
) -> tuple[dict[str, Any], AuditRecord]:
    """A Credit CDR cancelling ``original``, and its audit record. ``original`` is not changed.

    The Credit CDR holds all of the original's data; its ``id`` is ``credit_id`` (default the
    original id with ``-C`` appended, at most 39 characters), ``credit`` is ``true``,
    ``credit_reference_id`` is the original id, and every cost is negated.

    Raises
    ------
    CdrError
        If ``original`` is itself a Credit CDR, or lacks an id or a ``total_cost``.
    """
    if not isinstance(original, Mapping):
        raise CdrError(f"original: expected a CDR JSON object, got {original!r}")
    if original.get("credit"):
        raise CdrError(
            f"original.credit: expected a CDR that is not a Credit CDR, got credit=true "
            f"(id {original.get('id')!r}); credit the original CDR instead"
        )
    _check_id("original.id", original.get("id"), 36)
    if not reason:
        raise CdrError("reason: expected a non-empty explanation of the correction, got ''")
    new_id = credit_id if credit_id is not None else f"{original['id']}-C"
    _check_id("credit_id", new_id, 39)
    if new_id == original["id"]:
        raise CdrError(f"credit_id: expected an id different from the original's, got {new_id!r}")
    _aware("last_updated", last_updated)
    credit = copy.deepcopy(dict(original))
    for name in _COST_FIELDS:
        if name in credit or name == "total_cost":
            price = _cdr_price(original, name)
            negated: dict[str, Any] = {"excl_vat": _ZERO - price.excl_vat}
            if price.incl_vat is not None:
                negated["incl_vat"] = _ZERO - price.incl_vat
            credit[name] = negated
    credit.update(
        id=new_id,
        credit=True,
        credit_reference_id=original["id"],
        last_updated=ocpi_datetime(last_updated),
    )
    record = audit_record(
        credit, action=AuditAction.CREDITED, actor=actor, at=last_updated, reason=reason
    )
    return credit, record
