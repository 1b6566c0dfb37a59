"""OCPI 2.2.1 CDR JSON from priced sessions; Credit CDRs and the audit trail."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ampflow.engine.cdr import (
    AuditAction,
    AuthMethod,
    CdrContext,
    CdrError,
    CdrToken,
    audit_record,
    build_cdr,
    credit_cdr,
    ocpi_datetime,
    ocpi_json,
)
from ampflow.engine.periods import Reservation, SessionUsage
from ampflow.engine.pricing import PricedSession, price_session
from ampflow.engine.tariffs import Price
from tests.engine.billing import component, tariff, tariff_json, usage

D = Decimal
AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 1, 2, 17, 30, tzinfo=UTC)

STEP_ELEMENTS: list[dict[str, Any]] = [
    {
        "price_components": [
            component("TIME", 1.20, 1800, vat=21),
            component("PARKING_TIME", 1.00, 900, vat=21),
        ],
        "restrictions": {"start_time": "00:00", "end_time": "17:00"},
    },
    {
        "price_components": [
            component("TIME", 2.40, 900, vat=21),
            component("PARKING_TIME", 1.00, 900, vat=21),
        ],
        "restrictions": {"start_time": "17:00", "end_time": "20:00"},
    },
]


def context(**changes: Any) -> CdrContext:
    values: dict[str, Any] = {
        "cdr_id": "cdr-0001",
        "country_code": "NL",
        "party_id": "AMP",
        "session_id": "sess-0001",
        "token": CdrToken("04A1B2C3", "NL-AMP-C12345678-X", country_code="NL", party_id="EMS"),
        "auth_method": AuthMethod.WHITELIST,
        "location_id": "depot",
        "evse_uid": "cp-1-1",
        "evse_id": "NL*AMP*E1*1",
        "connector_id": "1",
        "location": {"address": "Stationsplein 1", "city": "Utrecht", "country": "NLD"},
        "meter_id": "MID-42",
    }
    values.update(changes)
    return CdrContext(**values)


def priced_1655() -> PricedSession:
    start = datetime(2026, 1, 2, 16, 55, tzinfo=AMS)
    return price_session(
        tariff(STEP_ELEMENTS),
        usage(start, [(10, "5.12345")], parked_min=2),
        time_zone="Europe/Amsterdam",
    )


def test_cdr_of_the_tou_boundary_example() -> None:
    cdr = build_cdr(priced_1655(), context(), last_updated=NOW)
    assert cdr["id"] == "cdr-0001"
    assert cdr["start_date_time"] == "2026-01-02T15:55:00Z"
    assert cdr["end_date_time"] == "2026-01-02T16:07:00Z"
    assert cdr["cdr_token"] == {
        "country_code": "NL",
        "party_id": "EMS",
        "uid": "04A1B2C3",
        "type": "RFID",
        "contract_id": "NL-AMP-C12345678-X",
    }
    assert cdr["auth_method"] == "WHITELIST"
    assert cdr["cdr_location"] == {
        "address": "Stationsplein 1",
        "city": "Utrecht",
        "country": "NLD",
        "id": "depot",
        "evse_uid": "cp-1-1",
        "evse_id": "NL*AMP*E1*1",
        "connector_id": "1",
    }
    assert cdr["tariffs"] == [tariff_json(STEP_ELEMENTS)]
    assert cdr["charging_periods"] == [
        {
            "start_date_time": "2026-01-02T15:55:00Z",
            "dimensions": [
                {"type": "ENERGY", "volume": D("2.5617")},  # 5.12345 kWh halved, 4 decimals
                {"type": "TIME", "volume": D("0.0833")},
            ],
            "tariff_id": "tariff-1",
        },
        {
            "start_date_time": "2026-01-02T16:00:00Z",
            "dimensions": [
                {"type": "ENERGY", "volume": D("2.5617")},
                {"type": "TIME", "volume": D("0.0833")},
            ],
            "tariff_id": "tariff-1",
        },
        {
            "start_date_time": "2026-01-02T16:05:00Z",
            "dimensions": [{"type": "PARKING_TIME", "volume": D("0.0333")}],
            "tariff_id": "tariff-1",
        },
    ]
    assert cdr["total_cost"] == {"excl_vat": D("0.55"), "incl_vat": D("0.67")}  # 0.6655
    assert cdr["total_time_cost"] == {"excl_vat": D("0.30"), "incl_vat": D("0.36")}
    assert cdr["total_parking_cost"] == {"excl_vat": D("0.25"), "incl_vat": D("0.30")}
    assert "total_energy_cost" not in cdr  # the tariff does not price energy
    assert (cdr["total_energy"], cdr["total_time"], cdr["total_parking_time"]) == (
        D("5.1235"),
        D("0.2000"),
        D("0.0333"),
    )
    assert cdr["currency"] == "EUR"
    assert cdr["meter_id"] == "MID-42"
    assert cdr["last_updated"] == "2026-01-02T17:30:00Z"
    assert "credit" not in cdr
    assert "authorization_reference" not in cdr  # omitted, not null


def _walk(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _walk(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _walk(v)]
    return [obj]


def test_json_text_is_exact_and_float_free() -> None:
    cdr = build_cdr(priced_1655(), context(), last_updated=NOW)
    numbers = [
        x for x in _walk(cdr) if isinstance(x, int | float | Decimal) and not isinstance(x, bool)
    ]
    tariff_numbers = _walk(cdr["tariffs"])
    assert all(isinstance(x, Decimal) for x in numbers if x not in tariff_numbers)
    text = ocpi_json(cdr)
    assert '"excl_vat": 0.55' in text
    decoded = json.loads(text, parse_float=Decimal)
    assert decoded["total_cost"] == cdr["total_cost"]
    assert decoded["charging_periods"] == cdr["charging_periods"]
    assert decoded["tariffs"][0]["elements"][0]["price_components"][0]["price"] == D("1.2")


def test_power_dimensions_when_the_tariff_restricts_power() -> None:
    elements = [
        {"price_components": [component("ENERGY", 0.20)], "restrictions": {"max_power": 16}},
        {"price_components": [component("ENERGY", 0.50)]},
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(tariff(elements), usage(start, [(10, "1"), (50, "40")]), time_zone="UTC")
    cdr = build_cdr(priced, context(), last_updated=NOW)
    dims = [{d["type"]: d["volume"] for d in p["dimensions"]} for p in cdr["charging_periods"]]
    assert dims == [
        {"ENERGY": 1, "TIME": D("0.1667"), "MIN_POWER": 6, "MAX_POWER": 6},
        {"ENERGY": 40, "TIME": D("0.8333"), "MIN_POWER": 48, "MAX_POWER": 48},
    ]
    assert cdr["total_energy_cost"] == {"excl_vat": D("20.20")}


def test_reservation_cdr() -> None:
    elements = [
        {
            "price_components": [component("TIME", 5.00, 60, vat=20)],
            "restrictions": {"reservation": "RESERVATION"},
        },
        {"price_components": [component("FLAT", 0.50, vat=20), component("ENERGY", 0.25, vat=10)]},
    ]
    made = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
    start = made + timedelta(minutes=15)
    session = usage(start, [(120, "20")], reservation=Reservation(made, start))
    priced = price_session(tariff(elements), session, time_zone="UTC")
    cdr = build_cdr(priced, context(), last_updated=NOW)
    assert cdr["charging_periods"][0] == {
        "start_date_time": "2026-02-03T09:00:00Z",
        "dimensions": [{"type": "RESERVATION_TIME", "volume": D("0.2500")}],
        "tariff_id": "tariff-1",
    }
    assert cdr["total_reservation_cost"] == {"excl_vat": D("1.25"), "incl_vat": D("1.50")}
    assert cdr["total_fixed_cost"] == {"excl_vat": D("0.50"), "incl_vat": D("0.60")}
    assert cdr["total_cost"] == {"excl_vat": D("6.75"), "incl_vat": D("7.60")}
    assert cdr["total_time"] == 2  # the charging session, not the reservation


def test_money_places_follow_the_currency() -> None:
    priced = price_session(
        tariff([{"price_components": [component("ENERGY", 31.7, vat=10)]}], currency="JPY"),
        usage(datetime(2026, 2, 3, tzinfo=UTC), [(60, "10.5")]),
        time_zone="Asia/Tokyo",
    )
    cdr = build_cdr(priced, context(), last_updated=NOW, money_places=0)
    assert cdr["total_cost"] == {"excl_vat": D(333), "incl_vat": D(366)}  # 332.85, 366.135
    assert cdr["currency"] == "JPY"


def test_credit_cdr_negates_costs_and_references_the_original() -> None:
    original = build_cdr(priced_1655(), context(), last_updated=NOW)
    kept = copy.deepcopy(original)
    credit, record = credit_cdr(
        original, last_updated=NOW + timedelta(days=3), actor="admin-7", reason="meter fault"
    )
    assert original == kept  # never an edit
    assert credit["id"] == "cdr-0001-C"
    assert credit["credit"] is True
    assert credit["credit_reference_id"] == "cdr-0001"
    assert credit["total_cost"] == {"excl_vat": D("-0.55"), "incl_vat": D("-0.67")}
    assert credit["total_parking_cost"] == {"excl_vat": D("-0.25"), "incl_vat": D("-0.30")}
    for name in ("charging_periods", "cdr_token", "cdr_location", "tariffs", "total_energy"):
        assert credit[name] == original[name]
    assert credit["last_updated"] == "2026-01-05T17:30:00Z"
    assert record.action is AuditAction.CREDITED
    assert (record.cdr_id, record.reference_id, record.actor) == (
        "cdr-0001-C",
        "cdr-0001",
        "admin-7",
    )
    assert record.total_cost == Price(D("-0.55"), D("-0.67"))
    issued = audit_record(original, action=AuditAction.ISSUED, actor="system", at=NOW)
    assert issued.total_cost.excl_vat + record.total_cost.excl_vat == 0
    assert record.to_dict()["total_cost"] == {"excl_vat": D("-0.55"), "incl_vat": D("-0.67")}
    assert json.loads(ocpi_json(record.to_dict()))["reason"] == "meter fault"


def test_credit_of_a_stored_cdr_with_float_numbers() -> None:
    stored = json.loads(ocpi_json(build_cdr(priced_1655(), context(), last_updated=NOW)))
    stored["total_fixed_cost"] = {"excl_vat": 0.0}
    credit, _ = credit_cdr(
        stored, last_updated=NOW, actor="admin", reason="duplicate", credit_id="CR-1"
    )
    assert credit["id"] == "CR-1"
    assert credit["total_cost"] == {"excl_vat": D("-0.55"), "incl_vat": D("-0.67")}
    assert str(credit["total_fixed_cost"]["excl_vat"]) == "0.0"  # not "-0.0"


def test_credit_refusals() -> None:
    original = build_cdr(priced_1655(), context(), last_updated=NOW)
    credit, _ = credit_cdr(original, last_updated=NOW, actor="admin", reason="x")
    with pytest.raises(CdrError, match=r"original\.credit: expected a CDR that is not a Credit"):
        credit_cdr(credit, last_updated=NOW, actor="admin", reason="again")
    with pytest.raises(CdrError, match="reason: expected a non-empty explanation"):
        credit_cdr(original, last_updated=NOW, actor="admin", reason="")
    with pytest.raises(CdrError, match="credit_id: expected a string of 1 to 39"):
        credit_cdr(original, last_updated=NOW, actor="admin", reason="x", credit_id="x" * 40)
    with pytest.raises(CdrError, match="credit_id: expected an id different"):
        credit_cdr(original, last_updated=NOW, actor="admin", reason="x", credit_id="cdr-0001")
    broken = {**original, "total_cost": {"excl_vat": "0.55"}}
    with pytest.raises(CdrError, match=r"total_cost\.excl_vat: expected a number, got .0\.55."):
        credit_cdr(broken, last_updated=NOW, actor="admin", reason="x")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cdr_id": "x" * 37}, "cdr_id: expected a string of 1 to 36"),
        ({"country_code": "NLD"}, "country_code: expected exactly 2 characters"),
        ({"auth_method": "PIN"}, "auth_method: expected one of AUTH_REQUEST"),
        ({"evse_id": ""}, "evse_id: expected a string of 1 to 48"),
        ({"location": ["Utrecht"]}, "location: expected a mapping"),
    ],
)
def test_bad_context(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CdrError, match=message):
        context(**changes)
    with pytest.raises(CdrError, match=r"token\.type: expected one of"):
        CdrToken("uid", "contract", type="PIN")  # type: ignore[arg-type]


def test_ocpi_datetime_keeps_fractions_only_when_present() -> None:
    assert (
        ocpi_datetime(datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC))
        == "2026-01-02T03:04:05.12Z"
    )
    with pytest.raises(CdrError, match="last_updated: expected a tz-aware datetime"):
        build_cdr(priced_1655(), context(), last_updated=datetime(2026, 1, 1))
    with pytest.raises(CdrError, match="last_updated: expected a tz-aware datetime, got 'now'"):
        build_cdr(priced_1655(), context(), last_updated="now")  # type: ignore[arg-type]
    with pytest.raises(CdrError, match="priced: expected a PricedSession"):
        build_cdr({}, context(), last_updated=NOW)  # type: ignore[arg-type]
    with pytest.raises(CdrError, match="money_places: expected an integer >= 0"):
        build_cdr(priced_1655(), context(), last_updated=NOW, money_places=-1)


def test_expired_reservation_cdr() -> None:
    elements = [
        {
            "price_components": [component("FLAT", 4.00, vat=20)],
            "restrictions": {"reservation": "RESERVATION_EXPIRES"},
        },
        {
            "price_components": [component("TIME", 2.00, 600, vat=20)],
            "restrictions": {"reservation": "RESERVATION"},
        },
        {"price_components": [component("FLAT", 0.50, vat=20), component("ENERGY", 0.25, vat=10)]},
    ]
    made = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
    expiry = made + timedelta(hours=1)
    session = SessionUsage(expiry, expiry, (), reservation=Reservation(made, expiry, expired=True))
    cdr = build_cdr(
        price_session(tariff(elements), session, time_zone="UTC"), context(), last_updated=NOW
    )
    assert (cdr["start_date_time"], cdr["end_date_time"]) == (
        "2026-02-03T09:00:00Z",
        "2026-02-03T10:00:00Z",
    )
    assert [p["dimensions"] for p in cdr["charging_periods"]] == [
        [{"type": "RESERVATION_TIME", "volume": D("1.0000")}]
    ]
    assert cdr["total_cost"] == {"excl_vat": D("6.00"), "incl_vat": D("7.20")}
    assert cdr["total_reservation_cost"] == cdr["total_cost"]
    assert (cdr["total_energy"], cdr["total_time"]) == (0, 0)
