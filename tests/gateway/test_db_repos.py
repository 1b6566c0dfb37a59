"""Repositories on both databases: the tree round-trips, conflicts are refused whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from ampflow.engine.errors import TopologyError
from ampflow.engine.topology import ChargerSpec, NodeSpec, SiteSpec, compile_topology
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Measurand, Role, SessionStatus, SignalKind, SignalSource
from ampflow.gateway.db.errors import ConflictError, NotFoundError
from ampflow.gateway.db.models import MeterValue, Signal, Site
from ampflow.gateway.db.repo import keys, meter, sessions, signals, sites, stations
from ampflow.gateway.db.repo.sites import LimitWindowSpec, SiteInfo

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PEPPER = b"test-pepper"


def depot(site_id: str = "depot") -> SiteSpec:
    return SiteSpec(
        site_id,
        import_kw=50,
        phase_a=(80, 80, 80),
        nodes=[NodeSpec("panel-a", site_id, import_kw=30), NodeSpec("sub", "panel-a")],
        chargers=[
            ChargerSpec("cp-1", "sub", max_kw=22, connectors=2),
            ChargerSpec("cp-2", site_id, max_kw=7.4, phases=1, phase="L2"),
        ],
    )


def make_site(db: Database, spec: SiteSpec | None = None, **info: object) -> None:
    with db.write() as s:
        sites.create_site(s, spec or depot(), SiteInfo(**info))  # type: ignore[arg-type]


def test_site_tree_round_trips_to_the_same_topology(db: Database) -> None:
    make_site(db, name="Depot", timezone="Europe/Amsterdam")
    with db.read() as s:
        stored = sites.site_spec(sites.get_site_tree(s, "depot"))
    a, b = compile_topology([depot()]), compile_topology([stored])
    assert a.connector_ids == b.connector_ids == ("depot/cp-1/1", "depot/cp-1/2", "depot/cp-2/1")
    assert (a.A != b.A).nnz == 0
    np.testing.assert_array_equal(a.b_import, b.b_import)
    np.testing.assert_array_equal(a.b_export, b.b_export)


def test_invalid_trees_and_duplicates_are_refused(db: Database) -> None:
    bad = SiteSpec("x", import_kw=10, chargers=[ChargerSpec("cp", "nowhere", max_kw=7)])
    with pytest.raises(TopologyError, match="unknown parent"), db.write() as s:
        sites.create_site(s, bad, SiteInfo())
    make_site(db)
    with pytest.raises(ConflictError, match="already exists"), db.write() as s:
        sites.create_site(s, depot(), SiteInfo())
    with pytest.raises(ConflictError, match="time zone"), db.write() as s:
        sites.create_site(s, depot("other"), SiteInfo(timezone="Mars/Olympus"))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Site)) == 1


def test_limits_below_the_site_minimum_conflict(db: Database) -> None:
    make_site(db, min_import_kw=10)
    with pytest.raises(ConflictError, match="below the site's minimum") as err, db.write() as s:
        sites.update_site(s, "depot", {"import_kw": 5.0})
    assert err.value.loc == ("body", "import_kw")
    window = LimitWindowSpec(start_min=17 * 60, end_min=21 * 60, import_kw=8.0)
    with pytest.raises(ConflictError, match="below the site's minimum"), db.write() as s:
        sites.set_limit_windows(s, "depot", [window])
    with db.write() as s:
        sites.set_limit_windows(s, "depot", [LimitWindowSpec(17 * 60, 21 * 60, import_kw=20.0)])
    with pytest.raises(ConflictError, match="time-of-day"), db.write() as s:
        sites.update_site(s, "depot", {"min_import_kw": 25.0})
    with db.read() as s:
        site = sites.get_site(s, "depot")
        assert (site.import_kw, site.min_import_kw, site.revision) == (50.0, 10.0, 2)


def test_updates_change_the_tree_and_bump_the_revision(db: Database) -> None:
    make_site(db)
    with db.write() as s:
        sites.update_node(s, "depot", "panel-a", {"import_kw": 25.0, "phase_a": [32, 32, 32]})
        sites.add_charger(
            s, "depot", ChargerSpec("dc-1", "panel-a", max_kw=50, kind="DC"), priority=2
        )
        sites.update_charger(s, "depot", "cp-1", {"connectors": 3, "priority": 3.0})
        sites.update_connector(s, "depot", "cp-2", 1, priority=0.5)
    with db.read() as s:
        tree = sites.get_site_tree(s, "depot")
        topo = compile_topology([sites.site_spec(tree)])
        assert tree.revision == 5
    assert "depot/dc-1/1" in topo.connector_ids
    assert "depot/cp-1/3" in topo.connector_ids
    assert topo.b_import[topo.total_row("depot/panel-a")] == 25.0
    with pytest.raises(ConflictError, match="exceeds max_kw"), db.write() as s:
        sites.update_charger(s, "depot", "cp-2", {"min_a": 40.0})
    with pytest.raises(NotFoundError), db.write() as s:
        sites.update_node(s, "depot", "nope", {"import_kw": 1.0})
    with pytest.raises(ConflictError, match="already has"), db.write() as s:
        sites.add_node(s, "depot", NodeSpec("cp-1", "depot"))


def test_signals_conflicts_and_openadr_modifications(db: Database) -> None:
    make_site(db, min_import_kw=5)
    iv = [signals.IntervalSpec(T0, T0 + timedelta(hours=1), 20.0)]
    with pytest.raises(ConflictError, match="does not exist") as err, db.write() as s:
        signals.create_signal(s, site_id="nope", kind=SignalKind.IMPORT_CAP_KW, intervals=iv)
    assert err.value.loc == ("body", "site_id")
    low = [signals.IntervalSpec(T0, T0 + timedelta(hours=1), 2.0)]
    with pytest.raises(ConflictError, match="below the site's minimum"), db.write() as s:
        signals.create_signal(s, site_id="depot", kind=SignalKind.IMPORT_CAP_KW, intervals=low)
    with db.write() as s:
        signals.create_signal(
            s, site_id="depot", kind=SignalKind.IMPORT_CAP_KW, intervals=iv, signal_id="ev1"
        )
    with pytest.raises(ConflictError, match="already exists"), db.write() as s:
        signals.create_signal(
            s, site_id="depot", kind=SignalKind.IMPORT_CAP_KW, intervals=iv, signal_id="ev1"
        )
    kw = {"source": SignalSource.OPENADR2, "external_id": "vtn-7", "site_id": "depot"}
    with db.write() as s:
        first, changed = signals.upsert_external_signal(
            s, kind=SignalKind.SIMPLE_LEVEL, intervals=iv, modification_number=0, **kw
        )
        assert changed
    two = [signals.IntervalSpec(T0, T0 + timedelta(hours=2), 2.0)]
    with db.write() as s:
        _, changed = signals.upsert_external_signal(
            s, kind=SignalKind.SIMPLE_LEVEL, intervals=two, modification_number=0, **kw
        )
        assert not changed  # a repeat
        sig, changed = signals.upsert_external_signal(
            s, kind=SignalKind.SIMPLE_LEVEL, intervals=two, modification_number=1, **kw
        )
        assert changed
        assert sig.id == first.id
    with db.read() as s:
        stored = signals.get_signal(s, first.id)
        assert [(iv.value, iv.end_at) for iv in stored.intervals] == [
            (2.0, T0 + timedelta(hours=2))
        ]
        assert s.scalar(select(func.count()).select_from(Signal)) == 2
    with db.write() as s:
        signals.cancel_signal(s, "ev1")
        signals.cancel_signal(s, "ev1")
    with db.read() as s:
        active = signals.list_signals(s, site_ids=["depot"], status=signals.SignalStatus.ACTIVE)
        assert [x.id for x, _ in active] == [first.id]


def test_sessions_targets_and_busy_connectors(db: Database) -> None:
    make_site(db)
    with db.write() as s:
        row = sessions.start_session(s, connector_id="depot/cp-1/1", started_at=T0)
    sid = row.session.id
    with pytest.raises(ConflictError, match="already has open session"), db.write() as s:
        sessions.start_session(s, connector_id="depot/cp-1/1")
    with pytest.raises(ConflictError, match="does not exist"), db.write() as s:
        sessions.start_session(s, connector_id="depot/cp-9/1")
    with pytest.raises(ValueError, match="site/charger/number"):
        sessions.parse_connector_id("depot/cp-1")
    with pytest.raises(ConflictError, match="not after"), db.write() as s:
        sessions.update_session(s, sid, {"departure_at": T0 - timedelta(hours=1)})
    with db.write() as s:
        sessions.update_session(
            s, sid, {"departure_at": T0 + timedelta(hours=8), "energy_target_kwh": 30.0}
        )
        sessions.stop_session(s, sid, at=T0 + timedelta(hours=2))
    with db.read() as s:
        got = sessions.get_session(s, sid)
        assert got.connector_id == "depot/cp-1/1"
        assert got.session.status == SessionStatus.COMPLETED
        assert got.session.energy_target_kwh == 30.0
    with db.write() as s:  # the connector is free again
        sessions.start_session(s, connector_id="depot/cp-1/1")
    with pytest.raises(ConflictError, match="has ended"), db.write() as s:
        sessions.update_session(s, sid, {"priority": 2.0})


def test_meter_ingest_is_idempotent_and_tracks_energy(db: Database) -> None:
    make_site(db)
    with db.write() as s:
        row = sessions.start_session(s, connector_id="depot/cp-1/1", started_at=T0)
        pk = row.session.connector_pk
    t0 = int(T0.timestamp())
    batch = [
        meter.MeterSample(pk, t0 + 60 * i, Measurand.ENERGY_IMPORT_WH, 10_000 + 150.0 * i)
        for i in range(10)
    ] + [meter.MeterSample(pk, t0 + 540, Measurand.POWER_IMPORT_W, 9000.0)]
    with db.write() as s:
        meter.ingest_meter_values(s, batch)
    with db.write() as s:
        meter.ingest_meter_values(s, batch[:5])  # re-sent after a reconnect
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(MeterValue)) == 11
        ses = sessions.get_session(s, row.session.id).session
        assert ses.energy_kwh == pytest.approx(1.35)
        assert ses.power_kw == pytest.approx(9.0)
        series = meter.read_meter_values(
            s, pk, Measurand.ENERGY_IMPORT_WH, start=T0, end=T0 + timedelta(minutes=3)
        )
    assert [v for _, v in series] == [10_000, 10_150, 10_300]


def test_stations_keep_hashed_passwords(db: Database) -> None:
    make_site(db)
    with db.write() as s:
        stations.register_station(
            s, station_id="CP001", site_id="depot", charger_id="cp-1", password="0123456789abcdef"
        )
    with db.read() as s:
        row = stations.get_station(s, "CP001")
        assert row.station.password_hash is not None
        assert "0123456789abcdef" not in row.station.password_hash
        assert stations.check_station_password(s, "CP001", "0123456789abcdef")
        assert not stations.check_station_password(s, "CP001", "wrong-password-xx")
        assert [c.number for c in stations.station_connectors(s, row.station)] == [1, 2]
    with pytest.raises(ConflictError, match="already station"), db.write() as s:
        stations.register_station(s, station_id="CP002", site_id="depot", charger_id="cp-1")
    with pytest.raises(ConflictError, match="already exists"), db.write() as s:
        stations.register_station(s, station_id="CP001", site_id="depot")


def test_api_keys_verify_scope_and_revoke(db: Database) -> None:
    with pytest.raises(ConflictError, match="at least one site"), db.write() as s:
        keys.create_api_key(s, role=Role.UTILITY, pepper=PEPPER)
    with db.write() as s:
        row, token = keys.create_api_key(
            s, role=Role.SITE_MANAGER, pepper=PEPPER, site_ids=["b", "a", "a"]
        )
        assert token not in row.secret_hash
    with db.read() as s:
        who = keys.verify_api_key(s, token, pepper=PEPPER)
        assert who is not None
        assert who.role is Role.SITE_MANAGER
        assert who.site_ids == {"a", "b"}
        assert keys.verify_api_key(s, token, pepper=b"other") is None
        assert keys.verify_api_key(s, token[:-1] + "x", pepper=PEPPER) is None
        assert keys.verify_api_key(s, "garbage", pepper=PEPPER) is None
    with db.write() as s:
        keys.revoke_api_key(s, row.id)
    with db.read() as s:
        assert keys.verify_api_key(s, token, pepper=PEPPER) is None
