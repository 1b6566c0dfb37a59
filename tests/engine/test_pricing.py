"""Golden tests: the OCPI 2.2.1 worked examples, DST days, step_size and min/max price rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ampflow.engine.periods import MeterSample, PeriodKind, PricingError, Reservation, SessionUsage
from ampflow.engine.pricing import PricedSession, price_session
from ampflow.engine.tariffs import Price, TariffDimension
from tests.engine.billing import component, tariff, usage

D = Decimal
AMS = ZoneInfo("Europe/Amsterdam")
LA = ZoneInfo("America/Los_Angeles")
TIME, PARKING, ENERGY, FLAT = (
    TariffDimension.TIME,
    TariffDimension.PARKING_TIME,
    TariffDimension.ENERGY,
    TariffDimension.FLAT,
)


def lines(priced: PricedSession) -> list[tuple[Any, ...]]:
    """(period start UTC HH:MM, dimension, volume, billed volume, cost excl. VAT) per line;
    times in minutes, energy in kWh."""
    out = []
    for p in priced.periods:
        for ln in p.lines:
            unit = D(60) if ln.dimension in (TIME, PARKING) else D(1)
            out.append(
                (
                    p.start.strftime("%H:%M"),
                    ln.dimension.value,
                    ln.volume / unit,
                    ln.billed_volume / unit,
                    ln.cost.excl_vat,
                )
            )
    return out


# The specification's step_size example tariff (2.2.1-d2 text): TIME 1.20/h (30-min steps) before
# 17:00, 2.40/h (15-min steps) after; parking 1.00/h (15-min steps) until 20:00, free after.
STEP_ELEMENTS: list[dict[str, Any]] = [
    {
        "price_components": [component("TIME", 1.20, 1800), component("PARKING_TIME", 1.00, 900)],
        "restrictions": {"start_time": "00:00", "end_time": "17:00"},
    },
    {
        "price_components": [component("TIME", 2.40, 900), component("PARKING_TIME", 1.00, 900)],
        "restrictions": {"start_time": "17:00", "end_time": "20:00"},
    },
    {
        "price_components": [component("TIME", 2.40, 900)],
        "restrictions": {"start_time": "20:00", "end_time": "00:00"},
    },
]


def test_tou_boundary_1655_charging_then_parking() -> None:
    """Plug in 16:55, charge 10 min, park 2 min: 5 min at 1.20 + 5 min at 2.40, and the 2 min of
    parking rounded to 15 by the last parking step: 0.10 + 0.20 + 0.25 = 0.55."""
    start = datetime(2026, 1, 2, 16, 55, tzinfo=AMS)
    priced = price_session(
        tariff(STEP_ELEMENTS),
        usage(start, [(10, "5")], parked_min=2),
        time_zone="Europe/Amsterdam",
    )
    assert lines(priced) == [
        ("15:55", "TIME", 5, 5, D("0.10")),
        ("16:00", "TIME", 5, 5, D("0.20")),
        ("16:05", "PARKING_TIME", 2, 15, D("0.25")),
    ]
    assert priced.total_cost == Price(D("0.55"), None)  # no VAT information in the tariff
    assert priced.periods[1].start == datetime(2026, 1, 2, 16, 0, tzinfo=UTC)  # 17:00 local


def test_tou_boundary_1635_total_rounded_once() -> None:
    """Plug in 16:35, charge 35 min: the total is rounded to 45 min by the last element's 15-min
    step; 25 min before 17:00 (0.50) and 10 + 10 = 20 min after (0.80): 1.30."""
    start = datetime(2026, 1, 2, 16, 35, tzinfo=AMS)
    priced = price_session(
        tariff(STEP_ELEMENTS), usage(start, [(35, "10")]), time_zone="Europe/Amsterdam"
    )
    assert lines(priced) == [
        ("15:35", "TIME", 25, 25, D("0.50")),
        ("16:00", "TIME", 10, 20, D("0.80")),
    ]
    assert priced.total_cost.excl_vat == D("1.30")


def test_switch_to_free_parking() -> None:
    """Plug in 19:55, charge 10 min, park 2 min after 20:00 when parking is free: the charging
    time is the last billed time dimension, rounded to 15 min: 0.20 + 0.40 = 0.60."""
    start = datetime(2026, 1, 2, 19, 55, tzinfo=AMS)
    priced = price_session(
        tariff(STEP_ELEMENTS), usage(start, [(10, "3")], parked_min=2), time_zone="Europe/Amsterdam"
    )
    assert lines(priced) == [
        ("18:55", "TIME", 5, 5, D("0.20")),
        ("19:00", "TIME", 5, 10, D("0.40")),
    ]
    assert priced.periods[-1].kind is PeriodKind.PARKING
    assert priced.periods[-1].lines == ()
    assert priced.total_cost.excl_vat == D("0.60")


FIVE_MIN = [
    {
        "price_components": [
            component("TIME", 2.00, 300, vat=21),
            component("PARKING_TIME", 3.00, 300, vat=21),
        ]
    }
]


def test_21_min_charging_7_parked_bills_21_plus_10() -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=AMS)
    priced = price_session(
        tariff(FIVE_MIN), usage(start, [(21, "7")], parked_min=7), time_zone="Europe/Amsterdam"
    )
    assert lines(priced) == [
        ("07:00", "TIME", 21, 21, D("0.70")),
        ("07:21", "PARKING_TIME", 7, 10, D("0.50")),
    ]
    assert priced.total_cost == Price(D("1.20"), D("1.4520"))
    assert priced.parking_s == 7 * 60
    assert priced.time_s == 28 * 60


def test_step_size_is_not_applied_at_the_switch_to_parking() -> None:
    """A consequence of the rule (documented, not a bug): 21 min of charging alone is rounded to
    25 min, while 21 min followed by parking bills 21 min plus rounded parking. With free parking
    the longer session costs less."""
    elements = [
        {"price_components": [component("TIME", 6, 300), component("PARKING_TIME", 0, 300)]}
    ]
    start = datetime(2026, 5, 4, 9, 0, tzinfo=AMS)
    alone = price_session(tariff(elements), usage(start, [(21, "7")]), time_zone="Europe/Amsterdam")
    parked = price_session(
        tariff(elements), usage(start, [(21, "7")], parked_min=1), time_zone="Europe/Amsterdam"
    )
    assert alone.total_cost.excl_vat == D("2.50")
    assert parked.total_cost.excl_vat == D("2.10")


def test_a_restriction_can_end_charging_time_between_two_seconds() -> None:
    """Found by hypothesis: with 1-second steps, TIME restricted to the first 0.1 kWh ends at
    59.405941 s. Charging alone, its rounding bills 60 s; followed by free parking it bills
    59.405941 s, as OCPI rounds only the last time dimension. So even with unit steps a longer
    session can cost less, by less than one step of charging TIME."""
    elements = [
        {"price_components": [component("PARKING_TIME", 0)]},
        {
            "price_components": [component("ENERGY", 0), component("TIME", 0.01)],
            "restrictions": {"min_kwh": 0.0, "max_kwh": 0.1},
        },
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    alone = price_session(tariff(elements), usage(start, [(1, "0.101")]), time_zone="UTC")
    parked = price_session(
        tariff(elements), usage(start, [(1, "0.101")], parked_min=1), time_zone="UTC"
    )
    assert alone.total_cost.excl_vat == D("0.000166666667")  # 60 s at 0.01 per hour
    assert parked.total_cost.excl_vat == D("0.000165016503")  # 59.405941 s


def test_three_3_kwh_periods_with_a_10_kwh_step() -> None:
    """ocpi/ocpi #494: 3 + 3 + 3 kWh under three elements with a 10 kWh step bill 3, 3 and 4."""
    elements = [
        {
            "price_components": [component("ENERGY", 0.20, 10_000)],
            "restrictions": {"start_time": "00:00", "end_time": "12:00"},
        },
        {
            "price_components": [component("ENERGY", 0.30, 10_000)],
            "restrictions": {"start_time": "12:00", "end_time": "18:00"},
        },
        {"price_components": [component("ENERGY", 0.40, 10_000)]},
    ]
    start = datetime(2026, 6, 1, 11, 30, tzinfo=AMS)
    priced = price_session(
        tariff(elements),
        usage(start, [(30, "3"), (360, "3"), (30, "3")]),
        time_zone="Europe/Amsterdam",
    )
    assert lines(priced) == [
        ("09:30", "ENERGY", 3, 3, D("0.60")),
        ("10:00", "ENERGY", 3, 3, D("0.90")),
        ("16:00", "ENERGY", 3, 4, D("1.60")),
    ]
    assert priced.energy_kwh == 9


MAX_POWER = [
    {
        "price_components": [component("ENERGY", 0.20, vat=20.0)],
        "restrictions": {"max_power": 16.00},
    },
    {
        "price_components": [component("ENERGY", 0.35, vat=20.0)],
        "restrictions": {"max_power": 32.00},
    },
    {"price_components": [component("ENERGY", 0.50, vat=20.0)]},
]


def test_max_power_example_from_meter_energy() -> None:
    """1 kWh at 6 kW, 40 kWh at 48 kW, 0.5 kWh at 4 kW: 0.20 + 20.00 + 0.10 = 20.30."""
    start = datetime(2026, 2, 3, 10, 0, tzinfo=AMS)
    session = usage(start, [(10, "1"), (50, "40"), (7.5, "0.5")])
    priced = price_session(tariff(MAX_POWER), session, time_zone="Europe/Amsterdam")
    assert lines(priced) == [
        ("09:00", "ENERGY", 1, 1, D("0.20")),
        ("09:10", "ENERGY", 40, 40, D("20.00")),
        ("10:00", "ENERGY", D("0.5"), D("0.5"), D("0.10")),
    ]
    assert [(p.min_power_kw, p.max_power_kw) for p in priced.periods] == [
        (D(6), D(6)),
        (D(48), D(48)),
        (D(4), D(4)),
    ]
    assert priced.total_cost == Price(D("20.30"), D("24.36"))


def test_max_power_from_power_samples_with_interpolated_energy() -> None:
    """Power samples (held until the next sample) decide the element; energy at the switch is
    interpolated from the meter. Power rises 6 -> 20 -> 40 kW within one 30-min meter interval."""
    t0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    samples = (
        MeterSample(t0, D(0), power_kw=D(6)),
        MeterSample(t0 + timedelta(minutes=10), D(5), power_kw=D(20)),
        MeterSample(t0 + timedelta(minutes=20), D(10), power_kw=D(40)),
        MeterSample(t0 + timedelta(minutes=30), D(15), power_kw=D(40)),
    )
    priced = price_session(
        tariff(MAX_POWER), SessionUsage(t0, samples[-1].time, samples), time_zone="UTC"
    )
    assert lines(priced) == [
        ("10:00", "ENERGY", 5, 5, D("1.00")),
        ("10:10", "ENERGY", 5, 5, D("1.75")),
        ("10:20", "ENERGY", 5, 5, D("2.50")),
    ]


def test_current_restriction_split_between_samples_holds_values() -> None:
    """Complex-example style TIME prices: below 32 A (sum of phases) 1.00/h, otherwise 2.00/h."""
    elements = [
        {"price_components": [component("TIME", 1.00)], "restrictions": {"max_current": 32}},
        {"price_components": [component("TIME", 2.00)]},
    ]
    t0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    samples = (
        MeterSample(t0, D(0), current_a=D(16)),
        MeterSample(t0 + timedelta(minutes=30), D(4), current_a=D(48)),
        MeterSample(t0 + timedelta(minutes=60), D(12)),  # current carried forward: 48 A
        MeterSample(t0 + timedelta(minutes=90), D(20), current_a=D(31)),
        MeterSample(t0 + timedelta(minutes=120), D(24)),
    )
    priced = price_session(
        tariff(elements), SessionUsage(t0, samples[-1].time, samples), time_zone="UTC"
    )
    assert lines(priced) == [
        ("10:00", "TIME", 30, 30, D("0.50")),
        ("10:30", "TIME", 60, 60, D("2.00")),
        ("11:30", "TIME", 30, 30, D("0.50")),
    ]
    assert [(p.min_current_a, p.max_current_a) for p in priced.periods] == [
        (D(16), D(16)),
        (D(48), D(48)),
        (D(31), D(31)),
    ]


def test_kwh_crossing_is_interpolated_inside_a_meter_interval() -> None:
    """First 10 kWh at 0.30, the rest at 0.20; one meter interval 0 -> 20 kWh over an hour: the
    switch is at exactly 30 min and 10 kWh."""
    elements = [
        {"price_components": [component("ENERGY", 0.30)], "restrictions": {"max_kwh": 10}},
        {"price_components": [component("ENERGY", 0.20)], "restrictions": {"min_kwh": 10}},
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(tariff(elements), usage(start, [(60, "20")]), time_zone="UTC")
    assert lines(priced) == [
        ("10:00", "ENERGY", 10, 10, D("3.00")),
        ("10:30", "ENERGY", 10, 10, D("2.00")),
    ]


def test_kwh_crossing_at_an_uneven_moment() -> None:
    elements = [
        {"price_components": [component("ENERGY", 0.30)], "restrictions": {"max_kwh": 1}},
        {"price_components": [component("ENERGY", 0.20)]},
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(tariff(elements), usage(start, [(7, "3")]), time_zone="UTC")
    first, second = priced.periods
    assert first.energy_kwh == 1  # the crossing carries the threshold exactly
    assert second.energy_kwh == 2
    # 7 min / 3 = 140 s, rounded up to the next microsecond
    assert second.start - first.start == timedelta(seconds=140)
    assert priced.total_cost.excl_vat == D("0.70")


def test_max_duration_example() -> None:
    """The spec's supermarket: first 30 min free, 0.25/kWh to 60 min, 0.40 after. 40 min with
    5 kWh in the first 30 and 1.2 kWh in the next 10 costs 0.30."""
    elements = [
        {"price_components": [component("ENERGY", 0.00)], "restrictions": {"max_duration": 1800}},
        {"price_components": [component("ENERGY", 0.25)], "restrictions": {"max_duration": 3600}},
        {"price_components": [component("ENERGY", 0.40)]},
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(
        tariff(elements), usage(start, [(30, "5"), (10, "1.2")]), time_zone="UTC"
    )
    assert priced.total_cost.excl_vat == D("0.30")


@pytest.mark.parametrize(
    ("grace_s", "expected_parking_min", "expected"),
    [(0, 40, D("7.00")), (600, 30, D("6.50")), (3600, 0, D("5.50"))],
)
def test_parking_fee_with_grace_period(
    grace_s: int, expected_parking_min: int, expected: Decimal
) -> None:
    """Spec: start fee 0.50, 0.25/kWh, parking 2.00/h in 15-min steps; 20 kWh then 40 min parked
    costs 7.00 (7.90 incl. VAT). A grace period shortens the billed parking."""
    elements = [
        {
            "price_components": [
                component("FLAT", 0.50, vat=20),
                component("ENERGY", 0.25, vat=10),
                component("PARKING_TIME", 2.00, 900, vat=20),
            ]
        }
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(
        tariff(elements),
        usage(start, [(120, "20")], parked_min=40),
        time_zone="UTC",
        idle_grace_s=grace_s,
    )
    assert priced.parking_s == expected_parking_min * 60
    assert priced.total_cost.excl_vat == expected
    if grace_s == 0:
        assert priced.total_cost.incl_vat == D("7.90")


def test_three_per_hour_five_per_hour_parking() -> None:
    """Spec: 150 min charging at 3.00/h and 42 min parked at 5.00/h in 5-min steps: 11.25
    (12.75 incl. VAT)."""
    elements = [
        {
            "price_components": [
                component("TIME", 3.00, 60, vat=10),
                component("PARKING_TIME", 5.00, 300, vat=20),
            ]
        }
    ]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(
        tariff(elements), usage(start, [(150, "30")], parked_min=42), time_zone="UTC"
    )
    assert priced.total_cost == Price(D("11.25"), D("12.75"))


def test_pause_before_the_end_is_charging_time_and_charging_end_can_be_given() -> None:
    elements = [{"price_components": [component("TIME", 1.00), component("PARKING_TIME", 10.00)]}]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    paused = usage(start, [(30, "5"), (30, "0"), (30, "5")], parked_min=30)
    priced = price_session(tariff(elements), paused, time_zone="UTC")
    assert [p.kind for p in priced.periods] == [PeriodKind.CHARGING, PeriodKind.PARKING]
    assert priced.parking_s == 1800
    assert priced.total_cost.excl_vat == D("1.50") + D("5.00")
    told = SessionUsage(
        paused.start, paused.stop, paused.meter, charging_end=start + timedelta(minutes=60)
    )
    priced = price_session(tariff(elements), told, time_zone="UTC")
    assert priced.parking_s == 3600


def test_standby_draw_below_idle_power_is_parking() -> None:
    elements = [{"price_components": [component("TIME", 1.00), component("PARKING_TIME", 2.00)]}]
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    trickle = usage(start, [(60, "10"), (60, "0.02")])
    assert price_session(tariff(elements), trickle, time_zone="UTC").parking_s == 0
    priced = price_session(tariff(elements), trickle, time_zone="UTC", idle_power_kw=D("0.05"))
    assert priced.parking_s == 3600
    assert priced.energy_kwh == D("10.02")  # the standby energy is still energy


def test_v2g_export_is_energy_transfer_but_not_billed_energy() -> None:
    elements = [{"price_components": [component("ENERGY", 0.30), component("PARKING_TIME", 5.00)]}]
    t0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    samples = (
        MeterSample(t0, D(100), export_kwh=D(50)),
        MeterSample(t0 + timedelta(hours=1), D(110), export_kwh=D(50)),
        MeterSample(t0 + timedelta(hours=2), D(110), export_kwh=D(56)),  # discharging
        MeterSample(t0 + timedelta(hours=3), D(110), export_kwh=D(56)),
    )
    priced = price_session(
        tariff(elements), SessionUsage(t0, samples[-1].time, samples), time_zone="UTC"
    )
    assert priced.energy_kwh == 10
    assert priced.parking_s == 3600  # parking starts after the discharge, not before
    assert priced.total_cost.excl_vat == D("3.00") + D("5.00")


# --- daylight saving time -------------------------------------------------------------------------

NIGHT = [
    {
        "price_components": [component("TIME", 1.00, vat=21)],
        "restrictions": {"start_time": "23:00", "end_time": "07:00"},
    },
    {"price_components": [component("TIME", 3.00, vat=21)]},
]


@pytest.mark.parametrize(
    ("zone", "day", "hours", "night_hours"),
    [
        ("Europe/Amsterdam", datetime(2026, 3, 28, 22, 0), 9, 7),  # spring forward: 02:00 -> 03:00
        ("Europe/Amsterdam", datetime(2026, 10, 24, 22, 0), 11, 9),  # fall back: 03:00 -> 02:00
        ("America/Los_Angeles", datetime(2026, 3, 7, 22, 0), 9, 7),
        ("America/Los_Angeles", datetime(2026, 10, 31, 22, 0), 11, 9),
    ],
)
def test_night_window_across_dst(zone: str, day: datetime, hours: int, night_hours: int) -> None:
    """22:00 to 08:00 local on a DST night: the 23:00-07:00 window holds the real hours."""
    tz = ZoneInfo(zone)
    start = day.replace(tzinfo=tz)
    stop = (day + timedelta(hours=10)).replace(tzinfo=tz)
    real = stop.astimezone(UTC) - start.astimezone(UTC)  # aware same-zone subtraction is wall time
    assert real == timedelta(hours=hours)
    session = usage(start, [(real.total_seconds() / 60, "30")])
    priced = price_session(tariff(NIGHT), session, time_zone=zone)
    assert [p.duration_s / 3600 for p in priced.periods] == [1, night_hours, 1]
    assert [p.start.astimezone(tz).strftime("%H:%M") for p in priced.periods] == [
        "22:00",
        "23:00",
        "07:00",
    ]
    assert priced.time_s == hours * 3600
    assert priced.total_cost.excl_vat == night_hours * 1 + 2 * 3


def test_window_starting_in_the_spring_forward_gap() -> None:
    """Los Angeles 2026-03-08: 02:00 PST jumps to 03:00 PDT. A window from 02:30 becomes active
    at the jump (03:00 PDT, 10:00Z), because from then on the local time is past 02:30."""
    elements = [
        {
            "price_components": [component("TIME", 5)],
            "restrictions": {"start_time": "02:30", "end_time": "04:00"},
        },
        {"price_components": [component("TIME", 1)]},
    ]
    start = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)  # 01:00 PST
    priced = price_session(
        tariff(elements), usage(start, [(180, "10")]), time_zone="America/Los_Angeles"
    )
    assert lines(priced) == [
        ("09:00", "TIME", 60, 60, D(1)),
        ("10:00", "TIME", 60, 60, D(5)),
        ("11:00", "TIME", 60, 60, D(1)),
    ]


def test_window_in_the_repeated_fall_back_hour_applies_twice() -> None:
    """Los Angeles 2026-11-01: 01:00-02:00 happens twice. 01:00-01:30 is active in both."""
    elements = [
        {
            "price_components": [component("TIME", 5)],
            "restrictions": {"start_time": "01:00", "end_time": "01:30"},
        },
        {"price_components": [component("TIME", 1)]},
    ]
    start = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)  # 00:00 PDT
    priced = price_session(
        tariff(elements), usage(start, [(240, "10")]), time_zone="America/Los_Angeles"
    )
    assert [(s, m) for s, _, m, _, _ in lines(priced)] == [
        ("07:00", 60),
        ("08:00", 30),
        ("08:30", 30),
        ("09:00", 30),
        ("09:30", 90),
    ]
    assert priced.total_cost.excl_vat == 60 * 5 / D(60) + 180 / D(60)


def test_day_of_week_switches_at_local_midnight() -> None:
    """Sunday energy is free in Amsterdam; the session runs Saturday 23:00 to Sunday 01:00 local
    on the fall-back weekend (Saturday midnight is 22:00Z in summer time)."""
    elements = [
        {"price_components": [component("ENERGY", 0)], "restrictions": {"day_of_week": ["SUNDAY"]}},
        {"price_components": [component("ENERGY", 0.40)]},
    ]
    start = datetime(2026, 10, 24, 23, 0, tzinfo=AMS)
    priced = price_session(
        tariff(elements), usage(start, [(120, "12")]), time_zone="Europe/Amsterdam"
    )
    assert [p.start for p in priced.periods] == [
        datetime(2026, 10, 24, 21, 0, tzinfo=UTC),
        datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
    ]
    assert priced.total_cost.excl_vat == D("2.40")


def test_start_and_end_date_are_local_and_end_exclusive() -> None:
    elements = [
        {
            "price_components": [component("ENERGY", 0.10)],
            "restrictions": {"start_date": "2026-12-24", "end_date": "2026-12-26"},
        },
        {"price_components": [component("ENERGY", 0.30)]},
    ]
    start = datetime(2026, 12, 23, 23, 0, tzinfo=LA)
    priced = price_session(
        tariff(elements), usage(start, [(48 * 60 + 120, "50")]), time_zone="America/Los_Angeles"
    )
    starts = [p.start.astimezone(LA).strftime("%d %H:%M") for p in priced.periods]
    assert starts == ["23 23:00", "24 00:00", "26 00:00"]


# --- min/max price, VAT ---------------------------------------------------------------------------

START_FEE_ENERGY = [
    {"price_components": [component("FLAT", 0.50, vat=20.0), component("ENERGY", 0.25, vat=10.0)]}
]


@pytest.mark.parametrize(
    ("kwh", "total", "applied"),
    [
        ("50", Price(D("10.00"), D("11.00")), ("max_price.excl_vat", "max_price.incl_vat")),
        ("30", Price(D("8.00"), D("8.85")), ()),
    ],
)
def test_max_price_spec_example(kwh: str, total: Price, applied: tuple[str, ...]) -> None:
    t = tariff(START_FEE_ENERGY, max_price={"excl_vat": 10.00, "incl_vat": 11.00})
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(t, usage(start, [(300, kwh)]), time_zone="UTC")
    assert priced.total_cost == total
    assert priced.limits_applied == applied
    assert priced.cost_before_limits.excl_vat == D("0.50") + D("0.25") * D(kwh)


@pytest.mark.parametrize(
    ("kwh", "total"), [("1", Price(D("0.50"), D("0.55"))), ("20", Price(D("5.00"), D("5.50")))]
)
def test_min_price_spec_example(kwh: str, total: Price) -> None:
    t = tariff(
        [{"price_components": [component("ENERGY", 0.25, vat=10.0)]}],
        min_price={"excl_vat": 0.50, "incl_vat": 0.55},
    )
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    assert price_session(t, usage(start, [(60, kwh)]), time_zone="UTC").total_cost == total


def test_limits_apply_separately_with_and_without_vat() -> None:
    """40 kWh at 0.25 + 21 % VAT: 10.00 excl. (not above 10.00) but 12.10 incl. (above 11.00)."""
    t = tariff(
        [{"price_components": [component("ENERGY", 0.25, vat=21)]}],
        max_price={"excl_vat": 10.00, "incl_vat": 11.00},
    )
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    priced = price_session(t, usage(start, [(300, "40")]), time_zone="UTC")
    assert priced.total_cost == Price(D("10.00"), D("11.00"))
    assert priced.limits_applied == ("max_price.incl_vat",)


def test_omitted_vat_is_unknown_not_zero() -> None:
    start = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    session = usage(start, [(60, "10")])
    zero = price_session(
        tariff([{"price_components": [component("ENERGY", 0.3, vat=0)]}]), session, time_zone="UTC"
    )
    omitted = price_session(
        tariff(
            [{"price_components": [component("ENERGY", 0.3)]}],
            max_price={"excl_vat": 2, "incl_vat": 2.2},
        ),
        session,
        time_zone="UTC",
    )
    assert zero.total_cost == Price(D("3.0"), D("3.0"))
    assert omitted.total_cost == Price(D(2), None)  # excl. clamped, incl. unknown
    assert omitted.limits_applied == ("max_price.excl_vat",)
    free = price_session(
        tariff([{"price_components": [component("FLAT", 0)]}]), session, time_zone="UTC"
    )
    assert free.total_cost == Price(D(0), D(0))  # zero cost is zero with any VAT


# --- reservations ---------------------------------------------------------------------------------


def _reserved(elements: list[Any], minutes: int, *, expired: bool = False) -> PricedSession:
    made = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
    start = made + timedelta(minutes=minutes)
    reservation = Reservation(made, start, expired=expired)
    if expired:
        session = SessionUsage(start, start, (), reservation=reservation)
    else:
        session = usage(start, [(120, "20")], reservation=reservation)
    return price_session(tariff(elements), session, time_zone="Europe/Amsterdam")


FEE_AND_ENERGY = {
    "price_components": [component("FLAT", 0.50, vat=20), component("ENERGY", 0.25, vat=10)]
}


def test_reservation_per_hour() -> None:
    elements = [
        {
            "price_components": [component("TIME", 5.00, 60, vat=20)],
            "restrictions": {"reservation": "RESERVATION"},
        },
        FEE_AND_ENERGY,
    ]
    priced = _reserved(elements, 15)
    assert priced.total_cost == Price(D("6.75"), D("7.60"))
    assert priced.periods[0].kind is PeriodKind.RESERVATION
    assert priced.reservation_cost == Price(D("1.25"), D("1.50"))
    assert priced.fixed_cost == Price(D("0.50"), D("0.60"))


def test_reservation_fee_and_steps() -> None:
    elements = [
        {
            "price_components": [
                component("FLAT", 2.00, vat=20),
                component("TIME", 5.00, 300, vat=20),
            ],
            "restrictions": {"reservation": "RESERVATION"},
        },
        FEE_AND_ENERGY,
    ]
    assert _reserved(elements, 13).total_cost == Price(D("8.75"), D("10.00"))


@pytest.mark.parametrize(
    ("expiry", "minutes", "expired", "total"),
    [
        ("fee", 22, False, Price(D("6.50"), D("7.30"))),
        ("fee", 60, True, Price(D("6.00"), D("7.20"))),
        ("time", 22, False, Price(D("7.00"), D("7.90"))),
        ("time", 90, True, Price(D("9.00"), D("10.80"))),
    ],
)
def test_reservation_expiry(expiry: str, minutes: int, expired: bool, total: Price) -> None:
    if expiry == "fee":  # expiry costs 4.00 on top of 2.00/h in 10-min steps
        elements = [
            {
                "price_components": [component("FLAT", 4.00, vat=20)],
                "restrictions": {"reservation": "RESERVATION_EXPIRES"},
            },
            {
                "price_components": [component("TIME", 2.00, 600, vat=20)],
                "restrictions": {"reservation": "RESERVATION"},
            },
            FEE_AND_ENERGY,
        ]
    else:  # 3.00/h, or 6.00/h when it expires
        elements = [
            {
                "price_components": [component("TIME", 3.00, 600, vat=20)],
                "restrictions": {"reservation": "RESERVATION"},
            },
            {
                "price_components": [component("TIME", 6.00, 600, vat=20)],
                "restrictions": {"reservation": "RESERVATION_EXPIRES"},
            },
            FEE_AND_ENERGY,
        ]
    assert _reserved(elements, minutes, expired=expired).total_cost == total


# --- bad input ------------------------------------------------------------------------------------


def test_bad_usage_is_a_clear_error() -> None:
    t0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    t1 = t0 + timedelta(hours=1)
    with pytest.raises(
        PricingError, match=r"MeterSample.energy_kwh: expected a Decimal, int or str \(not float\)"
    ):
        MeterSample(t0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(PricingError, match=r"MeterSample\.time: expected a tz-aware datetime"):
        MeterSample(datetime(2026, 2, 3), D(0))
    with pytest.raises(PricingError, match=r"MeterSample\.power_kw: expected a finite number >= 0"):
        MeterSample(t0, D(0), power_kw=D(-1))
    with pytest.raises(PricingError, match="stop: expected a time after start"):
        SessionUsage(t1, t0, ())
    with pytest.raises(PricingError, match=r"meter: expected samples covering"):
        SessionUsage(t0, t1, (MeterSample(t0, D(0)),))
    with pytest.raises(PricingError, match=r"meter\[1\].energy_kwh: the register never decreases"):
        SessionUsage(t0, t1, (MeterSample(t0, D(5)), MeterSample(t1, D(4))))
    with pytest.raises(PricingError, match=r"meter\[1\].time: expected >"):
        SessionUsage(t0, t1, (MeterSample(t1, D(5)), MeterSample(t1, D(6))))
    ok = usage(t0, [(60, "1")])
    t = tariff(START_FEE_ENERGY, start_date_time="2027-01-01T00:00:00Z")
    with pytest.raises(PricingError, match="tariff 'tariff-1': expected a tariff valid at"):
        price_session(t, ok, time_zone="UTC")
    with pytest.raises(PricingError, match="time_zone: expected an IANA time zone"):
        price_session(tariff(START_FEE_ENERGY), ok, time_zone="Mars/Olympus")
    with pytest.raises(PricingError, match="tariff: expected a Tariff"):
        price_session({"id": "t"}, ok, time_zone="UTC")  # type: ignore[arg-type]
    with pytest.raises(PricingError, match="meter: expected a sequence of MeterSample, got 5"):
        SessionUsage(t0, t1, 5)  # type: ignore[arg-type]
    with pytest.raises(PricingError, match="reservation: expected a Reservation"):
        SessionUsage(t0, t1, ok.meter, reservation="yes")  # type: ignore[arg-type]
    with pytest.raises(PricingError, match="idle_grace_s: expected an integer >= 0"):
        price_session(tariff(START_FEE_ENERGY), ok, time_zone="UTC", idle_grace_s=-1)


def test_samples_beyond_the_session_are_clipped() -> None:
    t0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    samples = tuple(MeterSample(t0 + timedelta(minutes=30 * k), D(5 * k)) for k in range(5))
    session = SessionUsage(t0 + timedelta(minutes=15), t0 + timedelta(minutes=105), samples)
    priced = price_session(tariff(START_FEE_ENERGY), session, time_zone="UTC")
    assert priced.energy_kwh == 15
    assert priced.time_s == 90 * 60


def test_planned_session_for_a_price_preview() -> None:
    start = datetime(2026, 1, 2, 16, 55, tzinfo=AMS)
    planned = SessionUsage.planned(
        start, start + timedelta(minutes=12), "5", charging_end=start + timedelta(minutes=10)
    )
    measured = usage(start, [(10, "5")], parked_min=2)
    a = price_session(tariff(STEP_ELEMENTS), planned, time_zone="Europe/Amsterdam")
    b = price_session(tariff(STEP_ELEMENTS), measured, time_zone="Europe/Amsterdam")
    assert a.total_cost == b.total_cost == Price(D("0.55"), None)
    whole = SessionUsage.planned(start, start + timedelta(minutes=35), 10)
    assert whole.charging_end == whole.stop
    with pytest.raises(PricingError, match="energy_kwh: expected 0 for a session that never"):
        SessionUsage.planned(start, start + timedelta(hours=1), "5", charging_end=start)
