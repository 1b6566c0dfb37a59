"""Tariffs as OCPI 2.2.1 JSON (stored and returned unchanged), billing settings and the price
preview, over the live API on SQLite and PostgreSQL: validation (422 naming the JSON path),
conflicts, idempotency, and who may do what."""

from __future__ import annotations

import json
from decimal import Decimal

from ampflow.gateway.db.base import Role
from tests.gateway.billing_kit import loads, tariff
from tests.gateway.conftest import DEPOT, Api, depot

# Numbers a float would not keep: trailing zeros, 20 significant digits, an exponent.
EXACT_TARIFF = (
    '{"country_code": "NL", "party_id": "AMP", "id": "exact", "currency": "EUR", '
    '"elements": [{"price_components": ['
    '{"type": "ENERGY", "price": 0.250, "vat": 21.00, "step_size": 1}, '
    '{"type": "TIME", "price": 0.12345678901234567890, "vat": 21, "step_size": 60}]}], '
    '"min_price": {"excl_vat": 1E+0, "incl_vat": 1.21}, '
    '"last_updated": "2026-01-01T00:00:00Z", "x_vendor": {"keep": [1, "two", null]}}'
)


def _sites(api: Api) -> None:
    with api.client() as c:
        assert c.post("/sites", json=DEPOT).status_code == 201
        assert c.post("/sites", json=depot("other")).status_code == 201


def test_a_tariff_comes_back_exactly_as_sent(api: Api) -> None:
    _sites(api)
    headers = {"content-type": "application/json"}
    with api.client() as c:
        r = c.post("/sites/depot/tariffs", content=EXACT_TARIFF, headers=headers)
        assert r.status_code == 201, r.text
        for got in (r, c.get("/sites/depot/tariffs/exact")):
            assert got.status_code == 200 or got.status_code == 201
            assert '"price": 0.250' in got.text
            assert '"price": 0.12345678901234567890' in got.text
            assert '"vat": 21.00' in got.text
            assert loads(got.text) == loads(EXACT_TARIFF)
            assert list(loads(got.text)) == list(loads(EXACT_TARIFF))  # key order kept
        listed = c.get("/sites/depot/tariffs")
        assert [t["id"] for t in listed.json()] == ["exact"]
        assert loads(listed.text)[0] == loads(EXACT_TARIFF)
        assert c.get("/sites/other/tariffs").json() == []


def test_bad_tariffs_are_422_naming_the_json_path(api: Api) -> None:
    _sites(api)
    bad_vat = tariff()
    bad_vat["elements"][0]["price_components"][1]["vat"] = "20%"
    no_currency = {k: v for k, v in tariff().items() if k != "currency"}
    bad_time = tariff(
        "t1",
        {
            "price_components": [{"type": "TIME", "price": 1, "step_size": 60}],
            "restrictions": {"start_time": "25:00"},
        },
    )
    cases = [
        (bad_vat, ["body", "elements", 0, "price_components", 1, "vat"], "'20%'"),
        (no_currency, ["body", "currency"], "currency"),
        (bad_time, ["body", "elements", 0, "restrictions", "start_time"], "'25:00'"),
        ({**tariff(), "elements": []}, ["body", "elements"], "elements"),
        ({**tariff(), "id": "has space"}, ["body", "id"], "has space"),
        ([tariff()], ["body"], "JSON object"),
    ]
    with api.client() as c:
        for body, loc, text in cases:
            r = c.post("/sites/depot/tariffs", json=body)
            assert r.status_code == 422, (body, r.text)
            detail = r.json()["detail"][0]
            assert detail["loc"] == loc, r.text
            assert text in detail["msg"]
        r = c.post(
            "/sites/depot/tariffs",
            content=b'{"id": "t1", ',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body"]
        assert "expected JSON" in r.json()["detail"][0]["msg"]
        deep = "[" * 5000 + "]" * 5000
        r = c.post("/sites/depot/tariffs", content=deep.encode())
        assert r.status_code == 422
        r = c.put("/sites/depot/tariffs/t2", json=tariff("t1"))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "id"]
        assert "'t2'" in r.json()["detail"][0]["msg"]
        assert c.get("/sites/depot/tariffs").json() == []


def test_tariff_create_replace_delete(api: Api) -> None:
    _sites(api)
    with api.client() as c:
        assert c.post("/sites/depot/tariffs", json=tariff("t1")).status_code == 201
        r = c.post("/sites/depot/tariffs", json=tariff("t1"))
        assert r.status_code == 409
        assert r.json()["detail"][0]["loc"] == ["body", "id"]
        assert c.post("/sites/nowhere/tariffs", json=tariff("t1")).status_code == 404
        cheaper = tariff("t1")
        cheaper["elements"][0]["price_components"][0]["price"] = 0.2
        r = c.put("/sites/depot/tariffs/t1", json=cheaper)
        assert r.status_code == 200  # replaced
        assert r.json() == cheaper
        assert c.get("/sites/depot/tariffs/t1").json() == cheaper
        assert c.put("/sites/depot/tariffs/t2", json=tariff("t2")).status_code == 201  # created
        assert [t["id"] for t in c.get("/sites/depot/tariffs").json()] == ["t1", "t2"]
        # The same id on another site is another tariff.
        assert c.put("/sites/other/tariffs/t1", json=tariff("t1")).status_code == 201
        assert c.delete("/sites/depot/tariffs/t1").status_code == 204
        assert c.get("/sites/depot/tariffs/t1").status_code == 404
        assert c.delete("/sites/depot/tariffs/t1").status_code == 404
        assert [t["id"] for t in c.get("/sites/depot/tariffs").json()] == ["t2"]
        assert c.get("/sites/other/tariffs/t1").status_code == 200


def test_tariffs_are_tried_latest_validity_first(api: Api) -> None:
    _sites(api)
    old = tariff("2026", start_date_time="2026-01-01T00:00:00Z")
    new = tariff("2027", start_date_time="2027-01-01T00:00:00Z")
    with api.client() as c:
        for t in (tariff("base"), old, new):
            assert c.post("/sites/depot/tariffs", json=t).status_code == 201
        assert [t["id"] for t in c.get("/sites/depot/tariffs").json()] == ["2027", "2026", "base"]


def test_create_tariff_is_idempotent(api: Api) -> None:
    _sites(api)
    key = {"Idempotency-Key": "tariff-1"}
    with api.client() as c:
        first = c.post("/sites/depot/tariffs", json=tariff("t1"), headers=key)
        again = c.post("/sites/depot/tariffs", json=tariff("t1"), headers=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.text == first.text
        other = c.post("/sites/depot/tariffs", json=tariff("t2"), headers=key)
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert len(c.get("/sites/depot/tariffs").json()) == 1


def test_tariff_roles(api: Api) -> None:
    _sites(api)
    manager = api.key(Role.SITE_MANAGER, ["depot"])
    stranger = api.key(Role.SITE_MANAGER, ["other"])
    analyst = api.key(Role.ANALYST)
    utility = api.key(Role.UTILITY, ["depot"])
    with api.client(manager) as c:
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
        assert c.patch("/sites/depot/billing", json={"idle_grace_s": 60}).status_code == 200
    with api.client(stranger) as c:
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 403
        assert c.get("/sites/depot/tariffs").status_code == 403
        assert c.put("/sites/other/tariffs/t1", json=tariff("t1")).status_code == 201
    with api.client(analyst) as c:
        assert c.get("/sites/depot/tariffs/t1").status_code == 200
        assert c.get("/sites/depot/billing").json()["idle_grace_s"] == 60
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 403
        assert c.delete("/sites/depot/tariffs/t1").status_code == 403
        assert c.patch("/sites/depot/billing", json={"idle_grace_s": 0}).status_code == 403
        # An invalid body is still a 403 for a role that may not write at all.
        assert c.post("/sites/depot/tariffs", content=b"nonsense").status_code == 403
    with api.client(utility) as c:
        assert c.get("/sites/depot/tariffs").status_code == 403


def test_billing_settings_keep_exact_decimals(api: Api) -> None:
    _sites(api)
    with api.client() as c:
        r = c.get("/sites/depot/billing")
        assert r.json()["driver_share"] == "0"
        assert r.json()["money_places"] == 2
        body = {"degradation_per_kwh": "0.0725", "driver_share": 0.5, "v2g_interval_s": 300}
        r = c.patch("/sites/depot/billing", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["degradation_per_kwh"], got["driver_share"]) == ("0.0725", "0.5")
        assert got["v2g_interval_s"] == 300
        assert c.get("/sites/depot/billing").json() == got
        for bad in ({"driver_share": 1.5}, {"driver_share": None}, {"money_places": 9}, {"x": 1}):
            r = c.patch("/sites/depot/billing", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert c.get("/sites/nowhere/billing").status_code == 404


# --- price preview --------------------------------------------------------------------------------

TOU = tariff(
    "tou",
    {
        "price_components": [{"type": "ENERGY", "price": 0.20, "vat": 10, "step_size": 1}],
        "restrictions": {"start_time": "07:00", "end_time": "17:00"},
    },
    {"price_components": [{"type": "ENERGY", "price": 0.40, "vat": 10, "step_size": 1}]},
)


def test_price_preview_splits_at_the_local_boundary(api: Api) -> None:
    _sites(api)
    with api.client() as c:
        assert c.put("/sites/depot/tariffs/tou", json=TOU).status_code == 201
        # 16:00 to 18:00 in Amsterdam (UTC+1), 10 kWh at constant power: 5 kWh each side of 17:00.
        body = {"start": "2030-03-04T16:00:00+01:00", "stop": "2030-03-04T18:00:00+01:00"}
        r = c.post("/sites/depot/price-preview", json={**body, "energy_kwh": 10})
        assert r.status_code == 200, r.text
        got = loads(r.text)
        assert got["tariff_id"] == "tou"
        assert '"total_cost": {"excl_vat": 3.00, "incl_vat": 3.30}' in r.text
        assert got["total_cost_exact"] == {"excl_vat": Decimal("3.00"), "incl_vat": Decimal("3.3")}
        assert [(p["start"], p["energy_kwh"]) for p in got["periods"]] == [
            ("2030-03-04T15:00:00Z", Decimal(5)),
            ("2030-03-04T16:00:00Z", Decimal(5)),
        ]
        assert [p["lines"][0]["price"] for p in got["periods"]] == [
            Decimal("0.20"),
            Decimal("0.40"),
        ]
        assert got["time_h"] == 2
        # Charging ends at 17:00 and the car stays parked (free here): all 10 kWh before 17:00.
        r = c.post(
            "/sites/depot/price-preview",
            json={**body, "energy_kwh": 10, "charging_end": "2030-03-04T17:00:00+01:00"},
        )
        assert loads(r.text)["total_cost"] == {"excl_vat": 2, "incl_vat": Decimal("2.20")}
        assert [p["kind"] for p in loads(r.text)["periods"]] == ["CHARGING", "PARKING"]


def test_price_preview_of_a_planned_session(api: Api) -> None:
    _sites(api)
    with api.client() as c:
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
        ses = c.post("/sessions", json={"connector_id": "depot/cp-1/1"}).json()
        body = {"session_id": ses["id"]}
        r = c.post("/sites/depot/price-preview", json=body)
        assert r.status_code == 422  # no departure or energy target yet
        assert {tuple(d["loc"]) for d in r.json()["detail"]} == {
            ("body", "stop"),
            ("body", "energy_kwh"),
        }
        c.patch(
            f"/sessions/{ses['id']}",
            json={"energy_target_kwh": 12, "departure_at": "2099-01-01T00:00:00Z"},
        )
        r = c.post("/sites/depot/price-preview", json=body)
        assert r.status_code == 200, r.text
        # 12 kWh at 0.25 plus the 0.50 start fee: 3.50 excl, 3.30 + 0.60 incl.
        assert loads(r.text)["total_cost"] == {
            "excl_vat": Decimal("3.50"),
            "incl_vat": Decimal("3.90"),
        }
        assert loads(r.text)["energy_kwh"] == 12
        assert c.post("/sites/other/price-preview", json=body).status_code == 409


def test_price_preview_errors(api: Api) -> None:
    _sites(api)
    t0, t1 = "2030-03-04T16:00:00+01:00", "2030-03-04T18:00:00+01:00"
    with api.client() as c:
        r = c.post("/sites/depot/price-preview", json={"start": t0, "stop": t1, "energy_kwh": 1})
        assert r.status_code == 409  # the site has no tariff
        assert c.put("/sites/depot/tariffs/t1", json=tariff("t1")).status_code == 201
        cases = [
            ({"start": t1, "stop": t0, "energy_kwh": 1}, ("body", "stop")),
            ({"start": t0, "stop": t1, "energy_kwh": -1}, ("body", "energy_kwh")),
            (
                {"start": t0, "stop": t1, "energy_kwh": 1, "charging_end": t0},
                ("body", "energy_kwh"),
            ),
            ({"start": "2030-03-04T16:00:00", "stop": t1, "energy_kwh": 1}, ("body", "start")),
            ({"start": t0, "stop": t1}, ("body", "energy_kwh")),
        ]
        for body, loc in cases:
            r = c.post("/sites/depot/price-preview", json=body)
            assert r.status_code == 422, (body, r.text)
            assert tuple(r.json()["detail"][0]["loc"]) == loc, r.text
        body = {"start": t0, "stop": t1, "energy_kwh": 1, "tariff_id": "nope"}
        r = c.post("/sites/depot/price-preview", json=body)
        assert r.status_code == 409
        assert r.json()["detail"][0]["loc"] == ["body", "tariff_id"]
        expired = tariff("old", end_date_time="2029-01-01T00:00:00Z")
        assert c.put("/sites/depot/tariffs/old", json=expired).status_code == 201
        r = c.post("/sites/depot/price-preview", json={**body, "tariff_id": "old"})
        assert r.status_code == 422  # not valid at the start
        assert "valid" in json.dumps(r.json())
