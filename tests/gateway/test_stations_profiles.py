"""The simulated charger's smart-charging rules, without sockets: validation, stacking,
composite schedules, and the invariant that it never draws above its composite limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.gateway.stations import (
    EvPlan,
    Kind,
    Period,
    Profile,
    ProfileStore,
    Purpose,
    Quirk,
    StationConfig,
    StationConfigError,
    StationCore,
)
from ampflow.gateway.stations.profiles import Recurrency, Tx, check_profile

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
CFG = StationConfig("CP-1", connectors=2, max_kw=22.0, phases=3, voltage_v=230.0)


def prof(
    limit: float = 16.0,
    *,
    pid: int = 1,
    connector: int = 0,
    purpose: Purpose = Purpose.TX_DEFAULT,
    kind: Kind = Kind.ABSOLUTE,
    unit: str = "A",
    level: int = 0,
    periods: tuple[Period, ...] | None = None,
    **kw: Any,
) -> Profile:
    kw.setdefault("start_schedule", T0 if kind is not Kind.RELATIVE else None)
    return Profile(pid, connector, level, purpose, kind, unit, periods or (Period(0, limit),), **kw)


def check(p: Profile, *, tx: dict[int, Tx] | None = None, strict: bool = True) -> str | None:
    r = check_profile(p, CFG, transactions=tx or {}, now=T0, strict=strict)
    return None if r is None else r.code


def test_check_profile_names_what_is_wrong() -> None:
    tx = {1: Tx("T1", T0)}
    assert check(prof()) is None
    assert check(prof(connector=3)) == "InvalidValue"
    assert check(prof(level=9)) == "InvalidStackLevel"
    assert check(prof(periods=tuple(Period(60 * i, 10) for i in range(25)))) == "InvalidSchedule"
    assert check(prof(periods=(Period(10, 10),))) == "InvalidSchedule"
    assert check(prof(periods=(Period(0, 10), Period(0, 12)))) == "InvalidSchedule"
    assert check(prof(-1.0)) == "InvalidValue"
    assert check(prof(kind=Kind.RECURRING)) == "InvalidSchedule"  # no recurrency kind
    assert check(prof(kind=Kind.ABSOLUTE, start_schedule=None)) == "InvalidSchedule"
    assert check(prof(kind=Kind.RELATIVE, start_schedule=T0)) == "InvalidSchedule"
    assert check(prof(kind=Kind.RELATIVE, start_schedule=T0), strict=False) is None
    assert check(prof(purpose=Purpose.STATION_MAX, connector=1)) == "InvalidValue"
    assert check(prof(purpose=Purpose.STATION_MAX, kind=Kind.RELATIVE)) == "InvalidProfile"
    assert check(prof(valid_to=T0 - timedelta(seconds=1))) == "InvalidValue"
    tx_p = prof(purpose=Purpose.TX, connector=1, kind=Kind.RELATIVE)
    assert check(tx_p) == "TxNotFound"  # no transaction at all
    assert check(tx_p, tx=tx) == "TxNotFound"  # 2.0.1: must carry the id
    assert check(tx_p, tx=tx, strict=False) is None  # 1.6: the running one
    assert check(replace(tx_p, transaction_id="T1"), tx=tx) is None
    assert check(replace(tx_p, transaction_id="T2"), tx=tx) == "TxNotFound"
    assert check(replace(tx_p, connector=0, transaction_id="T1"), tx=tx) == "InvalidValue"
    w_only = StationConfig("CP-W", quirks=frozenset({Quirk.W_ONLY}))
    r = check_profile(prof(), w_only, transactions={}, now=T0, strict=True)
    assert r is not None
    assert r.code == "UnsupportedRateUnit"
    assert check_profile(prof(unit="W"), w_only, transactions={}, now=T0, strict=True) is None


def test_stack_levels_purposes_and_replacement() -> None:
    store = ProfileStore()
    tx = Tx("T1", T0)
    store.install(prof(20.0, pid=1), strict=True)
    store.install(prof(12.0, pid=2, connector=1, level=0), strict=True)
    assert store.limit_w(1, T0, CFG) == pytest.approx(12 * 690)  # connector-specific wins a tie
    assert store.limit_w(2, T0, CFG) == pytest.approx(20 * 690)  # connector 0 applies to each
    store.install(prof(25.0, pid=3, level=1), strict=True)
    assert store.limit_w(1, T0, CFG) == pytest.approx(25 * 690)  # higher stack level wins
    # A TxProfile overrides every TxDefault; the station maximum caps both.
    store.install(
        prof(35.0, pid=4, connector=1, purpose=Purpose.TX, kind=Kind.RELATIVE), strict=False
    )
    assert store.limit_w(1, T0, CFG, tx) == pytest.approx(22000)  # hardware 22 kW < 35 A
    store.install(prof(10.0, pid=5, purpose=Purpose.STATION_MAX), strict=True)
    assert store.limit_w(1, T0, CFG, tx) == pytest.approx(10 * 690)
    assert store.limit_w(0, T0, CFG) == pytest.approx(10 * 690)
    # 2.0.1: another id at the same level and purpose is a conflict; 1.6 replaces it.
    dup = prof(8.0, pid=6, purpose=Purpose.STATION_MAX)
    conflict = store.conflict(dup, strict=True, max_profiles=16)
    assert conflict is not None
    assert conflict.code == "DuplicateProfile"
    assert store.conflict(dup, strict=False, max_profiles=16) is None
    store.install(dup, strict=False)
    assert {p.profile_id for p in store} == {1, 2, 3, 4, 6}
    assert store.conflict(prof(pid=99, level=5), strict=True, max_profiles=5) is not None
    # Clearing by criteria.
    assert store.clear(purpose=Purpose.TX_DEFAULT, stack_level=0) == 2
    assert store.clear(profile_id=42) == 0
    assert store.clear() == 3


def test_schedule_times_absolute_relative_recurring_and_validity() -> None:
    store = ProfileStore()
    steps = (Period(0, 16.0), Period(3600, 8.0))
    store.install(prof(pid=1, periods=steps, duration_s=7200), strict=True)
    assert store.limit_w(1, T0 - timedelta(seconds=1), CFG) == 22000  # not started
    assert store.limit_w(1, T0 + timedelta(minutes=59), CFG) == pytest.approx(16 * 690)
    assert store.limit_w(1, T0 + timedelta(minutes=61), CFG) == pytest.approx(8 * 690)
    assert store.limit_w(1, T0 + timedelta(hours=2), CFG) == 22000  # duration over
    daily = prof(
        pid=2,
        kind=Kind.RECURRING,
        recurrency=Recurrency.DAILY,
        level=1,
        periods=(Period(0, 6.0), Period(3600, 20.0)),
        start_schedule=T0 - timedelta(days=3),
    )
    store.install(daily, strict=True)
    for day in range(3):
        t = T0 + timedelta(days=day, minutes=10)
        assert store.limit_w(1, t, CFG) == pytest.approx(6 * 690)
    relative = prof(pid=3, kind=Kind.RELATIVE, connector=1, purpose=Purpose.TX, periods=steps)
    store.install(relative, strict=False)
    tx = Tx("T", T0 + timedelta(hours=5))
    assert store.limit_w(1, tx.started_at + timedelta(minutes=30), CFG, tx) == pytest.approx(
        16 * 690
    )
    assert store.limit_w(1, tx.started_at + timedelta(minutes=90), CFG, tx) == pytest.approx(
        8 * 690
    )
    window = prof(
        4.0, pid=4, level=3, valid_from=T0 + timedelta(hours=1), valid_to=T0 + timedelta(hours=2)
    )
    store.install(window, strict=True)
    assert store.limit_w(2, T0 + timedelta(minutes=90), CFG) == pytest.approx(4 * 690)
    assert store.limit_w(2, T0 + timedelta(minutes=150), CFG) == pytest.approx(20 * 690)
    assert store.drop_expired(T0 + timedelta(hours=3)) == 1


def test_composite_schedule_lists_the_changes() -> None:
    core = StationCore(CFG)
    core.profiles.install(
        prof(pid=1, periods=(Period(0, 16.0), Period(600, 10.0)), duration_s=1200), strict=True
    )
    core.profiles.install(prof(12.0, pid=2, purpose=Purpose.STATION_MAX), strict=True)
    periods = core.composite(1, T0, 1800, "A")
    assert [(q.start_s, round(q.limit, 6)) for q in periods] == [
        (0, 12.0),
        (600, 10.0),
        (1200, 12.0),
    ]
    watts = core.composite(1, T0, 1800, "W")
    assert [round(q.limit) for q in watts] == [8280, 6900, 8280]
    assert core.composite(0, T0, 1800, "A")[0].limit == pytest.approx(12.0)


@st.composite
def profiles(draw: st.DrawFn) -> list[Profile]:
    out = []
    for pid in range(draw(st.integers(0, 6))):
        purpose = draw(st.sampled_from(list(Purpose)))
        connector = (
            0
            if purpose is Purpose.STATION_MAX
            else draw(st.integers(0 if purpose is Purpose.TX_DEFAULT else 1, 2))
        )
        kind = (
            Kind.RELATIVE
            if purpose is Purpose.TX
            else draw(st.sampled_from([Kind.ABSOLUTE, Kind.RECURRING]))
        )
        n = draw(st.integers(1, 4))
        starts = sorted(draw(st.sets(st.integers(1, 7200), min_size=n - 1, max_size=n - 1)))
        unit = draw(st.sampled_from(["A", "W"]))
        top = 40.0 if unit == "A" else 30000.0
        periods = tuple(
            Period(s, draw(st.floats(0, top)), draw(st.sampled_from([None, 1, 3])))
            for s in [0, *starts]
        )
        out.append(
            Profile(
                pid,
                connector,
                draw(st.integers(0, 3)),
                purpose,
                kind,
                unit,
                periods,
                start_schedule=None
                if kind is Kind.RELATIVE
                else T0 + timedelta(seconds=draw(st.integers(-3600, 3600))),
                recurrency=Recurrency.DAILY if kind is Kind.RECURRING else None,
                duration_s=draw(st.none() | st.integers(60, 10800)),
                transaction_id=f"T{connector}" if purpose is Purpose.TX else None,
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    ps=profiles(),
    offset_s=st.integers(-3600, 4 * 3600),
    quirk=st.sampled_from([frozenset(), frozenset({Quirk.IGNORES_NUMBER_PHASES})]),
    phases=st.sampled_from([1, 3]),
    ev_kw=st.tuples(st.floats(1, 50), st.floats(1, 50)),
)
def test_never_draws_above_the_composite_limit(
    ps: list[Profile],
    offset_s: int,
    quirk: frozenset[Quirk],
    phases: int,
    ev_kw: tuple[float, float],
) -> None:
    cfg = StationConfig(
        "CP-P", connectors=2, max_kw=22.0, phases=phases, station_max_kw=30.0, quirks=quirk
    )
    core = StationCore(cfg)
    for n, kw in zip((1, 2), ev_kw, strict=True):
        core.plug_in(EvPlan(f"s{n}", 0, 1e9, 1e3, kw, f"TAG{n}", connector=n), now=T0)
        core.begin_tx(n, f"T{n}", now=T0 - timedelta(minutes=30))
    for p in ps:
        core.profiles.install(p, strict=False)
    now = T0 + timedelta(seconds=offset_s)
    core.recompute(now)
    station_w = core.profiles.limit_w(0, now, cfg)
    for c in core:
        limit_w, used = core.profiles.limit(c.number, now, cfg, c.tx)
        assert c.power_w <= limit_w + 1e-6
        assert c.power_w <= min(c.ev.max_kw, cfg.max_kw) * 1000 + 1e-6  # type: ignore[union-attr]
        assert c.power_w == 0 or c.power_w >= cfg.min_a * cfg.voltage_v * used - 1e-6
        # In A: never more than the limit per phase the connector was given.
        assert core.current_a(c) <= core.offered_a(c) + 1e-9
        # The composite schedule a central system would read says the same.
        first = core.composite(c.number, now, 60, "W")[0]
        assert first.limit == pytest.approx(limit_w)
    assert core.power_w <= station_w + 1e-6


def test_config_errors_name_field_value_and_expectation() -> None:
    with pytest.raises(StationConfigError, match=r"phases must be 1 or 3, got 2"):
        StationConfig("CP-1", phases=2)
    with pytest.raises(StationConfigError, match=r"version must be one of 1.6, 2.0.1, got '2.1'"):
        StationConfig("CP-1", version="2.1")  # type: ignore[arg-type]
    with pytest.raises(StationConfigError, match=r"quirks must be one of w_only"):
        StationConfig("CP-1", quirks=frozenset({"sparkles"}))  # type: ignore[arg-type]
    with pytest.raises(StationConfigError, match=r"station_id must match"):
        StationConfig("bad id/with slash")
    with pytest.raises(StationConfigError, match=r"password must be 16 to 40 characters"):
        StationConfig("CP-1", password="short")
    with pytest.raises(StationConfigError, match=r"meter_interval_s must be > 0, got nan"):
        StationConfig("CP-1", meter_interval_s=float("nan"))
