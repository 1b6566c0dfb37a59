"""V2G settlement over the API: a session's export valued at the site's export price series
(overlapping series resolved as the control loop does), DR events paying per kWh and per kW
committed, degradation, driver share and a missed target; a month's statements per driver and
per site against the utility reconcile. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampflow.engine.settlement import Party
from ampflow.engine.v2g_statements import site_statements
from ampflow.gateway import billing
from ampflow.gateway.api.schemas.sites import SiteCreate
from ampflow.gateway.control import ControlLoop
from ampflow.gateway.db import Database
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.models import Connector, IdToken, Site
from ampflow.gateway.db.models_billing import V2gStatementRow
from ampflow.gateway.db.repo import billing as billing_repo
from ampflow.gateway.db.repo import control_state, sessions, sites
from tests.gateway.billing_kit import Reading, loads, run, tariff
from tests.gateway.conftest import DEPOT, Api, make_settings

V2G_SITE: dict[str, Any] = {
    "id": "v2g",
    "name": "V2G depot",
    "timezone": "Europe/Amsterdam",
    "import_kw": 100,
    "export_kw": 50,
    "chargers": [
        {
            "id": "dc-1",
            "node": "v2g",
            "max_kw": 50,
            "kind": "DC",
            "bidirectional": True,
            "discharge_max_kw": 20,
        }
    ],
}
PROGRAM = {
    "degradation_per_kwh": "0.05",
    "driver_share": "0.5",
    "missed_target_per_kwh": "0.30",
    "dr_payment_per_kwh": "1.00",
    "capacity_payment_per_kw": "2.00",
    "default_export_price": "0.08",
    "v2g_interval_s": 900,
}
JUL1 = datetime(2026, 7, 1, 16, tzinfo=UTC)
Q = timedelta(minutes=15)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _setup(api: Api) -> None:
    with api.client() as c:
        assert c.post("/sites", json=V2G_SITE).status_code == 201, "site"
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.patch("/sites/v2g/billing", json=PROGRAM).status_code == 200
        assert c.put("/sites/v2g/tariffs/t1", json=tariff("t1")).status_code == 201
        # Export at 0.10 all afternoon, and a preferred (lower priority number) 0.30 at 17:00.
        for prio, start, stop, price in (
            (5, JUL1, JUL1 + 8 * Q, 0.10),
            (0, JUL1 + 4 * Q, JUL1 + 6 * Q, 0.30),
        ):
            body = {
                "site_id": "v2g",
                "direction": "export",
                "priority": prio,
                "intervals": [{"start": _iso(start), "end": _iso(stop), "price": price}],
            }
            assert c.post("/prices", json=body).status_code == 201
        event = {"site_id": "v2g", "start": _iso(JUL1 + 4 * Q), "end": _iso(JUL1 + 6 * Q)}
        assert c.post("/dr-events", json={**event, "cap_kw": 60}).status_code == 201
    with api.db.write() as s:
        s.add(IdToken(token="TAG-V", driver_id="drv-v"))


def _first_session(api: Api) -> str:
    """16:00-17:00 charge 20 kWh, 17:00-18:00 export 10 kWh; the target was 15 kWh."""
    readings = [
        Reading(JUL1 + k * Q, min(k, 4) * 5000.0, None, max(0, k - 4) * 2500.0) for k in range(9)
    ]
    return run(
        api.db, "v2g/dc-1/1", readings, JUL1 + 8 * Q, token="TAG-V", v2g=True, energy_target_kwh=15
    )


def test_a_v2g_session_is_settled_exactly(api: Api) -> None:
    """Export 5 kWh at 0.30 + 5 kWh at 0.10 = 2.00; DR 5 kWh x 1.00 = 5.00; capacity 20 kW x
    2.00 = 40.00: the utility pays 47.00. Degradation 10 x 0.05 = 0.50, share 0.5 x 46.50 =
    23.25, missed target 5 kWh x 0.30 = 1.50: the driver gets 25.25, the site keeps 21.75."""
    _setup(api)
    session_id = _first_session(api)
    with api.client() as c:
        r = c.get(f"/v2g/sessions/{session_id}")
        assert r.status_code == 200, r.text
        [cdr] = loads(c.get("/cdrs", params={"session_id": session_id}).text)
    st_ = loads(r.text)
    assert st_["net"] == {
        "utility": Decimal("-47.00"),
        "site": Decimal("21.75"),
        "driver": Decimal("25.25"),
    }
    assert st_["grid_payment"] == Decimal("47.00")
    assert st_["metered_export_kwh"] == st_["settled_export_kwh"] == 10
    assert (st_["import_kwh"], st_["delivered_kwh"], st_["shortfall_kwh"]) == (20, 10, 5)
    totals: dict[str, list[Decimal]] = {}
    for line in st_["lines"]:
        q, a = totals.get(line["kind"], [Decimal(0), Decimal(0)])
        totals[line["kind"]] = [q + line["quantity"], a + line["amount"]]
    assert totals == {
        "export_energy": [10, Decimal("2.00")],
        "dr_event": [5, Decimal("5.00")],
        "capacity": [20, 40],
        "degradation": [10, Decimal("0.50")],
        "driver_share": [Decimal("46.50"), Decimal("23.25")],
        "missed_target": [5, Decimal("1.50")],
    }
    export_rates = sorted({ln["rate"] for ln in st_["lines"] if ln["kind"] == "export_energy"})
    assert export_rates == [Decimal("0.10"), Decimal("0.30")]
    assert (st_["driver_id"], st_["site_id"], st_["currency"]) == ("drv-v", "v2g", "EUR")
    # The CDR bills the 20 kWh imported, never netting the export.
    assert cdr["total_energy"] == 20
    assert cdr["cdr_token"]["contract_id"] == "drv-v"
    assert cdr["cdr_location"]["connector_power_type"] == "DC"


def test_a_month_of_v2g_reconciles(api: Api) -> None:
    _setup(api)
    first = _first_session(api)
    # July 10: 4 kWh exported in an hour without a price series (the site's default 0.08).
    jul10 = datetime(2026, 7, 10, 16, tzinfo=UTC)
    readings = [Reading(jul10 + k * Q, 0.0, None, k * 1000.0) for k in range(5)]
    second = run(api.db, "v2g/dc-1/1", readings, jul10 + 4 * Q, token="TAG-V", v2g=True)
    # August, and a July session on the depot that never exported: neither is in July's V2G.
    aug = datetime(2026, 8, 2, 16, tzinfo=UTC)
    readings = [Reading(aug, 0.0, None, 0.0), Reading(aug + Q, 0.0, None, 1000.0)]
    run(api.db, "v2g/dc-1/1", readings, aug + Q, token="TAG-V", v2g=True)
    plain = run(api.db, "depot/cp-1/1", [Reading(jul10, 0.0), Reading(jul10 + Q, 500.0)], jul10 + Q)
    with api.client() as c:
        assert c.get(f"/v2g/sessions/{plain}").status_code == 404
        drivers = c.get("/v2g/drivers", params={"month": "2026-07"})
        assert drivers.status_code == 200, drivers.text
        site = c.get("/v2g/sites/v2g", params={"month": "2026-07"})
        empty = c.get("/v2g/sites/v2g", params={"month": "2026-06"}).json()
        depot = c.get("/v2g/sites/depot", params={"month": "2026-07"}).json()
    [driver] = loads(drivers.text)
    assert driver["sessions"] == [first, second]
    assert driver["export_kwh"] == 14
    # Second session: 4 x 0.08 = 0.32 paid; degradation 0.20, share 0.5 x 0.12 = 0.06.
    assert driver["net"] == Decimal("25.51")
    assert driver["totals"]["degradation"] == {"quantity": 14, "amount": Decimal("0.70")}
    [month] = loads(site.text)
    assert month["reconciles"] is True
    assert month["metered_export_kwh"] == month["settled_export_kwh"] == 14
    assert (month["grid_payment"], month["driver_payout"]) == (Decimal("47.32"), Decimal("25.51"))
    assert (month["site_net"], month["utility_net"]) == (Decimal("21.81"), Decimal("-47.32"))
    assert month["utility_net"] + month["site_net"] + month["driver_payout"] == 0
    assert month["grid"]["export_energy"] == {"quantity": 14, "amount": Decimal("2.32")}
    assert empty == [
        {
            "site_id": "v2g",
            "month": "2026-06",
            "currency": "EUR",
            "sessions": [],
            "metered_export_kwh": 0,
            "settled_export_kwh": 0,
            "grid": {},
            "payouts": {},
            "grid_payment": 0,
            "driver_payout": 0,
            "site_net": 0,
            "utility_net": 0,
            "reconciles": True,
        }
    ]
    assert depot[0]["sessions"] == []


def test_v2g_statement_access(api: Api) -> None:
    _setup(api)
    session_id = _first_session(api)
    utility = api.key(Role.UTILITY, ["v2g"])
    with api.client(utility) as c:
        assert c.get("/v2g/sites/v2g", params={"month": "2026-07"}).status_code == 200
        assert c.get(f"/v2g/sessions/{session_id}").status_code == 403
        assert c.get("/v2g/drivers").status_code == 403
    with api.client(api.key(Role.SITE_MANAGER, ["depot"])) as c:
        assert c.get("/v2g/sites/v2g").status_code == 403
        assert c.get(f"/v2g/sessions/{session_id}").status_code == 403
        assert c.get("/v2g/drivers", params={"month": "2026-07"}).json() == []
    with api.client(api.key(Role.ANALYST)) as c:
        assert c.get(f"/v2g/sessions/{session_id}").status_code == 200
        got = c.get("/v2g/drivers", params={"month": "2026-07", "driver_id": "drv-v"}).json()
        assert len(got) == 1
        for params in ({"month": "2026-7"}, {"time_zone": "Nowhere/City"}):
            assert c.get("/v2g/drivers", params=params).status_code == 422


def _v2g_db(db: Database) -> None:
    with db.write() as s:
        if s.query(Site).filter_by(id="v2g").first() is None:
            body = SiteCreate(**V2G_SITE)
            site = sites.create_site(s, body.spec(), body.info(), charger_priority={})
            billing_repo.update_billing(s, site, {**PROGRAM, "v2g_interval_s": 600})


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 4000), st.integers(1, 40)),
        min_size=1,
        max_size=12,
    ),
    day=st.integers(0, 10_000),
    target=st.none() | st.integers(0, 40),
)
def test_any_settled_session_reconciles(
    db: Database, steps: list[tuple[int, int, int]], day: int, target: int | None
) -> None:
    """Random import and export registers: the settled export is the metered one (the export
    register's rise), and every party's balance sums to zero, for the session and its month."""
    _v2g_db(db)
    t = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=day, minutes=day % 97)
    with db.read() as s:  # the meter runs on from the previous session
        base = s.query(Connector).one().energy_wh or 0.0
    readings, imp, exp = [Reading(t, base, None, 0.0)], base, 0.0
    for d_imp, d_exp, minutes in steps:
        t += timedelta(minutes=minutes, seconds=day % 60)
        imp, exp = imp + d_imp / 10, exp + d_exp / 10
        readings.append(Reading(t, imp, None, exp))
    with db.read() as s:
        if s.query(V2gStatementRow).filter(V2gStatementRow.start_at == readings[0].at).count():
            return  # hypothesis repeated a day
    targets: dict[str, Any] = {"v2g": True}
    if target is not None:
        targets["energy_target_kwh"] = target
    session_id = run(db, "v2g/dc-1/1", readings, t, token="TAG-P", **targets)
    with db.read() as s:
        row = s.query(V2gStatementRow).order_by(V2gStatementRow.pk.desc()).first()
        assert row is not None
        statement = billing.statement_from_json(row.body)
    assert statement.session_id == session_id
    assert statement.metered_export_kwh == statement.settled_export_kwh
    assert statement.metered_export_kwh == Decimal(repr(exp)) / 1000
    assert statement.import_kwh == (Decimal(repr(imp)) - Decimal(repr(base))) / 1000
    assert sum(statement.net(p) for p in Party) == 0
    [month] = site_statements([statement], time_zone="Europe/Amsterdam")
    assert month.reconciles


def test_what_cannot_be_billed_never_undoes_the_end_of_a_session(api: Api) -> None:
    """A negative export price cannot be settled and an expired tariff prices nothing: the
    session still ends, with what could be done (here the CDR) and nothing else."""
    _setup(api)
    with api.client() as c:
        body = {
            "site_id": "v2g",
            "direction": "export",
            "intervals": [{"start": _iso(JUL1), "end": _iso(JUL1 + 8 * Q), "price": -0.05}],
        }
        assert c.post("/prices", json=body).status_code == 201
    session_id = _first_session(api)
    with api.client() as c:
        assert c.get(f"/sessions/{session_id}").json()["status"] == "completed"
        assert c.get(f"/v2g/sessions/{session_id}").status_code == 404
        assert len(c.get("/cdrs", params={"session_id": session_id}).json()) == 1
        expired = tariff("t1", end_date_time="2026-01-01T00:00:00Z")
        assert c.put("/sites/depot/tariffs/t1", json=expired).status_code == 201
    t = datetime(2026, 7, 2, 9, tzinfo=UTC)
    plain = run(api.db, "depot/cp-1/1", [Reading(t, 0.0), Reading(t + Q, 500.0)], t + Q)
    with api.client() as c:
        assert c.get(f"/sessions/{plain}").json()["status"] == "completed"
        assert c.get("/cdrs", params={"session_id": plain}).json() == []
        r = c.post("/cdrs", json={"session_id": plain})
        assert r.status_code == 409
        assert "no tariff" in r.text


def test_the_scheduler_is_offered_the_money_settlement_pays(api: Api) -> None:
    """Per 30-minute step: 0.10 export, then 0.30 export + 1.00 DR during the event."""
    _setup(api)
    with api.db.read() as s:
        site = s.query(Site).filter_by(id="v2g").one()
        money = billing.scheduler_money(s, site, start=JUL1, n_steps=5, dt_s=1800)
    expected = [Decimal(x) for x in ("0.10", "0.10", "1.30", "0.10", "0.08")]
    assert list(money.export_price) == expected
    assert money.degradation_per_kwh == Decimal("0.05")
    kwargs = money.problem_kwargs()
    assert list(kwargs["export_price"]) == pytest.approx([0.1, 0.1, 0.3, 0.1, 0.08])
    assert list(kwargs["discharge_value_per_kwh"]) == [0, 0, 1.0, 0, 0]


def _v2g_plan(api: Api, tmp_path: Path) -> list[float]:
    """The control loop's plan for a V2G EV (30 of 60 kWh, 15 kWh to add by 18:00) on the V2G
    site, from 16:00 in 15-minute steps, with imports at 0.25."""
    with api.db.write() as s:
        row = sessions.start_session(
            s,
            connector_id="v2g/dc-1/1",
            started_at=JUL1 - Q,
            targets={
                "departure_at": JUL1 + 8 * Q,
                "energy_target_kwh": 15.0,
                "battery_kwh": 60.0,
                "ev_max_kw": 20.0,
            },
        )
        row.session.v2g, row.session.soc_pct = True, 50.0
        pk = row.session.connector_pk
    settings = make_settings(
        tmp_path,
        api.db.url.render_as_string(False),
        plan_step_s=900,
        plan_horizon_h=2.0,
        default_import_price=0.25,
    )
    loop = ControlLoop(api.db, settings, clock=lambda: JUL1)
    asyncio.run(loop.replan())
    with api.db.read() as s:
        return list(s.get_one(control_state.ConnectorControl, pk).plan_kw)


def test_the_control_loop_plans_on_the_money_settlement_pays(api: Api, tmp_path: Path) -> None:
    """Discharging at 17:00 earns 0.30 export + 1.00 DR per kWh and costs 0.05 wear, against
    0.25 to buy it back: the plan discharges at full power through the event and still
    delivers its 15 kWh."""
    _setup(api)
    plan = _v2g_plan(api, tmp_path)
    assert plan[4] == pytest.approx(-20.0)
    assert plan[5] == pytest.approx(-20.0)
    assert sum(plan) * 0.25 == pytest.approx(15.0, abs=1e-3)


def test_the_control_loop_weighs_the_wear_settlement_pays(api: Api, tmp_path: Path) -> None:
    """Without the DR payment, 0.30 export against 0.25 import is worth less than the 0.10 of
    wear the site pays the driver: the plan does not discharge at all (it would, at the
    export price alone)."""
    _setup(api)
    with api.client() as c:
        assert (
            c.patch("/sites/v2g/billing", json={"degradation_per_kwh": "0.10"}).status_code == 200
        )
        (event,) = c.get("/dr-events", params={"site_id": "v2g"}).json()
        assert c.post(f"/dr-events/{event['id']}/cancel").status_code == 200
    plan = _v2g_plan(api, tmp_path)
    assert min(plan) >= -1e-6
    assert sum(plan) * 0.25 == pytest.approx(15.0, abs=1e-3)
