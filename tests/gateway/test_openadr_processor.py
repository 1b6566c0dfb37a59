"""The VENs' shared event processing against the store, on both databases, without a network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ampflow.engine.topology import ChargerSpec, SiteSpec
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import OptState, SignalSource
from ampflow.gateway.db.models import Signal
from ampflow.gateway.db.repo import signals, sites
from ampflow.gateway.openadr.config import VenConfig
from ampflow.gateway.openadr.mapping import Interval, OadrEvent, OadrSignal, SignalRole
from ampflow.gateway.openadr.processor import EventProcessor, Opt
from ampflow.gateway.openadr.store import site_power_kw

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)


def seed(db: Database) -> None:
    with db.write() as s:
        for sid, kw in (("a", 100.0), ("b", 50.0)):
            spec = SiteSpec(sid, import_kw=kw, chargers=[ChargerSpec("cp-1", sid, max_kw=22)])
            sites.create_site(s, spec, sites.SiteInfo(min_import_kw=5.0))


def processor(
    db: Database, *, protocol: str = "2.0b", **config: Any
) -> tuple[EventProcessor, list[str]]:
    woken: list[str] = []
    cfg = VenConfig.model_validate(
        {
            "name": "ven",
            "protocol": protocol,
            "vtn_url": "https://vtn.test/OpenADR2/Simple/2.0b",
            "ven_name": "ampflow",
            "sites": [{"site_id": "a", "resource": "meter-a"}, {"site_id": "b"}],
            **config,
        }
    )
    source = SignalSource.OPENADR2 if protocol == "2.0b" else SignalSource.OPENADR3
    return EventProcessor(db, cfg, source=source, notify=woken.append), woken


def cap(
    *values: float, start: datetime = NOW - H, role: SignalRole = SignalRole.IMPORT_KW
) -> OadrSignal:
    return OadrSignal(
        role,
        role.value,
        tuple(Interval(start + i * H, start + (i + 1) * H, v) for i, v in enumerate(values)),
    )


def price(*values: float) -> OadrSignal:
    return OadrSignal(
        SignalRole.IMPORT_PRICE,
        "PRICE",
        tuple(Interval(NOW + i * H, NOW + (i + 1) * H, v) for i, v in enumerate(values)),
        "EUR",
    )


def rows(db: Database) -> dict[str, tuple[str, str, list[float], int, str]]:
    """Signals by external id (one site targeted, so the ids are unique)."""
    with db.read() as s:
        return {
            str(x.external_id): (
                x.kind,
                x.status,
                [iv.value for iv in x.intervals],
                x.modification_number,
                x.opt_state,
            )
            for x in s.query(Signal).order_by(Signal.pk)
        }


def run(fn: Callable[[], Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(fn(), 30)

    return asyncio.run(bounded())


@pytest.fixture
def seeded(db: Database) -> Database:
    seed(db)
    return db


def test_an_absolute_cap_is_shared_by_import_limit_and_wakes_the_loop(seeded: Database) -> None:
    proc, woken = processor(seeded)
    answer = run(lambda: proc.handle(OadrEvent("e1", signals=(cap(60.0), price(0.3)))))
    assert answer.opt is Opt.IN
    assert answer.changed
    assert woken == ["OpenADR ven: event e1"]
    with seeded.read() as s:
        found = sorted(
            (x.site_pk, x.kind, [iv.value for iv in x.intervals], x.opt_state)
            for x in s.query(Signal)
        )
    assert found == [  # site a: 100 of 150 kW, site b: 50 of 150 kW
        (1, "import_cap_kw", [40.0], "opt_in"),
        (1, "import_price", [0.3], "none"),
        (2, "import_cap_kw", [20.0], "opt_in"),
        (2, "import_price", [0.3], "none"),
    ]
    # The same event again changes nothing and does not wake the loop.
    again = run(lambda: proc.handle(OadrEvent("e1", signals=(cap(60.0), price(0.3)))))
    assert not again.changed
    assert woken == ["OpenADR ven: event e1"]


def test_targets_pick_sites_by_resource_name(seeded: Database) -> None:
    proc, _ = processor(seeded)
    run(lambda: proc.handle(OadrEvent("e1", signals=(cap(30.0),), targets=frozenset({"meter-a"}))))
    ((_, _, values, _, _),) = rows(seeded).values()
    assert values == [30.0]  # all of it at site a


def test_modifications_apply_once_and_cancellation_lifts_the_cap(seeded: Database) -> None:
    proc, woken = processor(seeded)
    ev = OadrEvent("e1", modification=1, signals=(cap(30.0),), targets=frozenset({"meter-a"}))
    run(lambda: proc.handle(ev))
    stale = OadrEvent("e1", modification=0, signals=(cap(10.0),), targets=frozenset({"meter-a"}))
    assert not run(lambda: proc.handle(stale)).changed
    newer = OadrEvent("e1", modification=2, signals=(cap(20.0),), targets=frozenset({"meter-a"}))
    assert run(lambda: proc.handle(newer)).changed
    assert rows(seeded)["ven|e1|0"][2:4] == ([20.0], 2)
    answer = run(lambda: proc.handle(OadrEvent("e1", modification=3, cancelled=True)))
    assert answer.opt is Opt.IN
    assert rows(seeded)["ven|e1|0"][1] == "cancelled"
    assert len(woken) == 3


def test_3x_events_count_a_change_of_content_as_a_modification(seeded: Database) -> None:
    proc, _ = processor(seeded, protocol="3.1", vtn_url="https://vtn.test")
    one = frozenset({"meter-a"})
    run(lambda: proc.handle(OadrEvent("e1", signals=(cap(30.0),), targets=one)))
    assert not run(lambda: proc.handle(OadrEvent("e1", signals=(cap(30.0),), targets=one))).changed
    run(lambda: proc.handle(OadrEvent("e1", signals=(cap(25.0),), targets=one)))
    run(lambda: proc.handle(OadrEvent("e1", signals=(cap(25.0),), priority=3, targets=one)))
    assert rows(seeded)["ven|e1|0"][2:4] == ([25.0], 2)


def test_a_bad_modification_never_removes_a_valid_cap(seeded: Database) -> None:
    proc, woken = processor(seeded)
    one = frozenset({"meter-a"})
    run(lambda: proc.handle(OadrEvent("e1", modification=0, signals=(cap(30.0),), targets=one)))
    before = rows(seeded)
    for bad in (cap(-1.0), cap(50_000.0), cap(1.5, role=SignalRole.IMPORT_FRACTION)):
        ev = OadrEvent("e1", modification=1, signals=(bad,), targets=one)
        answer = asyncio.run(proc.handle(ev))
        assert answer.opt is Opt.OUT
        assert not answer.changed
    assert rows(seeded) == before
    assert proc.rejected == 3
    assert len(woken) == 1


def test_a_cap_below_the_uncontrollable_load_is_opted_out_of_but_prices_apply(
    seeded: Database,
) -> None:
    proc, _ = processor(seeded)
    answer = run(lambda: proc.handle(OadrEvent("e1", signals=(cap(3.0), price(0.4)))))
    assert answer.opt is Opt.OUT
    assert "uncontrollable" in answer.reason
    assert {v[0] for v in rows(seeded).values()} == {"import_price"}


def test_opted_out_sites_record_the_event_without_a_cap(seeded: Database) -> None:
    proc, _ = processor(seeded, sites=[{"site_id": "a", "resource": "meter-a", "opted_out": True}])
    answer = run(lambda: proc.handle(OadrEvent("e1", modification=0, signals=(cap(30.0),))))
    assert answer.opt is Opt.OUT
    assert rows(seeded)["ven|e1|0"][4] == "opt_out"


def test_a_site_manager_opt_out_in_the_store_sticks(seeded: Database) -> None:
    proc, _ = processor(seeded)
    one = frozenset({"meter-a"})
    run(lambda: proc.handle(OadrEvent("e1", modification=0, signals=(cap(30.0),), targets=one)))
    with seeded.write() as s:
        sig = s.query(Signal).one()
        signals.set_opt_state(s, sig.id, OptState.OPT_OUT)
    answer = run(
        lambda: proc.handle(OadrEvent("e1", modification=1, signals=(cap(20.0),), targets=one))
    )
    assert answer.opt is Opt.OUT
    assert rows(seeded)["ven|e1|0"][2:] == ([20.0], 1, "opt_out")


def test_the_loop_is_woken_when_a_cap_begins(seeded: Database) -> None:
    proc, woken = processor(seeded)
    soon = datetime.now(UTC) + timedelta(seconds=0.3)

    async def scenario() -> None:
        ev = OadrEvent("e1", signals=(cap(30.0, start=soon),), targets=frozenset({"meter-a"}))
        await proc.handle(ev)
        assert woken == ["OpenADR ven: event e1"]
        for _ in range(300):
            if len(woken) > 1:
                break
            await asyncio.sleep(0.01)
        assert woken[1] == "OpenADR ven: event e1 begins or changes"
        proc.close()

    run(scenario)


def test_withdrawn_events_are_cancelled_unless_written_after_the_listing(
    seeded: Database,
) -> None:
    proc, _ = processor(seeded, protocol="3.1", vtn_url="https://vtn.test")
    one = frozenset({"meter-a"})
    now = datetime.now(UTC)  # events that have not ended
    run(lambda: proc.handle(OadrEvent("gone", signals=(cap(30.0, start=now),), targets=one)))
    run(lambda: proc.handle(OadrEvent("kept", signals=(cap(40.0, start=now),), targets=one)))
    listing_started = datetime.now(UTC) - timedelta(seconds=5)  # before both were written
    assert run(lambda: proc.cancel_missing({"kept"}, before=listing_started)) == []
    assert run(lambda: proc.cancel_missing({"kept"})) == ["ven|gone|"]
    status = {k: v[1] for k, v in rows(seeded).items()}
    assert status == {"ven|gone|0": "cancelled", "ven|kept|0": "active"}


def test_site_power_sums_fresh_connector_readings(seeded: Database) -> None:
    from ampflow.gateway.db.models import Connector, Site

    with seeded.write() as s:
        site = s.query(Site).filter_by(id="a").one()
        conn = s.query(Connector).filter_by(site_pk=site.pk).one()
        conn.power_kw, conn.measured_at = 7.5, NOW
    with seeded.read() as s:
        assert site_power_kw(s, "a", now=NOW + timedelta(seconds=30)) == 7.5
        assert site_power_kw(s, "a", now=NOW + timedelta(minutes=10)) == 0.0  # stale
        assert site_power_kw(s, "b", now=NOW) == 0.0
