"""V2G settlement: golden session, monthly statements, reconciliation property, scheduler prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.engine.periods import MeterSample
from ampflow.engine.scheduler import ScheduleProblem, Sessions, solve_schedule
from ampflow.engine.settlement import (
    DrEvent,
    LineKind,
    MeteredInterval,
    Party,
    PriceInterval,
    SettlementError,
    V2gProgram,
    V2gSession,
    metered_intervals,
    scheduler_prices,
    settle_session,
)
from ampflow.engine.topology import ChargerSpec, SiteSpec, compile_topology
from ampflow.engine.v2g_statements import driver_statements, site_statements

D = Decimal
T0 = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
PRICES = [
    PriceInterval(T0 + k * HOUR, T0 + (k + 1) * HOUR, D(p))
    for k, p in enumerate(["0.08", "0.12", "0.30", "0.25", "0.10", "0.08"])
]
EVENT = DrEvent("elrp-7", T0 + 2 * HOUR, T0 + 3 * HOUR, D(2), capacity_payment_per_kw=D(5))
PROGRAM = V2gProgram("USD", D("0.05"), D("0.5"), D("0.30"))


def hourly(rows: list[tuple[str, str]], start: datetime = T0) -> tuple[MeteredInterval, ...]:
    return tuple(
        MeteredInterval(start + k * HOUR, start + (k + 1) * HOUR, D(i), D(x))
        for k, (i, x) in enumerate(rows)
    )


GOLDEN = hourly([("20", "0"), ("0", "0"), ("0", "10"), ("0", "4"), ("24", "0"), ("0", "0")])


def amounts(lines: Any) -> list[tuple[Any, ...]]:
    return [(ln.kind.value, ln.quantity, ln.amount) for ln in lines]


def test_golden_session() -> None:
    session = V2gSession("s1", "driver-1", "depot", GOLDEN, committed_kw=D(7), target_kwh=D(30))
    st_ = settle_session(session, program=PROGRAM, export_prices=PRICES, events=[EVENT])
    assert amounts(st_.lines) == [
        ("export_energy", 10, D("3.00")),  # 17-18 at 0.30
        ("export_energy", 4, D("1.00")),  # 18-19 at 0.25
        ("dr_event", 10, 20),
        ("capacity", 7, 35),
        ("degradation", 14, D("0.70")),
        ("driver_share", D("58.30"), D("29.150")),
    ]
    assert st_.grid_payment == D("59.00")
    assert st_.net(Party.UTILITY) == D("-59.00")
    assert st_.net(Party.DRIVER) == D("29.850")
    assert st_.net(Party.SITE) == D("29.150")
    assert st_.metered_export_kwh == st_.settled_export_kwh == 14
    assert (st_.import_kwh, st_.delivered_kwh, st_.shortfall_kwh) == (D(44), D(30), D(0))
    data = st_.to_dict()
    assert data["net"] == {"utility": D("-59.00"), "site": D("29.150"), "driver": D("29.850")}
    assert data["lines"][2]["reference"] == "elrp-7"


def test_missed_target_is_compensated() -> None:
    session = V2gSession("s1", "d", "depot", GOLDEN, target_kwh=D(32))
    st_ = settle_session(session, program=PROGRAM, export_prices=PRICES, events=[EVENT])
    assert amounts(st_.lines)[-1] == ("missed_target", 2, D("0.60"))
    assert st_.shortfall_kwh == 2


def test_dr_payment_instead_of_export_price() -> None:
    program = V2gProgram("USD", D("0.05"), D(0), D(0), dr_excludes_export=True)
    session = V2gSession("s1", "d", "depot", GOLDEN)
    st_ = settle_session(session, program=program, export_prices=PRICES, events=[EVENT])
    assert amounts(st_.lines) == [
        ("export_energy", 4, D("1.00")),
        ("dr_event", 10, 20),
        ("degradation", 14, D("0.70")),
    ]
    assert st_.settled_export_kwh == 14


def test_export_split_across_price_intervals_and_event_edges() -> None:
    intervals = (
        MeteredInterval(
            T0 + 90 * timedelta(minutes=1), T0 + 150 * timedelta(minutes=1), D(0), D(6)
        ),
    )
    st_ = settle_session(
        V2gSession("s", "d", "depot", intervals),
        program=PROGRAM,
        export_prices=PRICES,
        events=[EVENT],
    )
    assert amounts(st_.lines)[:3] == [
        ("export_energy", 3, D("0.36")),
        ("export_energy", 3, D("0.90")),
        ("dr_event", 3, 6),
    ]


def test_uneven_split_keeps_every_kwh() -> None:
    minute = timedelta(minutes=1)
    intervals = (
        MeteredInterval(T0 + 50 * minute, T0 + 70 * minute + timedelta(seconds=7), D(0), D("1")),
    )
    st_ = settle_session(
        V2gSession("s", "d", "depot", intervals), program=PROGRAM, export_prices=PRICES
    )
    quantities = [ln.quantity for ln in st_.lines if ln.kind is LineKind.EXPORT_ENERGY]
    assert len(quantities) == 2
    assert sum(quantities) == 1


def test_metered_intervals_from_meter_samples() -> None:
    samples = [
        MeterSample(T0 - timedelta(minutes=5), D(100), export_kwh=D(50)),
        MeterSample(T0 + HOUR, D(120), export_kwh=D(50)),
        MeterSample(T0 + 3 * HOUR, D(120), export_kwh=D(64)),
        MeterSample(T0 + 6 * HOUR, D(144), export_kwh=D(64)),
    ]
    got = metered_intervals(samples, start=T0, end=T0 + 6 * HOUR, interval_s=3600)
    got_kwh: list[tuple[Any, ...]] = [(i.import_kwh, i.export_kwh) for i in got]
    assert got_kwh == [
        (D("18.461538462"), 0),  # 20 kWh over 65 min, 60 of them in the first hour
        (0, 7),
        (0, 7),
        (8, 0),
        (8, 0),
        (8, 0),
    ]
    assert sum(i.export_kwh for i in got) == 14
    with pytest.raises(SettlementError, match=r"samples: expected readings covering"):
        metered_intervals(samples, start=T0 - HOUR, end=T0, interval_s=60)
    with pytest.raises(SettlementError, match=r"samples\[1\]\.export_kwh: expected a value"):
        metered_intervals(
            [samples[0], MeterSample(T0 + HOUR, D(120))], start=T0, end=T0 + HOUR, interval_s=60
        )


def test_bad_input_is_named() -> None:
    late = V2gSession("s9", "d", "depot", hourly([("0", "1")], start=T0 + 10 * HOUR))
    with pytest.raises(
        SettlementError,
        match=r"export_prices: expected a price covering .* session 's9' exported 1",
    ):
        settle_session(late, program=PROGRAM, export_prices=PRICES)
    overlapping = [EVENT, DrEvent("e2", T0 + 150 * timedelta(minutes=1), T0 + 4 * HOUR, D(1))]
    with pytest.raises(SettlementError, match=r"events\[1\]\.start: expected >= "):
        settle_session(late, program=PROGRAM, export_prices=PRICES, events=overlapping)
    with pytest.raises(
        SettlementError, match=r"V2gProgram\.driver_share: expected a fraction in \[0, 1\]"
    ):
        V2gProgram("USD", D(0), D("1.5"), D(0))
    with pytest.raises(
        SettlementError, match=r"MeteredInterval\.export_kwh: expected a finite number >= 0"
    ):
        MeteredInterval(T0, T0 + HOUR, D(0), D(-1))
    with pytest.raises(SettlementError, match=r"PriceInterval\.end: expected a time after start"):
        PriceInterval(T0, T0, D(1))
    with pytest.raises(SettlementError, match=r"intervals\[1\]\.start: expected >="):
        V2gSession("s", "d", "x", (GOLDEN[1], GOLDEN[0]))


def test_monthly_statements_reconcile() -> None:
    la = "America/Los_Angeles"
    june_night = datetime(2026, 7, 1, 5, 0, tzinfo=UTC)  # 22:00 on 30 June in Los Angeles
    prices = [PriceInterval(june_night - HOUR, T0 + 48 * HOUR, D("0.20"))]
    sessions = [
        V2gSession("a", "alice", "depot", GOLDEN, committed_kw=D(7)),
        V2gSession("b", "bob", "depot", hourly([("0", "5")], start=june_night)),
        V2gSession("c", "alice", "yard", hourly([("10", "2"), ("0", "3")], start=T0 + 24 * HOUR)),
    ]
    statements = [
        settle_session(s, program=PROGRAM, export_prices=prices, events=[EVENT]) for s in sessions
    ]
    drivers = driver_statements(statements, time_zone=la)
    assert [
        (d.driver_id, d.year, d.month, [s.session_id for s in d.sessions]) for d in drivers
    ] == [
        ("bob", 2026, 6, ["b"]),
        ("alice", 2026, 7, ["a", "c"]),
    ]
    alice = drivers[1]
    assert alice.net == statements[0].net(Party.DRIVER) + statements[2].net(Party.DRIVER)
    assert alice.export_kwh == 19
    assert alice.totals[LineKind.DEGRADATION] == (D(19), D("0.95"))
    sites = site_statements(statements, time_zone=la)
    assert [(s.site_id, s.month) for s in sites] == [("depot", 6), ("depot", 7), ("yard", 7)]
    for site in sites:
        assert site.reconciles
        assert site.grid_payment == sum(st_.grid_payment for st_ in site.sessions)
    depot_july = sites[1]
    assert depot_july.grid[LineKind.CAPACITY] == (D(7), D(35))
    assert depot_july.grid[LineKind.EXPORT_ENERGY] == (D(14), D("2.80"))
    assert depot_july.to_dict()["reconciles"] is True
    with pytest.raises(SettlementError, match="expected each session once"):
        site_statements([*statements, statements[0]])


MONEY = st.decimals(min_value=0, max_value=3, places=2)


@st.composite
def settlement_case(
    draw: st.DrawFn,
) -> tuple[V2gProgram, list[PriceInterval], list[DrEvent], list[V2gSession]]:
    quarter = timedelta(minutes=15)
    n = 4 * 48  # quarters in two days; prices per hour, some split in halves
    prices = []
    for h in range(48):
        start = T0 + h * HOUR
        if draw(st.booleans()):
            prices.append(PriceInterval(start, start + HOUR, draw(MONEY)))
        else:
            prices += [
                PriceInterval(start, start + 2 * quarter, draw(MONEY)),
                PriceInterval(start + 2 * quarter, start + HOUR, draw(MONEY)),
            ]
    events: list[DrEvent] = []
    k = 0
    while len(events) < 4 and k < n - 4:
        k += draw(st.integers(1, 60))
        length = draw(st.integers(1, 8))
        if k + length >= n:
            break
        events.append(
            DrEvent(
                f"e{k}", T0 + k * quarter, T0 + (k + length) * quarter, draw(MONEY), draw(MONEY)
            )
        )
        k += length
    program = V2gProgram(
        "EUR", draw(MONEY) / 10, draw(st.decimals(0, 1, places=2)), draw(MONEY), draw(st.booleans())
    )
    sessions = []
    for s in range(draw(st.integers(1, 6))):
        first = draw(st.integers(0, n - 20))
        rows = draw(
            st.lists(
                st.tuples(
                    st.decimals(0, 11, places=3), st.decimals(0, 11, places=3), st.integers(1, 4)
                ),
                min_size=1,
                max_size=12,
            )
        )
        t = T0 + first * quarter + timedelta(seconds=draw(st.integers(0, 899)))  # off the grid
        intervals = []
        for imp, exp, quarters in rows:
            end = min(t + quarters * quarter, T0 + n * quarter)
            if end <= t:
                break
            intervals.append(MeteredInterval(t, end, imp, exp))
            t = end
        target = draw(st.one_of(st.none(), st.decimals(0, 60, places=1)))
        sessions.append(
            V2gSession(
                f"s{s}",
                f"d{s % 2}",
                f"site{s % 3}",
                tuple(intervals),
                draw(st.decimals(0, 20, places=1)),
                target,
            )
        )
    return program, prices, events, sessions


@settings(max_examples=120, deadline=None)
@given(settlement_case(), st.sampled_from(["UTC", "Europe/Amsterdam", "America/Los_Angeles"]))
def test_settlement_reconciles(case: Any, zone: str) -> None:
    program, prices, events, sessions = case
    statements = [
        settle_session(s, program=program, export_prices=prices, events=events) for s in sessions
    ]
    for session, st_ in zip(sessions, statements, strict=True):
        exported = sum((i.export_kwh for i in session.intervals), D(0))
        assert st_.metered_export_kwh == st_.settled_export_kwh == exported
        assert sum((st_.net(p) for p in Party), D(0)) == 0
        assert st_.net(Party.SITE) + st_.net(Party.DRIVER) == st_.grid_payment
        assert st_.net(Party.DRIVER) >= 0
        for ln in st_.lines:
            assert ln.amount == ln.quantity * ln.rate
            assert ln.amount >= 0
    for site in site_statements(statements, time_zone=zone):
        assert site.reconciles
        assert site.utility_net == -site.grid_payment
    drivers = driver_statements(statements, time_zone=zone)
    sites = site_statements(statements, time_zone=zone)
    assert sum((d.net for d in drivers), D(0)) == sum((s.driver_payout for s in sites), D(0))
    assert sum((s.grid_payment for s in sites), D(0)) == sum(
        (st_.grid_payment for st_ in statements), D(0)
    )


@settings(max_examples=60, deadline=None)
@given(settlement_case())
def test_aligned_export_value_is_recomputable(case: Any) -> None:
    """On the price grid, export value is simply sum(kWh x price) per interval."""
    program, prices, _, _ = case
    price_of = {p.start: p.price_per_kwh for p in prices}
    intervals = tuple(
        MeteredInterval(p.start, p.end, D(0), D(k % 7)) for k, p in enumerate(prices[:40])
    )
    st_ = settle_session(
        V2gSession("s", "d", "x", intervals), program=program, export_prices=prices
    )
    expected = sum((i.export_kwh * price_of[i.start] for i in intervals), D(0))
    assert (
        sum((ln.amount for ln in st_.lines if ln.kind is LineKind.EXPORT_ENERGY), D(0)) == expected
    )


def test_scheduler_prices_match_what_settlement_pays() -> None:
    """Give the scheduler the settled per-kWh value; settle its plan; the money agrees."""
    start = T0
    prices = [
        PriceInterval(start + k * HOUR, start + (k + 1) * HOUR, D(p))
        for k, p in enumerate(["0.05", "0.05", "0.05", "0.40"])
    ]
    event = DrEvent("e", start + 3 * HOUR, start + 4 * HOUR, D("0.15"))
    program = V2gProgram("EUR", D("0.02"), D("0.5"), D(0))
    sp = scheduler_prices(
        prices, program=program, start=start, n_steps=4, dt_s=3600, events=[event]
    )
    assert sp.export_price == (D("0.05"), D("0.05"), D("0.05"), D("0.55"))
    kwargs = sp.problem_kwargs()
    assert sp.dr_payment == (D(0), D(0), D(0), D("0.15"))
    # The grid's part on the site's export, the DR payment on the EV's own discharge.
    np.testing.assert_allclose(kwargs["export_price"], [0.05, 0.05, 0.05, 0.40])
    np.testing.assert_allclose(kwargs["discharge_value_per_kwh"], [0, 0, 0, 0.15])
    topo = compile_topology(
        [
            SiteSpec(
                "s",
                import_kw=11,
                export_kw=11,
                chargers=[ChargerSpec("b", "s", max_kw=11, bidirectional=True)],
            )
        ]
    )
    one = np.ones(1)
    sessions = Sessions(
        connector=np.zeros(1, dtype=np.int64),
        arrival_step=np.zeros(1, dtype=np.int64),
        departure_step=np.full(1, 4, dtype=np.int64),
        e_target_kwh=5 * one,
        p_max_kw=11 * one,
        p_discharge_max_kw=11 * one,
        soc_kwh=40 * one,
        soc_min_kwh=30 * one,
        soc_max_kwh=60 * one,
    )
    plan = solve_schedule(
        ScheduleProblem(
            topo, sessions, n_steps=4, dt_s=3600, import_price=[0.30, 0.30, 0.30, 0.60], **kwargs
        )
    )
    assert plan.discharge_kw[0, 3] == pytest.approx(11)
    intervals = tuple(
        MeteredInterval(
            start + k * HOUR,
            start + (k + 1) * HOUR,
            D(str(round(plan.charge_kw[0, k], 6))),
            D(str(round(plan.discharge_kw[0, k], 6))),
        )
        for k in range(4)
    )
    st_ = settle_session(
        V2gSession("s", "d", "s", intervals), program=program, export_prices=prices, events=[event]
    )
    grid = float(st_.grid_payment)
    assert grid == pytest.approx(plan.costs["export_revenue"] + plan.costs["discharge_value"])
    degradation = sum(ln.amount for ln in st_.lines if ln.kind is LineKind.DEGRADATION)
    assert float(degradation) == pytest.approx(plan.costs["degradation"])


def test_scheduler_prices_with_partial_steps_and_exclusive_dr() -> None:
    half = timedelta(minutes=30)
    prices = [PriceInterval(T0, T0 + 2 * HOUR, D("0.10"))]
    event = DrEvent("e", T0 + half, T0 + HOUR + half, D(2))
    exclusive = V2gProgram("EUR", D("0.01"), D(0), D(0), dr_excludes_export=True)
    sp = scheduler_prices(prices, program=exclusive, start=T0, n_steps=2, dt_s=3600, events=[event])
    assert sp.export_price == (D("1.05"), D("1.05"))  # half at 0.10, half at 2 instead
    assert sp.dr_payment == (D(1), D(1))
    np.testing.assert_allclose(sp.problem_kwargs()["export_price"], [0.05, 0.05])
    with pytest.raises(SettlementError, match="export_prices: expected a price covering"):
        scheduler_prices(prices, program=PROGRAM, start=T0, n_steps=3, dt_s=3600)
    with pytest.raises(SettlementError, match="n_steps: expected an integer > 0"):
        scheduler_prices(prices, program=PROGRAM, start=T0, n_steps=0, dt_s=3600)
