"""The control loop on both databases: caps, time-of-day limits (DST), targets, plan, sink."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ampflow.engine.topology import ChargerSpec, NodeSpec, SiteSpec, compile_topology
from ampflow.gateway.control import (
    ConnectorLimit,
    ControlLoop,
    Decision,
    LimitSink,
    RecordingSink,
    allocate_with_plan,
    safe_fallback,
)
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import OptState, SignalKind
from ampflow.gateway.db.repo import control_state, sessions, signals, sites
from ampflow.gateway.db.repo.signals import IntervalSpec
from ampflow.gateway.db.repo.sites import LimitWindowSpec, SiteInfo
from ampflow.gateway.db.snapshot import evaluate_bounds, evaluate_prices, load_snapshot
from tests.gateway.conftest import make_settings

NOW = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Amsterdam
TOL = 1e-6


def spec(site_id: str = "depot") -> SiteSpec:
    return SiteSpec(
        site_id,
        import_kw=50,
        phase_a=(80, 80, 80),
        nodes=[NodeSpec("panel-a", site_id, import_kw=30)],
        chargers=[
            ChargerSpec("cp-1", "panel-a", max_kw=22, connectors=2),
            ChargerSpec("cp-2", site_id, max_kw=7.4, phases=1, phase="L2"),
            ChargerSpec("cp-3", site_id, max_kw=22),
        ],
    )


class Clock:
    def __init__(self, at: datetime = NOW) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def make_loop(db: Database, tmp_path: Path) -> Callable[..., ControlLoop]:
    def make(
        *, sink: LimitSink | None = None, clock: Clock | None = None, **kw: Any
    ) -> ControlLoop:
        settings = make_settings(tmp_path, str(db.url.render_as_string(False)), **kw)
        return ControlLoop(db, settings, sink=sink, clock=clock or Clock())

    return make


def seed(db: Database, *connectors: str, min_import_kw: float = 0.0, **targets: Any) -> list[str]:
    with db.write() as s:
        sites.create_site(
            s, spec(), SiteInfo(timezone="Europe/Amsterdam", min_import_kw=min_import_kw)
        )
    ids = []
    for cid in connectors:
        with db.write() as s:
            row = sessions.start_session(
                s, connector_id=cid, started_at=NOW - timedelta(minutes=30), targets=targets
            )
            ids.append(row.session.id)
    return ids


def connector_pk(db: Database, connector_id: str) -> int:
    with db.read() as s:
        return sessions.find_connector(s, sessions.parse_connector_id(connector_id)).pk


def tick(loop: ControlLoop) -> Decision:
    return asyncio.run(loop.run_once())


def limits(d: Decision) -> dict[str, float]:
    topo = d.snapshot.topology
    return {cid: float(d.p_kw[i]) for i, cid in enumerate(topo.connector_ids)}


def post_event(
    db: Database,
    value: float,
    kind: SignalKind = SignalKind.IMPORT_CAP_KW,
    *,
    start: datetime = NOW - timedelta(minutes=5),
    hours: float = 2,
) -> str:
    with db.write() as s:
        sig = signals.create_signal(
            s,
            site_id="depot",
            kind=kind,
            intervals=[IntervalSpec(start, start + timedelta(hours=hours), value)],
        )
        return sig.id


def test_allocation_respects_tree_and_dr_cap(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    seed(db, "depot/cp-1/1", "depot/cp-1/2", "depot/cp-2/1", "depot/cp-3/1")
    loop = make_loop()
    d = tick(loop)
    first = limits(d)
    # cp-1 shares 22 kW between its two connectors; the 80 A on L2 (where cp-2 also draws)
    # binds before the 50 kW of the site.
    topo = d.snapshot.topology
    load = topo.A @ d.p_kw
    l2 = int(np.flatnonzero((topo.row_node == topo.node_index("depot")) & (topo.row_kind == 2))[0])
    assert load[l2] == pytest.approx(80.0)
    assert first["depot/cp-1/1"] == pytest.approx(first["depot/cp-1/2"])
    assert first["depot/cp-2/1"] == pytest.approx(7.4)
    assert sum(first.values()) < 50.0
    ev = post_event(db, 20.0)
    d = tick(loop)
    assert float(d.p_kw.sum()) <= 20.0 + TOL
    topo = d.snapshot.topology
    assert np.all(topo.A @ d.p_kw <= d.bounds.ub[:, 0] + TOL)
    with db.read() as s:
        sc = control_state.site_control(s, sites.get_site(s, "depot").pk)
        assert sc is not None
        assert (sc.dr_cap_kw, sc.import_limit_kw, sc.tick) == (20.0, 20.0, 2)
        assert sc.active_signals == [ev]
        assert sc.allocated_kw == pytest.approx(20.0)
        stored = control_state.last_limits(s)
    assert sum(stored.values()) == pytest.approx(20.0)


def test_levels_opt_out_and_cancellation(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    seed(db, "depot/cp-3/1", "depot/cp-1/1", min_import_kw=4.0)
    loop = make_loop()
    level = post_event(db, 2, SignalKind.SIMPLE_LEVEL)  # 50 % of 50 kW
    assert float(tick(loop).p_kw.sum()) == pytest.approx(25.0)
    with db.write() as s:
        signals.cancel_signal(s, level)
    shed = post_event(db, 3, SignalKind.SIMPLE_LEVEL)  # 0 %, floored at the site minimum
    d = tick(loop)
    assert d.sites[0].dr_cap_kw == 4.0
    assert float(d.p_kw.sum()) <= 4.0 + TOL
    with db.write() as s:
        signals.set_opt_state(s, shed, OptState.OPT_OUT)
    assert tick(loop).sites[0].dr_cap_kw is None
    post_event(db, 30, start=NOW + timedelta(hours=1))  # not yet
    assert tick(loop).sites[0].dr_cap_kw is None


def test_a_cancelled_cap_is_not_held_by_the_plan_made_under_it(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    """A plan made while a DR cap was in force holds the site to the cap's level; once the cap
    is cancelled the next tick lifts the limits at once, without waiting for the next plan
    (before, the loop kept following the capped plan until a re-plan finished)."""
    seed(db, "depot/cp-3/1", energy_target_kwh=80.0, departure_at=NOW + timedelta(hours=8))
    cap = post_event(db, 11.0)
    loop = make_loop(plan_step_s=900, plan_horizon_h=12)
    asyncio.run(loop.replan())
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(11.0)
    with db.write() as s:
        signals.cancel_signal(s, cap)
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(22.0)
    # The plan made after the cancellation is followed again.
    asyncio.run(loop.replan())
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(22.0)
    # A cap posted after the plan still holds at once: the envelope takes the lower bound.
    post_event(db, 7.0)
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(7.0)


def test_time_of_day_limits_follow_dst(db: Database) -> None:
    with db.write() as s:
        sites.create_site(s, spec(), SiteInfo(timezone="Europe/Amsterdam"))
        sites.set_limit_windows(
            s,
            "depot",
            [
                LimitWindowSpec(8 * 60, 10 * 60, import_kw=20.0),  # every day 08-10 local
                LimitWindowSpec(2 * 60, 3 * 60, import_kw=10.0),  # 02-03 local
                LimitWindowSpec(
                    22 * 60, 6 * 60, weekdays=0b0010000, node_id="panel-a", import_a=16.0
                ),  # Friday night into Saturday
            ],
        )

    def caps(day: str) -> list[float]:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        starts = int(start.timestamp()) + 900 * np.arange(96)
        with db.read() as s:
            snap = load_snapshot(s, at=start, horizon_s=86400)
        b = evaluate_bounds(snap, starts, 900, simple_fractions=(1, 0.75, 0.5, 0))
        return [float(x) for x in b.tod_cap_kw[0]]

    def hours_capped(c: list[float], value: float) -> list[float]:
        return [i / 4 for i, x in enumerate(c) if x == value]

    winter, spring, summer, autumn = (
        caps("2026-03-28"),
        caps("2026-03-29"),
        caps("2026-03-30"),
        caps("2026-10-25"),
    )
    assert hours_capped(winter, 20.0) == [7 + q / 4 for q in range(8)]  # 08-10 CET = 07-09 UTC
    assert hours_capped(summer, 20.0) == [6 + q / 4 for q in range(8)]  # 08-10 CEST = 06-08 UTC
    assert hours_capped(spring, 20.0) == [6 + q / 4 for q in range(8)]
    assert hours_capped(winter, 10.0) == [1 + q / 4 for q in range(4)]
    assert hours_capped(spring, 10.0) == []  # 02:00-03:00 does not exist on that day
    assert hours_capped(autumn, 10.0) == [q / 4 for q in range(8)]  # it happens twice
    # The Friday-night window caps panel-a's phases (no kW rows involved) from 22:00 local.
    friday = datetime(2026, 3, 27, 20, 0, tzinfo=UTC)
    with db.read() as s:
        snap = load_snapshot(s, at=friday, horizon_s=86400)
    topo = snap.topology
    starts = int(friday.timestamp()) + 900 * np.arange(48)
    b = evaluate_bounds(snap, starts, 900, simple_fractions=(1, 0.75, 0.5, 0))
    node = topo.node_index("depot/panel-a")
    phase_rows = np.flatnonzero((topo.row_node == node) & (topo.row_kind > 0))
    assert len(phase_rows) == 0  # panel-a has no A limit of its own: 16 A is applied as kW
    capped = b.ub[topo.total_row(node)] < 30.0
    assert np.flatnonzero(capped).min() == 4  # 21:00 UTC = 22:00 CET
    assert np.flatnonzero(capped).max() == 4 * 9 - 1  # until 06:00 CET = 05:00 UTC


def test_prices_prefer_priority_then_newest(db: Database) -> None:
    with db.write() as s:
        sites.create_site(s, spec(), SiteInfo())
        hour = timedelta(hours=1)
        for value, prio in ((0.5, 1), (0.2, 0), (0.3, 0)):
            signals.create_signal(
                s,
                site_id="depot",
                kind=SignalKind.IMPORT_PRICE,
                priority=prio,
                intervals=[IntervalSpec(NOW, NOW + 2 * hour, value)],
            )
    with db.read() as s:
        snap = load_snapshot(s, at=NOW, horizon_s=86400)
    starts = int(NOW.timestamp()) + 3600 * np.arange(3)
    imp, exp = evaluate_prices(snap, starts, 3600, default_import=0.25, default_export=0.01)
    assert imp[0].tolist() == [0.3, 0.3, 0.25]
    assert exp[0].tolist() == [0.01, 0.01, 0.01]


def test_targets_boost_and_what_evs_actually_draw(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    a, b = seed(db, "depot/cp-1/1", "depot/cp-1/2")
    loop = make_loop()
    assert limits(tick(loop))["depot/cp-1/1"] == pytest.approx(11.0)
    with db.write() as s:
        sessions.update_session(s, a, {"boost": True})
    got = limits(tick(loop))
    assert got["depot/cp-1/1"] == pytest.approx(22 * 4 / 5)  # weight 4 against 1
    assert got["depot/cp-1/2"] == pytest.approx(22 / 5)
    # b says it is full: its share goes to a.
    with db.write() as s:
        sessions.update_session(s, b, {"energy_target_kwh": 0.0})
    got = limits(tick(loop))
    assert (got["depot/cp-1/1"], got["depot/cp-1/2"]) == (pytest.approx(22.0), 0.0)
    # a draws only 6 kW of its 22: it is offered 6 + 1 kW (headroom) and the rest is free.
    with db.write() as s:
        sessions.update_session(s, b, {"energy_target_kwh": None})
        row = sessions.get_session(s, a)
        conn = s.get_one(sessions.Connector, row.session.connector_pk)
        conn.power_kw, conn.measured_at = 6.0, NOW
        row.session.power_kw = 6.0
    got = limits(tick(loop))
    assert got["depot/cp-1/1"] == pytest.approx(7.0)
    assert got["depot/cp-1/2"] == pytest.approx(15.0)


class Recorder:
    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.batches: list[list[ConnectorLimit]] = []
        self.fail = set(fail)

    async def send_limits(self, limits: Sequence[ConnectorLimit]) -> Mapping[int, str]:
        self.batches.append(list(limits))
        return {
            x.connector_pk: "failed" if x.connector_id in self.fail else "accepted" for x in limits
        }


def test_sink_gets_changes_decreases_first_and_failures_again(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    assert isinstance(RecordingSink(), LimitSink)
    seed(db, "depot/cp-1/1", "depot/cp-3/1", "depot/cp-2/1")
    sink = Recorder(fail={"depot/cp-2/1"})
    loop = make_loop(sink=sink)
    tick(loop)
    assert len(sink.batches[0]) == 4  # the first tick sends every connector
    tick(loop)
    assert [x.connector_id for x in sink.batches[1]] == ["depot/cp-2/1"]  # failed: offered again
    sink.fail.clear()
    post_event(db, 20.0)
    tick(loop)
    changed = sink.batches[2]
    deltas = [x.limit_kw - (x.previous_kw or 0.0) for x in changed]
    assert deltas == sorted(deltas)  # decreases first
    assert all(d < 0 for d in deltas[:2])
    assert {x.connector_id for x in changed} >= {"depot/cp-1/1", "depot/cp-3/1"}
    tick(loop)
    assert len(sink.batches) == 3  # nothing moved: nothing sent
    with db.read() as s:
        status = {
            cid: s.get_one(control_state.ConnectorControl, connector_pk(db, cid)).sent_status
            for cid in ("depot/cp-1/1", "depot/cp-3/1")
        }
    assert set(status.values()) == {"accepted"}


class FixedRecorder(Recorder):
    """A sink that reports some connectors as fixed load [kW], as the OCPP sink does for a
    station that is booting or flagged."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed: dict[int, float] = {}

    def uncontrollable_kw(self) -> dict[int, float]:
        return dict(self.fixed)


def test_a_connector_released_from_fixed_load_gets_its_limit_again(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    """cp-3 is taken as 22 kW of fixed load (its station was booting), then becomes
    controllable with an EV that can take 22 kW: the allocation is the same 22 kW, but the
    station never got it (a fixed load is never sent), so it is sent now."""
    seed(db, "depot/cp-3/1")
    sink = FixedRecorder()
    pk = connector_pk(db, "depot/cp-3/1")
    sink.fixed[pk] = 22.0
    loop = make_loop(sink=sink)
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(22.0)
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(22.0)
    assert len(sink.batches) == 1  # unchanged while fixed: nothing more to hand over
    del sink.fixed[pk]
    assert limits(tick(loop))["depot/cp-3/1"] == pytest.approx(22.0)
    assert [x.connector_id for x in sink.batches[-1]] == ["depot/cp-3/1"]
    tick(loop)
    assert len(sink.batches) == 2  # once


def test_restart_resumes_ticks_and_does_not_resend(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    seed(db, "depot/cp-1/1", "depot/cp-3/1")
    first = make_loop(sink=Recorder())
    for _ in range(3):
        tick(first)
    sink = Recorder()
    second = make_loop(sink=sink)
    d = tick(second)
    assert d.tick == 4
    assert sink.batches == []


def test_plan_moves_charging_to_cheap_hours_and_is_followed(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    (a,) = seed(db, "depot/cp-3/1", energy_target_kwh=22.0, departure_at=NOW + timedelta(hours=8))
    with db.write() as s:
        signals.create_signal(
            s,
            site_id="depot",
            kind=SignalKind.IMPORT_PRICE,
            intervals=[
                IntervalSpec(NOW - timedelta(hours=1), NOW + timedelta(hours=4), 0.40),
                IntervalSpec(NOW + timedelta(hours=4), NOW + timedelta(hours=9), 0.10),
            ],
        )
    loop = make_loop(plan_step_s=900, plan_horizon_h=12)
    asyncio.run(loop.replan())
    with db.read() as s:
        sc = control_state.site_control(s, sites.get_site(s, "depot").pk)
        assert sc is not None
        assert sc.plan_status == "optimal"
        plan_kw = s.get_one(
            control_state.ConnectorControl, connector_pk(db, "depot/cp-3/1")
        ).plan_kw
    assert sum(plan_kw) * 0.25 == pytest.approx(22.0, abs=1e-3)
    assert sum(plan_kw[:16]) == pytest.approx(0.0, abs=1e-3)  # nothing in the dear hours
    assert sum(plan_kw[16:20]) * 0.25 == pytest.approx(22.0, abs=1e-3)
    assert limits(tick(loop))["depot/cp-3/1"] == 0.0  # following the plan: wait
    # A new EV the plan did not foresee is served at once, within the site limits.
    with db.write() as s:
        sessions.start_session(s, connector_id="depot/cp-2/1", started_at=NOW)
    got = limits(tick(loop))
    assert got["depot/cp-2/1"] == pytest.approx(7.4)
    assert got["depot/cp-3/1"] == 0.0
    # Four hours later the cheap hours begin and the plan says charge.
    later = make_loop(clock=Clock(NOW + timedelta(hours=4, minutes=1)), plan_step_s=900)
    later._plan = loop._plan
    assert limits(tick(later))["depot/cp-3/1"] == pytest.approx(22.0)
    del a


def test_identical_evs_get_identical_limits_under_a_cap(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    """Forty identical EVs, a flat price and a DR cap at 60 % of their power: every split of
    the cap is optimal for the plan, and each EV gets the same limit (not some at 11 kW and
    others at 0, or 6.0 against 6.6)."""
    n = 40
    fleet = SiteSpec(
        "fleet",
        import_kw=11 * n,
        chargers=[ChargerSpec(f"c{i:02d}", "fleet", max_kw=11) for i in range(n)],
    )
    with db.write() as s:
        sites.create_site(s, fleet, SiteInfo(timezone="UTC"))
        for i in range(n):
            sessions.start_session(
                s,
                connector_id=f"fleet/c{i:02d}/1",
                started_at=NOW - timedelta(minutes=30),
                targets={"energy_target_kwh": 60.0, "departure_at": NOW + timedelta(hours=12)},
            )
        signals.create_signal(
            s,
            site_id="fleet",
            kind=SignalKind.IMPORT_CAP_KW,
            intervals=[IntervalSpec(NOW - timedelta(minutes=5), NOW + timedelta(hours=2), 264.0)],
        )
    loop = make_loop(plan_step_s=900, plan_horizon_h=24)
    asyncio.run(loop.replan())
    got = [kw for cid, kw in limits(tick(loop)).items() if cid.startswith("fleet/")]
    assert sum(got) == pytest.approx(264.0, abs=0.5)
    assert max(got) - min(got) < 0.1


def _urgency_fleet(db: Database) -> None:
    """Four 11 kW EVs leaving in 2, 3, 4 and 5 h, 11 kWh each, at a 22 kW site with a flat
    price: every order of service is equally cheap."""
    fleet = SiteSpec(
        "fleet",
        import_kw=22,
        chargers=[ChargerSpec(f"c{i}", "fleet", max_kw=11) for i in range(4)],
    )
    with db.write() as s:
        sites.create_site(s, fleet, SiteInfo(timezone="UTC"))
        for i, leave_h in enumerate((4, 2, 5, 3)):  # connector order is not departure order
            sessions.start_session(
                s,
                connector_id=f"fleet/c{i}/1",
                started_at=NOW - timedelta(minutes=10),
                targets={"energy_target_kwh": 11.0, "departure_at": NOW + timedelta(hours=leave_h)},
            )


def test_a_full_site_serves_first_the_evs_that_leave_first(
    db: Database, make_loop: Callable[..., ControlLoop]
) -> None:
    """Under a binding site limit the plan charges the EVs leaving in 2 and 3 h first, so that
    a driver who leaves early has had the most, instead of an arbitrary split of the 22 kW."""
    _urgency_fleet(db)
    loop = make_loop(plan_step_s=900, plan_horizon_h=6)
    asyncio.run(loop.replan())
    got = limits(tick(loop))
    assert got["fleet/c1/1"] == pytest.approx(11.0, abs=0.05)  # leaves in 2 h
    assert got["fleet/c3/1"] == pytest.approx(11.0, abs=0.05)  # leaves in 3 h
    assert got["fleet/c0/1"] == pytest.approx(0.0, abs=0.05)
    assert got["fleet/c2/1"] == pytest.approx(0.0, abs=0.05)
    with db.read() as s:
        plan = {
            cid: np.array(s.get_one(control_state.ConnectorControl, connector_pk(db, cid)).plan_kw)
            for cid in ("fleet/c0/1", "fleet/c1/1", "fleet/c2/1", "fleet/c3/1")
        }
    for kw in plan.values():
        assert kw.sum() * 0.25 == pytest.approx(11.0, abs=1e-3)
    # Each EV is full by the end of the hour it is served in: 2 and 3 h first, then 4 and 5 h.
    assert plan["fleet/c1/1"][:4].sum() * 0.25 == pytest.approx(11.0, abs=1e-3)
    assert plan["fleet/c3/1"][:4].sum() * 0.25 == pytest.approx(11.0, abs=1e-3)
    assert plan["fleet/c0/1"][4:8].sum() * 0.25 == pytest.approx(11.0, abs=1e-3)
    assert plan["fleet/c2/1"][4:8].sum() * 0.25 == pytest.approx(11.0, abs=1e-3)


def test_urgency_setting_is_read_from_the_environment_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMPFLOW_URGENCY_BIAS_PER_KWH", "0.002")
    assert make_settings(tmp_path, "sqlite://").urgency_bias_per_kwh == 0.002
    for bad in ("-0.01", "nan"):
        monkeypatch.setenv("AMPFLOW_URGENCY_BIAS_PER_KWH", bad)
        with pytest.raises(ValidationError, match="urgency_bias_per_kwh"):
            make_settings(tmp_path, "sqlite://")


@settings(max_examples=150, deadline=None)
@given(
    demand=st.lists(st.floats(0, 30), min_size=4, max_size=4),
    planned=st.lists(st.floats(0, 30), min_size=4, max_size=4),
    unplanned=st.lists(st.booleans(), min_size=4, max_size=4),
    weight=st.lists(st.floats(0.1, 10), min_size=4, max_size=4),
    cap=st.floats(0, 60),
    with_plan=st.booleans(),
)
def test_allocation_with_plan_never_breaks_a_limit(
    demand: list[float],
    planned: list[float],
    unplanned: list[bool],
    weight: list[float],
    cap: float,
    with_plan: bool,
) -> None:
    topo = compile_topology([spec()])
    ub = topo.row_upper(node_cap_kw={"depot": cap})
    d = np.array(demand)
    p, _ = allocate_with_plan(
        topo,
        d,
        weight=np.array(weight),
        row_upper=ub,
        planned=np.array(planned) if with_plan else None,
        unplanned=np.array(unplanned),
    )
    assert np.all(topo.A @ p <= ub + 1e-6)
    assert np.all(p >= 0)
    assert np.all(p <= topo.p_max_kw + 1e-9)
    assert np.all(p <= np.maximum(d, topo.p_min_kw) + 1e-9)
    assert np.all((p == 0) | (p >= topo.p_min_kw - 1e-9))


@settings(max_examples=100, deadline=None)
@given(
    demand=st.lists(st.floats(0, 30), min_size=4, max_size=4),
    cap=st.floats(0, 60),
)
def test_safe_fallback_never_breaks_a_limit(demand: list[float], cap: float) -> None:
    topo = compile_topology([spec()])
    ub = topo.row_upper(node_cap_kw={"depot": cap})
    p = safe_fallback(topo, np.array(demand), ub)
    assert np.all(topo.A @ p <= ub + 1e-6)
    assert np.all((p == 0) | (p >= topo.p_min_kw - 1e-9))
    assert np.all(p <= np.minimum(np.array(demand), topo.p_max_kw) + 1e-9)


def test_replans_run_in_their_own_lower_priority_thread(
    db: Database, make_loop: Callable[..., ControlLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db, "depot/cp-3/1", energy_target_kwh=10.0, departure_at=NOW + timedelta(hours=4))
    loop = make_loop(replan_nice=5)
    seen: list[tuple[str, int]] = []
    replan = loop._replan

    def spy(now: datetime) -> None:
        tid = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)))
        replan(now)

    monkeypatch.setattr(loop, "_replan", spy)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def twice() -> None:
        await loop.replan()
        await loop.replan()
        await loop.stop()

    asyncio.run(twice())
    assert [name.startswith("ampflow-replan") for name, _ in seen] == [True, True]
    # The event loop's thread keeps its priority; the re-plan thread is 5 lower (nicer).
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    assert [nice for _, nice in seen] == [min(19, base + 5)] * 2
    assert loop.plan_count == 2
