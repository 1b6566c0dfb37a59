"""Sessions, stations and meter values over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.gateway.conftest import Api, error_messages


def test_session_life_cycle_with_targets(site: Api) -> None:
    fleet = site.client(site.key("site_manager", ["depot"]))
    with fleet as c:
        r = c.post(
            "/sessions",
            json={"connector_id": "depot/cp-1/1", "id_token": "04A2B3C4", "ev_max_kw": 11},
            headers={"Idempotency-Key": "start-1"},
        )
        assert r.status_code == 201, r.text
        ses = r.json()
        again = c.post(
            "/sessions",
            json={"connector_id": "depot/cp-1/1", "id_token": "04A2B3C4", "ev_max_kw": 11},
            headers={"Idempotency-Key": "start-1"},
        )
        assert again.json()["id"] == ses["id"]  # replayed, not a second session
        assert (ses["status"], ses["connector_id"], ses["site_id"]) == (
            "active",
            "depot/cp-1/1",
            "depot",
        )
        r = c.post("/sessions", json={"connector_id": "depot/cp-1/1"})
        assert r.status_code == 409
        assert "already has open session" in error_messages(r.json())[("body", "connector_id")]
        r = c.post("/sessions", json={"connector_id": "depot/cp-9/1"})
        assert r.status_code == 409
        departure = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
        r = c.patch(
            f"/sessions/{ses['id']}",
            json={"departure_at": departure, "energy_target_kwh": 30, "boost": True},
        )
        assert r.status_code == 200, r.text
        targets = r.json()["targets"]
        assert (targets["energy_target_kwh"], targets["boost"]) == (30.0, True)
        assert targets["departure_at"].endswith("Z")
        r = c.patch(f"/sessions/{ses['id']}", json={"departure_at": "2000-01-01T00:00:00Z"})
        assert r.status_code == 409
        r = c.patch(f"/sessions/{ses['id']}", json={"priority": None})
        assert r.status_code == 422
        r = c.patch(f"/sessions/{ses['id']}", json={"energy_target_kwh": None})
        assert r.json()["targets"]["energy_target_kwh"] is None  # cleared
        r = c.post(f"/sessions/{ses['id']}/stop")
        assert (r.json()["status"], r.json()["ended_at"] is not None) == ("completed", True)
        assert c.patch(f"/sessions/{ses['id']}", json={"priority": 2}).status_code == 409
        listed = c.get("/sessions", params={"status": ["completed"]}).json()
        assert [x["id"] for x in listed] == [ses["id"]]
        assert c.get("/sessions", params={"status": ["active"]}).json() == []
        assert c.get("/sessions/ses_missing").status_code == 404


def test_meter_values_update_session_energy(site: Api) -> None:
    with site.client() as c:
        ses = c.post("/sessions", json={"connector_id": "depot/cp-1/2"}).json()
        t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        values = [
            {
                "connector_id": "depot/cp-1/2",
                "timestamp": (t0 + timedelta(minutes=i)).isoformat(),
                "measurand": "Energy.Active.Import.Register",
                "value": 12.0 + 0.25 * i,
                "unit": "kWh",
            }
            for i in range(5)
        ]
        values.append(
            {
                "connector_id": "depot/cp-1/2",
                "timestamp": (t0 + timedelta(minutes=4)).isoformat(),
                "measurand": "Power.Active.Import",
                "value": 15,
                "unit": "kW",
            }
        )
        r = c.post("/meter-values", json={"values": values})
        assert (r.status_code, r.json()) == (201, {"accepted": 6})
        assert c.post("/meter-values", json={"values": values}).status_code == 201  # retry
        got = c.get(f"/sessions/{ses['id']}").json()
        assert got["energy_kwh"] == pytest.approx(1.0)
        assert got["power_kw"] == pytest.approx(15.0)
        series = c.get(f"/sessions/{ses['id']}/meter-values").json()
        assert series["unit"] == "Wh"
        assert [p["value"] for p in series["points"]] == [12000, 12250, 12500, 12750, 13000]
        state = c.get("/sites/depot/state").json()
        conn = next(x for x in state["connectors"] if x["id"] == "depot/cp-1/2")
        assert (conn["power_kw"], conn["energy_wh"], conn["session_id"]) == (
            15.0,
            13000.0,
            ses["id"],
        )
        assert state["power_kw"] == pytest.approx(15.0)
        bad = [
            {**values[0], "unit": "A"},
            {**values[0], "connector_id": "depot/cp-9/1"},
        ]
        r = c.post("/meter-values", json={"values": bad[:1]})
        assert r.status_code == 422
        assert "does not fit" in error_messages(r.json())[("body", "values", 0, "unit")]
        r = c.post("/meter-values", json={"values": [values[0], bad[1]]})
        assert r.status_code == 409
        assert ("body", "values", 1, "connector_id") in error_messages(r.json())


def test_stations_register_and_read(site: Api) -> None:
    with site.client() as c:
        r = c.post(
            "/stations",
            json={
                "id": "CP-001",
                "site_id": "depot",
                "charger_id": "cp-1",
                "password": "s3cret-s3cret-s3cret",
            },
        )
        assert r.status_code == 201, r.text
        st = r.json()
        assert "password" not in st
        assert st["has_password"] is True
        assert [x["id"] for x in st["connectors"]] == ["depot/cp-1/1", "depot/cp-1/2"]
        assert st["last_seen_at"] is None
        assert st["capabilities"] == {
            "rate_units": None,
            "max_schedule_periods": None,
            "max_stack_level": None,
            "smart_charging": None,
        }
        assert c.get("/stations/CP-001").json() == st
        r = c.post("/stations", json={"id": "CP-002", "site_id": "depot", "charger_id": "cp-1"})
        assert r.status_code == 409
        assert "already station" in error_messages(r.json())[("body", "charger_id")]
        r = c.post("/stations", json={"id": "CP-003", "site_id": "depot", "password": "short"})
        assert r.status_code == 422
        r = c.patch("/stations/CP-001", json={"charger_id": "cp-2", "quirks": ["w_only"]})
        assert (r.json()["charger_id"], r.json()["quirks"]) == ("cp-2", ["w_only"])
        assert [x["id"] for x in c.get("/stations").json()] == ["CP-001"]
        assert c.get("/stations/NOPE").status_code == 404


def test_query_times_must_be_rfc3339(site: Api) -> None:
    with site.client() as c:
        r = c.get("/sessions", params={"since": "886"})  # not Unix time
        assert r.status_code == 422
        assert "RFC 3339" in error_messages(r.json())[("query", "since")]
        assert c.get("/sessions", params={"since": "2030-01-01T00:00:00+01:00"}).json() == []
