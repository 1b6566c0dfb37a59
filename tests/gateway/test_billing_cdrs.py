"""Sessions that end get exact OCPI 2.2.1 CDRs (through the store and the billing service, and
through a stop over the API); credits never edit a CDR and leave an audit trail; a month gives
invoices per token and per driver contract, as JSON and CSV. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ampflow.gateway import billing
from ampflow.gateway.db.base import Role
from ampflow.gateway.db.models import IdToken
from ampflow.gateway.db.models_billing import CdrRow
from tests.gateway.billing_kit import Reading, as_sent, end, loads, read, run, start, tariff
from tests.gateway.conftest import DEPOT, Api, depot

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
GOLDEN = tariff(
    "golden",
    {
        "price_components": [
            {"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1},
            {"type": "TIME", "price": 2.00, "vat": 10, "step_size": 300},
            {"type": "PARKING_TIME", "price": 3.00, "vat": 20, "step_size": 60},
        ]
    },
)


def _setup(api: Api, *tariffs: dict[str, Any]) -> None:
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.post("/sites", json=depot("other")).status_code == 201
        for t in tariffs:
            assert c.put(f"/sites/depot/tariffs/{t['id']}", json=t).status_code == 201


def _cdrs(api: Api, **params: Any) -> list[dict[str, Any]]:
    with api.client() as c:
        r = c.get("/cdrs", params=params)
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = loads(r.text)
        return out


def test_a_session_that_ends_gets_an_exact_cdr(api: Api) -> None:
    """60 min charging 6.03 kWh, then 10.5 min parked: ENERGY 1.5075, TIME 60 min (already on
    its 5-min step) 2.00, PARKING rounded once to 11 min 0.55: 4.0575 -> 4.06 excl VAT;
    1.65825 + 2.20 + 0.66 = 4.51825 -> 4.52 incl VAT."""
    _setup(api, GOLDEN)
    minute = timedelta(minutes=1)
    readings = [
        Reading(T0, 1000.0),
        Reading(T0 + 30 * minute, 4015.0),
        Reading(T0 + 60 * minute, 7030.0),
        Reading(T0 + 65 * minute, 7030.0),
    ]
    issued = T0 + 71 * minute
    session_id = run(
        api.db,
        "depot/cp-1/1",
        readings,
        T0 + timedelta(minutes=70, seconds=30),
        token="TAG-A",
        now=issued,
    )
    [listed] = _cdrs(api, session_id=session_id)
    with api.client() as c:
        r = c.get(f"/cdrs/{listed['id']}")
    assert r.status_code == 200
    text, cdr = r.text, loads(r.text)
    assert '"total_cost": {"excl_vat": 4.06, "incl_vat": 4.52}' in text
    assert '"total_time_cost": {"excl_vat": 2.00, "incl_vat": 2.20}' in text
    assert '"total_energy": 6.0300' in text
    assert cdr["total_energy_cost"] == {"excl_vat": Decimal("1.51"), "incl_vat": Decimal("1.66")}
    assert cdr["total_parking_cost"] == {"excl_vat": Decimal("0.55"), "incl_vat": Decimal("0.66")}
    assert (cdr["total_time"], cdr["total_parking_time"]) == (Decimal("1.175"), Decimal("0.175"))
    assert cdr["charging_periods"] == [
        {
            "start_date_time": "2026-03-02T08:00:00Z",
            "dimensions": [
                {"type": "ENERGY", "volume": Decimal("6.03")},
                {"type": "TIME", "volume": Decimal(1)},
            ],
            "tariff_id": "golden",
        },
        {
            "start_date_time": "2026-03-02T09:00:00Z",
            "dimensions": [{"type": "PARKING_TIME", "volume": Decimal("0.175")}],
            "tariff_id": "golden",
        },
    ]
    assert cdr["tariffs"] == [as_sent(GOLDEN)]
    assert (cdr["start_date_time"], cdr["end_date_time"]) == (
        "2026-03-02T08:00:00Z",
        "2026-03-02T09:10:30Z",
    )
    assert cdr["last_updated"] == "2026-03-02T09:11:00Z"
    assert cdr["session_id"] == session_id
    assert cdr["cdr_token"] == {
        "country_code": "NL",
        "party_id": "AMP",
        "uid": "TAG-A",
        "type": "RFID",
        "contract_id": "TAG-A",
    }
    assert cdr["cdr_location"]["id"] == "depot"
    assert cdr["cdr_location"]["evse_uid"] == "cp-1/1"
    assert cdr["cdr_location"]["connector_power_type"] == "AC_3_PHASE"
    assert cdr["auth_method"] == "COMMAND"
    assert (cdr["country_code"], cdr["party_id"], cdr["currency"]) == ("NL", "AMP", "EUR")
    # Ending it again (a retried StopTransaction) issues nothing more.
    end(api.db, session_id, T0 + 80 * minute)
    assert len(_cdrs(api, session_id=session_id)) == 1


def test_a_stop_through_the_api_bills_the_session(api: Api) -> None:
    """1234.5 Wh at 0.25 plus the 0.50 fee: 0.808625 -> 0.81; incl 0.9394875 -> 0.94."""
    _setup(api, tariff("t1"))
    with api.client() as c:
        meter = {"connector_id": "depot/cp-1/1", "value": 1000, "unit": "Wh"}
        early = datetime.now(UTC) - timedelta(seconds=30)
        r = c.post("/meter-values", json={"values": [{**meter, "timestamp": early.isoformat()}]})
        assert r.status_code == 201, r.text
        ses = c.post("/sessions", json={"connector_id": "depot/cp-1/1", "id_token": "TAG-9"})
        session_id = ses.json()["id"]
        time.sleep(1.1)  # meter values carry whole seconds
        later = {**meter, "value": 2234.5, "timestamp": datetime.now(UTC).isoformat()}
        assert c.post("/meter-values", json={"values": [later]}).status_code == 201
        assert c.post(f"/sessions/{session_id}/stop").json()["status"] == "completed"
        [cdr] = loads(c.get("/cdrs", params={"session_id": session_id}).text)
        assert c.post(f"/sessions/{session_id}/stop").status_code == 200  # harmless again
    assert cdr["total_energy"] == Decimal("1.2345")
    assert cdr["total_cost"] == {"excl_vat": Decimal("0.81"), "incl_vat": Decimal("0.94")}
    assert cdr["total_fixed_cost"] == {"excl_vat": Decimal("0.50"), "incl_vat": Decimal("0.60")}
    assert cdr["cdr_token"]["uid"] == "TAG-9"
    assert len(_cdrs(api, session_id=session_id)) == 1


def test_no_tariff_no_cdr_until_one_is_issued(api: Api) -> None:
    _setup(api)
    session_id = run(
        api.db,
        "depot/cp-1/1",
        [Reading(T0, 0.0), Reading(T0 + timedelta(hours=1), 2000.0)],
        T0 + timedelta(hours=1),
    )
    assert _cdrs(api) == []
    with api.client() as c:
        r = c.post("/cdrs", json={"session_id": session_id})
        assert r.status_code == 409
        assert "no tariff" in r.text
        # The first tariff of the site also prices sessions that ended before it existed.
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
        key = {"Idempotency-Key": "issue-1"}
        r = c.post("/cdrs", json={"session_id": session_id}, headers=key)
        assert r.status_code == 201, r.text
        assert loads(r.text)["total_cost"] == {"excl_vat": 1, "incl_vat": Decimal("1.15")}
        replay = c.post("/cdrs", json={"session_id": session_id}, headers=key)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.text == r.text
        assert c.post("/cdrs", json={"session_id": session_id}).status_code == 409
        assert c.post("/cdrs", json={"session_id": "ses_unknown"}).status_code == 409
        open_one = c.post("/sessions", json={"connector_id": "depot/cp-2/1"}).json()
        r = c.post("/cdrs", json={"session_id": open_one["id"]})
        assert r.status_code == 409
        assert "only an ended session" in r.text
        with api.client(api.key(Role.SITE_MANAGER, ["other"])) as other:
            assert other.post("/cdrs", json={"session_id": session_id}).status_code == 403
    assert len(_cdrs(api)) == 1


def test_a_session_is_priced_with_the_tariff_current_at_its_start(api: Api) -> None:
    _setup(api, tariff("t1"))
    hour = timedelta(hours=1)
    now = datetime.now(UTC).replace(microsecond=0)
    before = start(api.db, "depot/cp-1/1", now - hour)
    read(api.db, before, [Reading(now - hour, 0.0), Reading(now - hour / 2, 4000.0)])
    dearer = tariff("t1")
    dearer["elements"][0]["price_components"][0]["price"] = 0.5
    with api.client() as c:
        assert c.put("/sites/depot/tariffs/t1", json=dearer).status_code == 200
    end(api.db, before, now + hour)  # ends after the change: still the old price
    after = run(
        api.db,
        "depot/cp-2/1",
        [Reading(now + hour, 0.0), Reading(now + 2 * hour, 4000.0)],
        now + 2 * hour,
    )
    [old] = _cdrs(api, session_id=before)
    [new] = _cdrs(api, session_id=after)
    assert old["total_cost"]["excl_vat"] == Decimal("1.50")  # 4 kWh x 0.25 + 0.50
    assert old["tariffs"] == [as_sent(tariff("t1"))]
    assert new["total_cost"]["excl_vat"] == Decimal("2.50")  # 4 kWh x 0.50 + 0.50
    assert new["tariffs"] == [as_sent(dearer)]
    # Deleted, the tariff prices no session that starts afterwards.
    with api.client() as c:
        assert c.delete("/sites/depot/tariffs/t1").status_code == 204
    later = run(
        api.db,
        "depot/cp-1/1",
        [Reading(now + 5 * hour, 0.0), Reading(now + 6 * hour, 1000.0)],
        now + 6 * hour,
    )
    assert _cdrs(api, session_id=later) == []
    assert len(_cdrs(api)) == 2


def test_credits_never_edit_and_leave_an_audit_trail(api: Api) -> None:
    cheap = tariff("cheap", type="PROFILE_CHEAP")  # not chosen for a regular session
    cheap["elements"][0]["price_components"][0]["price"] = 0.1
    _setup(api, tariff("t1"), cheap)
    hour = timedelta(hours=1)
    session_id = run(
        api.db,
        "depot/cp-1/1",
        [Reading(T0, 0.0), Reading(T0 + hour, 10_000.0)],
        T0 + hour,
        token="TAG-A",
    )
    [original] = _cdrs(api)
    assert original["total_cost"] == {"excl_vat": Decimal("3.00"), "incl_vat": Decimal("3.35")}
    manager = api.key(Role.SITE_MANAGER, ["depot"])
    analyst = api.key(Role.ANALYST)
    path = f"/cdrs/{original['id']}/credit"
    for token in (manager, analyst):
        with api.client(token) as c:
            assert c.post(path, json={"reason": "meter fault"}).status_code == 403
    with api.client() as c:
        assert c.post(path, json={"reason": "  "}).status_code == 422
        key = {"Idempotency-Key": "credit-1"}
        body = {"reason": "wrong tariff", "reissue": True, "tariff_id": "cheap"}
        r = c.post(path, json=body, headers=key)
        assert r.status_code == 201, r.text
        assert c.post(path, json=body, headers=key).text == r.text  # replayed, not redone
        done = loads(r.text)
        assert c.post(path, json={"reason": "again"}).status_code == 409
        credit_path = f"/cdrs/{done['credit']['id']}/credit"
        assert c.post(credit_path, json={"reason": "x"}).status_code == 409
        assert c.post("/cdrs/NOPE/credit", json={"reason": "x"}).status_code == 404
        stored = c.get(f"/cdrs/{original['id']}")
        audit = c.get(f"/cdrs/{original['id']}/audit").json()
    assert '"total_cost": {"excl_vat": -3.00, "incl_vat": -3.35}' in r.text
    credit, new = done["credit"], done["reissued"]
    assert credit["id"] == f"{original['id']}-C"
    assert (credit["credit"], credit["credit_reference_id"]) == (True, original["id"])
    assert credit["charging_periods"] == original["charging_periods"]
    assert new["total_cost"] == {"excl_vat": Decimal("1.50"), "incl_vat": Decimal("1.70")}
    assert new["tariffs"] == [as_sent(cheap)]
    assert new["id"] not in (original["id"], credit["id"])
    assert loads(stored.text) == original  # never edited
    assert [(a["action"], a["cdr_id"], a["reference_id"]) for a in audit] == [
        ("ISSUED", original["id"], None),
        ("CREDITED", credit["id"], original["id"]),
        ("ISSUED", new["id"], None),
    ]
    assert audit[0]["actor"] == "system"
    assert audit[1]["actor"].startswith("key:")
    assert audit[1]["reason"] == "wrong tariff"
    assert audit[1]["total_cost"] == {"excl_vat": -3.0, "incl_vat": -3.35}
    assert audit[2]["reason"] == f"corrects {original['id']}"
    assert {c["id"] for c in _cdrs(api, session_id=session_id)} == {
        original["id"],
        credit["id"],
        new["id"],
    }
    assert [c["id"] for c in _cdrs(api, credit="true")] == [credit["id"]]
    with api.db.read() as s:
        assert s.query(CdrRow).count() == 3


def _month_of_sessions(api: Api) -> dict[str, str]:
    """March 2026: TAG-A charges 10 and 4.5 kWh, TAG-B 7.2 kWh; both tokens are driver drv-1."""
    with api.db.write() as s:
        s.add(IdToken(token="TAG-A", driver_id="drv-1"))
        s.add(IdToken(token="TAG-B", driver_id="drv-1"))
    ids, register = {}, 50_000.0  # the connector's meter runs on from session to session
    for name, day, wh, token in (
        ("a1", 2, 10_000.0, "TAG-A"),
        ("a2", 9, 4500.0, "TAG-A"),
        ("b1", 16, 7200.0, "TAG-B"),
    ):
        t = datetime(2026, 3, day, 9, tzinfo=UTC)
        ids[name] = run(
            api.db,
            "depot/cp-1/1",
            [Reading(t, register), Reading(t + timedelta(hours=1), register + wh)],
            t + timedelta(hours=1),
            token=token,
            now=t + timedelta(hours=2),
        )
        register += wh
    return ids


def test_a_month_gives_invoices_as_json_and_csv(api: Api) -> None:
    """a1 3.00/3.35, a2 1.625 -> 1.63 / 1.8375 -> 1.84, b1 2.30/2.58 (excl/incl VAT)."""
    _setup(api, tariff("t1"))
    ids = _month_of_sessions(api)
    a2 = _cdrs(api, session_id=ids["a2"])[0]["id"]
    with api.db.write() as s:  # corrected in April: a credit and a new CDR, in April's invoice
        billing.credit(
            s,
            a2,
            actor="ops",
            reason="late meter values",
            reissue=True,
            now=datetime(2026, 4, 3, 12, tzinfo=UTC),
        )
    with api.client() as c:
        march = c.get("/invoices", params={"month": "2026-03", "site_id": "depot"})
        assert march.status_code == 200, march.text
        invoices = loads(march.text)
        assert [(i["holder"], i["month"], len(i["lines"])) for i in invoices] == [
            ("TAG-A", "2026-03", 2),
            ("TAG-B", "2026-03", 1),
        ]
        assert '"total": {"excl_vat": 4.63, "incl_vat": 5.19}' in march.text
        assert invoices[1]["total"] == {"excl_vat": Decimal("2.30"), "incl_vat": Decimal("2.58")}
        assert invoices[0]["invoice_id"] == "TAG-A-202603-EUR"
        contract = loads(c.get("/invoices", params={"month": "2026-03", "key": "contract"}).text)
        assert [(i["holder"], len(i["lines"])) for i in contract] == [("drv-1", 3)]
        assert contract[0]["total"] == {"excl_vat": Decimal("6.93"), "incl_vat": Decimal("7.77")}
        april = loads(c.get("/invoices", params={"month": "2026-04", "holder": "TAG-A"}).text)
        assert sorted(ln["credit"] for ln in april[0]["lines"]) == [False, True]
        assert april[0]["total"] == {"excl_vat": Decimal("0.00"), "incl_vat": Decimal("0.00")}
        by_end = loads(
            c.get("/invoices", params={"month": "2026-03", "month_of": "session_end"}).text
        )
        assert [len(i["lines"]) for i in by_end] == [4, 1]
        assert c.get("/invoices", params={"month": "2026-05"}).json() == []

        as_csv = c.get("/invoices", params={"month": "2026-03", "format": "csv"})
        accepted = c.get("/invoices", params={"month": "2026-03"}, headers={"Accept": "text/csv"})
        as_json = c.get(
            "/invoices", params={"month": "2026-03"}, headers={"Accept": "application/json"}
        )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert accepted.text == as_csv.text
    assert as_json.headers["content-type"] == "application/json"
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["holder"], r["cost_excl_vat"], r["cost_incl_vat"]) for r in rows] == [
        ("TAG-A", "3.00", "3.35"),
        ("TAG-A", "1.63", "1.84"),
        ("TAG-B", "2.30", "2.58"),
    ]
    assert rows[0]["energy_kwh"] == "10.0000"
    assert rows[0]["session_id"] == ids["a1"]


def test_invoice_queries_are_checked_and_scoped(api: Api) -> None:
    _setup(api, tariff("t1"))
    _month_of_sessions(api)
    with api.client() as c:
        for params in (
            {"month": "2026-13"},
            {"month": "March"},
            {"key": "driver"},
            {"format": "pdf"},
        ):
            assert c.get("/invoices", params=params).status_code == 422, params
        r = c.get("/invoices", params={"time_zone": "Mars/Olympus"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["query", "time_zone"]
    with api.client(api.key(Role.SITE_MANAGER, ["other"])) as c:
        assert (
            c.get("/invoices", params={"month": "2026-03", "site_id": "depot"}).status_code == 403
        )
        assert c.get("/invoices", params={"month": "2026-03"}).json() == []
        assert c.get("/cdrs").json() == []
    with api.client(api.key(Role.ANALYST)) as c:
        assert len(c.get("/invoices", params={"month": "2026-03"}).json()) == 2
        assert len(c.get("/cdrs", params={"token_uid": "TAG-B"}).json()) == 1
    with api.client(api.key(Role.UTILITY, ["depot"])) as c:
        assert c.get("/invoices", params={"site_id": "depot"}).status_code == 403
        assert c.get("/cdrs", params={"site_id": "depot"}).status_code == 403
