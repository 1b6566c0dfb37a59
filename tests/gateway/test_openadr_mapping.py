"""The OpenADR signal mapping and message parsing: pure functions, property-tested."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ampflow.gateway.db.base import SignalKind
from ampflow.gateway.openadr.events import (
    OPEN_ENDED,
    parse_event_3,
    parse_event_20,
    parse_iso_duration,
)
from ampflow.gateway.openadr.mapping import (
    NO_PRIORITY,
    BadEventError,
    CannotHonourError,
    Interval,
    OadrEvent,
    OadrSignal,
    ProgramRules,
    SignalRole,
    SiteLimits,
    effective_caps,
    map_event,
    power_to_kw,
    price_per_kwh,
    ramp_intervals,
    randomized_offset_s,
    simple_cap_kw,
    split_cap_kw,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
SITE = SiteLimits("depot", import_kw=150.0, min_import_kw=10.0, export_kw=50.0)

fractions = st.tuples(*[st.floats(0, 1, allow_nan=False)] * 4)
kw = st.floats(0.0, 1e4, allow_nan=False)


def event(*signals: OadrSignal, **kw: Any) -> OadrEvent:
    return OadrEvent("ev-1", signals=signals, **kw)


def cap_signal(*values: float, role: SignalRole = SignalRole.IMPORT_KW) -> OadrSignal:
    ivs = tuple(Interval(T0 + i * H, T0 + (i + 1) * H, v) for i, v in enumerate(values))
    return OadrSignal(role, role.value, ivs)


# -- SIMPLE levels ------------------------------------------------------------------------------


@given(
    level=st.integers(0, 3),
    import_kw=st.floats(1, 1e4),
    min_share=st.floats(0, 1),
    f=fractions,
)
def test_simple_level_is_its_share_of_the_import_limit_at_least_the_minimum(
    level: int, import_kw: float, min_share: float, f: tuple[float, ...]
) -> None:
    minimum = min_share * import_kw
    cap = simple_cap_kw(level, import_kw=import_kw, min_import_kw=minimum, fractions=f)
    assert cap == pytest.approx(max(f[level] * import_kw, minimum))
    assert minimum - 1e-9 <= cap <= import_kw + 1e-9


@given(import_kw=st.floats(1, 1e4))
def test_default_simple_levels_are_100_75_50_0_percent(import_kw: float) -> None:
    caps = [simple_cap_kw(x, import_kw=import_kw) for x in range(4)]
    assert caps == pytest.approx([import_kw, 0.75 * import_kw, 0.5 * import_kw, 0.0])


@pytest.mark.parametrize("level", [-1, 4, 1.5, float("nan"), "2", True])
def test_a_simple_level_outside_0_to_3_is_rejected(level: Any) -> None:
    with pytest.raises(BadEventError):
        simple_cap_kw(level, import_kw=100.0)


def test_program_rules_refuse_fractions_outside_0_1() -> None:
    with pytest.raises(ValueError, match="simple_fractions"):
        ProgramRules(simple_fractions=(1.0, 0.5, 1.5, 0.0))


# -- units ------------------------------------------------------------------------------------


@given(value=st.floats(-1e6, 1e6, allow_nan=False))
def test_power_units_and_si_scale_are_read_not_assumed(value: float) -> None:
    kw_ = power_to_kw(value, unit="W", scale="k")
    assert kw_ == pytest.approx(value)
    assert power_to_kw(value, unit="W") == pytest.approx(value / 1000.0)
    assert power_to_kw(value, unit="W", scale="none") == pytest.approx(value / 1000.0)
    assert power_to_kw(value, unit="KW") == pytest.approx(value)
    assert power_to_kw(value, unit="MW") == pytest.approx(value * 1000.0)
    assert power_to_kw(value, unit="W", scale="M") == pytest.approx(value * 1000.0)


@pytest.mark.parametrize(
    ("unit", "scale"),
    [(None, None), ("celsius", None), ("Wh", None), ("V", "k"), ("W", "x"), ("PERCENT", None)],
)
def test_missing_or_absurd_power_units_are_rejected(unit: str | None, scale: str | None) -> None:
    with pytest.raises(BadEventError):
        power_to_kw(10.0, unit=unit, scale=scale)


def test_prices_are_per_kwh_and_implausible_prices_are_rejected() -> None:
    assert price_per_kwh(250.0, per="MWH") == pytest.approx(0.25)
    assert price_per_kwh(-0.05, per="KWH") == pytest.approx(-0.05)
    with pytest.raises(BadEventError, match="per kWh"):
        price_per_kwh(250.0, per="KWH", scale="k")
    with pytest.raises(BadEventError):
        price_per_kwh(0.25, per=None)


# -- shares, randomisation, ramps -----------------------------------------------------------------


@given(cap=kw, sites=st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=6))
@example(cap=1.5, sites=[5e-324])  # a subnormal limit: cap * x rounded to twice the cap
def test_split_cap_sums_to_the_cap_in_proportion(cap: float, sites: list[float]) -> None:
    parts = split_cap_kw(cap, sites)
    assert sum(parts) == pytest.approx(cap, abs=1e-6)
    assert all(p >= 0 for p in parts)
    if sum(sites) > 0:
        for p, s in zip(parts, sites, strict=True):
            assert p == pytest.approx(cap * (s / sum(sites)), abs=1e-6)


@given(key=st.text(max_size=40), window=st.floats(0, 7200, allow_nan=False))
def test_randomized_offset_is_within_the_window_and_stable(key: str, window: float) -> None:
    offset = randomized_offset_s(key, window)
    assert 0 <= offset <= window
    assert offset == randomized_offset_s(key, window)
    assert offset == int(offset)


def test_randomized_offsets_spread_over_the_window() -> None:
    offsets = {randomized_offset_s(f"ven/site-{i}/ev", 600.0) for i in range(200)}
    assert len(offsets) > 100
    assert min(offsets) < 100
    assert max(offsets) > 500


@given(
    cap=st.floats(0, 100),
    above=st.floats(0.01, 500),
    ramp_s=st.floats(0, 7200),
)
def test_ramp_reaches_the_cap_at_the_start_never_above_the_line(
    cap: float, above: float, ramp_s: float
) -> None:
    from_kw = cap + above
    steps = ramp_intervals(T0, cap, from_kw=from_kw, ramp_s=ramp_s)
    if ramp_s < 60:
        assert steps == ()
        return
    assert 1 <= len(steps) <= 4
    assert steps[0].start == T0 - timedelta(seconds=ramp_s)
    assert steps[-1].end == T0
    assert steps[-1].value == pytest.approx(cap)
    for a, b in itertools.pairwise(steps):
        assert a.end == b.start
        assert b.value <= a.value + 1e-9
    for s in steps:  # at or below the straight line at the step's end
        frac = 1 - (T0 - s.end).total_seconds() / ramp_s
        assert s.value <= from_kw + (cap - from_kw) * frac + 1e-4  # µs rounding of step ends
        assert cap - 1e-9 <= s.value <= from_kw + 1e-9


def test_no_ramp_when_the_cap_is_above_the_current_limit() -> None:
    assert ramp_intervals(T0, 200.0, from_kw=150.0, ramp_s=600.0) == ()


# -- overlapping events -------------------------------------------------------------------------

caps_events = st.lists(
    st.tuples(
        st.integers(0, 3),  # priority
        st.lists(
            st.tuples(st.integers(0, 23), st.integers(1, 6), st.sampled_from([0.0, 20.0, 50.0])),
            min_size=1,
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=4,
)


@given(spec=caps_events)
def test_lowest_cap_wins_and_priority_breaks_ties(spec: list[Any]) -> None:
    events = []
    for n, (prio, ivs) in enumerate(spec):
        intervals = []
        at = -1
        for start, length, value in sorted(ivs):
            if start < at:
                continue  # keep each event's own intervals apart
            intervals.append(Interval(T0 + start * H, T0 + (start + length) * H, value))
            at = start + length
        events.append((f"e{n}", prio, intervals))
    segments = effective_caps(events)
    for a, b in itertools.pairwise(segments):
        assert a.end <= b.start
    for half_hour in range(0, 2 * 30):
        t = T0 + half_hour * H / 2 + timedelta(minutes=1)
        covering = [
            (iv.value, prio, eid)
            for eid, prio, ivs in events
            for iv in ivs
            if iv.start <= t < iv.end
        ]
        found = [s for s in segments if s.start <= t < s.end]
        if not covering:
            assert found == []
            continue
        assert len(found) == 1
        best = min(covering)
        assert found[0].cap_kw == best[0]
        assert found[0].event_id == best[2]


# -- one event at one site ---------------------------------------------------------------------


def test_map_event_turns_each_role_into_its_signal_kind() -> None:
    sigs = (
        cap_signal(2.0, role=SignalRole.SIMPLE_LEVEL),
        cap_signal(42.0),
        cap_signal(0.4, role=SignalRole.IMPORT_FRACTION),
        cap_signal(20.0, role=SignalRole.EXPORT_KW),
        OadrSignal(SignalRole.IMPORT_PRICE, "PRICE", (Interval(T0, T0 + H, 0.31),), "EUR"),
        OadrSignal(SignalRole.EXPORT_PRICE, "EXPORT_PRICE", (Interval(T0, T0 + H, 0.08),), "EUR"),
    )
    out = map_event(event(*sigs), SITE)
    assert [(m.kind, m.intervals[0].value) for m in out] == [
        (SignalKind.IMPORT_CAP_KW, 75.0),
        (SignalKind.IMPORT_CAP_KW, 42.0),
        (SignalKind.IMPORT_CAP_KW, 60.0),
        (SignalKind.EXPORT_CAP_KW, 20.0),
        (SignalKind.IMPORT_PRICE, 0.31),
        (SignalKind.EXPORT_PRICE, 0.08),
    ]
    assert out[4].currency == "EUR"


def test_program_rules_set_the_simple_fractions() -> None:
    rules = ProgramRules(simple_fractions=(1.0, 0.9, 0.8, 0.6))
    out = map_event(event(cap_signal(3.0, role=SignalRole.SIMPLE_LEVEL)), SITE, rules=rules)
    assert out[0].intervals[0].value == pytest.approx(90.0)


@pytest.mark.parametrize(
    ("value", "role", "match"),
    [
        (-5.0, SignalRole.IMPORT_KW, "at least 0"),
        (-1.0, SignalRole.EXPORT_KW, "at least 0"),
        (42_000.0, SignalRole.IMPORT_KW, "units"),  # W read as kW
        (1.5, SignalRole.IMPORT_FRACTION, r"\[0, 1\]"),
        (float("inf"), SignalRole.IMPORT_KW, "finite"),
    ],
)
def test_bad_caps_reject_the_event(value: float, role: SignalRole, match: str) -> None:
    with pytest.raises(BadEventError, match=match) as info:
        map_event(event(cap_signal(50.0, value, role=role)), SITE)
    assert info.value.event_id == "ev-1"


def test_a_cap_below_the_uncontrollable_load_cannot_be_honoured() -> None:
    with pytest.raises(CannotHonourError, match="uncontrollable"):
        map_event(event(cap_signal(5.0)), SITE)
    # SIMPLE "emergency" sheds every EV: that is honoured at the minimum import.
    out = map_event(event(cap_signal(3.0, role=SignalRole.SIMPLE_LEVEL)), SITE)
    assert out[0].intervals[0].value == SITE.min_import_kw


@given(share=st.floats(0.01, 1.0), cap=st.floats(0, 1000))
def test_absolute_caps_are_shared_between_the_sites_of_a_ven(share: float, cap: float) -> None:
    site = SiteLimits("s", import_kw=1000.0)
    out = map_event(event(cap_signal(cap)), site, share=share)
    assert out[0].intervals[0].value == pytest.approx(cap * share)


@given(window=st.floats(0, 1800), key=st.text(min_size=1, max_size=10))
def test_randomized_start_delays_caps_within_the_window(window: float, key: str) -> None:
    out = map_event(event(cap_signal(40.0, 30.0), randomize_s=window), SITE, key=key)
    first = out[0].intervals[0]
    delay = (first.start - T0).total_seconds()
    assert 0 <= delay <= window
    assert delay == randomized_offset_s(key, window)
    assert out[0].intervals[-1].end == T0 + 2 * H


def test_randomization_does_not_move_prices() -> None:
    price = OadrSignal(SignalRole.IMPORT_PRICE, "PRICE", (Interval(T0, T0 + H, 0.3),), "EUR")
    out = map_event(event(price, randomize_s=3600.0), SITE, key="x")
    assert out[0].intervals[0].start == T0


def test_ramp_up_lowers_the_cap_before_the_event() -> None:
    out = map_event(event(cap_signal(30.0), ramp_up_s=600.0), SITE)
    ivs = out[0].intervals
    assert ivs[0].start == T0 - timedelta(minutes=10)
    assert ivs[-2].end == T0
    assert ivs[-2].value == pytest.approx(30.0)
    assert [iv.value for iv in ivs[:-1]] == pytest.approx([120.0, 90.0, 60.0, 30.0])


# -- OpenADR 2.0b messages -----------------------------------------------------------------------


def oadr20(
    *signals: dict[str, Any], status: str = "far", priority: int = 0, **period: Any
) -> dict[str, Any]:
    return {
        "event_descriptor": {
            "event_id": "ev-20",
            "modification_number": 3,
            "market_context": "oadr://prog",
            "event_status": status,
            "priority": priority,
            "test_event": False,
        },
        "active_period": {"dtstart": T0, "duration": 2 * H, **period},
        "event_signals": list(signals),
        "targets": [{"ven_id": "ven1"}, {"resource_id": "depot"}],
        "response_required": "always",
    }


def sig20(name: str, kind: str, *values: Any, measurement: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "signal_name": name,
        "signal_type": kind,
        "signal_id": "s",
        "intervals": [
            {"dtstart": T0 + i * H, "duration": H, "signal_payload": v, "uid": i}
            for i, v in enumerate(values)
        ],
    }
    if measurement is not None:
        out["measurement"] = measurement
    return out


POWER_KW = {"name": "powerReal", "unit": "W", "scale": "k", "description": "RealPower"}
PRICE_EUR = {"name": "currencyPerKWh", "unit": "EUR", "scale": "none"}


def test_parse_20_load_dispatch_in_watts_and_kilowatts() -> None:
    kw_event = parse_event_20(
        oadr20(sig20("LOAD_DISPATCH", "setpoint", 42, 40, measurement=POWER_KW))
    )
    w = {**POWER_KW, "scale": "none"}
    w_event = parse_event_20(
        oadr20(sig20("LOAD_DISPATCH", "setpoint", 42000, 40000, measurement=w))
    )
    assert [iv.value for iv in kw_event.signals[0].intervals] == [42.0, 40.0]
    assert [iv.value for iv in w_event.signals[0].intervals] == [42.0, 40.0]
    assert kw_event.modification == 3
    assert kw_event.priority == NO_PRIORITY  # 2.0b priority 0 is "none"
    assert kw_event.targets == frozenset({"depot"})


def test_parse_20_simple_price_tolerance_ramp_and_intervals_without_start() -> None:
    simple = sig20("SIMPLE", "level", 1, 3)
    for iv in simple["intervals"]:
        del iv["dtstart"]  # the 2.0b wire format: intervals follow the active period
    ev = parse_event_20(
        oadr20(
            simple,
            sig20("ELECTRICITY_PRICE", "price", 0.2, 0.4, measurement=PRICE_EUR),
            priority=2,
            tolerance={"tolerate": {"startafter": timedelta(minutes=5)}},
            ramp_up=timedelta(minutes=3),
        )
    )
    assert ev.priority == 2
    assert ev.randomize_s == 300.0
    assert ev.ramp_up_s == 180.0
    s0, s1 = ev.signals
    assert s0.role is SignalRole.SIMPLE_LEVEL
    assert [(iv.start, iv.value) for iv in s0.intervals] == [(T0, 1.0), (T0 + H, 3.0)]
    assert s1.role is SignalRole.IMPORT_PRICE
    assert s1.currency == "EUR"


def test_parse_20_cancelled_event_needs_nothing_else() -> None:
    ev = parse_event_20(oadr20(status="cancelled"))
    assert ev.cancelled
    assert ev.signals == ()


@pytest.mark.parametrize(
    ("signal", "field"),
    [
        (sig20("x-weird", "level", 1), "signal_name"),
        (sig20("LOAD_DISPATCH", "delta", 5, measurement=POWER_KW), "signal_type"),
        ({**sig20("SIMPLE", "level", 1), "intervals": []}, "intervals"),
        ({k: v for k, v in sig20("SIMPLE", "level", 1).items() if k != "intervals"}, "intervals"),
        (sig20("LOAD_DISPATCH", "setpoint", 42), "itemBase"),
        (
            sig20(
                "LOAD_DISPATCH",
                "setpoint",
                42,
                measurement={"name": "temperature", "unit": "celsius"},
            ),
            "itemBase",
        ),
        (sig20("LOAD_DISPATCH", "setpoint", 42, measurement={**POWER_KW, "unit": "V"}), "units"),
        (
            sig20("ELECTRICITY_PRICE", "price", 0.3, measurement={**PRICE_EUR, "unit": "euro"}),
            "itemUnits",
        ),
        (sig20("SIMPLE", "level", "high"), "value"),
    ],
)
def test_parse_20_rejects_bad_signals_naming_the_field(signal: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEventError) as info:
        parse_event_20(oadr20(signal))
    assert field in info.value.field
    assert "ev-20" in str(info.value)


def test_parse_20_ignores_signals_that_ask_nothing() -> None:
    ev = parse_event_20(oadr20(sig20("BID_PRICE", "price", 1), sig20("SIMPLE", "level", 2)))
    assert ev.ignored == ("BID_PRICE/price",)
    assert len(ev.signals) == 1


def test_parse_20_zero_duration_is_open_ended() -> None:
    sig = sig20("SIMPLE", "level", 2)
    sig["intervals"][0]["duration"] = timedelta(0)
    ev = parse_event_20(oadr20(sig, duration=timedelta(0)))
    assert ev.signals[0].intervals[0].end == T0 + OPEN_ENDED


# -- OpenADR 3.1 messages -------------------------------------------------------------------------


def oadr3(*intervals: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "ev-3",
        "objectType": "EVENT",
        "programID": "prog-1",
        "priority": 0,
        "payloadDescriptors": [
            {
                "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                "payloadType": "IMPORT_CAPACITY_LIMIT",
                "units": "KW",
            },
            {
                "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                "payloadType": "PRICE",
                "units": "KWH",
                "currency": "EUR",
            },
        ],
        "intervalPeriod": {"start": T0.isoformat(), "duration": "PT1H"},
        "intervals": list(intervals),
    }
    out.update(extra)
    return out


def iv3(i: int, **payloads: Any) -> dict[str, Any]:
    return {"id": i, "payloads": [{"type": k, "values": [v]} for k, v in payloads.items()]}


def test_parse_3_sequential_intervals_units_and_prices() -> None:
    ev = parse_event_3(
        oadr3(
            iv3(0, IMPORT_CAPACITY_LIMIT=40, PRICE=0.3), iv3(1, IMPORT_CAPACITY_LIMIT=25, PRICE=0.5)
        )
    )
    cap = next(s for s in ev.signals if s.role is SignalRole.IMPORT_KW)
    price = next(s for s in ev.signals if s.role is SignalRole.IMPORT_PRICE)
    assert [(iv.start, iv.end, iv.value) for iv in cap.intervals] == [
        (T0, T0 + H, 40.0),
        (T0 + H, T0 + 2 * H, 25.0),
    ]
    assert price.currency == "EUR"
    assert price.intervals[1].value == 0.5
    assert ev.priority == 0
    assert ev.program == "prog-1"


def test_parse_3_reads_watts_from_the_descriptor_and_falls_back_to_the_program() -> None:
    w = oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=40000))
    w["payloadDescriptors"] = [
        {
            "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
            "payloadType": "IMPORT_CAPACITY_LIMIT",
            "units": "W",
        }
    ]
    assert parse_event_3(w).signals[0].intervals[0].value == 40.0
    bare = oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=40))
    bare["payloadDescriptors"] = None
    program = {"payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}]}
    assert parse_event_3(bare, program=program).signals[0].intervals[0].value == 40.0
    with pytest.raises(BadEventError, match="units"):
        parse_event_3(bare)  # never assumed


def test_parse_3_now_forever_randomize_and_cancel_idioms() -> None:
    now = T0 + timedelta(minutes=7)
    ev = parse_event_3(
        oadr3(
            iv3(0, IMPORT_CAPACITY_LIMIT=40),
            intervalPeriod={
                "start": "0001-01-01T00:00:00Z",
                "duration": "P9999Y",
                "randomizeStart": "PT5M",
            },
        ),
        now=now,
    )
    (iv,) = ev.signals[0].intervals
    assert iv.start == now
    assert iv.end == now + OPEN_ENDED
    assert ev.randomize_s == 300.0
    cancelled = parse_event_3(
        oadr3(
            iv3(0, IMPORT_CAPACITY_LIMIT=40),
            intervalPeriod={"start": "0001-01-01", "duration": "PT0S"},
        )
    )
    assert cancelled.cancelled


def test_parse_3_event_duration_trims_or_repeats_the_intervals() -> None:
    trimmed = parse_event_3(
        oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=40), iv3(1, IMPORT_CAPACITY_LIMIT=30), duration="PT90M")
    )
    assert trimmed.signals[0].intervals[-1].end == T0 + timedelta(minutes=90)
    repeated = parse_event_3(
        oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=40), iv3(1, IMPORT_CAPACITY_LIMIT=30), duration="PT6H"),
        now=T0,
    )
    values = [iv.value for iv in repeated.signals[0].intervals]
    assert values == [40, 30, 40, 30, 40, 30]


@pytest.mark.parametrize(
    ("ev", "field"),
    [
        (oadr3(), "intervals"),
        ({**oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=4)), "intervals": None}, "intervals"),
        (oadr3(iv3(0, WEIRD_THING=1)), "type"),
        (oadr3(iv3(0, DISPATCH_SETPOINT_RELATIVE=-5)), "type"),
        (oadr3({"id": 0, "payloads": []}), "payloads"),
        (oadr3(iv3(0, IMPORT_CAPACITY_LIMIT="lots")), "value"),
        (oadr3(iv3(0, IMPORT_CAPACITY_LIMIT=4), priority=-1), "priority"),
        (
            oadr3(
                iv3(0, IMPORT_CAPACITY_LIMIT=4),
                intervalPeriod={"start": "2026-03-02T12:00:00", "duration": "PT1H"},
            ),
            "start",
        ),
        (
            oadr3(
                iv3(0, IMPORT_CAPACITY_LIMIT=4),
                intervalPeriod={"start": T0.isoformat(), "duration": "1 hour"},
            ),
            "duration",
        ),
    ],
)
def test_parse_3_rejects_bad_events_naming_the_field(ev: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEventError) as info:
        parse_event_3(ev)
    assert field in info.value.field
    assert "ev-3" in str(info.value)


def test_parse_3_lists_informational_payloads_as_ignored() -> None:
    ev = parse_event_3(oadr3(iv3(0, GHG=300, ALERT_FLEX_ALERT="x", IMPORT_CAPACITY_LIMIT=40)))
    assert ev.ignored == ("ALERT_FLEX_ALERT", "GHG")
    assert [s.role for s in ev.signals] == [SignalRole.IMPORT_KW]


@given(
    d=st.integers(0, 400),
    h=st.integers(0, 30),
    m=st.integers(0, 90),
    s=st.integers(0, 90),
)
def test_iso_durations(d: int, h: int, m: int, s: int) -> None:
    text = f"P{d}DT{h}H{m}M{s}S"
    assert parse_iso_duration(text) == timedelta(days=d, hours=h, minutes=m, seconds=s)


def test_iso_duration_edge_cases() -> None:
    assert parse_iso_duration("PT0S") == timedelta(0)
    assert parse_iso_duration("P1W") == timedelta(days=7)
    assert parse_iso_duration("P9999Y") is None
    for bad in ("", "P", "PT", "-PT1H", "1H", "PT1.5H"):
        with pytest.raises(BadEventError):
            parse_iso_duration(bad)
