"""OCPI 2.2.1 Tariff JSON: parsed exactly, returned unchanged, bad input named precisely."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.engine.errors import AmpflowError
from ampflow.engine.tariffs import (
    DayOfWeek,
    Price,
    ReservationRestriction,
    TariffDimension,
    TariffError,
    TariffType,
    parse_ocpi_datetime,
    parse_tariff,
    select_tariff,
)
from tests.engine.billing import component, tariff_json

D = Decimal

# The specification's step_size example tariff (mod_tariffs, "Example Tariff"), as JSON text.
STEP_SIZE_TARIFF = """{
  "country_code": "DE", "party_id": "ALL", "id": "22", "currency": "EUR",
  "type": "REGULAR",
  "min_price": {"excl_vat": 0.50, "incl_vat": 0.55},
  "elements": [
    {"price_components": [{"type": "TIME", "price": 1.20, "step_size": 1800},
                          {"type": "PARKING_TIME", "price": 1.00, "vat": 0, "step_size": 900}],
     "restrictions": {"start_time": "00:00", "end_time": "17:00"}},
    {"price_components": [{"type": "TIME", "price": 2.40, "vat": 21.0, "step_size": 900}],
     "restrictions": {"start_time": "17:00", "end_time": "00:00",
                      "day_of_week": ["MONDAY", "FRIDAY"], "start_date": "2026-01-01",
                      "end_date": "2027-01-01", "min_kwh": 0.5, "max_kwh": 50,
                      "min_current": 6, "max_current": 96, "min_power": 1.4, "max_power": 22,
                      "min_duration": 60, "max_duration": 36000}},
    {"price_components": [{"type": "FLAT", "price": 2.00, "vat": 20, "step_size": 1},
                          {"type": "TIME", "price": 5.00, "vat": 20, "step_size": 300}],
     "restrictions": {"reservation": "RESERVATION"}}
  ],
  "start_date_time": "2026-01-01T00:00:00Z",
  "end_date_time": "2027-01-01T00:00:00Z",
  "tariff_alt_text": [{"language": "en", "text": "Evening charging costs more."}],
  "x_vendor_field": {"kept": [1, 2.50]},
  "last_updated": "2018-12-18T17:07:11Z"
}"""


def test_parses_every_field_exactly() -> None:
    t = parse_tariff(json.loads(STEP_SIZE_TARIFF))
    assert (t.country_code, t.party_id, t.id, t.currency) == ("DE", "ALL", "22", "EUR")
    assert t.type is TariffType.REGULAR
    assert t.min_price == Price(D("0.5"), D("0.55"))
    assert t.max_price is None
    assert t.start_date_time == datetime(2026, 1, 1, tzinfo=UTC)
    first, second, third = t.elements
    time_c, parking_c = first.price_components
    assert time_c.type is TariffDimension.TIME
    assert (time_c.price, time_c.vat, time_c.step_size) == (D("1.2"), None, 1800)
    assert parking_c.vat == D(0)  # 0 % VAT is not the same as omitted VAT
    assert first.restrictions is not None
    assert (first.restrictions.start_time, first.restrictions.end_time) == (time(0), time(17))
    r = second.restrictions
    assert r is not None
    assert r.day_of_week == {DayOfWeek.MONDAY, DayOfWeek.FRIDAY}
    assert (r.start_date, r.end_date) == (date(2026, 1, 1), date(2027, 1, 1))
    assert (r.min_kwh, r.max_kwh, r.min_current, r.max_current) == (D("0.5"), D(50), D(6), D(96))
    assert (r.min_power, r.max_power) == (D("1.4"), D(22))
    assert (r.min_duration, r.max_duration) == (60, 36000)
    assert third.restrictions is not None
    assert third.restrictions.reservation is ReservationRestriction.RESERVATION
    assert third.component(TariffDimension.ENERGY) is None


def test_json_is_returned_unchanged() -> None:
    data = json.loads(STEP_SIZE_TARIFF)
    original = copy.deepcopy(data)
    t = parse_tariff(data)
    data["elements"].clear()  # the caller's object changing later does not reach the tariff
    assert t.to_json() == original
    out = t.to_json()
    out["id"] = "changed"  # nor does changing what it returned
    assert t.to_json() == original
    assert json.dumps(t.to_json(), sort_keys=True) == json.dumps(original, sort_keys=True)


def test_decimal_input_is_exact() -> None:
    data = tariff_json([{"price_components": [component("ENERGY", 0.1)]}])
    data["elements"][0]["price_components"][0]["price"] = D("0.123456789012345678")
    t = parse_tariff(data)
    assert t.elements[0].price_components[0].price == D("0.123456789012345678")


def test_validity_window_and_selection() -> None:
    old = parse_tariff(
        tariff_json(
            [{"price_components": [component("ENERGY", 0.25)]}],
            id="old",
            end_date_time="2026-07-01T00:00:00Z",
        )
    )
    new = parse_tariff(
        tariff_json(
            [{"price_components": [component("ENERGY", 0.30)]}],
            id="new",
            start_date_time="2026-07-01T00:00:00Z",
        )
    )
    cheap = parse_tariff(
        tariff_json(
            [{"price_components": [component("ENERGY", 0.1)]}], id="cheap", type="PROFILE_CHEAP"
        )
    )
    june = datetime(2026, 6, 30, 23, 59, tzinfo=UTC)
    july = datetime(2026, 7, 1, tzinfo=UTC)  # end is exclusive, start inclusive
    assert old.is_valid_at(june)
    assert not old.is_valid_at(july)
    assert new.is_valid_at(july)
    assert not new.is_valid_at(june)
    assert select_tariff([cheap, old, new], june) is old
    assert select_tariff([cheap, old, new], july) is new
    assert select_tariff([old, cheap], july, tariff_type=TariffType.PROFILE_CHEAP) is cheap
    assert select_tariff([old], july) is None


def test_datetime_without_zone_is_utc() -> None:
    assert parse_ocpi_datetime("2015-06-29T20:39:09") == datetime(
        2015, 6, 29, 20, 39, 9, tzinfo=UTC
    )
    assert parse_ocpi_datetime("2015-06-29T22:39:09+02:00").hour == 20


def _valid() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(STEP_SIZE_TARIFF)
    return data


BAD: list[tuple[str, Any, str | None]] = [
    ("currency", "euro", "currency: expected an ISO 4217 code"),
    ("currency", None, "currency: expected a value (the field is required), got nothing"),
    ("country_code", "NLD", "country_code: expected an ASCII string of exactly 2"),
    ("id", "x" * 37, "id: expected an ASCII string of 1 to 36"),
    ("elements", [], "elements: expected a list of at least 1 item(s), got []"),
    ("elements", {"a": 1}, "elements: expected a list"),
    ("type", "CHEAP", "type: expected one of AD_HOC_PAYMENT"),
    ("last_updated", "yesterday", "last_updated: expected an RFC 3339 date-time"),
    ("min_price", {"incl_vat": 1}, "min_price.excl_vat: expected a number >= 0, got nothing"),
    ("max_price", {"excl_vat": 0.1}, "min_price.excl_vat: expected <= max_price, got 0.5"),
    ("end_date_time", "2025-01-01T00:00:00Z", "end_date_time: expected a date-time after start"),
    ("tariff_alt_text", [{"language": "en"}], "tariff_alt_text[0].text: expected a value"),
    ("e0.pc0.price", "1.20", "elements[0].price_components[0].price: expected a number >= 0"),
    ("e0.pc0.price", -1, "elements[0].price_components[0].price: expected a number >= 0"),
    ("e0.pc0.price", True, "elements[0].price_components[0].price: expected a number"),
    ("e0.pc0.price", float("nan"), "elements[0].price_components[0].price: expected a number"),
    ("e0.pc0.vat", "21%", "elements[0].price_components[0].vat: expected a number >= 0 and <= 100"),
    ("e0.pc0.vat", 120, "elements[0].price_components[0].vat: expected a number >= 0 and <= 100"),
    ("e0.pc0.step_size", None, "elements[0].price_components[0].step_size: expected an integer"),
    ("e0.pc0.step_size", 1.5, "elements[0].price_components[0].step_size: expected an integer"),
    ("e0.pc0.type", "kWh", "elements[0].price_components[0].type: expected one of ENERGY"),
    ("e0.r.start_time", "25:00", "elements[0].restrictions.start_time: expected a 24h time"),
    ("e0.r.end_time", "7:00", "elements[0].restrictions.end_time: expected a 24h time"),
    ("e0.r.end_time", "00:00", None),  # "00:00" to "00:00" is the whole day: valid
    ("e1.r.start_date", "2026-02-30", "elements[1].restrictions.start_date: expected a date"),
    ("e1.r.end_date", "2025-12-31", "elements[1].restrictions.end_date: expected a date after"),
    ("e1.r.max_kwh", 0.1, "elements[1].restrictions.max_kwh: expected >= min_kwh"),
    ("e1.r.min_duration", -5, "elements[1].restrictions.min_duration: expected an integer >= 0"),
    ("e1.r.day_of_week", ["MON"], "elements[1].restrictions.day_of_week[0]: expected one of"),
    ("e1.r.day_of_week", "MONDAY", "elements[1].restrictions.day_of_week: expected a list"),
    ("e1.r.reservation", "YES", "elements[1].restrictions.reservation: expected one of"),
    ("e1.r", [], "elements[1].restrictions: expected a TariffRestrictions object"),
    ("e2.pc0.type", "ENERGY", "elements[2].price_components[0].type: expected FLAT or TIME"),
]


def _set(data: dict[str, Any], where: str, value: Any) -> None:
    if not (where[0] == "e" and where[1].isdigit()):
        data[where] = value
        return
    parts = where.split(".")
    el = data["elements"][int(parts[0][1:])]
    if parts[1] == "r":
        if len(parts) == 2:
            el["restrictions"] = value
        else:
            el.setdefault("restrictions", {})[parts[2]] = value
    else:
        el["price_components"][int(parts[1][2:])][parts[2]] = value


@pytest.mark.parametrize(("where", "value", "message"), BAD)
def test_bad_json_names_path_value_and_expectation(
    where: str, value: Any, message: str | None
) -> None:
    data = _valid()
    _set(data, where, value)
    if message is None:
        parse_tariff(data)
        return
    with pytest.raises(TariffError) as info:
        parse_tariff(data)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, AmpflowError)
    assert info.value.path == str(info.value).split(":")[0]


def test_equal_start_and_end_time_is_ambiguous() -> None:
    data = _valid()
    data["elements"][1]["restrictions"].update(start_time="10:00", end_time="10:00")
    with pytest.raises(TariffError, match=r"end_time: expected a time different from start_time"):
        parse_tariff(data)


@pytest.mark.parametrize("data", [None, [], "tariff", 3])
def test_not_an_object(data: Any) -> None:
    with pytest.raises(TariffError, match="tariff: expected a JSON object"):
        parse_tariff(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(json.loads(STEP_SIZE_TARIFF))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), JSON_VALUES)
def test_any_corruption_is_a_clear_error_or_valid(path: tuple[Any, ...], value: Any) -> None:
    data = _valid()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    error: TariffError | None = None
    try:
        t = parse_tariff(data)
    except TariffError as err:
        error = err
    if error is None:
        assert t.to_json() == data
    else:
        assert str(error).startswith(error.path + ": expected ")
