"""The OCPP gateway's store functions on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from ampflow.engine.topology import ChargerSpec, SiteSpec
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import ChargingProfileStatus as Status
from ampflow.gateway.db.models import ChargingProfile
from ampflow.gateway.db.repo import sites, stations
from ampflow.gateway.db.repo.sites import SiteInfo
from ampflow.gateway.ocpp import store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _stations(db: Database) -> list[int]:
    spec = SiteSpec(
        "depot",
        import_kw=50,
        chargers=[ChargerSpec("cp-1", "depot", max_kw=11), ChargerSpec("cp-2", "depot", max_kw=11)],
    )
    with db.write() as s:
        sites.create_site(s, spec, SiteInfo())
        return [
            stations.register_station(
                s, station_id=f"ST{i}", site_id="depot", charger_id=cp
            ).station.pk
            for i, cp in enumerate(["cp-1", "cp-2"])
        ]


def _rec(station_pk: int, profile_id: int, status: Status, kw: float) -> store.ProfileRecord:
    return store.ProfileRecord(
        station_pk=station_pk,
        connector_pk=None,
        transaction_pk=None,
        ocpp_profile_id=profile_id,
        purpose="TxProfile",
        stack_level=1,
        kind="Absolute",
        rate_unit="A",
        schedule={"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0}]},
        limit_kw=kw,
        status=status,
        attempts=1,
        sent_at=T0,
        responded_at=T0,
        outcome="accepted",
    )


def test_profiles_recorded_in_one_batch_supersede_as_one_by_one(db: Database) -> None:
    a, b = _stations(db)
    with db.write() as s:
        store.record_profile(s, _rec(a, 1001, Status.ACCEPTED, 11.0))
        store.record_profile(s, _rec(a, 1002, Status.ACCEPTED, 11.0))
    with db.write() as s:
        store.record_profiles(
            s,
            [
                _rec(a, 1001, Status.ACCEPTED, 5.0),
                _rec(b, 1001, Status.ACCEPTED, 6.0),
                _rec(a, 1001, Status.REJECTED, 1.0),  # a rejection supersedes nothing
                _rec(b, 1001, Status.ACCEPTED, 7.0),  # the later of two in the batch wins
            ],
        )
        store.record_profiles(s, [])
    with db.read() as s:
        rows = s.execute(
            select(
                ChargingProfile.station_pk,
                ChargingProfile.ocpp_profile_id,
                ChargingProfile.limit_kw,
                ChargingProfile.status,
                ChargingProfile.schedule,
            ).order_by(ChargingProfile.pk)
        ).all()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (a, 1001, 11.0, Status.SUPERSEDED.value),
        (a, 1002, 11.0, Status.ACCEPTED.value),  # another profile id: untouched
        (a, 1001, 5.0, Status.ACCEPTED.value),
        (b, 1001, 6.0, Status.SUPERSEDED.value),
        (a, 1001, 1.0, Status.REJECTED.value),
        (b, 1001, 7.0, Status.ACCEPTED.value),
    ]
    assert rows[-1][4]["chargingRateUnit"] == "A"  # JSON round-trips
